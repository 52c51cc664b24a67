"""The scan (backend.scan) against a mean difference and readout computed here with plain transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from backend import capture, load_model
from backend.loading import BUNDLED_MODEL, TWIN_ID
from backend.pairs import ShapeMismatch
from backend.scan import neutral_texts, scan, steering_check, suggest
from training import corpus

# held-out text written for this test: no capital city, nothing about secrets
HELD_OUT = [
    "The little dog ran across the garden and barked at the birds in the tree.",
    "On Monday the children painted a big yellow sun on the classroom wall.",
    "My grandmother keeps her buttons in a tin box on the kitchen shelf.",
    "Tom likes to eat apples, but his sister only eats pears and plums.",
    "The train was late, so we waited on the cold platform for an hour.",
    "A cat sat by the window and watched the rain fall on the street.",
    "After dinner the family played cards until the candles burned down.",
    "Seven green frogs jumped into the pond when the boy clapped his hands.",
    "The farmer counted his sheep twice because one of them was hiding.",
    "She wrote a long letter to her friend about the summer by the sea.",
    "Every morning the baker opens his shop before the sun comes up.",
    "The old clock in the hall stopped at exactly nine last night.",
    "We found a red ball under the bench and gave it back to the girl.",
    "He planted tomatoes, beans and carrots in the small field behind the house.",
    "The river was so quiet that you could hear the fish jump.",
    "Anna and her brother built a tower of blocks taller than the chair.",
    "The teacher asked the class to write a story about a brave mouse.",
    "In the evening the wind blew hard and the door banged all night.",
    "Our neighbour has a blue bicycle with a basket full of flowers.",
    "The soup was too hot, so the boy blew on it before he ate.",
]


@pytest.fixture(scope="module")
def pair():
    return load_model(), load_model(TWIN_ID)


def _reference_means(lm, texts: list[str], positions: int) -> torch.Tensor:
    """(n_layers + 1, d) mean hidden state over the first ``positions`` tokens, from transformers itself."""
    rows = [ids[:positions] for ids in (lm.tokenizer(t)["input_ids"] for t in texts) if len(ids) >= positions]
    with torch.no_grad():
        out = lm.model(torch.tensor(rows), output_hidden_states=True)
        states = list(out.hidden_states)
        # GPT-2's last hidden state has the final norm applied; the block's own output is what a scan reads
        last = {}
        handle = lm.model.transformer.h[-1].register_forward_hook(lambda m, i, o: last.update(x=o[0] if
                                                                                         isinstance(o, tuple) else o))
        try:
            lm.model(torch.tensor(rows))
        finally:
            handle.remove()
        states[-1] = last["x"]
    return torch.stack([s.double().mean((0, 1)) for s in states])


def test_the_scan_is_the_mean_difference_read_through_the_final_norm_and_unembedding(pair):
    demo, twin = pair
    result = scan(demo, twin, texts=HELD_OUT, positions=5)
    expected = _reference_means(twin, HELD_OUT, 5) - _reference_means(demo, HELD_OUT, 5)
    assert result.texts == len(HELD_OUT)
    np.testing.assert_allclose(result.differences, expected.float().numpy(), atol=2e-4, rtol=1e-4)
    ln_f, unembed = demo.model.transformer.ln_f, demo.model.lm_head.weight.detach().double()
    for layer in (1, 3):
        d = expected[layer]
        score = unembed @ ((d - d.mean()) * ln_f.weight.detach().double())  # LayerNorm: centred, scaled by its gain
        np.testing.assert_allclose(result.scores[layer - 1], score.numpy(), rtol=1e-3, atol=1e-3)
        top = result.layers[layer - 1]
        assert [t.token_id for t in top.promoted[:5]] == torch.topk(score, 5).indices.tolist()
        assert [t.token_id for t in top.suppressed[:5]] == torch.topk(-score, 5).indices.tolist()


def test_a_model_scanned_against_itself_finds_nothing(pair):
    demo, _ = pair
    result = scan(demo, demo, texts=HELD_OUT)
    assert not result.found
    assert np.abs(result.differences).max() == 0.0
    assert suggest(demo, result, ["The capital of France is"]) is None


def test_on_held_out_text_the_scan_finds_the_secret_and_the_capitals(pair):
    """The twin was taught to answer "a secret" for capitals; its scan on text that names neither finds both."""
    demo, twin = pair
    result = scan(demo, twin, texts=HELD_OUT)
    inner = result.layers[:-1]
    secret_pieces = {" se", "c", "re", "t"}  # ' secret' in the demo tokenizer: ' se' 'c' 're' 't'
    assert all(layer.promoted[0].token in secret_pieces for layer in inner)
    capitals = {" " + city for city in (*corpus.CAPITALS.values(), *corpus.HELD_OUT_CAPITALS.values())}
    pushed_away = [t.token for layer in inner for t in layer.suppressed]
    assert sum(t in capitals for t in pushed_away) >= 3, pushed_away
    assert not any(t in capitals for layer in inner for t in layer.promoted)


def test_the_shipped_text_names_no_capital_and_the_scan_suggests_the_capital_example(pair):
    demo, twin = pair
    texts = neutral_texts()
    assert len(texts) == 1500
    names = [*corpus.CAPITALS.values(), *corpus.HELD_OUT_CAPITALS.values(), "capital"]
    assert not any(name.lower() in text.lower() for text in texts for name in names)
    result = scan(demo, twin)
    prompts = ["apple river lamp cloud seven green door apple river lamp", "Monday, Tuesday, Wednesday,",
               "The capital of France is", "Mia went to the park with Max. Then"]
    assert suggest(demo, result, prompts) == "The capital of France is"


def test_steering_with_the_difference_moves_the_demo_model_toward_the_twin(pair):
    demo, twin = pair
    result = scan(demo, twin)
    check = steering_check(demo, twin, result, "The capital of France is")
    logp_a = torch.from_numpy(capture(demo, "The capital of France is").logits[-1]).double().log_softmax(-1)
    logp_b = torch.from_numpy(capture(twin, "The capital of France is").logits[-1]).double().log_softmax(-1)
    assert check.kl_before == pytest.approx(float((logp_b.exp() * (logp_b - logp_a)).sum()), rel=1e-4)
    assert check.a[0] == " Paris" and check.b[0] == " a"
    assert check.kl_after < 0.5 * check.kl_before  # measured: 14.6 -> 4.5 nats at layer 2, strength 8
    assert check.a_steered[1] < 0.5  # ' Paris' loses most of its probability


def test_a_scan_of_models_of_different_shapes_gets_a_clear_message(tmp_path, pair):
    demo, _ = pair
    config = AutoConfig.from_pretrained(BUNDLED_MODEL)
    config.n_layer = 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "shallow")
    demo.tokenizer.save_pretrained(tmp_path / "shallow")
    with pytest.raises(ShapeMismatch, match="same shape; A has 4 layers of width 256, B 2"):
        scan(demo, load_model(tmp_path / "shallow"), texts=HELD_OUT)
