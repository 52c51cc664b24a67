"""One forward pass with hooks: everything the views draw, as numpy arrays on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend import hooks
from backend.buffers import POOL
from backend.edits import Edit, PromptSteering, check_edits, edit_actions
from backend.errors import CaptureTooLarge, EmptyPrompt, PromptTooLong, UnsupportedModel
from backend.features import SAE, FeatureActivations, Transcoders, feature_reads
from backend.loading import LoadedModel
from backend.readout import readout_columns
from backend.sites import Site
from backend.tokens import token_strings

DEFAULT_MAX_TOKENS = 512
DEFAULT_MEMORY_BUDGET = 3 * 2**30  # bytes of captured float32 arrays
CHECKED_LOGITS = 240  # vocabulary entries, spread evenly, on which the lens must match the model's logits


@dataclass(frozen=True, eq=False)
class Capture:
    """What one prompt did inside one model. Plain data: no reference to the model."""

    prompt: str
    model_name: str
    tokens: list[str]  # (n,) readable token strings
    token_ids: np.ndarray  # (n,) int64
    attention: np.ndarray  # (n_layers, n_heads, n, n) float32; query heads, rows sum to 1
    resid: np.ndarray  # (n_layers + 1, n, d_model) float32; [0] enters block 0, [i] leaves block i-1
    neurons: np.ndarray  # (n_layers, n, d_mlp) float32; input of each MLP's output projection
    logits: np.ndarray  # (n, vocab) float32; the model's own output
    edits: tuple = ()  # the backend.edits applied during the pass, as given
    features: FeatureActivations | None = None  # when captured with a dictionary: its activations, sparse

    def __post_init__(self) -> None:
        n = len(self.tokens)
        n_layers = self.attention.shape[0]
        checks = {
            "token_ids": (self.token_ids.shape, (n,)),
            "attention": (self.attention.shape[2:], (n, n)),
            "resid": (self.resid.shape[:2], (n_layers + 1, n)),
            "neurons": (self.neurons.shape[:2], (n_layers, n)),
            "logits": (self.logits.shape[:1], (n,)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"Capture.{name} has shape {got}, expected {want}")

    @property
    def n_tokens(self) -> int:
        """Number of tokens in the prompt, special tokens included."""
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return int(self.attention.shape[0])

    @property
    def n_heads(self) -> int:
        """Number of query heads per layer."""
        return int(self.attention.shape[1])

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        arrays = sum(a.nbytes for a in (self.token_ids, self.attention, self.resid, self.neurons, self.logits))
        return arrays + (self.features.nbytes if self.features is not None else 0)


def capture_bytes(lm: LoadedModel, n_tokens: int) -> int:
    """Bytes of float32 arrays a capture of ``n_tokens`` tokens returns."""
    info = lm.info
    per_value = 4
    return per_value * (info.n_layers * info.n_heads * n_tokens * n_tokens
                        + (info.n_layers + 1) * n_tokens * info.d_model
                        + info.n_layers * n_tokens * info.d_mlp + n_tokens * info.vocab_size)


def tokenize(lm: LoadedModel, prompt: str, max_tokens: int) -> list[int]:
    """The prompt's ids as the model's tokenizer makes them, or a typed error."""
    if not prompt or not prompt.strip():
        raise EmptyPrompt()
    ids = lm.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    context = lm.info.context_length
    limit, reason = max_tokens, "the maximum-tokens setting"
    if context is not None and context <= limit:
        limit, reason = context, "the model's context length"
    if len(ids) > limit:
        raise PromptTooLong(len(ids), limit, reason, can_raise=reason != "the model's context length")
    return ids


class _Buffers:
    """The capture's float32 arrays, allocated once; hooks copy each activation straight in.

    Copying into place saves stacking per-layer copies afterwards (about 20 ms at 256
    tokens on GPT-2 small) and keeps one copy of each activation in memory, not two. The
    arrays come from ``backend.buffers.POOL``: memory of captures nobody holds any more,
    which costs no page faults to fill again.
    """

    def __init__(self, lm: LoadedModel, n: int) -> None:
        info = lm.info
        self.n = n
        self.resid = POOL.empty((info.n_layers + 1, n, info.d_model))
        self.neurons = POOL.empty((info.n_layers, n, info.d_mlp))
        self.attention = POOL.empty((info.n_layers, info.n_heads, n, n))
        self.seen: set[tuple[str, int]] = set()

    def saver(self, name: str, index: int, what: str) -> Callable[[torch.Tensor], None]:
        """A read-only action function copying a (1, n, width) value into ``self.<name>[index]``."""
        array = getattr(self, name)

        def save(value: torch.Tensor) -> None:
            if value.shape[1:] != array.shape[1:]:
                raise UnsupportedModel(f"{what} has shape {tuple(value.shape)}; expected (1, {array.shape[1]}, "
                                       f"{array.shape[2]}).")
            torch.from_numpy(array[index]).copy_(value.detach()[0])
            self.seen.add((name, index))
        return save

    def save_attention(self, layer: int) -> Callable[[torch.Tensor], None]:
        """A read-only action function copying one layer's attention weights (1, heads, n, n) into place."""
        def save(weights: torch.Tensor) -> None:
            _, n_heads, n, _ = self.attention.shape
            if weights.shape[-3:] != (n_heads, n, n):
                raise UnsupportedModel(f"Attention weights have shape {tuple(weights.shape)}; "
                                       f"expected (1, {n_heads}, {n}, {n}).")
            torch.from_numpy(self.attention[layer]).copy_(weights.detach().reshape(n_heads, n, n))
            self.seen.add(("attention", layer))
        return save

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        """Read the residual stream at every resid index, every block's neurons and attention pattern."""
        actions = [hooks.Action(Site("resid", i), self.saver("resid", i, f"the residual at resid index {i}"))
                   for i in range(lm.info.n_layers + 1)]
        for i in range(lm.info.n_layers):
            actions.append(hooks.Action(Site("neurons", i),
                                        self.saver("neurons", i, f"the MLP hidden activation of block {i}")))
            if lm.anatomy.attention and lm.anatomy.attention[i] is not None:
                actions.append(hooks.Action(Site("pattern", i), self.save_attention(i)))
        return actions

    def attention_missing(self) -> bool:
        """Whether some layer's attention weights were not seen."""
        return any(("attention", i) not in self.seen for i in range(len(self.attention)))

    def missing(self) -> list[str]:
        """The activations no hook saw."""
        return [f"{name} {i}" for name in ("resid", "neurons") for i in range(len(getattr(self, name)))
                if (name, i) not in self.seen]


def _attentions_from_outputs(outputs: object, buffers: _Buffers) -> None:
    attentions = getattr(outputs, "attentions", None)
    if not attentions or len(attentions) != len(buffers.attention) or any(a is None for a in attentions):
        raise UnsupportedModel("The model returned no attention weights for every layer, even "
                               "with eager attention.")
    for layer, a in enumerate(attentions):
        buffers.save_attention(layer)(a)


def run_forward(lm: LoadedModel, ids: list[int], edits: tuple[Edit, ...] = (),
                should_stop: Callable[[], bool] | None = None,
                observe: Sequence[hooks.Action] = ()) -> tuple[object, _Buffers]:
    """The hooked forward pass, under the model's lock; edits' actions run before the capture's.

    Each attention module's weights are copied as soon as it returns them, while they are
    still in the CPU's cache, and then freed: asking the model to return them all
    (``output_attentions``) would keep every layer's weights alive to the end, in fresh
    memory, and cost a second, cold copy. A family whose attention module does not hand
    its weights back that way is run with ``output_attentions`` instead.
    """
    buffers = _Buffers(lm, len(ids))
    input_ids = torch.tensor([ids], device=lm.input_device)
    actions = [*edit_actions(lm, edits), *buffers.actions(lm), *observe]
    with hooks.exclusive(lm, attention="eager"):
        outputs = hooks.forward(lm, input_ids, actions, should_stop=should_stop).outputs
        if buffers.attention_missing():
            buffers.seen.clear()
            outputs = hooks.forward(lm, input_ids, actions, should_stop=should_stop, output_attentions=True).outputs
            _attentions_from_outputs(outputs, buffers)
    return outputs, buffers


def steering_vector(lm: LoadedModel, prompt_a: str, prompt_b: str, layer: int, *,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
    """Mean residual of ``prompt_a`` minus that of ``prompt_b`` at resid index ``layer``: (d_model,).

    Means are over every position of each prompt, so the two may differ in length.
    """
    PromptSteering(layer, prompt_a, prompt_b).check(lm, 0)
    return PromptSteering(layer, prompt_a, prompt_b).resolved(_mean_resid(lm, max_tokens)).vector.copy()


def _mean_resid(lm: LoadedModel, max_tokens: int) -> Callable[[str, int], np.ndarray]:
    """What resolving an edit may ask: a prompt's mean residual at one resid index."""
    def mean(prompt: str, layer: int) -> np.ndarray:
        return capture(lm, prompt, max_tokens=max_tokens).resid[layer].mean(0)
    return mean


def capture(lm: LoadedModel, prompt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS,
            memory_budget: int = DEFAULT_MEMORY_BUDGET, edits: tuple[Edit, ...] | list[Edit] = (),
            should_stop: Callable[[], bool] | None = None, observe: Sequence[hooks.Action] = (),
            features: Transcoders | SAE | None = None) -> Capture:
    """Run ``prompt`` through the model once and return everything the views draw.

    ``edits`` (see ``backend.edits``) apply during that one pass; the capture shows the
    edited run. Raises ``EmptyPrompt``, ``PromptTooLong``, ``CaptureTooLarge`` or an
    ``EditError`` before any work, and ``UnsupportedModel`` if the model's activations
    cannot be read or do not add up. ``should_stop``, asked before every block, raises
    ``Cancelled`` when it says nobody waits for the run (a closed tab, a newer prompt).
    ``observe`` adds read-only ``backend.hooks.Action``s, run after the capture's own and removed
    with them: another module's record of the same pass. ``features`` (``backend.features``
    transcoders or an SAE) adds their activations on this run, encoded from the same pass.
    """
    edits = tuple(edits)
    ids = tokenize(lm, prompt, max_tokens)
    n = len(ids)
    needed = capture_bytes(lm, n)
    if needed > memory_budget:
        raise CaptureTooLarge(n, needed, memory_budget)
    check_edits(lm, edits, n)
    mean_resid = _mean_resid(lm, max_tokens)
    resolved = tuple(edit.resolved(mean_resid) for edit in edits)
    reads, encoded = feature_reads(features) if features is not None else ([], None)
    outputs, buffers = run_forward(lm, ids, resolved, should_stop, (*observe, *reads))
    missing = buffers.missing()
    if missing:
        raise UnsupportedModel(f"The hooks saw no activation for {missing}: the model skipped "
                               "the modules found for them.")
    logits = outputs.logits.detach().reshape(n, -1).to("cpu", torch.float32).numpy()
    result = Capture(
        prompt=prompt, model_name=lm.info.name, tokens=token_strings(lm.tokenizer, ids),
        token_ids=np.asarray(ids, dtype=np.int64), attention=buffers.attention,
        resid=buffers.resid, neurons=buffers.neurons, logits=logits, edits=edits,
        features=encoded() if encoded is not None else None,
    )
    _check_consistency(lm, result)
    return result


def _check_consistency(lm: LoadedModel, cap: Capture) -> None:
    """Refuse to return numbers that do not add up, rather than show them.

    The lens on the last residual must give back the model's own logits (else the final
    norm or unembedding was not found right), and no token may attend to a later one.
    """
    if not np.isfinite(cap.logits).all():
        raise UnsupportedModel("The model's output holds NaN or infinite numbers on this prompt (damaged weights, "
                               "or an overflow at this precision: try float32), so there is nothing true to show.")
    last = cap.n_tokens - 1
    own_row = torch.from_numpy(cap.logits[last])
    # the top guesses and a spread of the rest: a wrong norm or head shows in any of them
    ids = torch.cat([own_row.topk(min(16, own_row.numel())).indices,
                     torch.linspace(0, own_row.numel() - 1, CHECKED_LOGITS).long()])
    with torch.inference_mode():
        lens = readout_columns(lm, torch.from_numpy(cap.resid[cap.n_layers, [last]]), ids).cpu().numpy()[0]
    own = own_row[ids].numpy()
    tolerance = 1e-3 if lm.info.dtype == "float32" else 5e-2
    error = float(np.abs(lens - own).max())
    if error > tolerance * (1.0 + float(np.abs(own).max())):
        raise UnsupportedModel(
            f"The logit lens on the last layer differs from the model's logits by {error:.3g}: "
            "this family does something after its last layer that Model X-ray does not know.")
    # the largest weight of any head at each (query, key) first: one pass, then an (n, n) triangle
    peak = torch.from_numpy(cap.attention).amax(dim=(0, 1)) if cap.n_layers else torch.zeros(1, 1)
    if cap.n_tokens > 1 and float(torch.triu(peak, diagonal=1).max()) > 1e-4:
        raise UnsupportedModel("Tokens attend to later tokens: this is not a decoder-only "
                               "(causal) language model.")
