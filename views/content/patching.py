"""The patching view's content: where putting back a piece of the clean run restores the answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.patching import PatchingSweep
from views import captions, figures
from views.content import Chart, Section, Text, present, text
from views.display import layer_label, position_labels, quoted, visible

TITLE = "Patching"
EXPLAIN = """
Take two prompts of the same length that differ in one detail, say "The capital of
**France** is" (clean) and "The capital of **Italy** is" (corrupt). The model answers
' Paris' to one and ' Rome' to the other. Now run the corrupt prompt, but at one place
inside the model put back what the clean run had there. If the answer swings back to
' Paris', that place carries the deciding information.

Each cell is the share of the gap between the two answers that comes back: **0%** (white)
changes nothing, **100%** (orange) restores the clean answer fully, blue pushes the other way.
- **Residual stream**: the whole working space at one layer and one position.
- **Attention / MLP output**: what one layer's attention or MLP wrote at one position.
- **Heads**: what one attention head wrote, at every position.

This is *activation patching* (also called causal tracing).
"""
CAVEAT = ("Patching shows what is necessary or sufficient in this context, for this pair of prompts and "
          "this pair of answers, not a general mechanism: another pair can route the information differently.")


@dataclass(frozen=True)
class PatchingChoices:
    """The two prompts and the two answers a sweep compares (token ids)."""

    clean: str
    corrupt: str
    answer_id: int
    foil_id: int


@dataclass(frozen=True, eq=False)
class PatchingContent:
    """The sweep's sentence, margin and four heatmaps (none when there is no margin to restore)."""

    sentence: str
    pair: str  # the two prompts, as their tokens read
    margin: str
    nothing: str | None
    resid: go.Figure | None
    attn: go.Figure | None
    mlp: go.Figure | None
    heads: go.Figure | None

    def section(self) -> Section:
        """The view as the report writes it."""
        charts = [Chart(fig, key) for fig, key in ((self.resid, "patch_resid"), (self.attn, "patch_attn"),
                                                   (self.mlp, "patch_mlp"), (self.heads, "patch_heads"))
                  if fig is not None]
        return Section(TITLE, present(Text(self.pair), Text(self.sentence, "lead"), Text(self.margin, "caption"),
                                      text(self.nothing, "info"), *charts, Text(CAVEAT, "caveat")))


def content(sweep: PatchingSweep) -> PatchingContent:
    """The view of one sweep."""
    merged = [quoted(c) if c == r else f"{quoted(c)}/{quoted(r)}"
              for c, r in zip(sweep.clean_tokens, sweep.corrupt_tokens, strict=True)]
    margin = (f"Margin {quoted(sweep.answer)} over {quoted(sweep.foil)}: {sweep.clean_diff:+.2f} in the clean run, "
              f"{sweep.corrupt_diff:+.2f} in the corrupt run (logit differences at the last position).")
    sentence = captions.patching_sentence(sweep.resid, sweep.attn, sweep.mlp, sweep.heads, merged)
    pair = (f"Clean prompt: {''.join(visible(t) for t in sweep.clean_tokens)} · corrupt prompt: "
            f"{''.join(visible(t) for t in sweep.corrupt_tokens)}")
    if np.isnan(sweep.resid).all():
        return PatchingContent(sentence, pair, margin, "Both prompts give the same margin between these two answers: "
                               "pick another answer or foil.", None, None, None, None)
    labels = position_labels([c if c == r else f"{c}/{r}"
                              for c, r in zip(sweep.clean_tokens, sweep.corrupt_tokens, strict=True)])
    n_layers = sweep.attn.shape[0]
    blocks = [f"layer {i + 1}" for i in range(n_layers)]
    heads = [str(h + 1) for h in range(sweep.heads.shape[1])]
    return PatchingContent(
        sentence=sentence, pair=pair, margin=margin, nothing=None,
        resid=figures.patching_heatmap(sweep.resid, [layer_label(i) for i in range(n_layers + 1)], labels,
                                       "Residual stream: one position at a time", "position"),
        attn=figures.patching_heatmap(sweep.attn, blocks, labels, "Attention output", "position"),
        mlp=figures.patching_heatmap(sweep.mlp, blocks, labels, "MLP output", "position"),
        heads=figures.patching_heatmap(sweep.heads, blocks, heads, "Heads: one head at every position", "head"))
