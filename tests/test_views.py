"""Pure view builders: escaping, script-safe props, captions from numbers, figure data."""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from backend.compare import AnswerTrack, CrossPatch
from backend.heads import HeadScores
from backend.lens import LensSummary
from tests import palette
from tests.pages import plain
from tests.spans import token_spans
from views import captions, circuits, coloured, figures
from views.display import markup_free, md_escape, position_labels, safe, visible

HOSTILE = "</script><img src=x onerror=alert(1)>"


def test_visible_shows_invisible_characters():
    assert visible("a\nb\tc") == "a↵b⇥c"
    assert visible("x\u202ey") == "x<U+202E>y" and visible("\u200b") == "<U+200B>"
    assert visible("  ") == "␣␣" and visible("") == "∅" and visible(" Paris") == " Paris"


def test_safe_and_markup_free_leave_no_markup():
    assert "<" not in safe(HOSTILE) and ">" not in safe(HOSTILE)
    assert safe("<b>&") == "&lt;b&gt;&amp;"
    assert safe('."') == '."' and safe("it's") == "it's"  # plotly shows &quot; literally
    assert markup_free(HOSTILE) == "‹/script›‹img src=x onerror=alert(1)›"
    assert markup_free("a & b") == "a ＆ b"


def test_md_escape_neutralises_markdown():
    escaped = md_escape("[click](http://x) *b* $x$ :red[hi] <img>")
    assert "[click](" not in escaped and not re.search(r"(?<!\\)[\[\]()*$:<>]", escaped)


def test_script_json_cannot_close_the_script():
    text = circuits.script_json({"tokens": [HOSTILE, "\u2028", "a&b"]})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"tokens": [HOSTILE, "\u2028", "a&b"]}


def test_component_html_is_offline_and_escaped():
    attention = np.tril(np.ones((2, 3, 3))) / np.arange(1, 4)[:, None]
    html = circuits.attention_heads_html(attention, ["<|bos|>", HOSTILE, " ok"], ["1.1", "1.2"])
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert '<script src="/app/static/circuitsvis-' in html and "http" not in html
    props = json.loads(html.split("CircuitsVis.AttentionHeads, ", 1)[1].rsplit(");</script>", 1)[0])
    assert props["tokens"][1] == markup_free(HOSTILE) and props["maskUpperTri"] is True
    np.testing.assert_allclose(props["attention"], np.round(attention, 3))


def test_colored_tokens_are_symmetric_around_zero():
    html = circuits.colored_tokens_html(["a", "b"], np.array([-2.0, 1.0]))
    props = json.loads(html.split("CircuitsVis.ColoredTokens, ", 1)[1].rsplit(");</script>", 1)[0])
    assert props["minValue"] == -2.0 and props["maxValue"] == 2.0 and props["values"] == [-2.0, 1.0]


def summary_for(top_ids: list[int], prob: float, token: str = " Paris", ranks: list[int] | None = None) -> LensSummary:
    layers = len(top_ids)
    rank_rows = np.array(ranks or [1] * layers, np.int64).reshape(layers, 1)
    ids = np.array(top_ids, np.int64).reshape(layers, 1, 1)
    tokens = np.array([[[token if i == top_ids[-1] else " other"]] for i in top_ids], dtype=object)
    probs = np.full((layers, 1, 1), prob, np.float32)
    zeros = np.zeros((layers, 1), np.float32)
    return LensSummary(top_ids=ids, top_probs=probs, top_tokens=tokens, entropy=zeros, kl_to_final=zeros,
                       target_ids=np.array([top_ids[-1]]), target_probs=zeros, target_ranks=rank_rows)


def test_lens_sentence_names_the_settling_layer():
    assert captions.lens_sentence(summary_for([1, 2, 7, 7, 7], 0.83, ranks=[1200, 3, 1, 1, 1]), 0) == (
        "'␣Paris' becomes the top guess at layer 2 of 4 and ends at 83%; "
        "it climbs from rank 1,200 after the embeddings.")
    late = captions.lens_sentence(summary_for([1, 7, 2, 3, 7], 0.4, ranks=[582, 1, 10, 4, 1]), 0)
    assert late == ("'␣Paris' becomes the top guess only at the last layer (4 of 4), ending at 40%; "
                    "it climbs from rank 582 after the embeddings to rank 4 at layer 3.")
    assert "straight from the embeddings" in captions.lens_sentence(summary_for([7, 7, 7], 0.9), 0)


def scores_with(**values) -> HeadScores:
    base = {name: np.zeros((2, 3), np.float32) for name in
            ("induction", "previous_token", "duplicate_token", "first_token", "entropy")}
    base.update(values)
    return HeadScores(**base)


def test_clearest_behaviour_follows_the_thresholds():
    assert captions.clearest_behaviour(scores_with(induction=np.full((2, 3), 0.35))) == "induction"
    assert captions.clearest_behaviour(scores_with(induction=np.full((2, 3), 0.25),
                                                   previous_token=np.full((2, 3), 0.45))) == "previous_token"
    assert captions.clearest_behaviour(scores_with(induction=np.full((2, 3), np.nan))) == "first_token"


def test_attention_sentence_picks_the_clearest_behaviour():
    induction = np.zeros((2, 3), np.float32)
    induction[1, 2] = 0.9
    sentence = captions.attention_sentence(scores_with(induction=induction))
    assert sentence.startswith("Head 2.3 acts as an induction head")
    previous = np.full((2, 3), 0.1, np.float32)
    previous[0, 1] = 0.7
    sentence = captions.attention_sentence(scores_with(induction=np.full((2, 3), np.nan), previous_token=previous))
    assert sentence.startswith("Head 1.2 mostly reads the token just before") and "70%" in sentence
    sink = np.array([[0.9, 0.9, 0.1], [0.1, 0.1, 0.1]], np.float32)
    assert captions.attention_sentence(scores_with(first_token=sink)).startswith("33% of heads")
    weak = np.array([[0.2, 0.1, 0.1], [0.1, 0.32, 0.1]], np.float32)  # no habit anywhere: say so
    sentence = captions.attention_sentence(scores_with(first_token=weak))
    assert sentence.startswith("No head shows a clear habit")
    assert sentence.endswith("head 2.2 does most (32% of its attention).")


def test_position_labels_are_unique_and_escaped():
    labels = position_labels(["a", "a", "<b>"])
    assert len(set(labels)) == 3 and labels[2] == "&lt;b&gt; ·2"


def test_lens_heatmap_data():
    tokens = np.array([[["x", "y"], ["<b>", "z"]], [["p", "q"], ["r", "s"]]], dtype=object)
    probs = np.array([[[0.5, 0.2], [0.6, 0.1]], [[0.7, 0.1], [0.9, 0.05]]], np.float32)
    fig = figures.lens_heatmap(tokens, probs, ["t0", "t1", "t2"], np.array([1, 2]))
    heat = fig.data[0]
    np.testing.assert_allclose(heat.z, probs[:, :, 0])
    assert heat.text[0][1] == "&lt;b&gt;" and "90.0%" in heat.customdata[1][1]
    assert list(fig.layout.xaxis.ticktext) == ["t1 ·1", "t2 ·2"]


def test_attention_heatmap_masks_the_future():
    pattern = np.tril(np.full((3, 3), 0.5))
    fig = figures.attention_heatmap(pattern, ["a", "b", "c"], "t")
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[0, 1]) and z[1, 0] == 0.5


def test_trajectory_rank_axis_ticks_at_powers_of_ten():
    fig = figures.trajectory(np.array([0.0, 0.1, 0.5]), np.array([9999, 420, 1]), np.zeros(3), np.zeros(3), " Paris")
    axis = fig.layout.yaxis2
    assert list(axis.tickvals) == [1, 10, 100, 1000] and axis.type == "log"


def test_reader_sentence_names_what_a_token_reads():
    tokens = ["<s>", " apple", " door", " apple"]
    assert captions.reader_sentence(tokens, np.array([0.05, 0.1, 0.6, 0.25]), 4, 2) == (
        "In head 4.2, '␣apple' (position 3) reads mostly '␣door' at position 2 (60%), "
        "then '␣apple' at position 3 (25%).")
    assert captions.reader_sentence(tokens[:1], np.array([1.0]), 1, 1) == (
        "In head 1.1, '<s>' (position 0) reads mostly '<s>' at position 0 (100%).")


def test_token_shares_run_from_zero_to_the_largest_share_and_stay_text():
    spans = token_spans(coloured.shares_html(["a", HOSTILE, " c"], np.array([0.3, 0.6, 0.1])))
    assert [s.text for s in spans] == ["a", visible(HOSTILE), " c"]  # the hostile token is text, not a tag
    assert [s.value for s in spans] == [0.3, 0.6, 0.1]
    alphas = [float(re.search(r"rgba\(230,97,1,([0-9.]+)\)", s.style).group(1)) for s in spans]
    assert alphas == [0.5, 1.0, pytest.approx(1 / 6, abs=1e-3)]  # orange in proportion to the largest share
    assert "60.0%" in spans[1].title and "reading token" in spans[2].title and "box-shadow" in spans[2].style
    assert token_spans(coloured.shares_html(["a"], np.array([0.0])))[0].value == 0.0  # no division by zero
    assert circuits.text_height(["ab"] * 10, 50) < circuits.text_height(["ab"] * 200, 50)


def test_charts_reserve_room_for_their_labels_without_plotly_measuring():
    tokens = ["a", "x" * 40, "<b>"]
    fig = figures.attention_heatmap(np.tril(np.full((3, 3), 0.5)), tokens, "t")
    labels = list(fig.data[0].y)
    assert labels[1] == "x" * 17 + "… ·1" and labels[2] == "&lt;b&gt; ·2"  # long tokens cut, markup escaped
    assert fig.layout.xaxis.automargin is False and fig.layout.yaxis.automargin is False
    widest = figures.text_px(labels)
    assert widest == figures.GLYPH * figures.TICK_FONT["size"] * len("x" * 17 + "… ·1")  # entities count once
    assert fig.layout.margin.l > widest and fig.layout.margin.b > widest * figures.SLANT


def every_figure() -> dict[str, go.Figure]:
    """One of each chart, on awkward tokens (markup, quotes, a long one, a newline) and NaN scores."""
    rng = np.random.default_rng(0)
    tokens = ["<s>", " The", HOSTILE, ' "quoted"', " " + "x" * 30, " of", "\n"]
    n = len(tokens)
    scores = rng.random((3, 4))
    scores[0, 1] = np.nan
    pattern = np.tril(rng.random((n, n)))
    top_tokens = np.array([[[t, t + "2"] for t in tokens[:4]] for _ in range(3)], dtype=object)
    return {
        "head_grid": figures.head_grid(scores, "Induction", "induction"),
        "attention_heatmap": figures.attention_heatmap(pattern / pattern.sum(-1, keepdims=True), tokens, "t"),
        "lens_heatmap": figures.lens_heatmap(top_tokens, rng.random((3, 4, 2)), tokens, np.arange(1, 5)),
        "trajectory": figures.trajectory(rng.random(3), np.array([1500, 4, 1]), rng.random(3), rng.random(3), "<b>"),
        "neuron_heatmap": figures.neuron_heatmap(rng.standard_normal((5, n - 1)), np.arange(5), tokens[1:], 2, 1),
        "feature_heatmap": figures.feature_heatmap(rng.random((5, n - 1)), np.arange(5), ["<b>fires</b>"] * 5,
                                                   tokens[1:], 2, 1),
        "bars": figures.bars(["#1", "#2"], np.array([0.5, -0.2]), "t", "activation"),
        "effect_bars": figures.effect_bars(tokens[:3], np.array([3.0, 2.0, 1.0]), tokens[3:], -np.arange(1.0, 5.0)),
        "patching_heatmap": figures.patching_heatmap(rng.random((3, 4)), ["a", "b", "c"], ["1", "2", "3", "4"], "t",
                                                     "position"),
        "before_after": figures.before_after(rng.random(3), rng.random(3), "<b>"),
        "answer_tracks": figures.answer_tracks(
            [AnswerTrack(i, tok, model, rng.random(3), np.array([9, 2, 1]))
             for i, tok in enumerate(tokens[:2]) for model in "ab"], "A <i>", "B"),
        "kl_heatmap": figures.kl_heatmap(rng.random((3, n)), tokens, 0.5, np.array([0, 1, 1])),
        "weight_change": figures.weight_change(rng.random(3), np.array([0.1, np.nan, 0.2])),
        "cross_patch_bars": figures.cross_patch_bars(
            CrossPatch(1, 2, 3.0, -1.0, -0.1, np.array([np.nan]), np.array([0.6]), 0.05), "<b>", tokens[0]),
    }


@pytest.mark.parametrize("name", list(every_figure()))
def test_figures_are_what_plotly_validation_would_send(name):
    """Built without plotly's slow validation; validated in full here, and validation changes nothing."""
    fig = every_figure()[name]
    validated = go.Figure(fig.to_dict())  # raises on any unknown or malformed property
    assert plain(json.loads(pio.to_json(validated))) == plain(json.loads(pio.to_json(fig)))


def test_a_first_layer_head_is_never_called_an_induction_head():
    induction = np.zeros((2, 3), np.float32)
    induction[0, 1] = 0.9  # a first-layer head has no earlier head to build on
    scores = scores_with(induction=induction)
    assert captions.clearest_behaviour(scores) != "induction"
    assert "induction" not in captions.attention_sentence(scores)
    induction[1, 2] = 0.5  # a weaker head in the second layer is the one named
    scores = scores_with(induction=induction)
    assert captions.clearest_behaviour(scores) == "induction"
    assert captions.attention_sentence(scores).startswith("Head 2.3 acts as an induction head")
    assert "(50% of its attention)" in captions.attention_sentence(scores)


def test_small_shares_are_counts_and_words_fit_the_share():
    sink = np.full((4, 4), 0.1, np.float32)
    sink[2, 3] = 0.8
    assert captions.attention_sentence(scores_with(first_token=sink)).startswith(
        "1 of 16 heads parks most of its attention on the first token")
    previous = np.full((2, 3), 0.1, np.float32)
    previous[1, 0] = 0.42
    assert "often reads the token just before" in captions.attention_sentence(
        scores_with(induction=np.full((2, 3), np.nan), previous_token=previous))
    shares = np.array([0.3, 0.25, 0.45])
    assert "reads most 'c' at position 2 (45%)" in captions.reader_sentence(["a", "b", "c"], shares, 1, 1)


@pytest.mark.parametrize("prompt", ["Monday, Tuesday, Wednesday, Thursday,", "one, two, three, four, five,",
                                    "red and blue and green and black and", "cat; dog; cow; pig; hen;"])
def test_alternating_lists_are_not_called_induction(prompt):
    from backend import capture, load_model
    from backend.heads import head_scores, repeat_masks

    cap = capture(load_model(), prompt)
    _, after = repeat_masks(cap.token_ids)
    assert not np.diagonal(after, offset=-1).any()  # the token just before is never an induction target
    sentence = captions.attention_sentence(head_scores(cap))
    assert not (sentence.startswith("Head 1.") and "induction" in sentence), sentence


def test_neuron_colours_put_white_at_zero_and_spend_the_scale_on_what_is_there():
    values = np.array([[0.0, 20.0, -1.0], [2.0, 0.5, 0.1]], np.float32)
    heat = figures.neuron_heatmap(values, np.arange(2), ["a", "b", "c"], 0).data[0]
    assert (heat.zmin, heat.zmax) == (-1.0, 20.0)  # not -20 to +20
    zero = [point for point in heat.colorscale if point[1] == figures.SIGNED[1][1]][0][0]
    assert zero == pytest.approx(1 / 21)  # white sits at zero
    assert heat.colorscale[-1][1] == figures.SIGNED[2][1]  # +20, the largest: full orange
    deepest_blue = heat.colorscale[0][1]  # -1 beside +20: a pale blue, 1/20 of the way from white
    assert deepest_blue == figures._blend(figures.SIGNED[1][1], figures.SIGNED[0][1], 1 / 20) != figures.SIGNED[0][1]


def test_massive_activations_are_remarked():
    acts = np.full((5, 30), 0.5, np.float32)
    acts[:, :20] = np.linspace(0.5, 2.0, 20)
    assert captions.massive_note(acts, list("abcde")) is None
    acts[3, 7] = 19.8
    acts[2, 9] = 12.0
    note = captions.massive_note(acts, list("abcde"))
    assert "2 neurons above 10, up to +19.8 on 'd'" in note


def test_the_lens_grid_leaves_the_embeddings_out_and_the_kl_axis_starts_at_layer_one():
    tokens = np.array([[["x"]], [["y"]], [["z"]]], dtype=object)
    fig = figures.lens_heatmap(tokens[1:], np.ones((2, 1, 1), np.float32), ["t"], np.array([0]), first_layer=1)
    assert list(fig.layout.yaxis.ticktext) == ["layer 1", "layer 2"]
    traj = figures.trajectory(np.ones(3), np.ones(3), np.ones(3), np.array([25.0, 2.0, 0.0]), "t")
    kl = [t for t in traj.data if t.name.startswith("KL")][0]
    assert list(kl.x) == ["layer 1", "layer 2"] and max(kl.y) == 2.0
    for line in traj.data:  # the probability and rank start where the grid and the KL do, at layer 1
        assert list(line.x) == ["layer 1", "layer 2"]


def test_special_tokens_are_shortened_in_lens_cells():
    tokens = np.array([[["<|endoftext|>"]]], dtype=object)
    heat = figures.lens_heatmap(tokens, np.ones((1, 1, 1), np.float32), ["t"], np.array([0])).data[0]
    assert heat.text[0][0] == "&lt;|endo…&gt;" and "&lt;|endoftext|&gt;" in heat.customdata[0][0]


def test_a_word_start_and_a_word_piece_look_different_everywhere():
    from views.display import label, quoted, token_labels

    assert label(" Rome") == "␣Rome" and label("Rome") == "Rome" and label(" ") == "␣"
    assert quoted(" Rome") == "'␣Rome'" and token_labels([" Rome", "Rome"]) == ["0: ␣Rome", "1: Rome"]
    bars = coloured.guesses_html([" Rome", "Rome"], np.array([0.9, 0.1]))
    assert "␣Rome" in bars and ">Rome<" in bars
    assert figures.bars([" out", "out"], np.array([1.0, -1.0]), "t", "x").data[0].y == ("␣out", "out")


def test_the_neuron_view_opens_with_the_prompts_hardest_firing_neuron():
    neurons = np.zeros((3, 4, 5), np.float32)
    neurons[0, 0, 0] = 50.0  # the first token: left out
    neurons[2, 3, 1] = -7.5
    sentence = captions.neuron_overview(neurons, ["<s>", " a", " b", " c"])
    assert sentence == ("Of all 15 MLP neurons, neuron 1 of layer 3 fires hardest in this prompt, on '␣c' "
                        "(activation -7.50).")


def test_md_escape_leaves_no_bare_address_to_autolink():
    from views.display import md_escape

    text = md_escape("go to http://127.0.0.1:9/phish or www.example.org or mail me@example.org")
    shown = text.replace("\\", "")
    assert not re.search(r"(?i)(https?|ftp):|www\.|\w@\w", shown)  # GFM would link any of these
    assert shown.replace("\u2060", "") == "go to http://127.0.0.1:9/phish or www.example.org or mail me@example.org"


@pytest.mark.parametrize("name", list(every_figure()) + ["before_after_new"])
def test_every_chart_is_safe_for_colour_blind_readers(name):
    figs = every_figure() | {"before_after_new": figures.before_after(np.random.default_rng(1).random(3),
                                                                    np.random.default_rng(2).random(3), "<b>",
                                                                    new=(np.ones(3), np.zeros(3), "x"))}
    assert palette.problems(figs[name]) == []


def test_the_palette_check_can_fail():
    red_green = go.Figure([go.Bar(x=[1, 2], y=[1, 2], marker={"color": ["#d62728", "#2ca02c"]})])
    assert palette.problems(red_green) == ["color #d62728", "color #2ca02c"]
    assert palette.problems(go.Figure([go.Heatmap(z=[[1]], colorscale="RdYlGn")]))


def test_long_suppressed_tokens_sit_in_their_own_margin_not_under_the_promoted_bars():
    long = [" " + "y" * 30, " short"]
    fig = figures.effect_bars([" a", " b"], np.array([2.0, 1.0]), long, np.array([-2.0, -1.0]))
    labels = list(fig.data[1].y)
    assert fig.layout.yaxis2.side == "right" and fig.layout.margin.r > figures.text_px(labels)
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # the charts do not overlap
    assert fig.layout.margin.l > figures.text_px(list(fig.data[0].y))
    titles = {a.text: a.x for a in fig.layout.annotations}
    assert titles["Promotes"] == pytest.approx(sum(fig.layout.xaxis.domain) / 2)
    assert titles["Suppresses"] == pytest.approx(sum(fig.layout.xaxis2.domain) / 2)


def test_commands_in_messages_show_as_code_and_the_rest_stays_literal():
    from views.display import md_message

    assert md_message("run `hf download gpt2` then retry.") == "run `hf download gpt2` then retry\\."
    assert md_message("a `[x](http://e)` b") == "a `[x](http://e)` b"  # a code span is literal already
    assert md_message("one ` alone [x](y)") == md_escape("one ` alone [x](y)")  # an unpaired backtick is text
    assert md_message("*bold* `ok`") == "\\*bold\\* `ok`"


def test_the_trajectory_stacks_its_two_charts_so_a_phone_width_cannot_overlap_them():
    fig = figures.trajectory(np.ones(3), np.array([50, 5, 1]), np.ones(3), np.ones(3), "t")
    top, bottom = fig.layout.yaxis.domain, fig.layout.yaxis3.domain
    assert bottom[1] < top[0]  # one above the other
    assert tuple(fig.layout.xaxis.domain) == tuple(fig.layout.xaxis2.domain)  # the same width, any screen
    titles = sorted(a.y for a in fig.layout.annotations)
    assert titles[0] <= top[0] and titles[1] >= top[1]  # each chart's title above its own chart
