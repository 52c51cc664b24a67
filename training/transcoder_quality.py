"""Measure the bundled transcoders on text held out from their training, and write their card.

Run ``python -m training.transcoder_quality models/xray-demo/transcoders`` (about a minute).
On ``TOKENS`` held-out tokens of the corpus generator (a seed neither the demo model's nor
the transcoders' training used), through the backend as the page reads them:

- **FVU** per layer: the fraction of the MLP output's variance the transcoder does not
  explain (target at most 0.10);
- **dead share** per layer: features that never fire on those tokens (target at most 25%);
- **cross-entropy** of the demo model with every MLP replaced by its transcoder, error
  dropped, against the model's own (target at most 0.10 nats above).

It saves ``quality.json`` and writes the folder's ``README.md`` (the card).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from backend import hooks, load_model
from backend.features import load_transcoders, through
from backend.loading import BUNDLED_MODEL
from backend.sites import Site
from training.cli import folder_argument, save_card, save_quality
from training.train import token_blocks

HELDOUT_SEED = 24680
TOKENS = 49_152  # 384 rows of 128 tokens
TARGETS = {"fvu": 0.10, "dead": 0.25, "ce_increase": 0.10}


def heldout_rows(tokenizer, n_tokens: int = TOKENS, seed: int = HELDOUT_SEED, block: int = 128) -> torch.Tensor:
    """Held-out corpus rows (rows, block) starting at document boundaries."""
    blocks = token_blocks(tokenizer, seed, block)
    return torch.tensor([next(blocks) for _ in range(n_tokens // block)])


def measure(folder: Path | None = None, n_tokens: int = TOKENS) -> dict:
    """FVU and dead share per layer, and the cross-entropy with every MLP replaced."""
    lm = load_model(BUNDLED_MODEL, device="cpu")
    tc = load_transcoders(lm, None if folder is None or Path(folder).resolve() == BUNDLED_MODEL.joinpath(
        "transcoders").resolve() else str(folder))
    rows = heldout_rows(lm.tokenizer, n_tokens)
    n_layers = lm.info.n_layers
    errors, totals = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
    fired = torch.zeros(n_layers, tc.n_features, dtype=torch.bool)
    sums = [torch.zeros(lm.info.d_model, dtype=torch.float64) for _ in range(n_layers)]
    squares = torch.zeros(n_layers, dtype=torch.float64)
    own = replaced = 0.0
    count = 0
    for start in range(0, len(rows), 32):
        batch = rows[start:start + 32]
        store: dict[Site, torch.Tensor] = {}
        reads = [hooks.read(Site(kind, layer), store) for layer in range(n_layers) for kind in ("mlp_in", "mlp_out")]
        with hooks.exclusive(lm):
            logits = hooks.forward(lm, batch, reads).outputs.logits
            swapped = hooks.forward(lm, batch, [action for layer in range(n_layers)
                                                for action in swapped_mlp(tc.layers[layer])]).outputs.logits
        for layer in range(n_layers):
            x = store[Site("mlp_in", layer)].reshape(-1, lm.info.d_model)
            y = store[Site("mlp_out", layer)].reshape(-1, lm.info.d_model).double()
            acts = tc.layers[layer].encode_tensor(x)
            errors[layer] += (tc.layers[layer].decode_tensor(acts, x).double() - y).pow(2).sum()
            fired[layer] |= (acts != 0).any(0)
            sums[layer] += y.sum(0)
            squares[layer] += y.pow(2).sum()
        own += float(_ce(logits, batch)) * batch[:, 1:].numel()
        replaced += float(_ce(swapped, batch)) * batch[:, 1:].numel()
        count += batch[:, 1:].numel()
    n = len(rows) * rows.shape[1]
    totals = squares - torch.stack([s.pow(2).sum() for s in sums]) / n  # sum of squared deviations from the mean
    return {"tokens": n, "fvu": [round(float(v), 5) for v in errors / totals],
            "dead": [round(float(v), 4) for v in 1 - fired.float().mean(1)],
            "ce_model": round(own / count, 4), "ce_replaced": round(replaced / count, 4),
            "ce_increase": round((replaced - own) / count, 4), "n_features": tc.n_features,
            "k": tc.layers[0].k, "targets": TARGETS}


def swapped_mlp(transcoder) -> list[hooks.Action]:
    """The MLP's output replaced by its transcoder's reconstruction of its (replaced model's) own input."""
    return through(transcoder, lambda out, x: transcoder.decode_tensor(transcoder.encode_tensor(x.float()), x.float()))


def _ce(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             ids[:, 1:].reshape(-1))


def card(q: dict, config: dict, log: list[dict]) -> str:
    """The card as markdown, every figure from ``q`` (this run's measurement)."""
    rows = "\n".join(f"| {layer + 1} | {fvu:.3f} | {dead:.1%} |" for layer, (fvu, dead) in
                     enumerate(zip(q["fvu"], q["dead"], strict=True)))
    last = log[-1] if log else {}
    return f"""# Transcoders for the bundled demo model

One TopK skip transcoder per layer of `models/xray-demo`, trained in this project
(`python -m training.transcoders --out models/xray-demo/transcoders`, {config['steps']} steps of
{config['batch_tokens']} tokens, Adam at {config['lr']:g}, seed {config['seed']}). Each reads its MLP's input (the
block's second LayerNorm output) and writes the MLP's output:

    acts = topk_{config['k']}(x @ W_enc + b_enc)      {config['n_features']:,} features, {config['k']} active per token
    out  = acts @ W_dec + b_dec + W_skip @ x          a linear skip path, as circuit-tracer's skip transcoders

Dead features are kept rare by the AuxK loss (Gao et al. 2024, weight {config['aux_weight']:.4g}): the features that
have not fired for {config['dead_after_tokens']:,} tokens reconstruct what the live ones missed. The demo model's twin
(`models/xray-demo-secret`) is read with this same set.

**Layout**: circuit-tracer's per-layer transcoders (`config.yaml` naming `mlp.hook_in` and `mlp.hook_out`,
`layer_{{i}}.safetensors` with W_enc and W_dec as (features, d_model), W_skip applied as W_skip @ x), float16.
`atlas.safetensors` and `atlas.json` hold each feature's top contexts, firing rate, promoted and suppressed
tokens and label (`python -m training.atlas`).

## Measured on {q['tokens']:,} held-out tokens

(`python -m training.transcoder_quality models/xray-demo/transcoders`; text from the corpus generator with a seed
neither the demo model's nor the transcoders' training used)

| layer | fraction of variance unexplained (target <= {q['targets']['fvu']}) | dead: never fire \
(target <= {q['targets']['dead']:.0%}) |
|---:|---:|---:|
{rows}

Cross-entropy of the demo model on the same text: **{q['ce_model']:.3f}** nats per token on its own,
**{q['ce_replaced']:.3f}** with every MLP replaced by its transcoder and the error dropped: **+{q['ce_increase']:.3f}**
(target at most +{q['targets']['ce_increase']}).

Training's last held-out check (step {last.get('step', '?')}): FVU {last.get('fvu', '?')}.
"""


def main() -> None:
    """Measure, print, save, write the card."""
    folder = folder_argument(__doc__)
    torch.set_num_threads(2)
    q = measure(folder)
    save_quality(folder, q)
    config = json.loads((folder / "training_config.json").read_text())
    log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines() if line.strip()]
    save_card(folder, card(q, config, log))
    for layer, (fvu, dead) in enumerate(zip(q["fvu"], q["dead"], strict=True)):
        print(f"layer {layer + 1}: FVU {fvu:.4f} (target <= {TARGETS['fvu']}), dead {dead:.1%} "
              f"(target <= {TARGETS['dead']:.0%})")
    print(f"cross-entropy {q['ce_model']:.4f} -> {q['ce_replaced']:.4f} with every MLP replaced "
          f"(+{q['ce_increase']:.4f}, target <= +{TARGETS['ce_increase']})")


if __name__ == "__main__":
    main()
