"""Edits against independent references: weight surgery on a copy of the model, and hooks written here.

The backend finds each family's attention output projection by structure; the paths below
are the tests' own knowledge of where each family keeps it.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from backend import capture, hooks, load_model
from backend.capture import steering_vector
from backend.edits import (
    Edit,
    EditMismatch,
    EditOutOfRange,
    HeadAblation,
    NeuronAblation,
    PromptSteering,
    ResidPatch,
    Steering,
    check_range,
    number,
)
from backend.hooks import hook_count
from backend.patching import BadAnswer, PromptLengthMismatch, patching_sweep
from backend.sites import Site
from tests.tiny import FAMILY_BY_NAME, build, module_at

ATTN_OUT = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "gpt_neox": "attention.dense",
            "opt": "self_attn.out_proj", "falcon": "self_attention.dense", "gemma2": "self_attn.o_proj",
            "gpt_bigcode": "attn.c_proj"}
PROMPT = "Mia went to the park, then Max said: one two three!"
OTHER = "Mia went to the dog, then Max said: three two one!"


def close(got: np.ndarray, want: np.ndarray, atol: float = 1e-4) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol * (1.0 + float(np.abs(want).max())), rtol=0)


@pytest.fixture(scope="module", params=sorted(ATTN_OUT))
def fam(request, tmp_path_factory):
    """(family, loaded model, a reference copy loaded separately)."""
    family = FAMILY_BY_NAME[request.param]
    folder = build(family, tmp_path_factory.mktemp(family.name))
    lm = load_model(folder, device="cpu")
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return family, lm, ref


def reference_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids.tolist()]), use_cache=False).logits[0].float().numpy()


def columns(module: torch.nn.Module, cols: slice) -> torch.Tensor:
    """The weight entries that read input columns ``cols`` (Conv1D stores (in, out))."""
    return module.weight[:, cols] if isinstance(module, torch.nn.Linear) else module.weight[cols, :]


def add_to_bias(module: torch.nn.Module, constant: torch.Tensor) -> None:
    """module's output += constant at every position (a bias is made where there is none)."""
    if module.bias is None:
        module.bias = torch.nn.Parameter(torch.zeros(constant.shape[0]))
    module.bias += constant


def input_of(model, path: str, ids: np.ndarray) -> torch.Tensor:
    """The input rows (n, width) of the module at ``path`` in a plain run."""
    seen = {}

    def keep(module, args) -> None:  # returns None: a hook's return value would replace the input
        seen.setdefault("x", args[0].detach().reshape(-1, args[0].shape[-1]).clone())
    handle = module_at(model, path).register_forward_pre_hook(keep)
    try:
        reference_logits(model, ids)
    finally:
        handle.remove()
    return seen["x"]


@pytest.mark.parametrize("layer,head", [(0, 1), (2, 3)])
def test_head_ablation_equals_zeroed_columns(fam, layer, head):
    family, lm, ref = fam
    cap = capture(lm, PROMPT, edits=[HeadAblation(layer, head)])
    surgery = copy.deepcopy(ref)
    proj = module_at(module_at(surgery, family.layers_path)[layer], ATTN_OUT[family.name])
    width = columns(proj, slice(None)).shape[1 if isinstance(proj, torch.nn.Linear) else 0] // lm.info.n_heads
    with torch.no_grad():
        columns(proj, slice(head * width, (head + 1) * width)).zero_()
    want = reference_logits(surgery, cap.token_ids)
    close(cap.logits, want)
    assert float(np.abs(want - reference_logits(ref, cap.token_ids)).max()) > 1e-3  # the head mattered
    assert hook_count(lm.model) == 0


def test_head_mean_ablation_equals_bias_surgery(fam):
    family, lm, ref = fam
    layer, head = 1, 2
    cap = capture(lm, PROMPT, edits=[HeadAblation(layer, head, mode="mean")])
    path = f"{family.layers_path}.{layer}.{ATTN_OUT[family.name]}"
    surgery = copy.deepcopy(ref)
    proj = module_at(surgery, path)
    width = columns(proj, slice(None)).shape[1 if isinstance(proj, torch.nn.Linear) else 0] // lm.info.n_heads
    cols = slice(head * width, (head + 1) * width)
    mean = input_of(ref, path, cap.token_ids)[:, cols].mean(0)  # the head's mean output over positions
    with torch.no_grad():
        w = columns(proj, cols)
        constant = (w @ mean) if isinstance(proj, torch.nn.Linear) else (mean @ w)
        add_to_bias(proj, constant)
        w.zero_()
    close(cap.logits, reference_logits(surgery, cap.token_ids))


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_neuron_ablation_equals_weight_surgery(fam, value):
    family, lm, ref = fam
    layer, neuron = 1, 5
    plain = capture(lm, PROMPT)
    cap = capture(lm, PROMPT, edits=[NeuronAblation(layer, neuron, value)])
    assert np.all(cap.neurons[layer, :, neuron] == np.float32(value))
    np.testing.assert_array_equal(cap.neurons[:layer], plain.neurons[:layer])
    surgery = copy.deepcopy(ref)
    proj = module_at(module_at(surgery, family.layers_path)[layer], family.mlp_out)
    with torch.no_grad():
        w = columns(proj, slice(neuron, neuron + 1))
        if value:
            add_to_bias(proj, value * w.reshape(-1))
        w.zero_()
    close(cap.logits, reference_logits(surgery, cap.token_ids))


def test_steering(fam):
    family, lm, ref = fam
    plain = capture(lm, PROMPT)
    rng = np.random.default_rng(0)
    vector = rng.normal(size=lm.info.d_model).astype(np.float32)
    zero = capture(lm, PROMPT, edits=[Steering(1, vector, strength=0.0)])
    np.testing.assert_array_equal(zero.logits, plain.logits)
    np.testing.assert_array_equal(zero.resid, plain.resid)
    steered = capture(lm, PROMPT, edits=[Steering(1, vector, strength=2.0, positions=(0, 3))])
    want = plain.resid[1].copy()
    want[[0, 3]] += 2.0 * vector
    close(steered.resid[1], want, atol=1e-6)
    np.testing.assert_array_equal(steered.resid[0], plain.resid[0])
    assert float(np.abs(steered.logits - plain.logits).max()) > 1e-3
    # at the last resid index only the readout follows: the model's own final norm and head on resid + v
    last = capture(lm, PROMPT, edits=[Steering(lm.info.n_layers, vector)])
    hidden = torch.from_numpy(plain.resid[-1] + vector)
    with torch.no_grad():
        norm = module_at(ref, family.final_norm)
        logits = ref.get_output_embeddings()(module_at(ref, family.after_norm)(norm(hidden))
                                             if family.after_norm else norm(hidden))
        if getattr(ref.config, "final_logit_softcapping", None):
            cap_value = ref.config.final_logit_softcapping
            logits = torch.tanh(logits / cap_value) * cap_value
    close(last.logits, logits.numpy())


def test_patching_every_position_gives_the_source(fam):
    _, lm, _ = fam
    source = capture(lm, OTHER)
    target = capture(lm, PROMPT)
    assert source.n_tokens == target.n_tokens
    for layer in (0, 2, lm.info.n_layers):
        patched = capture(lm, PROMPT, edits=[ResidPatch(layer, None, source)])
        close(patched.logits, source.logits)
        close(patched.resid[layer:], source.resid[layer:])


def test_patching_sweep_against_single_patches_and_hooks(fam):
    family, lm, ref = fam
    clean, corrupt = capture(lm, PROMPT), capture(lm, OTHER)
    answer, foil = int(clean.logits[-1].argmax()), int(corrupt.logits[-1].argmax())
    if answer == foil:
        foil = int(np.argsort(clean.logits[-1])[-2])
    sweep = patching_sweep(lm, PROMPT, OTHER, answer, foil)

    def diff(logits: np.ndarray) -> float:
        return float(logits[-1, answer] - logits[-1, foil])

    clean_d, corrupt_d = diff(clean.logits), diff(corrupt.logits)
    assert sweep.clean_diff == pytest.approx(clean_d, abs=1e-4 * (1 + abs(clean_d)))

    def share(logits: np.ndarray) -> float:
        return (diff(logits) - corrupt_d) / (clean_d - corrupt_d)

    n = clean.n_tokens
    for layer, pos in [(0, 0), (1, n - 1), (2, 3), (lm.info.n_layers, n - 1), (lm.info.n_layers, 2)]:
        single = capture(lm, OTHER, edits=[ResidPatch(layer, pos, clean)])
        assert sweep.resid[layer, pos] == pytest.approx(share(single.logits), abs=1e-3)
    ids = torch.tensor([corrupt.token_ids.tolist()])

    def hooked(path: str, transform, pre: bool) -> np.ndarray:
        module = module_at(ref, path)
        if pre:
            handle = module.register_forward_pre_hook(lambda m, args: (transform(args[0]),))
        else:
            handle = module.register_forward_hook(lambda m, args, out: transform(out))
        try:
            with torch.no_grad():
                return ref(ids, use_cache=False).logits[0].numpy()
        finally:
            handle.remove()

    for layer in (0, 2):
        attn_path = f"{family.layers_path}.{layer}.{ATTN_OUT[family.name]}"
        mlp_path = f"{family.layers_path}.{layer}.{family.mlp_out}"
        clean_in = input_of(ref, attn_path, clean.token_ids)
        width = clean_in.shape[-1] // lm.info.n_heads
        for head in (0, lm.info.n_heads - 1):
            cols = slice(head * width, (head + 1) * width)

            def put_head(x, cols=cols, clean_in=clean_in):
                x = x.clone()
                x[0, :, cols] = clean_in[:, cols]
                return x
            assert sweep.heads[layer, head] == pytest.approx(share(hooked(attn_path, put_head, True)), abs=1e-3)
        for path, kind in ((attn_path, "attn"), (mlp_path, "mlp")):
            seen = {}

            def keep(module, args, out, seen=seen) -> None:  # None: a returned value would replace the output
                seen.setdefault("y", out.clone())
            handle = module_at(ref, path).register_forward_hook(keep)
            try:
                reference_logits(ref, clean.token_ids)
            finally:
                handle.remove()
            pos = n - 2

            def put(out, pos=pos, clean_out=seen["y"]):
                rows = out.clone().reshape(-1, n, out.shape[-1])  # OPT's MLP works on (batch * n, width)
                rows[0, pos] = clean_out.reshape(-1, n, out.shape[-1])[0, pos]
                return rows.reshape(out.shape)
            assert sweep.get(kind)[layer, pos] == pytest.approx(share(hooked(path, put, False)), abs=1e-3)
    assert hook_count(lm.model) == 0


def test_bad_edits_are_refused_before_any_work(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["llama"], tmp_path), device="cpu")
    other = load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path / "gpt2"), device="cpu")
    n = capture(lm, PROMPT).n_tokens
    cases = [
        (HeadAblation(3, 0), EditOutOfRange, "layer 3"), (HeadAblation(0, 4), EditOutOfRange, "head 4"),
        (HeadAblation(0, 0, mode="half"), EditMismatch, "half"),
        (NeuronAblation(0, 48), EditOutOfRange, "neuron 48"), (NeuronAblation(-1, 0), EditOutOfRange, "layer -1"),
        (Steering(0, np.zeros(31)), EditMismatch, "31 values"),
        (Steering(4, np.zeros(32)), EditOutOfRange, "layer 4"),
        (Steering(0, np.zeros(32), positions=(n,)), EditOutOfRange, f"position {n}"),
        (ResidPatch(1, 0, capture(other, PROMPT)), EditMismatch, "captured on"),
        (ResidPatch(1, 0, capture(lm, "one two")), EditMismatch, "tokens"),
        (ResidPatch(1, n, capture(lm, OTHER)), EditOutOfRange, f"position {n}"),
        (PromptSteering(9, "a", "b"), EditOutOfRange, "layer 9"),
    ]
    for edit, error, words in cases:
        with pytest.raises(error, match=words):
            capture(lm, PROMPT, edits=[edit])
        assert hook_count(lm.model) == 0
    with pytest.raises(PromptLengthMismatch, match=r"clean prompt has \d+ tokens and the corrupt one has \d+"):
        patching_sweep(lm, PROMPT, "one two", 1, 2)
    with pytest.raises(BadAnswer):
        patching_sweep(lm, PROMPT, OTHER, 3, 3)
    with pytest.raises(BadAnswer, match="outside the vocabulary"):
        patching_sweep(lm, PROMPT, OTHER, 3, 10**6)


def test_failing_edit_leaves_no_hook(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path), device="cpu")
    before = lm.model.config._attn_implementation
    plain = capture(lm, PROMPT).logits  # taken before the failure, so a hook left behind would show

    def boom(module, args):
        raise RuntimeError("boom")

    handle = lm.anatomy.mlp_out[2].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture(lm, PROMPT, edits=[HeadAblation(0, 1), NeuronAblation(1, 2), Steering(1, np.ones(32))])
    finally:
        handle.remove()
    assert hook_count(lm.model) == 0
    assert lm.model.config._attn_implementation == before
    np.testing.assert_array_equal(capture(lm, PROMPT).logits, plain)


def test_prompt_steering_and_vector(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path), device="cpu")
    a, b = capture(lm, PROMPT), capture(lm, "one two")
    vector = steering_vector(lm, PROMPT, "one two", 2)
    close(vector, a.resid[2].mean(0) - b.resid[2].mean(0), atol=1e-6)
    via_prompts = capture(lm, OTHER, edits=[PromptSteering(2, PROMPT, "one two", 3.0)])
    direct = capture(lm, OTHER, edits=[Steering(2, vector, 3.0)])
    np.testing.assert_array_equal(via_prompts.logits, direct.logits)
    assert Steering(2, vector, 3.0) == Steering(2, vector.copy(), 3.0)
    assert hash(Steering(2, vector, 3.0)) == hash(Steering(2, vector.copy(), 3.0))
    assert Steering(2, vector, 3.0) != Steering(2, vector, 2.0)


def test_edits_never_leak_between_threads(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["llama"], tmp_path), device="cpu")
    source = capture(lm, OTHER)
    jobs = [(), (HeadAblation(1, 2),), (NeuronAblation(2, 7, 3.0),), (Steering(1, np.ones(32), 0.5),),
            (ResidPatch(2, None, source),)]
    solo = {i: capture(lm, PROMPT, edits=edits).logits for i, edits in enumerate(jobs)}
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int, round_: int) -> None:
        try:
            results[i, round_] = capture(lm, PROMPT, edits=jobs[i]).logits
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i, r)) for r in range(4) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (i, _), logits in results.items():
        np.testing.assert_array_equal(logits, solo[i])
    assert len({float(v[-1].sum()) for v in solo.values()}) == len(jobs)  # every edit changed something
    assert hook_count(lm.model) == 0


@dataclass(frozen=True)
class ResidScale(Edit):
    """The README's example of a new kind of edit, written out here."""

    kind: ClassVar[str] = "scale-test"
    layer: int
    factor: float

    def check(self, lm, n_tokens):
        check_range("layer", self.layer, lm.info.n_layers, self)

    def actions(self, lm):
        return [hooks.replace(Site("resid", self.layer), lambda x: x * self.factor)]

    def label(self):
        return f"residual after layer {self.layer} times {self.factor:g}"

    def link(self):
        return [self.kind, self.layer, self.factor]

    @classmethod
    def from_link(cls, args):
        return cls(number(args[0], int), number(args[1]))


def test_a_new_edit_kind_is_one_class_and_a_new_metric_one_more(tmp_path):
    """The README's two examples: they work everywhere with nothing else changed."""
    from backend.metrics import Probability
    from backend.run import edits_from_json, edits_to_json

    lm = load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path), device="cpu")
    plain = capture(lm, PROMPT)
    scaled = capture(lm, PROMPT, edits=[ResidScale(2, 0.5)])
    close(scaled.resid[2], 0.5 * plain.resid[2], atol=1e-6)
    assert edits_from_json(edits_to_json((ResidScale(2, 0.5),))) == (ResidScale(2, 0.5),)
    with pytest.raises(EditOutOfRange):
        capture(lm, PROMPT, edits=[ResidScale(9, 0.5)])
    # a probability metric in the sweep: each cell is the share of the way from the corrupt probability to the clean
    answer = int(plain.logits[-1].argmax())
    foil = int(np.argsort(plain.logits[-1])[-2])
    sweep = patching_sweep(lm, PROMPT, OTHER, answer, foil, kinds=("resid",), metric=Probability(answer))
    clean, corrupt = capture(lm, PROMPT), capture(lm, OTHER)

    def prob(logits: np.ndarray) -> float:
        return float(torch.from_numpy(logits[-1]).softmax(-1)[answer])

    for layer, pos in [(1, 3), (lm.info.n_layers, clean.n_tokens - 1)]:
        single = capture(lm, OTHER, edits=[ResidPatch(layer, pos, clean)])
        want = (prob(single.logits) - prob(corrupt.logits)) / (prob(clean.logits) - prob(corrupt.logits))
        assert sweep.resid[layer, pos] == pytest.approx(want, abs=1e-4)
