"""Does the graph's story hold in the real model? Switch its strongest nodes off and compare.

Run ``python -m training.graph_quality`` (about a minute). On the page's example prompts,
the demo model's attribution graph with its bundled transcoders: for the ``TOP`` feature nodes
of most influence, switch each off in the *real* model at its own position
(``FeatureAblation``) and measure the change in the top guess's logit minus the mean logit.
The graph predicts that change from its edges alone: removing node j moves every later node
along the graph's linear paths, ``-(A + M A + M^2 A + ...)[target, j]`` with ``M[i, k] =
A[i, k] / a_k`` (a node's effect per unit of its activation). It prints, over all nodes:
how often the two agree in sign, their correlation, and the median ratio of real to
predicted size. The real model differs from the graph where a feature's removal changes
attention or which features are active: that is what the check measures.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from backend import capture, load_model
from backend.features import FeatureAblation, load_transcoders
from backend.graph import Graph, attribute

PROMPTS = ("The capital of France is", "apple river lamp cloud seven green door apple river lamp cloud seven green",
           "Mia went to the park with Max. Max found a red ball. Mia said, \"Look at this ball!\" Then",
           "Monday, Tuesday, Wednesday, Thursday,", "The dog says", "The opposite of hot is")
TOP = 10


def predicted(graph: Graph, source: int, target: int) -> float:
    """The change in ``target``'s pre-activation when node ``source`` is removed, along every linear path."""
    activations = np.array([n.activation if n.kind in ("feature", "neuron") else 0.0 for n in graph.nodes])
    per_unit = np.where(activations != 0, graph.adjacency / np.where(activations == 0, 1.0, activations), 0.0)
    step = graph.adjacency[:, source].astype(np.float64)
    total = step.copy()
    for _ in range(len(graph.nodes)):
        step = per_unit @ step
        if not np.abs(step).max() > 0:
            break
        total += step
    return -float(total[target])


def real(lm, prompt: str, token: int, layer: int, feature: int, position: int, base: np.ndarray) -> float:
    """The change in the token's logit minus the mean logit, with the feature off at its position."""
    logits = capture(lm, prompt, edits=[FeatureAblation(layer, feature, (position,))]).logits[-1].astype(np.float64)
    return float((logits[token] - logits.mean()) - (base[token] - base.mean()))


def measure(prompts: tuple[str, ...] = PROMPTS, top: int = TOP) -> dict:
    """Predicted and real changes for the strongest feature nodes of each prompt's graph."""
    lm = load_model()
    tc = load_transcoders(lm)
    pairs = []
    for prompt in prompts:
        graph = attribute(lm, prompt, transcoders=tc).full
        target = next(i for i, n in enumerate(graph.nodes) if n.kind == "logit")
        token = graph.nodes[target].index
        base = capture(lm, prompt).logits[-1].astype(np.float64)
        features = sorted((i for i, n in enumerate(graph.nodes) if n.kind == "feature"),
                          key=lambda i: -graph.nodes[i].influence)[:top]
        for i in features:
            node = graph.nodes[i]
            pairs.append((prompt, node.layer, node.index, node.position, predicted(graph, i, target),
                          real(lm, prompt, token, node.layer, node.index, node.position, base)))
    guess = np.array([p[4] for p in pairs])
    truth = np.array([p[5] for p in pairs])
    big = np.abs(guess) > 0.05 * np.abs(guess).max()
    return {"nodes": len(pairs), "sign_agreement": float(np.mean(np.sign(guess) == np.sign(truth))),
            "sign_agreement_large": float(np.mean(np.sign(guess[big]) == np.sign(truth[big]))),
            "large": int(big.sum()), "correlation": float(np.corrcoef(guess, truth)[0, 1]),
            "median_ratio": float(np.median(truth[big] / guess[big])), "pairs": pairs}


def main() -> None:
    """Measure and print."""
    torch.set_num_threads(2)
    q = measure()
    print(f"{q['nodes']} feature nodes (the {TOP} most influential of each of {len(PROMPTS)} example prompts), each "
          "switched off in the real model at its position:")
    print(f"  the graph's predicted change in the top guess's logit agrees in sign {q['sign_agreement']:.0%} of "
          f"the time ({q['sign_agreement_large']:.0%} of the {q['large']} predicted changes above 5% of the largest)")
    print(f"  correlation of predicted and real changes {q['correlation']:.2f}; median real / predicted "
          f"{q['median_ratio']:.2f}")
    for prompt, layer, feature, position, guess, truth in q["pairs"][:12]:
        print(f"  {json.dumps(prompt[:30])}: feature {feature} of layer {layer + 1} at {position}: "
              f"predicted {guess:+.3f}, real {truth:+.3f}")


if __name__ == "__main__":
    main()
