"""Attribution graphs against a frozen linear model written here, per family, from the model's own weights.

The reference: attention patterns and norm scales taken from the real run; the residual
stream built from its parts (embeddings, attention outputs through the value and output
matrices, MLP outputs); MLPs cut at their nodes. A source's direct effect on a target is its
output vector pushed through that linear model, with every bias and every other node at zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import capture, load_model
from backend.features import load_transcoders
from backend.graph import GraphTooLarge, attribute
from backend.hooks import hook_count
from tests.tiny import FAMILY_BY_NAME, build, module_at

PROMPT = "Mia went to the park with Max"


class Frozen:
    """One family's linear model on one prompt: norms' scales and attention patterns held at the run's values."""

    def __init__(self, lm, family: str, ids: list[int]) -> None:
        self.lm, self.family, self.model = lm, family, lm.model
        self.blocks = module_at(self.model, FAMILY_BY_NAME[family].layers_path)
        self.n, self.d = len(ids), lm.info.d_model
        self.heads = lm.info.n_heads
        self.patterns, self.inputs = [], {}
        self._record(torch.tensor([ids]))

    def _norm_modules(self, block):
        if self.family == "gpt2":
            return block.ln_1, block.ln_2
        return block.input_layernorm, block.post_attention_layernorm

    def _record(self, ids: torch.Tensor) -> None:
        """The real run's norm inputs and attention patterns (eager attention returns them)."""
        handles = []
        modules = {}
        for layer, block in enumerate(self.blocks):
            for name, module in zip(("n1", "n2"), self._norm_modules(block), strict=True):
                modules[(layer, name)] = module
        final = module_at(self.model, FAMILY_BY_NAME[self.family].final_norm)
        modules[("final", "n")] = final
        for key, module in modules.items():
            handles.append(module.register_forward_pre_hook(
                lambda m, args, key=key: self.inputs.__setitem__(key, args[0][0].detach().double()) and None))
        self.u_real = {}
        for layer in range(len(self.blocks)):
            handles.append(self._up_module(layer).register_forward_hook(
                lambda m, args, out, layer=layer: self.u_real.__setitem__(layer, out[0].detach().double()) and None))
        try:
            self.model.set_attn_implementation("eager")
            with torch.no_grad():
                out = self.model(ids, output_attentions=True)
        finally:
            for handle in handles:
                handle.remove()
        self.patterns = [a[0].double() for a in out.attentions]  # (heads, n, n)
        self.modules = modules

    def norm(self, key, x: torch.Tensor) -> torch.Tensor:
        """The norm at ``key`` applied to x with its scale held at the real input's (no bias)."""
        module, real = self.modules[key], self.inputs[key]
        weight = module.weight.double()
        if isinstance(module, torch.nn.LayerNorm):
            centred = real - real.mean(-1, keepdim=True)
            scale = 1 / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + module.eps)
            return (x - x.mean(-1, keepdim=True)) * scale * weight
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
        scale = 1 / torch.sqrt(real.pow(2).mean(-1, keepdim=True) + eps)
        return x * scale * weight

    def attention(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        """The attention block's output for normed input y (n, d), patterns held, no biases."""
        block = self.blocks[layer]
        hd = self.d // self.heads
        if self.family == "gpt2":
            w = block.attn.c_attn.weight.double()  # Conv1D (d, 3d): q, k, v side by side
            v = y @ w[:, 2 * self.d:]
            o = block.attn.c_proj.weight.double()  # (d, d) as (in, out)
            per_head = v.reshape(self.n, self.heads, hd)
            z = torch.einsum("hqk,khe->qhe", self.patterns[layer], per_head).reshape(self.n, self.d)
            return z @ o
        if self.family == "llama":
            kv = self.lm.info.n_kv_heads
            v = (y @ block.self_attn.v_proj.weight.double().T).reshape(self.n, kv, hd)
            v = v.repeat_interleave(self.heads // kv, dim=1)
            z = torch.einsum("hqk,khe->qhe", self.patterns[layer], v).reshape(self.n, self.d)
            return z @ block.self_attn.o_proj.weight.double().T
        qkv = (y @ block.attention.query_key_value.weight.double().T).reshape(self.n, self.heads, 3 * hd)
        v = qkv[..., 2 * hd:]  # GPT-NeoX interleaves q, k, v per head
        z = torch.einsum("hqk,khe->qhe", self.patterns[layer], v).reshape(self.n, self.d)
        return z @ block.attention.dense.weight.double().T

    def up(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        """The MLP's up projection (the neurons' u) of normed input y, no bias."""
        block = self.blocks[layer]
        if self.family == "gpt2":
            return y @ block.mlp.c_fc.weight.double()
        if self.family == "llama":
            return y @ block.mlp.up_proj.weight.double().T
        return y @ block.mlp.dense_h_to_4h.weight.double().T

    @torch.no_grad()
    def push(self, layer: int, position: int, vector: torch.Tensor, target) -> float:
        """A vector written into the stream after block ``layer``'s MLP (layer -1: the embeddings) at ``position``,
        pushed through the frozen model with MLPs cut, read as ``target``'s pre-activation's linear part."""
        resid = torch.zeros(self.n, self.d, dtype=torch.float64)
        resid[position] = vector.double()
        kind, t_layer, t_position, index = target
        last = t_layer if kind != "logit" else len(self.blocks)
        for block in range(layer + 1, last + 1 if kind != "logit" else last):
            attn = self.attention(block, self.norm((block, "n1"), resid))
            if self.family == "gpt_neox":  # parallel: the MLP reads the block's input, not the attention's output
                if block == t_layer and kind == "neuron":
                    return self._neuron_pre(block, self.norm((block, "n2"), resid), t_position, index)
                resid = resid + attn
                continue
            resid = resid + attn
            if block == t_layer and kind == "neuron":
                return self._neuron_pre(block, self.norm((block, "n2"), resid), t_position, index)
        if kind == "logit":
            final = self.norm(("final", "n"), resid)[t_position]
            weight = self.lm.anatomy.unembed.weight.double()
            return float(final @ (weight[index] - weight.mean(0)))
        raise AssertionError("the source comes after its target")

    def _neuron_pre(self, layer: int, y: torch.Tensor, position: int, index: int) -> float:
        return float(self.up(layer, y)[position, index] * self.gate(layer, position, index))

    def gate(self, layer: int, position: int, index: int) -> float:
        """The neuron's held gate g = a / u at the real run (u the real up projection's output)."""
        u = float(self.u_real[layer][position, index])
        a = float(self.cap.neurons[layer, position, index])
        return a / u if abs(u) > 1e-6 else 0.0

    def _up_module(self, layer: int):
        block = self.blocks[layer]
        return {"gpt2": lambda: block.mlp.c_fc, "llama": lambda: block.mlp.up_proj,
                "gpt_neox": lambda: block.mlp.dense_h_to_4h}[self.family]()

    def out_vector(self, layer: int, index: int) -> torch.Tensor:
        """Column ``index`` of the MLP's output projection: what one unit of the neuron writes."""
        block = self.blocks[layer]
        if self.family == "gpt2":
            return block.mlp.c_proj.weight[index].double()
        if self.family == "llama":
            return block.mlp.down_proj.weight[:, index].double()
        return block.mlp.dense_4h_to_h.weight[:, index].double()


@pytest.fixture(scope="module", params=["gpt2", "llama", "gpt_neox"])
def setup(request, tmp_path_factory):
    family = request.param
    lm = load_model(build(FAMILY_BY_NAME[family], tmp_path_factory.mktemp(family)), device="cpu")
    graph = attribute(lm, PROMPT, max_nodes=None, node_threshold=1.0, edge_threshold=1.0)
    frozen = Frozen(lm, family, list(graph.token_ids))
    frozen.cap = capture(lm, PROMPT)
    return family, lm, graph, frozen


def source_vector(frozen: Frozen, graph, node) -> tuple[int, torch.Tensor]:
    """(the layer after which it writes, the vector it writes) for a source node."""
    if node.kind == "embedding":
        return -1, torch.from_numpy(frozen.cap.resid[0, node.position]).double()
    return node.layer, node.activation * frozen.out_vector(node.layer, node.index)


def test_every_edge_is_the_source_pushed_through_the_frozen_linear_model(setup):
    family, lm, graph, frozen = setup
    assert hook_count(lm.model) == 0
    rng = np.random.default_rng(0)
    targets = [i for i, n in enumerate(graph.nodes) if n.kind in ("neuron", "logit")]
    sources = [i for i, n in enumerate(graph.nodes) if n.kind in ("neuron", "embedding")]
    checked = 0
    for i in rng.choice(targets, size=min(12, len(targets)), replace=False).tolist() + targets[-1:]:
        target = graph.nodes[i]
        candidates = [j for j in sources if graph.nodes[j].layer < target.layer
                      and graph.nodes[j].position <= target.position]
        for j in rng.choice(candidates, size=min(6, len(candidates)), replace=False).tolist() if candidates else []:
            layer, vector = source_vector(frozen, graph, graph.nodes[j])
            want = frozen.push(layer, graph.nodes[j].position, vector,
                               (target.kind, target.layer, target.position, target.index))
            got = float(graph.adjacency[i, j])
            assert got == pytest.approx(want, abs=1e-4 + 1e-3 * abs(want)), (family, target, graph.nodes[j])
            checked += 1
    assert checked >= 30
    later = [(i, j) for i in targets for j in sources if graph.nodes[j].kind == "neuron"
             and graph.nodes[j].layer >= graph.nodes[i].layer and graph.nodes[i].kind == "neuron"]
    assert all(graph.adjacency[i, j] == 0 for i, j in later[:500])  # no edge from a later or the same layer


def test_in_the_neuron_basis_the_error_nodes_are_zero_and_the_logits_are_the_models(setup):
    family, lm, graph, frozen = setup
    errors = [n for n in graph.nodes if n.kind == "error"]
    assert errors and max(n.activation for n in errors) < 1e-5
    probs = torch.from_numpy(frozen.cap.logits[-1]).softmax(-1)
    for token, p in zip(graph.target_ids, graph.target_probs, strict=True):
        assert p == pytest.approx(float(probs[token]), abs=1e-5)
    assert sum(graph.target_probs) >= 0.95 or len(graph.target_ids) == 10


def test_a_nodes_incoming_edges_plus_its_bias_terms_are_its_pre_activation(setup):
    """Every source at its value gives the pre-activation; every source at zero gives the bias terms."""
    family, lm, graph, frozen = setup
    logit = next(i for i, n in enumerate(graph.nodes) if n.kind == "logit")
    node = graph.nodes[logit]
    vocab = torch.from_numpy(frozen.cap.logits[-1]).double()
    actual = float(vocab[node.index] - vocab.mean())  # the model's own logit minus the mean logit
    zero = bias_terms(frozen, (node.kind, node.layer, node.position, node.index))
    assert float(graph.adjacency[logit].sum()) + zero == pytest.approx(actual, abs=1e-3 * (1 + abs(actual)))


@torch.no_grad()
def bias_terms(frozen: Frozen, target) -> float:
    """The target's pre-activation with every node at zero: the biases alone, through the frozen model."""
    n, d = frozen.n, frozen.d
    resid = torch.zeros(n, d, dtype=torch.float64)
    modules = frozen.modules
    for layer in range(len(frozen.blocks)):
        norm1 = modules[(layer, "n1")]
        y1 = frozen.norm((layer, "n1"), resid) + _bias(norm1)
        attn = frozen.attention(layer, y1) + _attention_biases(frozen, layer)
        resid = resid + attn + _mlp_out_bias(frozen, layer)
    final = frozen.norm(("final", "n"), resid) + _bias(modules[("final", "n")])
    weight = frozen.lm.anatomy.unembed.weight.double()
    bias = frozen.lm.anatomy.unembed.bias
    logits = final[target[2]] @ weight.T + (bias.double() if bias is not None else 0)
    return float(logits[target[3]] - logits.mean())


def _bias(module) -> torch.Tensor | float:
    return module.bias.double() if getattr(module, "bias", None) is not None else 0.0


def _attention_biases(frozen: Frozen, layer: int) -> torch.Tensor:
    """What the attention writes from its biases alone: the value bias read (rows of a pattern sum to 1), then out."""
    block = frozen.blocks[layer]
    d, hd = frozen.d, frozen.d // frozen.heads
    if frozen.family == "gpt2":
        v_bias = block.attn.c_attn.bias.double()[2 * d:]
        return v_bias @ block.attn.c_proj.weight.double() + block.attn.c_proj.bias.double()
    if frozen.family == "llama":
        attn = block.self_attn
        width = attn.v_proj.out_features
        v_bias = attn.v_proj.bias.double() if attn.v_proj.bias is not None else torch.zeros(width, dtype=torch.float64)
        v = v_bias.reshape(frozen.lm.info.n_kv_heads, hd).repeat_interleave(
            frozen.heads // frozen.lm.info.n_kv_heads, dim=0).reshape(-1)
        out = attn.o_proj.bias.double() if attn.o_proj.bias is not None else 0
        return v @ attn.o_proj.weight.double().T + out
    qkv_bias = block.attention.query_key_value.bias.double().reshape(frozen.heads, 3 * hd)[:, 2 * hd:].reshape(-1)
    return qkv_bias @ block.attention.dense.weight.double().T + block.attention.dense.bias.double()


def _mlp_out_bias(frozen: Frozen, layer: int) -> torch.Tensor | float:
    block = frozen.blocks[layer]
    module = {"gpt2": lambda: block.mlp.c_proj, "llama": lambda: block.mlp.down_proj,
              "gpt_neox": lambda: block.mlp.dense_4h_to_h}[frozen.family]()
    return module.bias.double() if module.bias is not None else 0.0


def test_the_demo_models_transcoder_graph_adds_up(tmp_path):
    """On the demo model: the error nodes hold what the features miss, and a logit's edges plus biases are its value."""
    lm = load_model()
    tc = load_transcoders(lm)
    graph = attribute(lm, "The capital of France is", transcoders=tc, node_threshold=1.0, edge_threshold=1.0,
                      max_nodes=None)
    cap = capture(lm, "The capital of France is", features=tc)
    features = [n for n in graph.nodes if n.kind == "feature"]
    assert len(features) == sum(len(layer.values) for layer in cap.features.layers)  # every active feature
    for node in features[:: max(1, len(features) // 40)]:
        want = float(cap.features.layers[node.layer].column(node.index)[node.position])
        assert node.activation == pytest.approx(want, abs=1e-4)
    assert graph.target_tokens[0] == " Paris"
    assert 0 < graph.replacement_score <= 1 and 0 < graph.completeness_score <= 1
    pruned = graph.prune(0.8, 0.98)
    assert len(pruned.nodes) < len(graph.nodes) and {n.kind for n in pruned.nodes} >= {"embedding", "logit"}
    json_graph = pruned.to_json()
    ids = [n["node_id"] for n in json_graph["nodes"]]
    assert len(ids) == len(set(ids))  # no two nodes share an id (circuit-tracer's errors can collide)
    assert {link["source"] for link in json_graph["links"]} <= set(ids)
    assert json_graph["metadata"]["prompt_tokens"] == list(graph.tokens)
    with pytest.raises(GraphTooLarge, match="limit of 3 tokens"):
        attribute(lm, "The capital of France is", transcoders=tc, max_tokens=3)


@torch.no_grad()
def test_a_features_incoming_edges_plus_its_bias_terms_are_its_pre_activation():
    """Demo model, transcoder basis: the biases pushed through the frozen model (the transcoders' b_dec and skip
    paths included), plus the edges from every source, give each feature's pre-activation."""
    lm = load_model()
    tc = load_transcoders(lm)
    prompt = "The capital of France is"
    graph = attribute(lm, prompt, transcoders=tc, node_threshold=1.0, edge_threshold=1.0, max_nodes=None)
    frozen = Frozen(lm, "gpt2", list(graph.token_ids))
    frozen.cap = capture(lm, prompt)
    n, d = frozen.n, frozen.d
    resid = torch.zeros(n, d, dtype=torch.float64)  # every node at zero: what the biases alone build
    mlp_inputs = []
    for layer, block in enumerate(frozen.blocks):
        y1 = frozen.norm((layer, "n1"), resid) + block.ln_1.bias.double()
        resid = resid + frozen.attention(layer, y1) + _attention_biases(frozen, layer)
        x = frozen.norm((layer, "n2"), resid) + block.ln_2.bias.double()
        mlp_inputs.append(x)
        t = tc.layers[layer]
        resid = resid + t.b_dec.double() + x @ t.W_skip.double().T
    store = {}
    from backend import hooks
    from backend.sites import Site

    with hooks.exclusive(lm):
        hooks.forward(lm, torch.tensor([list(graph.token_ids)]), [hooks.read(Site("mlp_in", i), store)
                                                                 for i in range(4)])
    features = [i for i, node in enumerate(graph.nodes) if node.kind == "feature" and node.layer > 0]
    for i in features[:: max(1, len(features) // 25)]:
        node = graph.nodes[i]
        t = tc.layers[node.layer]
        real = float(store[Site("mlp_in", node.layer)][0, node.position].double() @ t.W_enc[:, node.index].double()
                     + t.b_enc[node.index])
        bias = float(mlp_inputs[node.layer][node.position] @ t.W_enc[:, node.index].double() + t.b_enc[node.index])
        assert float(graph.adjacency[i].sum()) + bias == pytest.approx(real, abs=2e-3 * (1 + abs(real))), node
