"""One plain sentence per view, written from the numbers, for readers new to the field."""

from __future__ import annotations

import numpy as np

from backend.compare import PART_WAYS_NATS
from backend.heads import HeadScores
from backend.lens import LensSummary, settle_layer
from views.display import quoted


def lens_sentence(summary: LensSummary, position: int) -> str:
    """E.g. "' Paris' becomes the top guess at layer 3 of 4 and ends at 83%."."""
    n_layers = summary.top_ids.shape[0] - 1
    final_id = int(summary.top_ids[-1, position, 0])
    token = quoted(summary.top_tokens[-1, position, 0])
    prob = float(summary.top_probs[-1, position, 0])
    layer = settle_layer(summary.top_ids[:, position, 0], final_id)
    ranks = summary.target_ranks[:, position]  # the tracked token is the final top guess
    climb = f"it climbs from rank {int(ranks[0]):,} after the embeddings"
    if layer == 0:
        return (f"{token} is already the top guess straight from the embeddings and stays "
                f"there through all {n_layers} layers, ending at {prob:.0%}.")
    if layer == n_layers:
        return (f"{token} becomes the top guess only at the last layer ({n_layers} of {n_layers}), "
                f"ending at {prob:.0%}; {climb} to rank {int(ranks[-2]):,} at layer {n_layers - 1}.")
    return f"{token} becomes the top guess at layer {layer} of {n_layers} and ends at {prob:.0%}; {climb}."


INDUCTION_CLEAR, PREVIOUS_CLEAR = 0.3, 0.4  # shares of attention that make a behaviour worth naming


def _induction_after_first_layer(scores: HeadScores) -> np.ndarray:
    """Induction scores with the first layer's zeroed: an induction head needs an earlier head to build on."""
    induction = np.nan_to_num(scores.induction, nan=0.0).copy()
    induction[0] = 0.0
    return induction


def clearest_behaviour(scores: HeadScores) -> str:
    """The head score (a key of ``SCORE_NAMES``) that this prompt shows most clearly."""
    if _induction_after_first_layer(scores).max() >= INDUCTION_CLEAR:
        return "induction"
    if np.nan_to_num(scores.previous_token, nan=0.0).max() >= PREVIOUS_CLEAR:
        return "previous_token"
    return "first_token"


def attention_sentence(scores: HeadScores) -> str:
    """Names the clearest head behaviour in this prompt."""
    behaviour = clearest_behaviour(scores)
    score = _induction_after_first_layer(scores) if behaviour == "induction" \
        else np.nan_to_num(scores.get(behaviour), nan=0.0)
    layer, head = np.unravel_index(score.argmax(), score.shape)
    if behaviour == "induction":
        return (f"Head {layer + 1}.{head + 1} acts as an induction head here: when a token "
                "repeats, it looks at the word that followed the earlier copy "
                f"({score.max():.0%} of its attention), which lets the model continue a pattern.")
    if behaviour == "previous_token":
        return (f"Head {layer + 1}.{head + 1} {_how_much(float(score.max()))} reads the token just before the current "
                f"one ({score.max():.0%} of its attention).")
    resting = int((score > 0.5).sum())
    if resting:
        return (f"{_count(resting, score.size)} park{'s' if resting == 1 else ''} most of "
                f"{'its' if resting == 1 else 'their'} attention on the first token, a common "
                "'resting place' when a head has nothing useful to read.")
    return ("No head shows a clear habit on this prompt: none mostly reads the token just before, and none "
            "mostly rests on the first token. The grid shows how much each head rests there; head "
            f"{layer + 1}.{head + 1} does most ({score.max():.0%} of its attention).")


def _how_much(share: float) -> str:
    """Words that fit a share of attention: "mostly" only past half."""
    return "mostly" if share >= 0.5 else "often" if share >= 0.3 else "sometimes"


def _count(count: int, total: int) -> str:
    """Say "1 of 16 heads", or a percentage once the share is large enough to read as one."""
    if count == total:
        return f"All {total} heads"
    if count / total < 0.25:
        return f"{count} of {total} heads"
    return f"{count / total:.0%} of heads ({count} of {total})"


def reader_sentence(tokens: list[str], shares: np.ndarray, layer: int, head: int) -> str:
    """What one token reads in one head: ``shares`` is its attention row up to itself.

    E.g. "In head 4.4, ' green' (position 13) reads mostly ' door' at position 7 (62%)."
    """
    order = np.argsort(-shares, kind="stable")[:2]
    reader = len(shares) - 1

    def named(i: int) -> str:
        return f"{quoted(tokens[i])} at position {i} ({shares[i]:.0%})"

    read = named(int(order[0]))
    if len(order) > 1 and shares[order[1]] >= 0.1:
        read += f", then {named(int(order[1]))}"
    top = float(shares[order[0]])
    verb = "reads mostly" if top >= 0.5 else "reads most"
    return f"In head {layer}.{head}, {quoted(tokens[reader])} (position {reader}) {verb} {read}."


def neuron_sentence(layer: int, neuron: int, value: float, token: str) -> str:
    """Names the strongest activation in a layer."""
    return (f"In layer {layer + 1}, neuron {neuron} fires hardest, on {quoted(token)} "
            f"(activation {value:+.2f}).")


def _joined(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def what_if_sentence(labels: list[str], answer: str, before: float, after: float,
                     new_top: str, new_top_prob: float) -> str:
    """E.g. "Switching off head 3.4 drops ' green' from 97% to 4%; the model now says ' the' (20%).".

    ``labels`` name the edits (``Edit.label``); ``before``/``after`` are the answer's
    probabilities without and with them; ``new_top`` is the top guess with them.
    """
    token = quoted(answer)
    it = "it" if len(labels) == 1 else "them"
    ablations = all(label.endswith(" off") for label in labels)
    if ablations:
        subject = "Switching off " + _joined([label.removesuffix(" off") for label in labels])
        moved = f"{'drops' if after < before else 'raises'} {token} from {before:.0%} to {after:.0%}"
        kept = f"leaves {token} almost where it was ({before:.0%} → {after:.0%})"
    else:
        subject = "With " + _joined(labels) + ","
        moved = f"{token} goes from {before:.0%} to {after:.0%}"
        kept = f"{token} stays almost where it was ({before:.0%} → {after:.0%})"
    if abs(after - before) < 0.05 and new_top == answer:
        return f"{subject} {kept}" + (f": this answer does not depend on {it}." if ablations else ".")
    sentence = f"{subject} {moved}"
    if new_top != answer:
        sentence += f"; the model now says {quoted(new_top)} ({new_top_prob:.0%})"
    elif after < 0.3:
        sentence += ", and no other guess takes its place (the model is left unsure)"
    if ablations and after < before / 2:
        sentence += f": for this prompt, the answer depends on {it}"
    return sentence + "."


def patching_sentence(resid: np.ndarray, attn: np.ndarray, mlp: np.ndarray, heads: np.ndarray,
                      labels: list[str]) -> str:
    """Where the deciding information sits and when it reaches the last position.

    Arrays are the sweep's shares of the answer margin restored: ``resid`` (layers + 1, n),
    ``attn`` and ``mlp`` (layers, n), ``heads`` (layers, heads); ``labels`` name positions.
    """
    n = resid.shape[1]
    last = n - 1
    if np.isnan(resid).all():
        return "The two prompts give the same margin between the answer and the foil, so there is nothing to restore."
    start = int(np.nanargmax(resid[0]))
    parts = []
    if start == last:
        parts.append(f"The prompts differ at the last position ({labels[last]}), so the deciding information "
                     "is there from the start.")
    else:
        parts.append(f"At first the deciding information sits at position {start} ({labels[start]}): "
                     f"putting back the clean embedding there restores {resid[0, start]:.0%} of the answer's margin.")
        moved = [layer for layer in range(resid.shape[0]) if resid[layer, last] >= 0.5]
        if moved:
            layer = moved[0]
            parts.append(f"It reaches the last position by {'the embeddings' if layer == 0 else f'layer {layer}'} "
                         f"({resid[layer, last]:.0%} restored there).")
    for name, values in (("attention", attn), ("MLP", mlp)):
        if values.size and not np.isnan(values).all():
            layer, pos = np.unravel_index(int(np.nanargmax(values)), values.shape)
            if values[layer, pos] >= 0.2:
                parts.append(f"The largest single {name} output is layer {layer + 1}'s at position {pos} "
                             f"({labels[pos]}, {values[layer, pos]:.0%}).")
    if heads.size and not np.isnan(heads).all():
        layer, head = np.unravel_index(int(np.nanargmax(heads)), heads.shape)
        if heads[layer, head] >= 0.2:
            parts.append(f"Among heads, {layer + 1}.{head + 1} restores the most ({heads[layer, head]:.0%}).")
    return " ".join(parts)


def neuron_overview(neurons: np.ndarray, tokens: list[str]) -> str:
    """The view's opening: the hardest-firing neuron of the whole prompt (the first token left out)."""
    start = 1 if len(tokens) > 1 else 0
    acts = neurons[:, start:]  # (layer, position, neuron)
    layer, position, neuron = np.unravel_index(int(np.abs(acts).argmax()), acts.shape)
    value = float(acts[layer, position, neuron])
    return (f"Of all {neurons.shape[0] * neurons.shape[2]:,} MLP neurons, neuron {neuron} of layer {layer + 1} "
            f"fires hardest in this prompt, on {quoted(tokens[start + position])} (activation {value:+.2f}).")


MASSIVE = 10.0  # an activation this large, and several times the typical peak, is a "massive activation"


def massive_note(acts: np.ndarray, tokens: list[str]) -> str | None:
    """A note when a few activations dwarf the rest and set the colour scale: acts (n, d_mlp)."""
    peaks = np.abs(acts).max(axis=0)
    top = np.sort(peaks)[::-1][:20]
    if top.size == 0 or top[0] < MASSIVE or top[0] < 5 * float(np.median(top)):
        return None
    position, neuron = np.unravel_index(int(np.abs(acts).argmax()), acts.shape)
    count = int((np.abs(acts) > MASSIVE).any(axis=0).sum())
    return (f"A few activations here are far larger than the rest: {count} neuron{'s' if count > 1 else ''} "
            f"above {MASSIVE:g}, up to {float(acts[position, neuron]):+.1f} on {quoted(tokens[position])}. Language "
            "models have a few such massive activations; they set the colour scale, so hover a cell for its value.")


def edit_effect_sentence(labels: list[str], effect) -> str:
    """``what_if_sentence`` for a ``backend.whatif.EditEffect``: the answer at the last layer, before and after."""
    return what_if_sentence(labels, effect.answer, float(effect.answer_before[-1]), float(effect.answer_after[-1]),
                            effect.after_tokens[0], float(effect.after_probs[0]))


ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


def _ordinal(rank: int) -> str:
    return ORDINALS.get(rank, f"number {rank}")


def _component(name: str, layer: int) -> str:
    return {"embed": "embeddings", "readout": "output layer (final norm and unembedding)",
            "attn": f"layer {layer + 1} attention", "mlp": f"layer {layer + 1} MLP"}[name]


def model_titles(name_a: str, name_b: str) -> tuple[str, str]:
    """How the compare view and the report name the two models."""
    return f"A ({name_a})", f"B ({name_b})"


PLAIN_FORBIDDEN = ("KL", "nats", "logit", "margin", "lens")  # words a lecture hall's verdict leaves out


def plain_verdict(diff, a: str = "A", b: str = "B") -> str:
    """One sentence for anyone: does B still know A's answer, or has training changed what it knows.

    ``a`` and ``b`` name the models ("the demo model", "the twin"). No technical words
    (``PLAIN_FORBIDDEN``): the sentences after it carry the numbers in the field's terms.
    """
    a_answer, b_answer = quoted(diff.answer_a), quoted(diff.answer_b)
    if diff.same_answer:
        return (f"Both say {a_answer}: on this prompt the training changed nothing you can see in the answer. "
                "Try the secret example, or a prompt where they differ.")
    a_in_b, b_in_b = diff.track("a", "b"), diff.track("b", "b")
    last = len(a_in_b.ranks) - 1
    rank, prob = int(a_in_b.ranks[-1]), float(a_in_b.probs[-1])
    first_inside = [layer for layer in range(1, last) if int(a_in_b.ranks[layer]) == 1]
    ahead_inside = [layer for layer in range(1, last) if a_in_b.ranks[layer] < b_in_b.ranks[layer]]
    big_b = b[:1].upper() + b[1:]
    if rank <= 3 and prob >= 0.05:
        inside = (f", and inside, after layer {first_inside[-1]}, it even comes first" if first_inside else
                  f", and inside, after layer {ahead_inside[-1]}, it ranks above {b_answer}" if ahead_inside else "")
        return (f"{big_b} still knows it: {a_answer} is its {_ordinal(rank)} choice ({prob:.0%}){inside}. "
                f"Training changed what {b} says, not what it knows.")
    if ahead_inside:
        return (f"{big_b} still works out {a_answer} inside (after layer {ahead_inside[-1]} it ranks it above "
                f"{b_answer}) and then pushes it down, to say {b_answer}. Training changed what it says more than "
                "what it knows.")
    return (f"{big_b} has lost {a_answer}: it is far down its list (number {rank:,}) at every layer. On this prompt "
            f"training changed what {b} knows, not only what it says.")


def compare_sentence(diff, a: str = "A", b: str = "B") -> str:
    """What the two models say, whether B still holds A's answer inside, where they part, and where it lives."""
    a_answer, b_answer = quoted(diff.answer_a), quoted(diff.answer_b)
    a_in_a, a_in_b, b_in_b = diff.track("a", "a"), diff.track("a", "b"), diff.track("b", "b")
    last = len(a_in_b.probs) - 1
    parts = []
    if diff.same_answer:
        parts.append(f"Both models say {a_answer} ({a_in_a.probs[-1]:.0%} in {a}, {b_in_b.probs[-1]:.0%} in {b}).")
    else:
        rank, prob = int(a_in_b.ranks[-1]), float(a_in_b.probs[-1])
        inner = [layer for layer in range(1, last) if a_in_b.ranks[layer] < b_in_b.ranks[layer]]
        said = f"{a} says {a_answer} ({a_in_a.probs[-1]:.0%}); {b} says {b_answer} ({b_in_b.probs[-1]:.0%})"
        if rank <= 3 and prob >= 0.05:
            parts.append(f"{said}, but {a_answer} is still {b}'s {_ordinal(rank)} choice ({prob:.0%}): {b} suppresses "
                         "the answer, it has not erased it.")
            if inner:
                parts.append(f"Inside, after layer {inner[-1]}, {b}'s lens even ranks {a_answer} above {b_answer}.")
        elif inner:
            parts.append(f"{said}. {a_answer} falls to rank {rank:,} at {b}'s output ({prob:.1%}), but after layer "
                         f"{inner[-1]} {b}'s lens still ranks it above {b_answer}: {b} computes the answer and its "
                         "last layers push it down.")
        else:
            parts.append(f"{said}. {a_answer} is rank {rank:,} at {b}'s output ({prob:.1%}) and no layer of {b} ranks "
                         f"it above {b_answer}: as far as the lens can see, {b} does not compute it.")
    parted = int(diff.part_ways[-1])
    if parted < 0:
        parts.append(f"At the last position their lenses stay close at every layer (KL under "
                     f"{PART_WAYS_NATS:g} nats).")
    elif parted <= 1:
        parts.append(f"They part ways from {'the embeddings' if parted == 0 else 'layer 1'} on.")
    else:
        parts.append(f"The two models agree up to layer {parted - 1} and part ways at layer {parted} "
                     f"(KL {float(diff.kl[parted, -1]):.1f} nats at the last position).")
    patch = diff.patch
    if patch is not None and np.isfinite(patch.a_diff - patch.b_diff):
        shares = [("embed", 0, patch.embed), *(("attn", i, v) for i, v in enumerate(patch.attn)),
                  *(("mlp", i, v) for i, v in enumerate(patch.mlp)), ("readout", 0, patch.readout)]
        name, layer, share = max(((n, i, float(v)) for n, i, v in shares if np.isfinite(v)),
                                 key=lambda item: item[2], default=("", 0, float("nan")))
        if name and share >= 0.5:
            flipped = patch.b_diff + share * (patch.a_diff - patch.b_diff) > 0
            parts.append(f"Putting back {a}'s {_component(name, layer)} alone restores {share:.0%} of {a}'s margin"
                         + (f": {b} then prefers {a_answer} to {b_answer}." if flipped else "."))
        elif name:
            parts.append(f"No single part of {a} restores half of its margin in {b} (the most: "
                         f"{_component(name, layer)}, {share:.0%}): the difference is spread out.")
    return " ".join(parts)


def part_words(part, tokens: tuple[str, ...] | list[str], labels: dict | None = None) -> str:
    """A ``backend.circuit_diff.Suppressor`` (a feature, neuron, error or head) in the page's words."""
    at = f" at {quoted(tokens[part.position])}" if 0 <= part.position < len(tokens) else ""
    if part.kind == "head":
        return f"head {part.layer + 1}.{part.index + 1}"
    if part.kind == "error":
        return f"layer {part.layer + 1}'s MLP{at}, in a way its features cannot express"
    name = (labels or {}).get((part.layer, part.index), "") if part.kind == "feature" else ""
    return f"{part.kind} {part.index} of layer {part.layer + 1}{at}" + (f" ({name})" if name else "")


def finding_sentence(finding, tokens: tuple[str, ...] | list[str] = ()) -> str:
    """One ``backend.suppressed`` finding in words, with what pushes it down when that was measured."""
    text = (f"Inside, after layer {finding.layer}, the model preferred {quoted(finding.token)} (rank "
            f"{finding.rank_inside} there, ahead of {quoted(finding.said)} at rank {finding.said_rank_inside:,}); "
            f"at the output it says {quoted(finding.said)} ({finding.said_prob:.0%}) and {quoted(finding.token)} "
            f"keeps {finding.prob_out:.0%}.")
    if not finding.suppressors:
        return text
    first = finding.suppressors[0]
    text += f" It is pushed down mostly by {part_words(first, tokens)}"
    if first.answer_off is not None:
        text += (f"; switched off, the model says {quoted(first.answer_off)}"
                 + (" again." if first.answer_off == finding.token else "."))
    else:
        text += "."
    return text
