"""Capture and lens-summary time over a plain forward, and a capture's peak memory.

A GPT-2-small-shaped model with random weights (12 layers, 12 heads, d_model 768, vocab
50,257), 256 tokens, on the CPU with its default attention. The runs are interleaved in
one process so machine noise hits them alike; the figures are medians and their ratios.
Memory is measured in a fresh process per prompt length (peak RSS growth during capture).

    python benchmarks/capture_overhead.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from backend import capture, lens_summary, load_model  # noqa: E402
from training import corpus  # noqa: E402


class PeakRss:
    """Peak resident memory growth while the ``with`` block runs, sampled every ``every`` seconds (Linux)."""

    def __init__(self, every: float = 0.001) -> None:
        self.every, self.growth_mib = every, 0.0

    @staticmethod
    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self.rss()
        self.running = True
        self.sampler = threading.Thread(target=self._sample)
        self.sampler.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __exit__(self, *_exc) -> None:
        self.running = False
        self.sampler.join()
        self.growth_mib = (self.peak - self.before) / 2**20


def in_child(code: str) -> dict:
    """Run ``code`` in a fresh Python (its memory its own) and read the JSON its last line prints."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def build(folder: Path) -> None:
    """GPT-2 small's shape, random weights, the demo tokenizer."""
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(ROOT / "models" / "xray-demo").save_pretrained(folder)


def prompt_of(tokenizer, n_tokens: int, seed: int = 7) -> str:
    """Generated text that tokenizes to exactly ``n_tokens`` tokens (BOS included); ``seed``: which text."""
    words = " ".join(corpus.corpus_text(seed, 400)).split()
    text = ""
    for word in words:
        candidate = f"{text} {word}" if text else word
        if len(tokenizer(candidate)["input_ids"]) > n_tokens:
            break
        text = candidate
    while len(tokenizer(text)["input_ids"]) < n_tokens:
        text += " ."
    return text


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(folder: Path, rounds: int) -> dict:
    lm = load_model(folder, device="cpu")
    prompt = prompt_of(lm.tokenizer, 256)
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    assert ids.shape[1] == 256, ids.shape

    def forward() -> None:
        with torch.inference_mode():
            lm.model(ids)

    def capture_and_lens() -> None:
        lens_summary(lm, capture(lm, prompt, max_tokens=1024))

    for fn in (forward, lambda: capture(lm, prompt), capture_and_lens):  # warm up
        fn()
    times: dict[str, list[float]] = {"forward": [], "capture": [], "capture + lens summary": []}
    for _ in range(rounds):
        times["forward"].append(timed(forward))
        times["capture"].append(timed(lambda: capture(lm, prompt)))
        times["capture + lens summary"].append(timed(capture_and_lens))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"attention": lm.model.config._attn_implementation, "medians_s": medians,
            "capture_over_forward": medians["capture"] / medians["forward"],
            "capture_lens_over_forward": medians["capture + lens summary"] / medians["forward"]}


def memory(folder: Path, n_tokens: int) -> dict:
    """Run in a child process: peak RSS growth during capture (sampled) and the capture's own arrays."""
    code = f"""
import json
import torch
from backend import capture, load_model
from benchmarks.capture_overhead import PeakRss, prompt_of
lm = load_model({str(folder)!r}, device="cpu")
prompt = prompt_of(lm.tokenizer, {n_tokens})
with PeakRss(every=0.001) as peak:
    cap = capture(lm, prompt, max_tokens=4096)
print(json.dumps({{"tokens": cap.n_tokens, "arrays_mib": cap.nbytes / 2**20, "peak_rss_growth_mib": peak.growth_mib}}))
"""
    return in_child(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder)
        result = speed(folder, args.rounds)
        print(f"GPT-2-small shape, random weights, 256 tokens, CPU x{torch.get_num_threads()}, "
              f"default attention ({result['attention']}), medians of {args.rounds} interleaved rounds:")
        for name, value in result["medians_s"].items():
            print(f"  {name:<24} {value * 1000:8.1f} ms")
        print(f"  capture / forward                {result['capture_over_forward']:.2f}x  (target <= 1.05x)")
        print(f"  capture + lens summary / forward {result['capture_lens_over_forward']:.2f}x  (target <= 6x)")
        for n in (256, 1024):
            m = memory(folder, n)
            print(f"  capture at {m['tokens']:>4} tokens: arrays {m['arrays_mib']:7.1f} MiB, "
                  f"peak RSS growth {m['peak_rss_growth_mib']:7.1f} MiB")


if __name__ == "__main__":
    main()
