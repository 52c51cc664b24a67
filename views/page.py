"""The parts of the page around the views: examples and the prompt, the header, messages, take-aways.

Every failure becomes one clear message and the page stays usable; the take-aways under a
view (its numbers, the whole run as a report, the Python that gives the numbers) are built
from the same content the page drew.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import streamlit as st
import torch
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from backend import Cancelled, LoadedModel, XrayError, meter
from backend.edits import HeadAblation
from backend.errors import PromptTooLong
from backend.loading import TWIN_ID
from backend.meter import Meter, OverBudget
from backend.run import MAX_LINK_EDITS, Run, edits_from_json
from views import downloads
from views.comparison import CIRCUIT, compare_content
from views.content import Section, Text
from views.content import attention as attention_view
from views.content import compare as compare_view
from views.content import features as features_view
from views.content import graph as graph_view
from views.content import header as header_view
from views.content import lens as lens_view
from views.content import neurons as neurons_view
from views.content import patching as patching_view
from views.content import whatif as whatif_view
from views.content.whatif import INDUCTION_PROMPT
from views.display import md_escape, md_message
from views.draw import draw_text
from views.features import where
from views.lens import track
from views.policy import Policy
from views.queries import (
    RunResults,
    analyse,
    analyses,
    compare_of,
    continuation_of,
    edit_effect_of,
    findings_of,
    model_of,
    sweep_of,
)
from views.report import report_html
from views.sidebar import BUNDLED, DEMO, Settings
from views.snippets import python_snippet
from views.whatif import EDITS

LOG = logging.getLogger("model_xray")
MAX_PROMPT_CHARS = 20_000


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
CANDIDATES = tuple(dict.fromkeys(example.prompt for example in EXAMPLES.values()))  # what a scan may suggest


def set_example(example: Example) -> None:
    """Button callback: put an example in place (a prompt, its changes, compare mode on or off)."""
    ask_to_scroll()
    st.session_state.prompt = example.prompt
    st.session_state[EDITS] = example.edits
    st.session_state.compare_on = example.compare is not None
    if example.compare is not None:
        st.session_state.model_pick = DEMO
        st.session_state.compare_pick = BUNDLED.get(example.compare, example.compare)
        st.session_state.view_tab = compare_view.TITLE
    elif example.edits:
        st.session_state.view_tab = whatif_view.TITLE  # the changes' effect, and the note that explains them


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
    st.button("Look inside ▶", type="primary", on_click=ask_to_scroll)
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


def bundled_kind(source: str | None) -> str | None:
    """"demo" or "twin" for the bundled models (the header says what they know), else None."""
    return "demo" if source is None else "twin" if source == TWIN_ID else None


SCROLL = "scroll_to_answers"  # session key: bring the answers into view on this run (an example, "Look inside")


def ask_to_scroll() -> None:
    """Button callback: the next run brings the answers into view (a phone shows them without scrolling)."""
    st.session_state[SCROLL] = st.session_state.get(SCROLL, 0) + 1


def scroll_marker() -> None:
    """Where the page scrolls to when asked (``views.guard``'s script watches for this marker)."""
    count = st.session_state.pop(SCROLL, None)
    if count:
        st.html(f'<div data-xray-scroll="{int(count)}-{time.monotonic_ns()}"></div>')


def header(content: header_view.HeaderContent) -> None:
    """What the model read and what it would say next (and, for the small demo model, what it knows)."""
    scroll_marker()
    draw_text(content.goes_on, "lead")
    left, right = st.columns([2, 1])
    draw_text(content.count, where=left)
    draw_text(content.tokens, "tokens", left)
    draw_text(header_view.TOKENS_NOTE, "caption", left)
    draw_text(content.guess, "lead", right)
    right.html(content.guesses)
    draw_text(content.edited, "lead", right)
    draw_text(content.model_note, "caption", right)


def load_or_explain(settings: Settings, policy: Policy, get_model) -> LoadedModel | None:
    """The model, or one clear message (the page keeps working either way)."""
    name = settings.source or "the bundled demo model"
    try:
        with st.spinner(f"Loading {md_escape(name)} (a hub model downloads the first time)…"):
            return get_model(settings.source, settings.device, settings.dtype)
    except XrayError as error:
        st.error(md_message(f"Could not load {name}. {error}"))
    except MemoryError:
        st.error(md_escape(f"Not enough memory to load {name}. Pick a smaller model or a lower precision."))
    except Exception as error:  # noqa: BLE001 - any loader failure must leave the page usable
        LOG.exception("could not load %s", name)
        detail = "" if policy.public else f": {type(error).__name__}: {error}"
        st.error(md_escape(f"Could not load {name}{detail}."))
    return None


def explained(compute, what: str, policy: Policy):
    """``compute()``, or ``None`` after one clear message (a failed run must leave the page usable)."""
    try:
        return compute()
    except Cancelled:
        st.stop()  # nobody waits for this page's run: Streamlit goes on with the newer one, or nothing
    except PromptTooLong as error:
        if policy.public and error.limit >= policy.max_tokens:  # the visitor cannot raise it
            st.error(md_escape(f"The prompt is too long: {error.n_tokens} tokens, and this shared page reads at "
                               f"most {policy.max_tokens}. Shorten the prompt."))
        else:
            st.error(md_message(str(error)))
    except XrayError as error:
        st.error(md_message(str(error)))
    except (MemoryError, torch.OutOfMemoryError):
        st.error(f"Out of memory while {what}. Shorten the prompt or use a smaller model.")
    except Exception as error:  # noqa: BLE001
        LOG.exception("failed while %s", what)
        detail = "" if policy.public else f": {type(error).__name__}: {error}"  # visitors see no internals
        st.error(md_escape(f"The model failed while {what}{detail}."))
    return None


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def visitor() -> str:
    """Who is asking: the client's address (one budget for every tab and reload from it).

    Behind a proxy on this machine (``deploy/nginx.conf``) the direct peer is the loopback
    address, so the address the proxy saw (its ``X-Real-IP`` header) is used; that header is
    trusted only from the loopback, where a visitor cannot set it. Visitors behind one NAT
    share one address, and so one budget.
    """
    try:
        address = st.context.ip_address
        if address in LOOPBACK or address is None:
            address = st.context.headers.get("X-Real-IP") or address
    except Exception:  # noqa: BLE001 - no request context (bare mode)
        address = None
    return address if isinstance(address, str) and address else "local"  # AppTest: no client at all


@st.cache_resource(show_spinner=False)
def _meters(budget_s: int, runs: int) -> tuple[Meter, Meter]:
    """The process's two meters for these limits: model seconds, and new runs, per visitor per minute."""
    return Meter(budget_s, 60.0), Meter(runs, 60.0)


def model_meter(policy: Policy) -> Meter | None:
    """The meter of model time every kind of work is charged to (public mode), or None."""
    return _meters(policy.budget_s, policy.new_runs_per_minute)[0] if policy.public and policy.budget_s else None


def rate_limited(run: Run, policy: Policy) -> bool:
    """Public mode: each visitor (address) starts at most a few new model runs a minute (cached runs are free)."""
    if not policy.public or run.plain() in analyses():
        return False
    runs = _meters(policy.budget_s, policy.new_runs_per_minute)[1]
    who = visitor()
    try:
        runs.check(who)
    except OverBudget as over:
        st.warning(f"This shared page runs at most {policy.new_runs_per_minute} new prompts a minute for each "
                   f"visitor, so that everyone gets a turn. Try again in {max(1, round(over.wait_s))} seconds; "
                   "the examples above are ready at once.")
        return True
    runs.charge(who, 1)
    return False


def what_if_banner(sentence: str) -> None:
    """Above the views, while changes are in force: what they do to the answer."""
    st.info(f"**What if:** {md_escape(sentence)} The views below show the model as it is; the What if tab "
            "compares the two and lists the changes.")


def drawn_for(run: Run, key: str = "drawn") -> dict:
    """The choices each view drew for this run (small values), which the report draws again.

    ``key``: where the page keeps them (compare mode keeps B's, when its tabs show B, apart).
    """
    book = st.session_state.get(key)
    if not isinstance(book, dict) or book.get("run") != run.id:
        book = {"run": run.id}
        st.session_state[key] = book
    return book


SECOND_TABS = "second_tabs"  # in compare mode's book: B's choices, when the single-model tabs showed B


def report_sections(run: Run, drawn: dict) -> list[Section]:
    """Every view the page drew for ``run``, in the page's order, from the choices it drew them with.

    In compare mode, when the single-model tabs showed B (``drawn[SECOND_TABS]`` holds their
    choices), the views after the comparison are B's.
    """
    plain = run.plain()
    result = analyse(plain)
    cap, summary, results = result.capture, result.summary, RunResults(plain)
    sections: list[Section] = []
    if run.compare is not None:
        sections.append(compare_content(run, CANDIDATES, Policy.from_env().graph_tokens,
                                        bool(drawn.get(CIRCUIT))).section())
    effect = edit_effect_of(replace(plain, edits=run.edits)) if run.edits else None
    sections.insert(0, header_view.content(cap, summary, bundled_kind(run.source), continuation_of(plain).text,
                                           effect).section())
    if run.compare is not None and isinstance(drawn.get(SECOND_TABS), dict):  # the tabs showed B: so does this
        plain, drawn = run.second(), drawn[SECOND_TABS]
        result = analyse(plain)
        cap, summary, results = result.capture, result.summary, RunResults(plain)
        sections.append(Section("Model B", (Text(f"The views below look inside B ({model_of(plain).info.name}), "
                                                 "as the page's tabs did."),)))
    attention = drawn.get(attention_view.TITLE) or attention_view.defaults(cap, result.scores)
    sections.append(attention_view.content(cap, result.scores, attention).section())
    lens = drawn.get(lens_view.TITLE) or lens_view.defaults(cap, summary)
    sections.append(lens_view.content(cap, summary, findings_of(plain), lens,
                                      track(summary, results, lens.token_id, lens.position)).section())
    neurons = drawn.get(neurons_view.TITLE) or neurons_view.defaults(cap)
    effect = results.effect(neurons.layer, neurons.neuron, neurons.position)
    sections.append(neurons_view.content(cap, neurons, effect).section())
    chosen = drawn.get(features_view.TITLE)
    if chosen is not None and cap.features is not None:
        sections.append(features_view.content(
            cap, chosen, results.feature_labels(chosen.layer), results.feature_card(chosen.layer, chosen.feature),
            results.feature_effect(chosen.layer, chosen.feature, chosen.position), where(cap, chosen.layer)).section())
    pruning = drawn.get(graph_view.TITLE)
    if pruning is not None:
        sections.append(graph_view.content(results.graph(*pruning), results.graph_labels()).section())
    edits = drawn.get(whatif_view.TITLE)
    if edits:
        sections.append(whatif_view.content(edit_effect_of(replace(plain, edits=edits)), plain.prompt,
                                            plain.source is None).section())
    pair = drawn.get(patching_view.TITLE)
    if pair is not None:
        sweep = sweep_of(plain.with_prompt(pair.clean), plain.with_prompt(pair.corrupt), pair.answer_id, pair.foil_id)
        sections.append(patching_view.content(sweep).section())
    return sections


def run_report(run: Run, drawn: dict) -> str:
    """The whole run as one self-contained HTML file (in compare mode, with the comparison)."""
    return report_html(model_of(run.plain()).info, report_sections(run, dict(drawn)))


def view_json(run: Run, view: str, pair: tuple | None = None, drawn: dict | None = None) -> str:
    """A view's numbers, looked up by run when the reader clicks (the widget keeps only small values)."""
    if view == "patching" and pair is not None:
        return downloads.to_json(downloads.patching_numbers(sweep_of(*pair)))
    if view == "compare":
        return downloads.to_json(downloads.compare_numbers(compare_of(run)))
    drawn = drawn or {}
    result = analyse(run)
    if view == "attention":
        return downloads.to_json(downloads.attention_numbers(result.capture, result.scores))
    if view == "lens":
        return downloads.to_json(downloads.lens_numbers(result.capture, result.summary, findings_of(run)))
    if view == "neurons":
        return downloads.to_json(downloads.neuron_numbers(result.capture))
    if view == "features":
        return downloads.to_json(downloads.feature_numbers(result.capture))
    if view == "graph":
        queries = RunResults(run)
        threshold, max_tokens = drawn.get(graph_view.TITLE, (0.8, 64))
        return downloads.to_json(queries.graph(threshold, max_tokens).to_json(labels=queries.graph_labels()))
    return downloads.to_json(downloads.what_if_numbers(edit_effect_of(run) if run.edits else None))


SNIPPET_CHOICES = {"attention": attention_view.TITLE, "lens": lens_view.TITLE, "neurons": neurons_view.TITLE,
                   "features": features_view.TITLE, "graph": graph_view.TITLE, "whatif": whatif_view.TITLE,
                   "patching": patching_view.TITLE}  # a view's name -> where ``drawn`` keeps its choices


def deferred(make: Callable[[], object]) -> Callable[[], object]:
    """A download's ``make``, run later in Streamlit's worker thread as if in this page's run.

    Streamlit calls a download's callable outside the script's thread: without the run's
    context every cached lookup logs "missing ScriptRunContext", and without the visitor in
    force the work would not be charged (``backend.meter``). Both are carried over and taken
    off the worker thread again afterwards.
    """
    ctx, visit = get_script_run_ctx(suppress_warning=True), meter.in_force()

    def call() -> object:
        thread = threading.current_thread()
        before = get_script_run_ctx(suppress_warning=True)
        add_script_run_ctx(thread, ctx)
        try:
            with meter.visiting(*(visit or (None, ""))):
                return make()
        finally:
            add_script_run_ctx(thread, before)
    return call


def take_away(run: Run, view: str, drawn: dict, pair: tuple | None = None) -> None:
    """Below a view: its numbers, the whole run as a report, and the Python that gives the numbers."""
    stem = f"model-xray-{view}"
    row = st.container(horizontal=True)
    row.download_button("Numbers (JSON)", deferred(partial(view_json, run, view, pair, drawn)),
                        file_name=f"{stem}.json",
                        mime="application/json", on_click="ignore", key=f"download_{view}")
    row.download_button("Whole run (HTML report)", deferred(partial(run_report, replace(run, edits=()), drawn)),
                        file_name="model-xray-report.html",
                        mime="text/html", on_click="ignore", key=f"report_{view}",
                        help="One file with every view's charts and sentences; opens offline.")
    with st.expander("Reproduce in Python"):
        st.text(python_snippet(view, run, drawn.get(SNIPPET_CHOICES.get(view, ""))))
    st.caption("On a computer, each chart's toolbar (top right) saves it as a PNG.")


def guesses(summary) -> list[tuple[int, str, float]]:
    """The final top guesses at the last position: (token id, token, probability)."""
    return [(int(i), str(t), float(p)) for i, t, p in
            zip(summary.top_ids[-1, -1], summary.top_tokens[-1, -1], summary.top_probs[-1, -1], strict=True)]
