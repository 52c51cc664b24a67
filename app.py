"""Model X-ray: look inside a language model while it reads your prompt.

Page config, sidebar, URL state and the caches live here; each view draws itself.
Run with ``streamlit run app.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from backend import (
    Capture,
    LensSummary,
    LoadedModel,
    XrayError,
    capture,
    lens_summary,
    load_model,
    token_trajectory,
)
from backend.heads import HeadScores, head_scores
from backend.neurons import NeuronEffect, neuron_effect
from views import attention, circuits, coloured, lens, neurons
from views.display import md_escape, quoted, visible
from views.state import run_id

st.set_page_config(page_title="Model X-ray", page_icon="🩻", layout="wide")

DEMO = "Bundled demo model (offline)"
OTHER = "Other: type a hub id or a local folder"
POPULAR = ["gpt2", "distilgpt2", "EleutherAI/pythia-70m", "EleutherAI/pythia-160m",
           "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B"]
EXAMPLES = {
    "A fact": "The capital of France is",
    "Repeated words (induction)": "apple river lamp cloud seven green door apple river lamp cloud seven green",
    "A story with names": "Mia went to the park with Max. Max found a red ball. Mia said, \"Look at this ball!\" Then",
    "Counting": "Monday, Tuesday, Wednesday, Thursday,",
}
DEFAULT_PROMPT = EXAMPLES["A fact"]
MAX_PROMPT_CHARS = 20_000
VIEWS = ["👀 Attention", "🔍 Logit lens", "⚡ Neurons"]


@dataclass(frozen=True)
class Settings:
    """What the sidebar chose; ``source`` None is the bundled model."""

    source: str | None
    device: str
    dtype: str
    max_tokens: int

    @property
    def key(self) -> str:
        """What identifies the loaded model in cache keys and the URL."""
        return f"{self.source or 'demo'}|{self.device}|{self.dtype}"


@dataclass(frozen=True, eq=False)
class Analysis:
    """One prompt through one model: the capture and what every view derives from it."""

    capture: Capture
    summary: LensSummary
    scores: HeadScores


@st.cache_resource(max_entries=2, show_spinner=False)
def get_model(source: str | None, device: str, dtype: str) -> LoadedModel:
    """One shared model per (source, device, dtype); at most two kept in memory."""
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype)


@st.cache_resource(max_entries=8, show_spinner=False)
def analyse(_lm: LoadedModel, model_key: str, prompt: str, max_tokens: int) -> Analysis:
    """The only place the model runs for a prompt; keyed by model, prompt and limit."""
    cap = capture(_lm, prompt, max_tokens=max_tokens)
    for array in (cap.attention, cap.resid, cap.neurons, cap.logits):
        array.flags.writeable = False  # shared between sessions
    return Analysis(capture=cap, summary=lens_summary(_lm, cap), scores=head_scores(cap))


@st.cache_resource(max_entries=256, show_spinner=False)
def get_trajectory(_lm: LoadedModel, _analysis: Analysis, model_key: str, prompt: str, max_tokens: int,
                   token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """A token's lens probability and rank at one position (small: layers x 1)."""
    traj = token_trajectory(_lm, _analysis.capture, token_id, [position])
    return traj.probs[:, 0], traj.ranks[:, 0]


@st.cache_resource(max_entries=256, show_spinner=False)
def get_effect(_lm: LoadedModel, _analysis: Analysis, model_key: str, prompt: str, max_tokens: int,
               layer: int, neuron: int, position: int) -> NeuronEffect:
    """A neuron's direct effect on the next-token logits at one position."""
    return neuron_effect(_lm, _analysis.capture, layer, neuron, position)


def model_choice() -> str | None:
    """The sidebar's model picker, starting from the URL's ``model``."""
    wanted = st.query_params.get("model", "demo")
    options = [DEMO, *POPULAR, OTHER]
    index = 0 if wanted == "demo" else options.index(wanted) if wanted in POPULAR else len(options) - 1
    picked = st.sidebar.selectbox("Model", options, index=index, key="model_pick",
                                  help="Popular hub models download the first time (needs internet).")
    if picked == DEMO:
        return None
    if picked == OTHER:
        typed = st.sidebar.text_input("Hub id or local folder", value="" if wanted == "demo" else wanted,
                                      placeholder="e.g. EleutherAI/pythia-70m or ./my-model",
                                      key="model_typed").strip()
        return typed or None
    return picked


def sidebar() -> Settings:
    """Model, device, dtype and token limit."""
    st.sidebar.header("Model")
    source = model_choice()
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) \
        + (["mps"] if torch.backends.mps.is_available() else []) \
        + (["sharded"] if torch.cuda.device_count() > 1 else [])
    device = st.sidebar.selectbox("Device", devices, key="device",
                                  help="auto picks a GPU when there is one. sharded spreads a big model over GPUs.")
    dtype = st.sidebar.selectbox("Precision", ["auto", "float32", "bfloat16", "float16"], key="dtype",
                                 help="auto: float32 on CPU, half precision on GPU.")
    max_tokens = int(st.sidebar.number_input("Maximum tokens", 4, 4096, 256, step=32, key="max_tokens"))
    return Settings(source=source, device=device, dtype=dtype, max_tokens=max_tokens)


def describe(lm: LoadedModel) -> None:
    """The loaded model's description in the sidebar."""
    info = lm.info
    st.sidebar.markdown(f"**{md_escape(info.name)}** · {md_escape(info.family)}")
    heads = f"{info.n_heads}" + (f" ({info.n_kv_heads} key/value)" if info.n_kv_heads != info.n_heads else "")
    rows = [("layers", info.n_layers), ("heads per layer", heads), ("width (d_model)", info.d_model),
            ("MLP neurons per layer", info.d_mlp), ("vocabulary", f"{info.vocab_size:,}"),
            ("parameters", f"{info.n_params / 1e6:,.1f} M"), ("context", info.context_length or "?"),
            ("device", info.device), ("precision", info.dtype)]
    st.sidebar.markdown("\n".join(f"- {label}: **{md_escape(str(value))}**" for label, value in rows))


def set_example(text: str) -> None:
    """Button callback: put an example in the prompt box."""
    st.session_state.prompt = text


def prompt_box() -> str:
    """The prompt (from the URL at first), with the example gallery."""
    if "prompt" not in st.session_state:
        st.session_state.prompt = st.query_params.get("prompt", DEFAULT_PROMPT)[:MAX_PROMPT_CHARS]
    st.caption("Try an example:")
    row = st.container(horizontal=True)  # one flex row: lighter to draw than a column per button
    for label, text in EXAMPLES.items():
        row.button(label, on_click=set_example, args=(text,))
    prompt = st.text_area("Prompt", key="prompt", height=90, max_chars=MAX_PROMPT_CHARS,
                          help="Press Ctrl+Enter (or click outside the box) to look inside again.")
    st.button("Look inside ▶", type="primary")
    return prompt


def header(cap: Capture, summary: LensSummary) -> None:
    """What the model read and what it would say next."""
    left, right = st.columns([2, 1])
    left.markdown(f"The model reads **{cap.n_tokens} tokens** (the pieces it splits text into):")
    left.text(" | ".join(visible(t) for t in cap.tokens))  # plain text: no syntax highlighter to load
    right.markdown(f"**Its guess for the next token**: {md_escape(quoted(summary.top_tokens[-1, -1, 0]))} "
                   f"({float(summary.top_probs[-1, -1, 0]):.0%}), then:")
    right.html(coloured.guesses_html(list(summary.top_tokens[-1, -1]), summary.top_probs[-1, -1]))


def load_or_explain(settings: Settings) -> LoadedModel | None:
    """The model, or one clear message (the page keeps working either way)."""
    name = settings.source or "the bundled demo model"
    try:
        with st.spinner(f"Loading {name} (a hub model downloads the first time)…"):
            return get_model(settings.source, settings.device, settings.dtype)
    except XrayError as error:
        st.error(f"Could not load {name}. {error}")
    except MemoryError:
        st.error(f"Not enough memory to load {name}. Pick a smaller model or a lower precision.")
    except Exception as error:  # noqa: BLE001 - any loader failure must leave the page usable
        st.error(f"Could not load {name}: {type(error).__name__}: {error}")
    return None


def analyse_or_explain(lm: LoadedModel, settings: Settings, prompt: str) -> Analysis | None:
    """The analysis, or one clear message."""
    try:
        with st.spinner("Running the model…"):
            return analyse(lm, settings.key, prompt, settings.max_tokens)
    except XrayError as error:
        st.error(str(error))
    except (MemoryError, torch.OutOfMemoryError):
        st.error("Out of memory while running this prompt. Shorten it or use a smaller model.")
    except Exception as error:  # noqa: BLE001 - a failed run must leave the page usable
        st.error(f"The model failed on this prompt: {type(error).__name__}: {error}")
    return None


def main() -> None:
    """Draw the page."""
    static = circuits.install_bundle(Path(__file__).parent / "static")
    script_url = f"/app/static/{static.name}"
    st.title("🩻 Model X-ray")
    st.markdown("See what happens **inside** a language model while it reads your prompt: which "
                "words each attention head looks at, what the model would guess after every layer, "
                "and which neurons fire.")
    settings = sidebar()
    prompt = prompt_box()
    st.query_params.from_dict({"prompt": prompt, "model": settings.source or "demo"})
    lm = load_or_explain(settings)
    if lm is None:
        return
    describe(lm)
    result = analyse_or_explain(lm, settings, prompt)
    if result is None:
        return
    cap, summary = result.capture, result.summary
    header(cap, summary)
    keys = (settings.key, prompt, settings.max_tokens)
    run = run_id(*keys)  # selections made for this run start afresh with the next
    attention_tab, lens_tab, neuron_tab = st.tabs(VIEWS)
    with attention_tab:
        attention.render(cap, result.scores, script_url, run)
    with lens_tab:
        lens.render(cap, summary, lambda token_id, position: get_trajectory(lm, result, *keys, token_id, position),
                    run)
    with neuron_tab:
        neurons.render(cap, lambda layer, neuron, position: get_effect(lm, result, *keys, layer, neuron, position),
                       script_url, run)


main()
