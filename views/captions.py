"""One plain sentence per view, written from the numbers, for readers new to the field."""

from __future__ import annotations

import numpy as np

from backend.heads import HeadScores
from backend.lens import LensSummary, settle_layer
from views.display import quoted


def lens_sentence(summary: LensSummary, position: int) -> str:
    """E.g. "' Paris' becomes the top guess at layer 3 of 4 and ends at 83%."."""
    n_layers = summary.top_ids.shape[0] - 1
    final_id = int(summary.top_ids[-1, position, 0])
    token = quoted(summary.top_tokens[-1, position, 0])
    prob = float(summary.top_probs[-1, position, 0])
    layer = settle_layer(summary.top_ids[:, position, 0], final_id)
    ranks = summary.target_ranks[:, position]  # the tracked token is the final top guess
    climb = f"it climbs from rank {int(ranks[0]):,} after the embeddings"
    if layer == 0:
        return (f"{token} is already the top guess straight from the embeddings and stays "
                f"there through all {n_layers} layers, ending at {prob:.0%}.")
    if layer == n_layers:
        return (f"{token} becomes the top guess only at the last layer ({n_layers} of {n_layers}), "
                f"ending at {prob:.0%}; {climb} to rank {int(ranks[-2]):,} at layer {n_layers - 1}.")
    return f"{token} becomes the top guess at layer {layer} of {n_layers} and ends at {prob:.0%}; {climb}."


INDUCTION_CLEAR, PREVIOUS_CLEAR = 0.3, 0.4  # shares of attention that make a behaviour worth naming


def clearest_behaviour(scores: HeadScores) -> str:
    """The head score (a key of ``SCORE_NAMES``) that this prompt shows most clearly."""
    if np.nan_to_num(scores.induction, nan=0.0).max() >= INDUCTION_CLEAR:
        return "induction"
    if np.nan_to_num(scores.previous_token, nan=0.0).max() >= PREVIOUS_CLEAR:
        return "previous_token"
    return "first_token"


def attention_sentence(scores: HeadScores) -> str:
    """Names the clearest head behaviour in this prompt."""
    behaviour = clearest_behaviour(scores)
    score = np.nan_to_num(scores.get(behaviour), nan=0.0)
    layer, head = np.unravel_index(score.argmax(), score.shape)
    if behaviour == "induction":
        return (f"Head {layer + 1}.{head + 1} acts as an induction head here: when a token "
                "repeats, it looks at the word that followed the earlier copy "
                f"({score.max():.0%} of its attention), which lets the model continue a pattern.")
    if behaviour == "previous_token":
        return (f"Head {layer + 1}.{head + 1} mostly reads the token just before the current one "
                f"({score.max():.0%} of its attention).")
    share = float((score > 0.5).mean())
    if share > 0:
        return (f"{share:.0%} of heads park most of their attention on the first token, a common "
                "'resting place' when a head has nothing useful to read.")
    return ("No head shows a clear habit on this prompt: none mostly reads the token just before, and none "
            "mostly rests on the first token. The grid shows how much each head rests there; head "
            f"{layer + 1}.{head + 1} does most ({score.max():.0%} of its attention).")


def reader_sentence(tokens: list[str], shares: np.ndarray, layer: int, head: int) -> str:
    """What one token reads in one head: ``shares`` is its attention row up to itself.

    E.g. "In head 4.4, ' green' (position 13) reads mostly ' door' at position 7 (62%)."
    """
    order = np.argsort(-shares, kind="stable")[:2]
    reader = len(shares) - 1

    def named(i: int) -> str:
        return f"{quoted(tokens[i])} at position {i} ({shares[i]:.0%})"

    read = named(int(order[0]))
    if len(order) > 1 and shares[order[1]] >= 0.1:
        read += f", then {named(int(order[1]))}"
    return f"In head {layer}.{head}, {quoted(tokens[reader])} (position {reader}) reads mostly {read}."


def neuron_sentence(layer: int, neuron: int, value: float, token: str) -> str:
    """Names the strongest activation in a layer."""
    return (f"In layer {layer + 1}, neuron {neuron} fires hardest, on {quoted(token)} "
            f"(activation {value:+.2f}).")
