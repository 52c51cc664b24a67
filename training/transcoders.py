"""Train one TopK skip transcoder per layer of the demo model, saved in circuit-tracer's per-layer layout.

Run ``python -m training.transcoders --out models/xray-demo/transcoders`` (about 20
minutes on a 2-core CPU). Each transcoder reads its MLP's input (the block's norm output)
and writes its output:

    acts = topk_k(x @ W_enc + b_enc)            2,048 features, 16 active per token
    out  = acts @ W_dec + b_dec + W_skip @ x     the skip path is linear, as in circuit-tracer's skip transcoders

The loss is the fraction of variance unexplained (FVU) of the MLP's output, plus the AuxK
loss of Gao et al. (2024) against dead features: the features that have not fired for
``dead_after_tokens`` tokens reconstruct what the live ones left over (weight
``aux_weight``), and every feature starts on a real token (its encoder on one training
input, its decoder on that token's MLP output). Plain TopK left 44-66% of 2,048 features
dead in a probe. Decoder rows stay at unit norm.

The data is the demo model's own corpus stream (``training.corpus``, this config's seed),
packed into rows that start at a document boundary, run through the demo model once; held-
out text uses another seed. Seeded; a tqdm bar; every ``eval_every`` steps a JSON line in
``training_log.jsonl``: FVU per layer on held-out tokens and the share of features that
fired on them. The folder gets ``config.yaml`` and ``layer_{i}.safetensors`` (float16).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from tqdm import tqdm

from backend import hooks, load_model
from backend.loading import BUNDLED_MODEL, LoadedModel
from backend.sites import Site
from training.cli import config_main
from training.train import token_blocks


@dataclass(frozen=True)
class TranscoderConfig:
    """Every knob of a training run; saved beside the transcoders."""

    seed: int = 4321
    heldout_seed: int = 98765
    n_features: int = 2048
    k: int = 16
    train_tokens: int = 393_216  # 3,072 rows of 128 tokens
    heldout_tokens: int = 16_384
    block_size: int = 128
    batch_tokens: int = 1024
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 100
    min_lr_share: float = 0.1
    clip: float = 1.0
    aux_k: int = 256
    aux_weight: float = 0.125
    dead_after_tokens: int = 16_384
    eval_every: int = 250
    threads: int = 2


def activations(lm: LoadedModel, seed: int, n_tokens: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's MLP input and output on ``n_tokens`` tokens of the corpus: (layers, n_tokens, d_model) each."""
    rows = n_tokens // block_size
    blocks = token_blocks(lm.tokenizer, seed, block_size)
    ids = torch.tensor([next(blocks) for _ in range(rows)])
    n_layers, d = lm.info.n_layers, lm.info.d_model
    inputs = torch.empty(n_layers, rows * block_size, d)
    outputs = torch.empty(n_layers, rows * block_size, d)
    for start in tqdm(range(0, rows, 32), desc="activations", mininterval=10):
        batch = ids[start:start + 32]
        store: dict[Site, torch.Tensor] = {}
        reads = [hooks.read(Site(kind, layer), store) for layer in range(n_layers) for kind in ("mlp_in", "mlp_out")]
        with hooks.exclusive(lm):
            hooks.forward(lm, batch, reads, stop_after=n_layers - 1)
        span = slice(start * block_size, (start + len(batch)) * block_size)
        for layer in range(n_layers):
            inputs[layer, span] = store[Site("mlp_in", layer)].reshape(-1, d)
            outputs[layer, span] = store[Site("mlp_out", layer)].reshape(-1, d)
    return inputs, outputs


class TopKTranscoders(torch.nn.Module):
    """All layers' transcoders, trained side by side (each layer's parameters its own)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_features: int, k: int, generator: torch.Generator) -> None:
        """Features that start on real tokens.

        Each encoder column points at one training input (centred), its decoder row at that
        token's MLP output (centred). Every feature then fires on at least the neighbourhood of
        its token at the start; random directions left 60-65% of layers 1 and 4's features dead
        for good in a probe, AuxK loss or not.
        """
        super().__init__()
        self.k = k
        picks = torch.randint(0, x.shape[1], (n_features,), generator=generator)
        x_mean, y_mean = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
        encoder = x[:, picks] - x_mean  # (layers, n_features, d)
        encoder /= encoder.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        decoder = y[:, picks] - y_mean
        decoder /= decoder.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        self.W_enc = torch.nn.Parameter(encoder.transpose(1, 2).contiguous())
        self.b_enc = torch.nn.Parameter(-(x_mean @ self.W_enc.detach())[:, 0])  # pre-activation of the mean: 0
        self.W_dec = torch.nn.Parameter(decoder.contiguous())
        self.b_dec = torch.nn.Parameter(y_mean[:, 0].clone())
        self.W_skip = torch.nn.Parameter(torch.zeros(x.shape[0], x.shape[2], x.shape[2]))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """(layers, batch, d) -> (layers, batch, n_features) pre-activations."""
        return torch.baddbmm(self.b_enc[:, None], x, self.W_enc)

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The decoder rows ``indices`` (layers, batch, k) weighted by ``values``, summed: (layers, batch, d).

        A weighted bag of rows per token: gathering the rows as one (layers, batch, k, d)
        tensor would take a gigabyte for the AuxK loss's 256 dead features, and a dense product
        a thousand times the work.
        """
        return torch.stack([torch.nn.functional.embedding_bag(indices[layer], self.W_dec[layer],
                                                              per_sample_weights=values[layer], mode="sum")
                            for layer in range(indices.shape[0])])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, pre-activations, top-k indices) of inputs (layers, batch, d)."""
        pre = self.pre(x)
        top = pre.topk(self.k, dim=-1)
        out = self.decode(top.values, top.indices) + self.b_dec[:, None] + torch.bmm(x, self.W_skip.transpose(1, 2))
        return out, pre, top.indices

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Decoder rows back to unit norm (the encoder's scale absorbs it)."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def fvu(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(layers,) fraction of variance unexplained of each layer's batch."""
    return (out - y).pow(2).sum((1, 2)) / (y - y.mean(1, keepdim=True)).pow(2).sum((1, 2)).clamp_min(1e-12)


def aux_loss(model: TopKTranscoders, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor,
             aux_k: int) -> torch.Tensor:
    """AuxK: the top ``aux_k`` dead features reconstruct what the live ones missed ((layers,) FVU of that)."""
    if not dead.any():
        return pre.new_zeros(pre.shape[0])
    masked = torch.where(dead[:, None, :], pre, torch.full_like(pre, -torch.inf))
    k = min(aux_k, int(dead.sum(-1).max()))
    top = masked.topk(k, dim=-1)
    values = torch.where(torch.isfinite(top.values), top.values, torch.zeros_like(top.values))
    guess = model.decode(values, top.indices)
    return fvu(guess, residual) * (dead.float().sum(-1) > 0)


def learning_rate(step: int, cfg: TranscoderConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_share`` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_share + (1 - cfg.min_lr_share) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: TopKTranscoders, x: torch.Tensor, y: torch.Tensor) -> dict:
    """FVU per layer and the share of features that fired, on held-out tokens."""
    fired = torch.zeros(model.W_enc.shape[0], model.W_enc.shape[2], dtype=torch.bool)
    errors = torch.zeros(x.shape[0])
    totals = torch.zeros(x.shape[0])
    for start in range(0, x.shape[1], 4096):
        xs, ys = x[:, start:start + 4096], y[:, start:start + 4096]
        out, _, idx = model(xs)
        errors += (out - ys).pow(2).sum((1, 2))
        fired.scatter_(1, idx.reshape(idx.shape[0], -1), True)
    totals = (y - y.mean(1, keepdim=True)).pow(2).sum((1, 2))
    return {"fvu": [round(float(v), 5) for v in errors / totals],
            "alive": [round(float(v), 4) for v in fired.float().mean(1)]}


def train(cfg: TranscoderConfig, out: Path) -> TopKTranscoders:
    """Collect activations, train, and save the set in circuit-tracer's layout to ``out``."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(BUNDLED_MODEL, device="cpu")
    x, y = activations(lm, cfg.seed, cfg.train_tokens, cfg.block_size)
    hx, hy = activations(lm, cfg.heldout_seed, cfg.heldout_tokens, cfg.block_size)
    n_layers, n_tokens, _ = x.shape
    generator = torch.Generator().manual_seed(cfg.seed)
    model = TopKTranscoders(x, y, cfg.n_features, cfg.k, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(n_layers, cfg.n_features, dtype=torch.long)  # in tokens seen
    dead_after = cfg.dead_after_tokens
    log = out / "training_log.jsonl"
    log.write_text("")
    bar = tqdm(range(cfg.steps), desc="transcoders", mininterval=10)
    for step in bar:
        seen = (step + 1) * cfg.batch_tokens
        rows = torch.randint(0, n_tokens, (cfg.batch_tokens,), generator=generator)
        xs, ys = x[:, rows], y[:, rows]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        recon, pre, idx = model(xs)
        main = fvu(recon, ys)
        last_fired.scatter_(1, idx.reshape(n_layers, -1), seen)
        dead = (seen - last_fired) > dead_after
        aux = aux_loss(model, pre, (ys - recon).detach(), dead, cfg.aux_k)
        loss = (main + cfg.aux_weight * aux).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)  # 2e-3 unclipped diverged at step 400 in a probe
        optimizer.step()
        model.normalise_decoder()
        bar.set_postfix(fvu=f"{float(main.detach().mean()):.4f}", dead=f"{float(dead.float().mean()):.2f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record = {"step": step + 1, "train_fvu": [round(float(v), 5) for v in main],
                      "dead_in_training": [round(float(v), 4) for v in dead.float().mean(1)],
                      **evaluate(model, hx, hy)}
            with log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.write(json.dumps(record))
    save(model, cfg, out)
    return model


def save(model: TopKTranscoders, cfg: TranscoderConfig, out: Path) -> None:
    """circuit-tracer's per-layer layout: config.yaml and layer_{i}.safetensors, weights in float16."""
    with torch.no_grad():
        for layer in range(model.W_enc.shape[0]):
            save_file({"W_enc": model.W_enc[layer].T.contiguous().half(),  # (n_features, d_model), as circuit-tracer
                       "W_dec": model.W_dec[layer].contiguous().half(),  # (n_features, d_model)
                       "b_enc": model.b_enc[layer].contiguous().half(),
                       "b_dec": model.b_dec[layer].contiguous().half(),
                       "W_skip": model.W_skip[layer].contiguous().half()},  # applied as W_skip @ x
                      str(out / f"layer_{layer}.safetensors"))
    config = {"model_kind": "transcoder_set", "model_name": "xray-demo", "feature_input_hook": "mlp.hook_in",
              "feature_output_hook": "mlp.hook_out", "activation": "topk", "k": cfg.k}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")


def main() -> None:
    """Command-line entry point; every field of ``TranscoderConfig`` is a flag."""
    config_main(__doc__, TranscoderConfig, train)


if __name__ == "__main__":
    main()
