""""Reproduce in Python": a script that gives the numbers a view shows, from the page's own choices.

Pure builders (no Streamlit). Each script loads the page's model, reads the page's prompt
with its token limit, takes the view's current choices (the head, position, neuron,
feature, pruning, changes or prompt pair the page drew) and prints the numbers the view
shows, in the page's numbering (layers and heads from 1, positions from 0). It runs after
``pip install .`` from any folder, or from the checkout's folder without installing.
"""

from __future__ import annotations

from backend.edits import Edit
from backend.run import Run, edits_to_json

HOW_TO_RUN = ("# Run it after `pip install .` in the Model X-ray checkout (any folder then), or from the\n"
              "# checkout's folder: python {file}")


def _model(source: str | None) -> str:
    return "" if source is None else repr(source)


def _header(view: str, run: Run, features: bool = False) -> list[str]:
    """The lines every script starts with: how to run it, the model, the prompt read as the page reads it."""
    lines = [f"# Model X-ray, the {view} view: the numbers the page showed, computed again.",
             HOW_TO_RUN.format(file=f"model-xray-{view}.py"),
             "from backend import capture, lens_summary, load_model",
             f"lm = load_model({_model(run.source)})" + ("  # the bundled demo model" if run.source is None else ""),
             f"prompt = {run.prompt!r}"]
    if features:
        named = "" if run.features in (None, "bundled") else f", {run.features!r}"
        lines += ["from backend.features import load_features",
                  f"dictionaries = load_features(lm{named})  # transcoders (one per layer) or an SAE",
                  f"cap = capture(lm, prompt, max_tokens={run.max_tokens}, features=dictionaries)"]
    else:
        lines.append(f"cap = capture(lm, prompt, max_tokens={run.max_tokens})")
    return lines


def _attention(choices) -> list[str]:
    score, layer, head, query = choices.score, choices.layer, choices.head, choices.query
    return ["from backend.heads import head_scores",
            f"layer, head, query = {layer}, {head}, {query}  # the page's head {layer + 1}.{head + 1}, "
            "counted from 0 here",
            f"score = head_scores(cap).get({score!r})[layer, head]",
            f"print(f'head {{layer + 1}}.{{head + 1}} {score} score: {{score:.4f}}')",
            "row = cap.attention[layer, head, query]  # what the query position reads",
            "print(f'position {query} reads (share of attention):', ' '.join(f'{v:.4f}' for v in row[:query + 1]))"]


def _lens(choices) -> list[str]:
    return ["from backend.lens import token_trajectory",
            f"position, token_id = {choices.position}, {choices.token_id}",
            "summary = lens_summary(lm, cap)",
            "print(f'top guess at position {position} after each layer (embeddings first):')",
            "for row in range(summary.top_tokens.shape[0]):",
            "    print(f'  {row}: {summary.top_tokens[row, position, 0]!r} {summary.top_probs[row, position, 0]:.4f}')",
            "track = token_trajectory(lm, cap, token_id, [position])",
            "print(f'probability of {lm.tokenizer.decode([token_id])!r} after each layer:', "
            "' '.join(f'{p:.4f}' for p in track.probs[:, 0]))"]


def _neurons(choices) -> list[str]:
    return ["from backend.neurons import neuron_effect",
            f"layer, neuron, position = {choices.layer}, {choices.neuron}, {choices.position}  "
            f"# the page's layer {choices.layer + 1}",
            "print(f'neuron {neuron} of layer {layer + 1} at position {position}: {cap.neurons[layer, position, "
            "neuron]:+.4f}')",
            "effect = neuron_effect(lm, cap, layer, neuron, position)",
            "print('promotes:', ' '.join(f'{t!r} {v:+.4f}' for t, v in zip(effect.promoted, effect.promoted_values)))",
            "print('suppresses:', ' '.join(f'{t!r} {v:+.4f}' for t, v in zip(effect.suppressed, "
            "effect.suppressed_values)))"]


def _features(choices) -> list[str]:
    return [f"layer, feature, position = {choices.layer}, {choices.feature}, {choices.position}",
            "activation = cap.features.layers[layer].column(feature)[position]",
            "print(f'feature {feature} of layer {layer + 1} at position {position}: {activation:.4f}')",
            "print('on every position:', ' '.join(f'{v:.4f}' for v in cap.features.layers[layer].column(feature)))"]


def _graph(choices, run: Run) -> list[str]:
    threshold, max_tokens = choices
    transcoders = "None"
    lines = ["from backend.graph import attribute"]
    if run.features is not None:
        named = "" if run.features == "bundled" else f", {run.features!r}"
        lines += ["from backend.features import Transcoders, load_features",
                  f"found = load_features(lm{named})",
                  "transcoders = found if isinstance(found, Transcoders) else None"]
        transcoders = "transcoders"
    return [*lines,
            f"graph = attribute(lm, prompt, transcoders={transcoders}, max_tokens={max_tokens}, node_threshold=1.0, "
            "edge_threshold=1.0)",
            f"graph = (graph.full or graph).prune({threshold}, 0.98)  # the page's pruning",
            "print(f'{len(graph.nodes)} nodes, {int((graph.adjacency != 0).sum())} edges')",
            "for node in sorted(graph.nodes, key=lambda n: -n.influence)[:8]:",
            "    print(f'  {node.kind} layer {node.layer + 1} position {node.position} #{node.index}: "
            "influence {node.influence:.4f}')"]


def _whatif(edits: tuple[Edit, ...], run: Run) -> list[str]:
    return ["from backend.run import edits_from_json",
            "from backend.whatif import edit_effect",
            f"edits = edits_from_json({edits_to_json(edits)!r})  # " + "; ".join(e.label() for e in edits),
            f"effect = edit_effect(lm, cap, edits, max_tokens={run.max_tokens})",
            "print('as the model is:', ' '.join(f'{t!r} {p:.4f}' for t, p in zip(effect.before_tokens, "
            "effect.before_probs)))",
            "print('with the changes:', ' '.join(f'{t!r} {p:.4f}' for t, p in zip(effect.after_tokens, "
            "effect.after_probs)))"]


def _patching(choices) -> list[str]:
    return ["from backend.patching import patching_sweep",
            f"clean, corrupt = {choices.clean!r}, {choices.corrupt!r}",
            f"answer, foil = {choices.answer_id}, {choices.foil_id}  # token ids: "
            "lm.tokenizer.decode([answer]) gives the text",
            "sweep = patching_sweep(lm, clean, corrupt, answer, foil)",
            "print(f'answer {sweep.answer!r} against {sweep.foil!r}: clean {sweep.clean_diff:.4f}, "
            "corrupt {sweep.corrupt_diff:.4f}')",
            "print('residual stream restored (rows: embeddings, then after each layer; columns: positions):')",
            "for row in sweep.resid:",
            "    print('  ' + ' '.join(f'{v:.4f}' for v in row))"]


def _compare(run: Run) -> list[str]:
    second = None if run.compare in (None, "demo") else run.compare
    return ["from backend.compare import compare",
            f"lm_b = load_model({_model(second)})" + ("  # the bundled demo model" if second is None else ""),
            f"diff = compare(lm, lm_b, prompt, max_tokens={run.max_tokens})",
            "print('A says:', ' '.join(f'{t!r} {p:.4f}' for _, t, p in diff.guesses_a))",
            "print('B says:', ' '.join(f'{t!r} {p:.4f}' for _, t, p in diff.guesses_b))",
            "print('KL(A || B) at the last position, after each layer:', ' '.join(f'{v:.4f}' for v in "
            "diff.kl[1:, -1]))"]


def python_snippet(view: str, run: Run, choices: object = None) -> str:
    """The script for ``view`` (``downloads.VIEWS`` or "graph") on ``run`` with the view's ``choices``.

    ``choices``: what the page drew the view with (``views.content.<view>`` choices; for
    "graph" the (node share, token limit) pair; for "whatif" the edits; None: the view's
    defaults, which the script then computes as the page does).
    """
    lines = _header(view, run, features=view == "features")
    if view == "attention":
        lines += _attention(choices) if choices is not None else _default("attention")
    elif view == "lens":
        lines += _lens(choices) if choices is not None else _default("lens")
    elif view == "neurons":
        lines += _neurons(choices) if choices is not None else _default("neurons")
    elif view == "features":
        lines += _features(choices) if choices is not None else _default("features")
    elif view == "graph":
        lines += _graph(choices if choices is not None else (0.8, 64), run)
    elif view == "whatif":
        lines += _whatif(tuple(choices or run.edits), run) if (choices or run.edits) else [
            "print('No change is in force: switch a head or a neuron off on the page, or steer, then copy again.')"]
    elif view == "patching":
        lines += _patching(choices) if choices is not None else _default("patching")
    elif view == "compare":
        lines += _compare(run)
    return "\n".join(lines) + "\n"


def _default(view: str) -> list[str]:
    return [f"print('Open the {view} view on the page first: the script takes its choices from what it drew.')"]


__all__ = ["HOW_TO_RUN", "python_snippet"]
