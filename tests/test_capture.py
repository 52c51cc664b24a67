"""Hooks, threads, limits, token text and the lens summary, on tiny random models."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch

from backend import (
    CaptureTooLarge,
    EmptyPrompt,
    PromptTooLong,
    capture,
    capture_bytes,
    lens_logits,
    lens_summary,
    load_model,
    token_trajectory,
)
from backend import lens as lens_module
from backend.hooks import hook_count
from backend.readout import readout
from tests.tiny import FAMILY_BY_NAME, build

HOSTILE = [
    "Emoji 👩‍👩‍👧 and 😀!", "CJK 北京是中国的首都", "Right-to-left مرحبا بالعالم שלום",
    "zero\u200bwidth\u200djoiner and \u202eoverride", "control \x00\x07\x1b[31m chars\ttab\nnewline",
    "</script><img src=x onerror=alert(1)>", "<b>bold</b> &amp; \"quotes\" 'single'",
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(build(FAMILY_BY_NAME["llama"], tmp_path_factory.mktemp("llama")), device="cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path_factory.mktemp("gpt2")), device="cpu")


def test_no_hook_remains_after_success(llama):
    seen = []
    handle = llama.anatomy.layers[0].register_forward_hook(lambda *a: seen.append(hook_count(llama.model)))
    try:
        capture(llama, "one two three")
    finally:
        handle.remove()  # the test's own hook must not stay on the shared model either
    assert seen[0] == 3 * llama.info.n_layers + 1  # the counter does see the capture's hooks
    assert hook_count(llama.model) == 0


def test_no_hook_remains_after_error_mid_forward(llama, monkeypatch):
    layer = llama.anatomy.layers[1]

    def broken(*args, **kwargs):
        raise RuntimeError("boom inside layer 1")

    monkeypatch.setattr(layer, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        capture(llama, "one two three")
    assert hook_count(llama.model) == 0
    assert llama.model.config._attn_implementation == "sdpa"
    assert not llama.lock.locked()
    monkeypatch.undo()
    assert capture(llama, "one two three").n_tokens > 0


def test_concurrent_captures_get_their_own_activations(llama):
    prompts = [f"{word} " * (i + 2) for i, word in enumerate(["cat", "dog", "park", "Paris", "one", "blue"])]
    alone = {p: capture(llama, p) for p in prompts}
    results: dict[str, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(prompts))

    def work(prompt: str) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[prompt] = capture(llama, prompt)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for p in prompts:
        got, want = results[p], alone[p]
        assert got.tokens == want.tokens
        for field in ("attention", "resid", "neurons", "logits"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t  \n"])
def test_empty_prompt(llama, prompt):
    with pytest.raises(EmptyPrompt):
        capture(llama, prompt)


def test_prompt_too_long_for_setting(llama):
    with pytest.raises(PromptTooLong) as info:
        capture(llama, "word " * 40, max_tokens=10)
    assert info.value.limit == 10 and info.value.n_tokens > 10
    assert f"{info.value.n_tokens} tokens, limit 10" in str(info.value)
    assert "PromptTooLong" not in str(info.value) and "raise the limit" in str(info.value)


def test_prompt_too_long_for_context(llama):
    with pytest.raises(PromptTooLong) as info:
        capture(llama, "word " * 300, max_tokens=10_000)
    assert info.value.limit == 128
    assert "raise the limit" not in str(info.value) and "cannot read more" in str(info.value)
    assert "context" in str(info.value)


def test_capture_too_large(llama):
    n = len(capture(llama, "one two three four").tokens)
    with pytest.raises(CaptureTooLarge) as info:
        capture(llama, "one two three four", memory_budget=capture_bytes(llama, n) - 1)
    assert info.value.needed_bytes == capture_bytes(llama, n)
    real = capture(llama, "one two three four")
    assert real.nbytes - real.token_ids.nbytes == capture_bytes(llama, n)


@pytest.mark.parametrize("prompt", HOSTILE)
def test_text_of_every_kind_passes_intact(gpt2, prompt):
    cap = capture(gpt2, prompt)
    assert gpt2.tokenizer.decode(cap.token_ids, skip_special_tokens=True) == prompt
    assert len(cap.tokens) == len(cap.token_ids)
    # every character, seen by the tokenizer or not: partial characters show as <0xHH>, their bytes
    body = b"".join(bytes.fromhex(piece[3:5]) if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) else piece.encode()
                    for token in cap.tokens[1:] for piece in re.split(r"(<0x[0-9A-F]{2}>)", token) if piece)
    assert body.decode("utf-8") == prompt


def test_partial_characters_show_their_bytes(gpt2):
    cap = capture(gpt2, "北京")
    body = "".join(cap.tokens[1:])
    # each token is either whole characters or shows its bytes; bytes rebuild the text
    rebuilt = bytearray()
    i = 0
    while i < len(body):
        if body.startswith("<0x", i):
            rebuilt.append(int(body[i + 3:i + 5], 16))
            i += 6
        else:
            rebuilt.extend(body[i].encode())
            i += 1
    assert rebuilt.decode() == "北京"


def brute_force(lm, cap, layer):
    return torch.from_numpy(lens_logits(lm, cap, layer)).log_softmax(-1)


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "opt", "cohere"])
def test_lens_summary_matches_brute_force(family, gpt2, tmp_path, monkeypatch):
    # gpt2 and opt (its project_out first) take the fast in-place readout; soft-capping
    # (gemma2) and a logit scale (cohere) take the general one
    lm = gpt2 if family == "gpt2" else load_model(build(FAMILY_BY_NAME[family], tmp_path), device="cpu")
    cap = capture(lm, "The capital of France is Paris, and the capital of Spain is")
    monkeypatch.setattr(lens_module, "CHUNK_VALUES", cap.logits.shape[1] * 5)  # 5 positions a chunk
    monkeypatch.setattr(lens_module, "BLOCK_VALUES", cap.logits.shape[1] * 2)  # in blocks of 2
    summary = lens_summary(lm, cap, k=4)
    final = torch.from_numpy(cap.logits).log_softmax(-1)
    target = final.argmax(-1)
    for layer in range(cap.n_layers + 1):
        logp = brute_force(lm, cap, layer)
        p = logp.exp()
        values, ids = logp.sort(-1, descending=True)
        np.testing.assert_array_equal(summary.top_ids[layer], ids[:, :4].numpy())
        np.testing.assert_allclose(summary.top_probs[layer], values[:, :4].exp().numpy(), atol=1e-6)
        np.testing.assert_allclose(summary.entropy[layer], -(p * logp).sum(-1).numpy(), atol=1e-5)
        kl = (final.exp() * (final - logp)).sum(-1)
        np.testing.assert_allclose(summary.kl_to_final[layer], kl.numpy(), atol=1e-5)
        rank = (ids == target[:, None]).float().argmax(-1) + 1
        np.testing.assert_array_equal(summary.target_ranks[layer], rank.numpy())
        np.testing.assert_allclose(summary.target_probs[layer],
                                   p.gather(-1, target[:, None])[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(summary.kl_to_final[-1], 0.0, atol=1e-5)
    for token_id, text in zip(summary.top_ids.flat, summary.top_tokens.flat, strict=True):
        assert text == (f"[id {token_id}]" if token_id >= len(lm.tokenizer) else token_text(lm.tokenizer, token_id))


def gpt2_byte_table() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, inverted: written out here, not taken from the backend."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_text(tokenizer, token_id: int) -> str:
    """What a byte-level BPE token holds: its bytes as text, any that are not whole characters as <0xHH>."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece in tokenizer.all_special_tokens:
        return piece
    raw = bytes(gpt2_byte_table()[ch] for ch in piece)
    out, i = [], 0
    while i < len(raw):  # the longest valid UTF-8 character at i, else one byte shown as hex
        for width in (4, 3, 2, 1):
            try:
                out.append(raw[i:i + width].decode("utf-8"))
                i += width
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(f"<0x{raw[i]:02X}>")
            i += 1
    return "".join(out)


def test_every_token_reads_as_its_bytes(gpt2):
    from backend.tokens import token_strings

    ids = list(range(len(gpt2.tokenizer)))
    strings = token_strings(gpt2.tokenizer, ids)
    assert [s for s in strings if "<0x" in s]  # the tokenizer has partial characters: the hard cases are here
    assert [s for s in strings if not s.isascii() and "<0x" not in s]  # and whole ones
    assert strings == [token_text(gpt2.tokenizer, i) for i in ids]


def test_in_place_readout_equals_the_modules(gpt2, tmp_path):
    cap = capture(gpt2, "one two three four")
    buffer = torch.full((cap.n_tokens, cap.logits.shape[1]), float("nan"))
    scratch = torch.full((cap.logits.shape[1], cap.n_tokens), float("nan"))
    for layer in range(cap.n_layers + 1):
        reference = readout(gpt2, cap.resid[layer])
        fast = readout(gpt2, cap.resid[layer], out=buffer)
        assert fast.data_ptr() == buffer.data_ptr()  # written in place
        torch.testing.assert_close(fast, reference, rtol=2e-6, atol=1e-6)  # a few float32 ulps
        buffer.fill_(float("nan"))
        fast = readout(gpt2, cap.resid[layer], out=buffer, scratch=scratch)  # weight @ rows.T, transposed
        assert fast.data_ptr() == buffer.data_ptr()
        torch.testing.assert_close(fast, reference, rtol=2e-6, atol=1e-6)  # a few float32 ulps
    capped = load_model(build(FAMILY_BY_NAME["gemma2"], tmp_path), device="cpu")
    cap = capture(capped, "one two three four")
    buffer = torch.empty((cap.n_tokens, cap.logits.shape[1]))
    general = readout(capped, cap.resid[-1], out=buffer)  # soft-capping: the model's own path
    assert general.data_ptr() != buffer.data_ptr()
    np.testing.assert_allclose(general.numpy(), cap.logits, atol=1e-5)


def test_token_trajectory_matches_brute_force(gpt2):
    cap = capture(gpt2, "The capital of France is")
    token = 77
    traj = token_trajectory(gpt2, cap, token, positions=[-1, 2])
    assert traj.positions.tolist() == [cap.n_tokens - 1, 2]
    for layer in range(cap.n_layers + 1):
        logp = brute_force(gpt2, cap, layer)[[cap.n_tokens - 1, 2]]
        np.testing.assert_allclose(traj.probs[layer], logp[:, token].exp().numpy(), atol=1e-6)
        rank = (logp > logp[:, token:token + 1]).sum(-1) + 1
        np.testing.assert_array_equal(traj.ranks[layer], rank.numpy())


def test_lens_rejects_bad_layer_and_position(gpt2):
    cap = capture(gpt2, "one two")
    with pytest.raises(IndexError):
        lens_logits(gpt2, cap, cap.n_layers + 1)
    with pytest.raises(IndexError):
        lens_logits(gpt2, cap, 0, [cap.n_tokens])


def test_capture_holds_no_model_reference(gpt2):
    import pickle

    cap = capture(gpt2, "one two three")
    data = pickle.dumps(cap)
    assert len(data) < 2 * cap.nbytes + 100_000
    assert b"torch" not in data


def test_a_run_nobody_waits_for_stops_between_blocks(llama):
    from backend import Cancelled, lens_summary

    asked = []

    def stop_at_second_block() -> bool:
        asked.append(1)
        return len(asked) >= 2

    with pytest.raises(Cancelled):
        capture(llama, "one two three", should_stop=stop_at_second_block)
    assert len(asked) == 2  # asked before block 0, stopped before block 1: the rest never ran
    assert hook_count(llama.model) == 0 and not llama.lock.locked()
    cap = capture(llama, "one two three", should_stop=lambda: False)  # the model serves the next run as usual
    np.testing.assert_array_equal(cap.logits, capture(llama, "one two three").logits)
    with pytest.raises(Cancelled):
        lens_summary(llama, cap, should_stop=lambda: True)
