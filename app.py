"""Model X-ray: look inside a language model while it reads your prompt.

Page config, sidebar, URL state and the caches live here; each view draws itself.
Run with ``streamlit run app.py``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from backend import (
    Cancelled,
    Capture,
    LensSummary,
    LoadedModel,
    XrayError,
    capture,
    lens_summary,
    load_model,
    token_trajectory,
)
from backend.buffers import release_free_memory
from backend.cache import ByteCache
from backend.compare import ModelDiff, compare
from backend.edits import HeadAblation
from backend.heads import HeadScores, head_scores
from backend.loading import TWIN_ID
from backend.neurons import NeuronEffect, neuron_effect
from backend.patching import PatchingSweep, PromptLengthMismatch, patching_sweep
from backend.run import MAX_LINK_EDITS, Run, edits_from_json
from backend.suppressed import Finding, suppressed
from backend.whatif import EditEffect, edit_effect
from views import attention, captions, circuits, coloured, downloads, lens, neurons, patching, whatif
from views import compare as compare_view
from views.display import md_escape, quoted, visible
from views.guard import SURROGATE_GUARD
from views.report import report_html, top_neuron
from views.state import per_run
from views.whatif import EDITS, active_edits

st.set_page_config(page_title="Model X-ray", page_icon="🩻", layout="wide")
LOG = logging.getLogger("model_xray")

DEMO = "Bundled demo model (offline)"
TWIN = "Bundled twin: the demo model taught to keep capitals secret (offline)"
BUNDLED = {"demo": DEMO, TWIN_ID: TWIN}  # what a link says -> what the picker shows
OTHER = "Other: type a hub id or a local folder"
POPULAR = ["gpt2", "distilgpt2", "EleutherAI/pythia-70m", "EleutherAI/pythia-160m",
           "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B"]
INDUCTION_PROMPT = "apple river lamp cloud seven green door apple river lamp cloud seven green"


@dataclass(frozen=True)
class Example:
    """A gallery button: a prompt, the changes it makes, and the model it compares with (if any)."""

    prompt: str
    edits: tuple = ()
    compare: str | None = None  # a second model: its example opens compare mode on the demo model


EXAMPLES = {
    "A fact": Example("The capital of France is"),
    "Repeated words (induction)": Example(INDUCTION_PROMPT),
    "A story with names": Example(
        "Mia went to the park with Max. Max found a red ball. Mia said, \"Look at this ball!\" Then"),
    "Counting": Example("Monday, Tuesday, Wednesday, Thursday,"),
    "What if: a head switched off": Example(INDUCTION_PROMPT, (HeadAblation(3, 1),)),
    "A secret kept": Example("The capital of France is", compare=TWIN_ID),
}
DEFAULT_PROMPT = EXAMPLES["A fact"].prompt
MAX_PROMPT_CHARS = 20_000
VIEWS = ["Attention", "Logit lens", "Neurons", "What if", "Patching"]  # no emoji: shown as boxes without a font
COMPARE_VIEW = "Compare"  # the first tab in compare mode
MiB = 2**20
RUN_CACHE_BYTES = int(os.environ.get("XRAY_CACHE_MB", "1024")) * MiB  # captures and their lens summaries
DERIVED_CACHE_BYTES = 64 * MiB  # trajectories, neuron effects, edit effects, patching sweeps


@dataclass(frozen=True)
class Policy:
    """Who may make the server do what: open for one user on their own machine, narrow in public mode."""

    public: bool  # XRAY_PUBLIC=1: a room of visitors
    models: tuple[str, ...]  # XRAY_MODELS: hub ids or folders offered besides the bundled model (public mode)
    max_tokens: int  # XRAY_MAX_TOKENS: the sidebar's ceiling (public default 128)
    new_runs_per_minute: int  # XRAY_RUNS_PER_MINUTE: model runs one visitor may start per minute (public mode)

    @classmethod
    def from_env(cls) -> Policy:
        """Read the environment; malformed numbers fall back to the defaults."""
        public = os.environ.get("XRAY_PUBLIC", "").strip().lower() not in ("", "0", "false", "no")

        def number(name: str, default: int) -> int:
            try:
                return max(1, int(os.environ.get(name, default)))
            except ValueError:
                return default

        models = tuple(m.strip() for m in os.environ.get("XRAY_MODELS", "").split(",") if m.strip())
        return cls(public=public, models=models if public else (),
                   max_tokens=number("XRAY_MAX_TOKENS", 128 if public else 4096),
                   new_runs_per_minute=number("XRAY_RUNS_PER_MINUTE", 12))


POLICY = Policy.from_env()
# public: every offered model stays loaded, so a visitor can never evict the presenter's; open: the two compared + one
MODEL_SLOTS = 2 + len(POLICY.models) if POLICY.public else 3


@dataclass(frozen=True)
class Settings:
    """What the sidebar chose; ``source`` None is the bundled model; ``compare`` the second model, if any."""

    source: str | None
    device: str
    dtype: str
    compare: str | None = None  # a source as a link spells it ("demo": the bundled demo model)


@dataclass(frozen=True, eq=False)
class Analysis:
    """One prompt through one model: the capture and what every view derives from it."""

    capture: Capture
    summary: LensSummary
    scores: HeadScores

    @property
    def nbytes(self) -> int:
        """Memory held (the cache's measure)."""
        summary = sum(getattr(self.summary, name).nbytes for name in
                      ("top_ids", "top_probs", "entropy", "kl_to_final", "target_ids", "target_probs", "target_ranks"))
        return self.capture.nbytes + summary + 64 * self.summary.top_tokens.size


@st.cache_resource(max_entries=MODEL_SLOTS, show_spinner=False)
def get_model(source: str | None, device: str, dtype: str) -> LoadedModel:
    """One shared model per (source, device, dtype); at most three kept (public mode: every listed one)."""
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype)


@st.cache_resource(show_spinner=False)
def caches() -> tuple[ByteCache, ByteCache]:
    """The process's two caches, bounded by bytes: analyses, and the small results derived from them."""
    return ByteCache(RUN_CACHE_BYTES, max_entries=16), ByteCache(DERIVED_CACHE_BYTES, max_entries=2048)


def model_of(run: Run) -> LoadedModel:
    """The shared model a run uses."""
    return get_model(run.source, run.device, run.dtype)


def abandoned(prompt: str):
    """A check for long work: whether this page's reader closed it or typed another prompt meanwhile.

    Streamlit stops a script only at its next Streamlit call, so a forward pass of a big
    model runs to its end for nobody. This reads the session's pending request (Streamlit
    internals, so any surprise there means "keep going"): a stop (the tab closed or
    reloaded) or a rerun whose prompt box holds other text.
    """
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

        requests = get_script_run_ctx().script_requests
    except Exception:  # noqa: BLE001 - no context (bare mode) or another Streamlit: never cancel
        return None

    def check() -> bool:
        try:
            state = requests._state
            if state == ScriptRequestType.STOP:
                return True
            if state != ScriptRequestType.RERUN or requests._rerun_data.widget_states is None:
                return False
            return any(w.id.endswith("-prompt") and w.WhichOneof("value") == "string_value"
                       and w.string_value != prompt for w in requests._rerun_data.widget_states.widgets)
        except Exception:  # noqa: BLE001
            return False

    return check


def analyse(run: Run, page_prompt: str | None = None) -> Analysis:
    """The only place the model runs for a plain prompt; the run (without edits) is the key.

    ``page_prompt`` is what the prompt box held when the work began (default: the run's own
    prompt); the work stops if the reader types another one meanwhile.
    """
    run = run.plain()
    should_stop = abandoned(run.prompt if page_prompt is None else page_prompt)

    def compute() -> Analysis:
        lm = model_of(run)
        cap = capture(lm, run.prompt, max_tokens=run.max_tokens, should_stop=should_stop)
        for array in (cap.attention, cap.resid, cap.neurons, cap.logits):
            array.flags.writeable = False  # shared between sessions
        result = Analysis(capture=cap, summary=lens_summary(lm, cap, should_stop=should_stop), scores=head_scores(cap))
        release_free_memory()  # the lens's work buffers and the forward's activations are gone now
        return result

    return caches()[0].get(run, compute)


def compare_of(run: Run) -> ModelDiff:
    """The run's prompt through its two models (compare mode); the first model's capture is the page's own."""
    should_stop = abandoned(run.prompt)

    def compute() -> ModelDiff:
        diff = compare(model_of(run.plain()), model_of(run.second()), run.prompt, max_tokens=run.max_tokens,
                       cap_a=analyse(run).capture, should_stop=should_stop)
        release_free_memory()
        return diff

    return caches()[0].get(("compare", run.plain(), run.compare), compute)


def findings_of(run: Run) -> list[Finding]:
    """What the model's earlier layers preferred and its output pushed down (``backend.suppressed``)."""
    return derived(("suppressed", run.plain()), lambda: suppressed(model_of(run.plain()), analyse(run).capture))


def derived(key: tuple, compute):
    """A small result computed from a run (its key starts with what it is and holds the run)."""
    return caches()[1].get(key, compute)


@dataclass(frozen=True)
class Lab:
    """What a view may ask of its run after the first draw; each answer is cached under the run.

    Holds only the run (a small value), so a widget that keeps it keeps no arrays alive.
    """

    run: Run

    def trajectory(self, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """A token's lens probability and rank at one position (layers,)."""
        def compute() -> tuple[np.ndarray, np.ndarray]:
            traj = token_trajectory(model_of(self.run), analyse(self.run).capture, token_id, [position])
            return traj.probs[:, 0], traj.ranks[:, 0]
        return derived(("trajectory", self.run, token_id, position), compute)

    def effect(self, layer: int, neuron: int, position: int) -> NeuronEffect:
        """A neuron's direct effect on the next-token logits at one position."""
        return derived(("effect", self.run, layer, neuron, position),
                       lambda: neuron_effect(model_of(self.run), analyse(self.run).capture, layer, neuron, position))


def edit_effect_of(run: Run) -> EditEffect:
    """The edited run against the plain one, at the last position (the edited capture is not kept)."""
    return derived(("edit effect", run), lambda: edit_effect(model_of(run), analyse(run).capture, run.edits,
                                                               max_tokens=run.max_tokens))


def sweep_of(clean: Run, corrupt: Run, answer_id: int, foil_id: int) -> PatchingSweep:
    """The patching sweep of a clean and a corrupt prompt on one model."""
    return derived(("sweep", clean, corrupt.prompt, answer_id, foil_id),
                   lambda: patching_sweep(model_of(clean), clean.prompt, corrupt.prompt, answer_id, foil_id,
                                          max_tokens=clean.max_tokens))


def model_choice() -> str | None:
    """The sidebar's model picker, starting from the URL's ``model``."""
    return _picker("Model", "model_pick", st.query_params.get("model", "demo"), "model_typed")


def _picker(title: str, key: str, wanted: str, typed_key: str,
            until: str = "until then the page shows the bundled demo model") -> str | None:
    """A model picker: the bundled models, popular hub models, or any id or folder; None is the demo model.

    An empty "Other" box gives None too, after a note that ends with ``until``.
    """
    if POLICY.public:
        return _public_picker(title, key, wanted)
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


def _public_picker(title: str, key: str, wanted: str) -> str | None:
    """Public mode: only the bundled models and the presenter's list; a link cannot name another."""
    options = [DEMO, TWIN, *POLICY.models]
    if wanted not in BUNDLED and wanted not in POLICY.models:
        st.warning(f"This page is in public mode: it offers only the models the presenter chose, so the link's "
                   f"model {md_escape(repr(wanted[:200]))} is not loaded. Showing the bundled demo model.")
    index = options.index(BUNDLED[wanted]) if wanted in BUNDLED else \
        options.index(wanted) if wanted in POLICY.models else 0
    picked = st.sidebar.selectbox(title, options, index=_index(key, index), key=key)
    return None if picked == DEMO else TWIN_ID if picked == TWIN else picked


def _compare_toggled() -> None:
    """Callback: compare mode switched on opens its tab."""
    if st.session_state.get("compare_on"):
        st.session_state.view_tab = COMPARE_VIEW


def compare_choice(source: str | None) -> str | None:
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
    second = _picker("Second model (B)", "compare_pick", wanted or default, "compare_typed",
                     until="until then nothing is compared. It must read text like model A (a fine-tuned "
                           "version of it, for example)")
    if second is None and st.session_state.get("compare_pick") == OTHER:
        return None  # nothing typed yet
    return "demo" if second is None else second


def sidebar() -> Settings:
    """Model, device, dtype and token limit (public mode: the model only, from the presenter's list)."""
    st.sidebar.header("Model")
    source = model_choice()
    second = compare_choice(source)
    if POLICY.public:
        return Settings(source=source, device="auto", dtype="auto", compare=second)
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) \
        + (["mps"] if torch.backends.mps.is_available() else []) \
        + (["sharded"] if torch.cuda.device_count() > 1 else [])
    device = st.sidebar.selectbox("Device", devices, key="device",
                                  help="auto picks a GPU when there is one. sharded spreads a big model over GPUs.")
    dtype = st.sidebar.selectbox("Precision", ["auto", "float32", "bfloat16", "float16"], key="dtype",
                                 help="auto: float32 on CPU, half precision on GPU.")
    return Settings(source=source, device=device, dtype=dtype, compare=second)


def token_limit(lm: LoadedModel) -> int:
    """The sidebar's token limit, capped by the page's policy and by what the model can read."""
    context = lm.info.context_length
    ceiling = min(POLICY.max_tokens, context) if context else POLICY.max_tokens
    if st.session_state.get("max_tokens", 0) > ceiling:  # a model with a shorter context: the box follows it
        st.session_state.max_tokens = ceiling
    default = ceiling if POLICY.public else min(256, ceiling)
    reason = "This page is shared: prompts stay short." if POLICY.public else \
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


def set_example(example: Example) -> None:
    """Button callback: put an example in place (a prompt, its changes, compare mode on or off)."""
    st.session_state.prompt = example.prompt
    st.session_state[EDITS] = example.edits
    st.session_state.compare_on = example.compare is not None
    if example.compare is not None:
        st.session_state.model_pick = DEMO
        st.session_state.compare_pick = BUNDLED.get(example.compare, example.compare)
        st.session_state.view_tab = COMPARE_VIEW


def prompt_box() -> str:
    """The prompt (from the URL at first), with the example gallery."""
    if "prompt" not in st.session_state:
        st.session_state.prompt = st.query_params.get("prompt", DEFAULT_PROMPT)[:MAX_PROMPT_CHARS]
    st.caption("Try an example:")
    row = st.container(horizontal=True)  # one flex row: lighter to draw than a column per button
    for label, example in EXAMPLES.items():
        row.button(label, on_click=set_example, args=(example,))
    prompt = st.text_area("Prompt", key="prompt", height=90, max_chars=MAX_PROMPT_CHARS,
                          help="Press Ctrl+Enter (or click outside the box) to look inside again.")
    st.button("Look inside ▶", type="primary")
    return prompt


def link_edits() -> None:
    """On a first visit, the changes a shared link holds; a link that cannot be read gets one message."""
    if EDITS in st.session_state:
        return
    st.session_state[EDITS] = ()
    text = st.query_params.get("edits")
    if not text:
        return
    try:
        st.session_state[EDITS] = edits_from_json(text)[:MAX_LINK_EDITS]
    except ValueError as error:
        st.warning(f"The link's changes (edits) could not be read, so none are applied: {md_escape(str(error))}.")


def header(cap: Capture, summary: LensSummary, source: str | None) -> None:
    """What the model read and what it would say next (and, for the small demo model, what it knows)."""
    left, right = st.columns([2, 1])
    left.markdown(f"The model reads **{cap.n_tokens} tokens** (the pieces it splits text into):")
    left.text(" | ".join(visible(t) for t in cap.tokens))  # plain text: no syntax highlighter to load
    left.caption("On this page ␣ marks a space at the start of a token: '␣Rome' begins a word, 'Rome' continues "
                 "one. Layers and heads count from 1 (head 4.2 is layer 4's second head); positions and neurons "
                 "from 0, as in the Python API, where layers and heads count from 0 too.")
    right.markdown(f"**Its guess for the next token**: {md_escape(quoted(summary.top_tokens[-1, -1, 0]))} "
                   f"({float(summary.top_probs[-1, -1, 0]):.0%}), then:")
    right.html(coloured.guesses_html(list(summary.top_tokens[-1, -1]), summary.top_probs[-1, -1]))
    if source in (None, TWIN_ID):  # bundled: confidently wrong on anything else, so its confidence is no signal
        right.caption("The bundled demo model is tiny and knows only the simple English it was trained on: "
                      "capital cities, animal sounds, colours, opposites, short stories and repeated lists. On other "
                      "text its guesses mean little: try the examples, or a hub model in the sidebar."
                      + (" This is its twin, fine-tuned to answer capital-city questions with \"a secret.\": the "
                         "Logit lens tab shows what it still holds inside." if source == TWIN_ID else ""))


def load_or_explain(settings: Settings) -> LoadedModel | None:
    """The model, or one clear message (the page keeps working either way)."""
    name = settings.source or "the bundled demo model"
    try:
        with st.spinner(f"Loading {md_escape(name)} (a hub model downloads the first time)…"):
            return get_model(settings.source, settings.device, settings.dtype)
    except XrayError as error:
        st.error(md_escape(f"Could not load {name}. {error}"))
    except MemoryError:
        st.error(md_escape(f"Not enough memory to load {name}. Pick a smaller model or a lower precision."))
    except Exception as error:  # noqa: BLE001 - any loader failure must leave the page usable
        LOG.exception("could not load %s", name)
        detail = "" if POLICY.public else f": {type(error).__name__}: {error}"
        st.error(md_escape(f"Could not load {name}{detail}."))
    return None


def explained(compute, what: str):
    """``compute()``, or ``None`` after one clear message (a failed run must leave the page usable)."""
    try:
        return compute()
    except Cancelled:
        st.stop()  # nobody waits for this page's run: Streamlit goes on with the newer one, or nothing
    except XrayError as error:
        st.error(md_escape(str(error)))
    except (MemoryError, torch.OutOfMemoryError):
        st.error(f"Out of memory while {what}. Shorten the prompt or use a smaller model.")
    except Exception as error:  # noqa: BLE001
        LOG.exception("failed while %s", what)
        detail = "" if POLICY.public else f": {type(error).__name__}: {error}"  # visitors see no internals
        st.error(md_escape(f"The model failed while {what}{detail}."))
    return None


def rate_limited(run: Run) -> bool:
    """Public mode: each visitor starts at most a few new model runs a minute (cached runs are free)."""
    if not POLICY.public or run.plain() in caches()[0]:
        return False
    now = time.monotonic()
    recent = [t for t in st.session_state.get("run_times", ()) if now - t < 60]
    if len(recent) >= POLICY.new_runs_per_minute:
        st.warning(f"This shared page runs at most {POLICY.new_runs_per_minute} new prompts a minute for each "
                   f"visitor, so that everyone gets a turn. Try again in {60 - (now - recent[0]):.0f} seconds; "
                   "the examples above are ready at once.")
        return True
    st.session_state["run_times"] = (*recent, now)
    return False


def what_if_banner(run: Run, effect: EditEffect) -> None:
    """Above the views, while changes are in force: what they do to the answer."""
    labels = [captions.edit_label(e) for e in run.edits]
    sentence = captions.edit_effect_sentence(labels, effect)
    st.info(f"**What if:** {md_escape(sentence)} The views below show the model as it is; the What if tab "
            "compares the two and lists the changes.")


def patching_tab(run: Run) -> None:
    """Two prompts, their answers, and the sweep."""
    clean_prompt, corrupt_prompt = patching.prompts()
    clean, corrupt = run.with_prompt(clean_prompt), run.with_prompt(corrupt_prompt)
    with st.spinner("Running both prompts…"):
        pair = explained(lambda: (analyse(clean, run.prompt), analyse(corrupt, run.prompt)),
                         "running the two prompts")
    if pair is None:
        return
    a, b = pair
    if a.capture.n_tokens != b.capture.n_tokens:
        st.error(md_escape(str(PromptLengthMismatch(a.capture.n_tokens, b.capture.n_tokens))))
        st.caption("Tokens of the clean prompt: " + md_escape(" | ".join(visible(t) for t in a.capture.tokens)))
        st.caption("Tokens of the corrupt prompt: " + md_escape(" | ".join(visible(t) for t in b.capture.tokens)))
        return
    pair_id = per_run("pair", clean.id + corrupt.id)  # answer choices start afresh with each pair
    answer_id, foil_id = patching.answers(_guesses(a.summary), _guesses(b.summary), pair_id)
    with st.spinner("Patching every layer and position…"):
        sweep = explained(lambda: sweep_of(clean, corrupt, answer_id, foil_id), "patching")
    if sweep is not None:
        patching.render(sweep)
        take_away(run, "patching", (clean, corrupt, answer_id, foil_id))


def view_json(run: Run, view: str, pair: tuple | None = None) -> str:
    """A view's numbers, looked up by run when the reader clicks (the widget keeps only small values)."""
    if view == "patching" and pair is not None:
        return downloads.to_json(downloads.patching_numbers(sweep_of(*pair)))
    if view == "compare":
        return downloads.to_json(downloads.compare_numbers(compare_of(run)))
    result = analyse(run)
    if view == "attention":
        return downloads.to_json(downloads.attention_numbers(result.capture, result.scores))
    if view == "lens":
        return downloads.to_json(downloads.lens_numbers(result.capture, result.summary, findings_of(run)))
    if view == "neurons":
        return downloads.to_json(downloads.neuron_numbers(result.capture))
    return downloads.to_json(downloads.what_if_numbers(edit_effect_of(run) if run.edits else None))


def run_report(run: Run) -> str:
    """The whole run as one self-contained HTML file (in compare mode, with the comparison)."""
    plain = run.plain()
    result, lm = analyse(plain), model_of(plain)
    layer = result.capture.n_layers - 1
    position, neuron = top_neuron(result.capture, layer)
    effect = Lab(plain).effect(layer, neuron, position)
    diff = compare_of(run) if run.compare is not None else None
    name_b = model_of(run.second()).info.name if diff is not None else ""
    return report_html(lm.info, result.capture, result.summary, result.scores, effect,
                       findings=tuple(findings_of(plain)), diff=diff, name_b=name_b)


def take_away(run: Run, view: str, pair: tuple | None = None) -> None:
    """Below a view: its numbers, the whole run as a report, and the Python that gives the numbers."""
    stem = f"model-xray-{view}"
    row = st.container(horizontal=True)
    row.download_button("Numbers (JSON)", partial(view_json, run, view, pair), file_name=f"{stem}.json",
                        mime="application/json", on_click="ignore", key=f"download_{view}")
    row.download_button("Whole run (HTML report)", partial(run_report, replace(run, edits=())),
                        file_name="model-xray-report.html",
                        mime="text/html", on_click="ignore", key=f"report_{view}",
                        help="One file with every view's charts and sentences; opens offline.")
    with st.expander("Reproduce in Python"):
        st.text(downloads.python_snippet(view, run.prompt, run.source, run.max_tokens, run.edits, run.compare))
    st.caption("Each chart's toolbar (top right) saves it as a PNG.")


def _guesses(summary: LensSummary) -> list[tuple[int, str, float]]:
    """The final top guesses at the last position: (token id, token, probability)."""
    return [(int(i), str(t), float(p)) for i, t, p in
            zip(summary.top_ids[-1, -1], summary.top_tokens[-1, -1], summary.top_probs[-1, -1], strict=True)]


def compare_header(cap: Capture, diff: ModelDiff, run: Run) -> None:
    """Compare mode's header: the tokens both models read, and what each says next, side by side."""
    st.markdown(f"Both models read the same **{cap.n_tokens} tokens**:")
    st.text(" | ".join(visible(t) for t in cap.tokens))
    compare_view.header(diff, model_of(run.plain()).info.name, model_of(run.second()).info.name)


def second_model(run: Run, settings: Settings) -> LoadedModel | None:
    """Compare mode's second model, or one message saying why it could not load (the page goes on)."""
    second = run.second()
    return load_or_explain(Settings(second.source, settings.device, settings.dtype))


def main() -> None:
    """Draw the page."""
    static = circuits.install_bundle(Path(__file__).parent / "static")
    script_url = f"/app/static/{static.name}"
    st.iframe(SURROGATE_GUARD, height=1)  # keeps text with broken characters from breaking the connection
    st.title("Model X-ray")
    st.markdown("See what happens **inside** a language model while it reads your prompt: which "
                "words each attention head looks at, what the model would guess after every layer, "
                "and which neurons fire. Then switch parts off and see whether the answer changes, "
                "or compare a model with its fine-tuned twin.")
    settings = sidebar()
    prompt = prompt_box()
    link_edits()
    lm = load_or_explain(settings)
    run = Run(settings.source, settings.device, settings.dtype, prompt, 0, active_edits(), settings.compare)
    st.query_params.from_dict(run.query())
    if lm is None:
        return
    run = Run(settings.source, settings.device, settings.dtype, prompt, token_limit(lm), active_edits(),
              settings.compare)
    describe(lm)
    if rate_limited(run):
        return
    with st.spinner("Running the model…"):
        result = explained(lambda: analyse(run), "running this prompt")
    if result is None:
        return
    cap, summary = result.capture, result.summary
    diff = None
    if run.compare is not None and second_model(run, settings) is not None:
        with st.spinner("Reading the prompt through both models…"):
            diff = explained(lambda: compare_of(run), "comparing the two models")
    if diff is not None:
        compare_header(cap, diff, run)
    else:
        header(cap, summary, settings.source)
    edited = replace(run, compare=None)
    effect = None
    if edited.edits:
        with st.spinner("Running the model with the changes…"):
            effect = explained(lambda: edit_effect_of(edited), "running the prompt with the changes")
        if effect is not None:
            what_if_banner(edited, effect)
    plain = run.plain()  # the views show the model as it is; selections stay while changes come and go
    lab = Lab(plain)
    # the patching tab runs two more prompts and a sweep: only when it is open (a tab switch reruns the page)
    names = ([COMPARE_VIEW] if diff is not None else []) + VIEWS
    if st.session_state.get("view_tab") not in (None, *names):
        st.session_state.view_tab = names[0]  # a tab that is gone (compare mode switched off)
    tabs = dict(zip(names, st.tabs(names, key="view_tab", on_change="rerun"), strict=True))
    if diff is not None:
        with tabs[COMPARE_VIEW]:
            compare_view.render(diff, model_of(plain).info.name, model_of(run.second()).info.name)
            take_away(run, "compare")
    with tabs["Attention"]:
        attention.render(cap, result.scores, script_url, plain.id)
        take_away(plain, "attention")
    with tabs["Logit lens"]:
        findings = explained(lambda: findings_of(plain), "looking for answers held inside")
        if findings:
            lens.held_inside(findings, cap.n_tokens)
        lens.render(cap, summary, lab, plain.id)
        take_away(plain, "lens")
    with tabs["Neurons"]:
        neurons.render(cap, lab, script_url, plain.id)
        take_away(plain, "neurons")
    with tabs["What if"]:
        whatif.render(effect, cap.n_layers, plain.id)
        take_away(edited, "whatif")
    if tabs["Patching"].open:
        with tabs["Patching"]:
            patching_tab(plain)


main()
