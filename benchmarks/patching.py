"""The activation-patching sweep, batched, against the same patched runs done one at a time.

GPT-2-small shape (random weights, demo tokenizer), 16 tokens: the residual sweep is
13 x 16 = 208 patched runs. "One at a time" is each run as a user would write it with
hooks: a plain forward of the corrupt prompt with one residual position replaced, then the
logit difference from the model's own logits. Both are timed in one process, interleaved.
Then the whole sweep (residual, attention, MLP, heads) on the bundled demo model.

    python benchmarks/patching.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend import capture, load_model  # noqa: E402
from backend.patching import patching_sweep  # noqa: E402
from benchmarks.capture_overhead import build, prompt_of  # noqa: E402


def one_at_a_time(lm, clean_prompt: str, corrupt_prompt: str, answer: int, foil: int) -> np.ndarray:
    """Every residual cell as its own patched forward (batch 1, full logits)."""
    clean = capture(lm, clean_prompt)
    ids = torch.tensor([lm.tokenizer(corrupt_prompt)["input_ids"]])
    blocks = lm.anatomy.layers
    out = np.zeros((lm.info.n_layers + 1, ids.shape[1]), np.float32)
    for layer in range(lm.info.n_layers + 1):
        for pos in range(ids.shape[1]):
            value = torch.from_numpy(clean.resid[layer, pos])

            def put(hidden: torch.Tensor, pos: int = pos, value: torch.Tensor = value) -> torch.Tensor:
                hidden = hidden.clone()
                hidden[0, pos] = value
                return hidden

            if layer == 0:
                handle = blocks[0].register_forward_pre_hook(
                    lambda m, args, kwargs: ((put(args[0]), *args[1:]), kwargs) if args else
                    (args, {**kwargs, "hidden_states": put(kwargs["hidden_states"])}), with_kwargs=True)
            else:
                handle = blocks[layer - 1].register_forward_hook(
                    lambda m, args, o: (put(o[0]), *o[1:]) if isinstance(o, tuple) else put(o))
            try:
                with torch.inference_mode():
                    logits = lm.model(ids, use_cache=False).logits[0, -1]
            finally:
                handle.remove()
            out[layer, pos] = float(logits[answer] - logits[foil])
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def gpt2_small(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        lm = load_model(tmp, device="cpu")
        clean = prompt_of(lm.tokenizer, 16)
        words = clean.split()
        corrupt = " ".join(words[:-1] + [words[-2]])  # the last word changed
        if len(lm.tokenizer(corrupt)["input_ids"]) != 16:
            corrupt = clean.replace(words[-1], words[0], 1)
        assert len(lm.tokenizer(corrupt)["input_ids"]) == 16
        c = capture(lm, clean)
        answer = int(c.logits[-1].argmax())
        foil = int(np.argsort(c.logits[-1])[-2])
        times = {"batched": [], "one at a time": []}
        sweep = patching_sweep(lm, clean, corrupt, answer, foil, kinds=("resid",))  # warm up
        for _ in range(rounds):
            t, sweep = timed(lambda: patching_sweep(lm, clean, corrupt, answer, foil, kinds=("resid",)))
            times["batched"].append(t)
            t, single = timed(lambda: one_at_a_time(lm, clean, corrupt, answer, foil))
            times["one at a time"].append(t)
        cells = (single - sweep.corrupt_diff) / (sweep.clean_diff - sweep.corrupt_diff)
        error = float(np.nanmax(np.abs(cells - sweep.resid)))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"GPT-2-small shape, 16 tokens, residual sweep of {sweep.resid.size} patched runs, "
              f"CPU x{torch.get_num_threads()}, medians of {rounds} interleaved rounds:")
        print(f"  batched sweep        {med['batched'] * 1000:8.0f} ms")
        print(f"  one at a time        {med['one at a time'] * 1000:8.0f} ms")
        print(f"  batched / one at a time  {med['batched'] / med['one at a time']:.2f}x  (target <= 0.35x); "
              f"largest cell difference {error:.1e}")


def demo(rounds: int) -> None:
    lm = load_model()
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    answer = int(capture(lm, clean).logits[-1].argmax())
    foil = int(capture(lm, corrupt).logits[-1].argmax())
    patching_sweep(lm, clean, corrupt, answer, foil)
    times = [timed(lambda: patching_sweep(lm, clean, corrupt, answer, foil))[0] for _ in range(rounds * 3)]
    print(f"Demo model, {clean!r} / {corrupt!r}: full sweep (residual, attention, MLP, heads) "
          f"{statistics.median(times) * 1000:.0f} ms (median of {len(times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    gpt2_small(args.rounds)
    demo(args.rounds)


if __name__ == "__main__":
    main()
