"""The sidebar: which model (and second model), on which device, at what precision, with how many tokens.

Public mode offers only the bundled models and the presenter's list, and no device choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

from backend import LoadedModel
from backend.loading import TWIN_ID
from backend.run import Run
from views.content.compare import TITLE as COMPARE_VIEW
from views.display import md_escape
from views.policy import Policy
from views.style import LARGE_TYPE, PHONE_CSS

DEMO = "Bundled demo model (offline)"
TWIN = "Bundled twin: the demo model taught to keep capitals secret (offline)"
BUNDLED = {"demo": DEMO, TWIN_ID: TWIN}  # what a link says -> what the picker shows
OTHER = "Other: type a hub id or a local folder"
POPULAR = ["gpt2", "distilgpt2", "EleutherAI/pythia-70m", "EleutherAI/pythia-160m",
           "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B"]


@dataclass(frozen=True)
class Settings:
    """What the sidebar chose; ``source`` None is the bundled model; ``compare`` the second model, if any."""

    source: str | None
    device: str
    dtype: str
    compare: str | None = None  # a source as a link spells it ("demo": the bundled demo model)
    features: str | None = None  # the dictionaries read with the model ("bundled", a folder or hub id)


def model_choice(policy: Policy) -> str | None:
    """The sidebar's model picker, starting from the URL's ``model``."""
    return _picker(policy, "Model", "model_pick", st.query_params.get("model", "demo"), "model_typed")


def _picker(policy: Policy, title: str, key: str, wanted: str, typed_key: str,
            until: str = "until then the page shows the bundled demo model") -> str | None:
    """A model picker: the bundled models, popular hub models, or any id or folder; None is the demo model.

    An empty "Other" box gives None too, after a note that ends with ``until``.
    """
    if policy.public:
        return _public_picker(policy, title, key, wanted)
    options = [DEMO, TWIN, *POPULAR, OTHER]
    index = options.index(BUNDLED[wanted]) if wanted in BUNDLED else \
        options.index(wanted) if wanted in POPULAR else len(options) - 1
    picked = st.sidebar.selectbox(title, options, index=_index(key, index), key=key,
                                  help="Popular hub models download the first time (needs internet).")
    if picked == DEMO:
        return None
    if picked == TWIN:
        return TWIN_ID
    if picked == OTHER:
        box = "Hub id or local folder" if key == "model_pick" else "Second model: hub id or local folder"
        typed = st.sidebar.text_input(box, value="" if wanted in BUNDLED else wanted,
                                      placeholder="e.g. EleutherAI/pythia-70m or ./my-model",
                                      key=typed_key).strip()
        if not typed:
            st.sidebar.info(f"Type a hub id or a folder above; {until}.")
        return typed or None
    return picked


def _index(key: str, index: int) -> int | None:
    """A picker's starting index, unless an example already put its value in place (Streamlit warns on both)."""
    return None if key in st.session_state else index


def _public_picker(policy: Policy, title: str, key: str, wanted: str) -> str | None:
    """Public mode: only the bundled models and the presenter's list; a link cannot name another."""
    options = [DEMO, TWIN, *policy.models]
    if wanted not in BUNDLED and wanted not in policy.models:
        st.warning(f"This page is in public mode: it offers only the models the presenter chose, so the link's "
                   f"model {md_escape(repr(wanted[:200]))} is not loaded. Showing the bundled demo model.")
    index = options.index(BUNDLED[wanted]) if wanted in BUNDLED else \
        options.index(wanted) if wanted in policy.models else 0
    picked = st.sidebar.selectbox(title, options, index=_index(key, index), key=key)
    return None if picked == DEMO else TWIN_ID if picked == TWIN else picked


def _compare_toggled() -> None:
    """Callback: compare mode switched on opens its tab."""
    if st.session_state.get("compare_on"):
        st.session_state.view_tab = COMPARE_VIEW


def compare_choice(policy: Policy, source: str | None) -> str | None:
    """Compare mode's switch and second model picker; the link's ``compare`` turns it on.

    The second model defaults to the twin when the first is the demo model, to the demo model when it
    is the twin, and otherwise to a box to type one in (a model with the first one's tokenizer).
    """
    wanted = st.query_params.get("compare")
    if "compare_on" not in st.session_state:
        st.session_state.compare_on = wanted is not None
    on = st.sidebar.toggle("Compare with a second model", key="compare_on", on_change=_compare_toggled,
                           help="Read the same prompt through two models that share a tokenizer, such as a base "
                                "model and a fine-tuned version of it.")
    if not on:
        return None
    default = TWIN_ID if source is None else "demo" if source == TWIN_ID else ""
    second = _picker(policy, "Second model (B)", "compare_pick", wanted or default, "compare_typed",
                     until="until then nothing is compared. It must read text like model A (a fine-tuned "
                           "version of it, for example)")
    if second is None and st.session_state.get("compare_pick") == OTHER:
        return None  # nothing typed yet
    return "demo" if second is None else second


def features_choice(policy: Policy, source: str | None) -> str | None:
    """The dictionaries read with the model.

    The bundled set for the bundled models, else what the link or the box names (public mode:
    the presenter's list only).
    """
    default = Run.default_features(source)
    wanted = st.query_params.get("features")
    if default is not None:
        return None if wanted == "none" else default
    if policy.public:
        options = ["none", *policy.features]
        picked = st.sidebar.selectbox("Features (a dictionary for this model)", options,
                                      index=options.index(wanted) if wanted in options else 0, key="features_pick")
        return None if picked == "none" else picked
    typed = st.sidebar.text_input("Features (optional): an SAE or transcoder set for this model",
                                  value="" if wanted in (None, "none") else wanted, key="features_typed",
                                  placeholder="a folder or hub id (SAELens, circuit-tracer or sparsify layout)",
                                  help="The Features tab and graphs read the model through it.").strip()
    return typed or None


def display_choice() -> None:
    """The page's type: large for a projector (a switch at the foot of the sidebar), and readable on a phone."""
    st.html(PHONE_CSS)
    if st.sidebar.toggle("Large type (for a projector)", key="large_type",
                         help="Bigger text everywhere, for a room reading the page on a screen."):
        st.html(LARGE_TYPE)


def sidebar(policy: Policy) -> Settings:
    """Model, device, dtype and token limit (public mode: the model only, from the presenter's list)."""
    st.sidebar.header("Model")
    source = model_choice(policy)
    second = compare_choice(policy, source)
    features = features_choice(policy, source)
    if policy.public:
        return Settings(source=source, device="auto", dtype="auto", compare=second, features=features)
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) \
        + (["mps"] if torch.backends.mps.is_available() else []) \
        + (["sharded"] if torch.cuda.device_count() > 1 else [])
    device = st.sidebar.selectbox("Device", devices, key="device",
                                  help="auto picks a GPU when there is one. sharded spreads a big model over GPUs.")
    dtype = st.sidebar.selectbox("Precision", ["auto", "float32", "bfloat16", "float16"], key="dtype",
                                 help="auto: float32 on CPU, half precision on GPU.")
    return Settings(source=source, device=device, dtype=dtype, compare=second, features=features)


def token_limit(policy: Policy, lm: LoadedModel) -> int:
    """The sidebar's token limit, capped by the page's policy and by what the model can read."""
    context = lm.info.context_length
    ceiling = min(policy.max_tokens, context) if context else policy.max_tokens
    if st.session_state.get("max_tokens", 0) > ceiling:  # a model with a shorter context: the box follows it
        st.session_state.max_tokens = ceiling
    default = ceiling if policy.public else min(256, ceiling)
    reason = "This page is shared: prompts stay short." if policy.public else \
        f"At most {ceiling} here" + (f": this model reads at most {context} tokens." if ceiling == context else ".")
    return int(st.sidebar.number_input("Maximum tokens", 4, ceiling, default, step=16, key="max_tokens", help=reason))


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
