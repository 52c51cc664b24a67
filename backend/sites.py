"""Names for every place in a model that the backend reads or writes: one small frozen type.

Capture, edits, the patching sweep, cross-model patching, features and attribution graphs
all say *where* with a ``Site``; ``backend.hooks`` is the one module that turns a site into
a PyTorch hook. Layers count from 0, as in ``Capture``.

============  ============================================================================
kind          what it is (value shape inside one forward: (rows, n, width) unless said)
============  ============================================================================
resid         the residual stream at a resid index ``layer`` (0: the embeddings entering
              block 0; i: leaving block i - 1, which is also what block i reads)
attn_out      block ``layer``'s attention output (its output projection's output), d_model
heads         block ``layer``'s heads side by side (the output projection's input)
head          head ``index`` of block ``layer``: its slice of ``heads``
pattern       block ``layer``'s attention pattern, (rows, heads, n, n); read only
mlp_in        block ``layer``'s MLP input, as the MLP reads it (the block's norm output)
mlp_pre       block ``layer``'s MLP pre-activations: the up projection's output, d_mlp
neurons       block ``layer``'s MLP neurons: the input of its output projection, d_mlp
mlp_out       block ``layer``'s MLP output: what its output projection writes, d_model
norm          norm ``index`` of block ``layer`` (``layer`` None: the final norm); its output
readout       the final norm and unembedding: the logits (not hooked; see backend.readout)
============  ============================================================================

A site is spelled ``kind.layer[.index]`` ("resid.3", "head.2.1", "norm.final") on the page,
in links and in files. ``from_hook_name`` also reads the names SAELens and
TransformerLens use (``blocks.3.hook_resid_post``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = {
    "resid": "the residual stream",
    "attn_out": "attention output",
    "heads": "heads' outputs",
    "head": "one head's output",
    "pattern": "attention pattern",
    "mlp_in": "MLP input",
    "mlp_pre": "MLP pre-activations",
    "neurons": "MLP neurons",
    "mlp_out": "MLP output",
    "norm": "a norm's output",
    "readout": "the readout (final norm and unembedding)",
}
PER_BLOCK = frozenset(KINDS) - {"resid", "norm", "readout"}


@dataclass(frozen=True, order=True)
class Site:
    """One place in the model: a ``kind`` of ``KINDS``, a ``layer`` and, for heads and norms, an ``index``."""

    kind: str
    layer: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.kind!r} is not a site kind; use one of {', '.join(KINDS)}")
        needs_layer = self.kind in PER_BLOCK or self.kind == "resid"
        if needs_layer and (self.layer is None or int(self.layer) < 0):
            raise ValueError(f"a {self.kind} site needs a layer (0 or more); got {self.layer!r}")
        if (self.kind in ("head", "norm")) != (self.index is not None):
            raise ValueError(f"only head and norm sites take an index; got {self!r}")
        if self.kind == "readout" and self.layer is not None:
            raise ValueError("the readout site takes no layer")

    def __str__(self) -> str:
        if self.kind == "readout":
            return "readout"
        if self.kind == "norm" and self.layer is None:
            return "norm.final"
        return ".".join(str(part) for part in (self.kind, self.layer, self.index) if part is not None)

    @classmethod
    def parse(cls, text: str) -> Site:
        """The site ``str(site)`` spells; ``ValueError`` names what could not be read."""
        parts = text.strip().split(".")
        if parts == ["readout"]:
            return cls("readout")
        if parts == ["norm", "final"]:
            return cls("norm", None, 0)
        if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"{text[:40]!r} is not a site (e.g. 'resid.3', 'head.2.1')")
        return cls(parts[0], *(int(p) for p in parts[1:]))


def resid(layer: int) -> Site:
    """The residual stream at resid index ``layer``."""
    return Site("resid", layer)


EMBED = Site("resid", 0)  # the embeddings: what block 0 reads
READOUT = Site("readout")

_BLOCK_HOOKS = {"hook_resid_pre": ("resid", 0), "hook_resid_post": ("resid", 1), "hook_resid_mid": (None, 0),
                "hook_attn_out": ("attn_out", 0), "hook_mlp_out": ("mlp_out", 0), "attn.hook_z": ("heads", 0),
                "attn.hook_pattern": ("pattern", 0), "ln2.hook_normalized": ("mlp_in", 0),
                "mlp.hook_in": ("mlp_in", 0), "mlp.hook_pre": ("mlp_pre", 0),
                "mlp.hook_post": ("neurons", 0), "mlp.hook_out": ("mlp_out", 0)}
_MODULE_NAMES = {"mlp": "mlp_out", "mlp.down_proj": "mlp_out", "mlp.c_proj": "mlp_out", "self_attn": "attn_out",
                 "attn": "attn_out", "": "resid_post"}


def from_hook_name(name: str) -> Site:
    """The site a TransformerLens/SAELens hook name or a transformers module path names.

    ``blocks.3.hook_resid_post`` is ``resid.4`` (leaving block 3); ``blocks.3.hook_resid_pre``
    is ``resid.3``; ``blocks.2.ln2.hook_normalized`` and ``blocks.2.mlp.hook_in`` are
    ``mlp_in.2``; ``hook_embed`` style names of the embeddings are ``resid.0``. Module paths
    as sparsify writes them (``layers.3.mlp``, ``transformer.h.3``) name a block's MLP output or
    its output. ``ValueError`` for a name that names no site: ``hook_resid_mid`` and
    TransformerLens's ``hook_mlp_in`` (both the stream between attention and the MLP's norm,
    which no module's input or output holds in every family).
    """
    text = name.strip()
    if text in ("hook_embed", "embed", "embeddings", "blocks.0.hook_resid_pre"):
        return EMBED
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", text)
    if match:
        layer, hook = int(match.group(1)), match.group(2)
        kind, offset = _BLOCK_HOOKS.get(hook, (None, 0))
        if kind is None:
            raise ValueError(f"the hook {name!r} names no place Model X-ray can hook")
        return Site(kind, layer + offset)
    match = re.fullmatch(r"(?:[\w.]*?\.)?(?:layers|h|blocks|layer)\.(\d+)(?:\.(.*))?", text)
    if match:
        layer, rest = int(match.group(1)), match.group(2) or ""
        kind = _MODULE_NAMES.get(rest)
        if kind == "resid_post":
            return Site("resid", layer + 1)
        if kind is not None:
            return Site(kind, layer)
    raise ValueError(f"the hook {name!r} names no place Model X-ray can hook")
