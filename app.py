"""Model X-ray: look inside a language model while it reads your prompt.

The composition of the page: settings from the sidebar make a run (``backend.run.Run``),
the run's results come from the shared caches (``views.queries``), and each view draws
its content. Run with ``streamlit run app.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from backend.meter import visiting
from backend.patching import PromptLengthMismatch
from backend.run import Run
from views import attention, circuits, comparison, features, lens, neurons, page, patching, whatif
from views import compare as compare_view
from views import graph as graph_view
from views.content import compare as compare_content
from views.content import header as header_content
from views.content import patching as patching_content
from views.content import whatif as whatif_content
from views.display import md_escape, visible
from views.guard import SURROGATE_GUARD
from views.policy import Policy
from views.queries import (
    RunResults,
    analyse,
    compare_of,
    continuation_of,
    edit_effect_of,
    findings_of,
    get_model,
    sweep_of,
)
from views.sidebar import Settings, describe, display_choice, sidebar, token_limit
from views.state import per_run
from views.whatif import active_edits

st.set_page_config(page_title="Model X-ray", page_icon="🩻", layout="wide")
POLICY = Policy.from_env()
VIEWS = ["Attention", "Logit lens", "Neurons", "Features", "Graph", "What if", "Patching"]  # no emoji: no font


def patching_tab(run: Run, drawn: dict) -> None:
    """Two prompts, their answers, and the sweep."""
    clean_prompt, corrupt_prompt = patching.prompts(run)
    if clean_prompt.strip() == corrupt_prompt.strip():
        st.info("The two prompts are the same: change one detail in the corrupt prompt (keep its length).")
        return
    clean, corrupt = run.with_prompt(clean_prompt), run.with_prompt(corrupt_prompt)
    with st.spinner("Running both prompts…"):
        pair = page.explained(lambda: (analyse(clean, run.prompt), analyse(corrupt, run.prompt)),
                              "running the two prompts", POLICY)
    if pair is None:
        return
    a, b = pair
    if a.capture.n_tokens != b.capture.n_tokens:
        st.error(md_escape(str(PromptLengthMismatch(a.capture.n_tokens, b.capture.n_tokens))))
        st.caption("Tokens of the clean prompt: " + md_escape(" | ".join(visible(t) for t in a.capture.tokens)))
        st.caption("Tokens of the corrupt prompt: " + md_escape(" | ".join(visible(t) for t in b.capture.tokens)))
        return
    if a.capture.n_tokens > POLICY.patch_tokens:
        st.error(md_escape(f"The prompts have {a.capture.n_tokens} tokens; patching on this page runs for at most "
                           f"{POLICY.patch_tokens} (a sweep runs the model once for every layer and position). "
                           "Shorten both prompts."))
        return
    pair_id = per_run("pair", clean.id + corrupt.id)  # answer choices start afresh with each pair
    answer_id, foil_id = patching.answers(page.guesses(a.summary), page.guesses(b.summary), pair_id)
    with st.spinner("Patching every layer and position…"):
        sweep = page.explained(lambda: sweep_of(clean, corrupt, answer_id, foil_id), "patching", POLICY)
    if sweep is not None:
        drawn[patching_content.TITLE] = patching_content.PatchingChoices(clean_prompt, corrupt_prompt, answer_id,
                                                                         foil_id)
        patching.render(sweep)
        page.take_away(run, "patching", drawn, (clean, corrupt, answer_id, foil_id))


class _GraphOf:
    """The run's graphs under the page's token limit for them."""

    def __init__(self, results: RunResults, max_tokens: int) -> None:
        self.results, self.max_tokens = results, max_tokens

    def graph(self, node_threshold: float):
        return self.results.graph(node_threshold, self.max_tokens)

    def graph_labels(self) -> dict:
        return self.results.graph_labels()


def compare_section(run: Run, settings: Settings, drawn: dict):
    """Compare mode's comparison, or None (no second model, or one clear message why not)."""
    second = run.second()
    if page.load_or_explain(Settings(second.source, settings.device, settings.dtype), POLICY, get_model) is None:
        return None
    circuit = comparison.auto_circuit(run) or st.session_state.get(compare_view.BUILD_CIRCUIT) == run.plain().id
    with st.spinner("Reading the prompt through both models…"):
        content = page.explained(lambda: comparison.compare_content(run, page.CANDIDATES, POLICY.graph_tokens,
                                                                    circuit), "comparing the two models", POLICY)
    if content is None:
        return None
    drawn[comparison.CIRCUIT] = circuit
    return compare_of(run), content


def main() -> None:
    """Draw the page; in public mode every piece of model work is charged to the visitor (``backend.meter``)."""
    if POLICY.public:
        st.set_option("client.showErrorDetails", "none")  # however the page was started: no traces to visitors
    with visiting(page.model_meter(POLICY), page.visitor()):
        draw_page()


def draw_page() -> None:
    """The page itself."""
    static = circuits.install_bundle(Path(__file__).parent / "static")
    script_url = f"/app/static/{static.name}"
    st.iframe(SURROGATE_GUARD, height=1)  # keeps text with broken characters from breaking the connection
    st.title("Model X-ray")
    st.markdown("See what happens **inside** a language model while it reads your prompt: which "
                "words each attention head looks at, what the model would guess after every layer, "
                "and which neurons fire. Then switch parts off and see whether the answer changes, "
                "or compare a model with its fine-tuned twin.")
    settings = sidebar(POLICY)
    display_choice()
    prompt = page.prompt_box()
    page.link_edits()
    lm = page.load_or_explain(settings, POLICY, get_model)
    run = Run(settings.source, settings.device, settings.dtype, prompt, 0, active_edits(), settings.compare,
              settings.features)
    st.query_params.from_dict(run.query())
    if lm is None:
        return
    run = replace(run, max_tokens=token_limit(POLICY, lm))
    describe(lm)
    if page.rate_limited(run, POLICY):
        return
    with st.spinner("Running the model…"):
        result = page.explained(lambda: analyse(run), "running this prompt", POLICY)
    if result is None:
        return
    plain = run.plain()  # the views show the model as it is; selections stay while changes come and go
    drawn = page.drawn_for(plain)
    compared = compare_section(run, settings, drawn) if run.compare is not None else None
    shown, compared_run, compared_drawn = None, run, drawn  # compare mode: the model the single-model tabs show
    if compared is not None:
        shown, second = compare_view.shown_model(compared[1].header.titles)
        if second:  # B in the single-model tabs: its own run, changes and choices
            run = replace(run.second(), edits=run.edits)
            result = page.explained(lambda: analyse(run), "running this prompt through B", POLICY)
            if result is None:
                return
            plain = run.plain()
            drawn = compared_drawn[page.SECOND_TABS] = page.drawn_for(plain, "drawn_b")  # the report's B views
        else:
            compared_drawn.pop(page.SECOND_TABS, None)
    cap, summary = result.capture, result.summary
    edited = replace(run, compare=None)
    effect = None
    if edited.edits:
        with st.spinner("Running the model with the changes…"):
            effect = page.explained(lambda: edit_effect_of(edited), "running the prompt with the changes", POLICY)
    if compared is not None:
        compare_view.header(compared[1], cap.tokens)
        compare_view.shown_choice(compared[1].header.titles)
    else:
        goes_on = page.explained(lambda: continuation_of(plain), "writing what the model goes on to say", POLICY)
        page.header(header_content.content(cap, summary, page.bundled_kind(settings.source),
                                           goes_on.text if goes_on is not None else None, effect))
    if effect is not None:
        page.what_if_banner(whatif_content.content(effect).sentence)
    results = RunResults(plain)
    # the patching tab runs two more prompts and a sweep: only when it is open (a tab switch reruns the page)
    names = ([compare_content.TITLE] if compared is not None else []) + VIEWS
    if st.session_state.get("view_tab") not in (None, *names):
        st.session_state.view_tab = names[0]  # a tab that is gone (compare mode switched off)
    tabs = dict(zip(names, st.tabs(names, key="view_tab", on_change="rerun"), strict=True))
    if compared is not None:
        with tabs[compare_content.TITLE]:
            compare_view.scan_part(compared[1])  # as a talk goes: what changed, where it is, what suppresses it
            compare_view.render(*compared)
            compare_view.circuit_part(compared[1], compared_run.compare, compared_run.plain().id)
            page.take_away(compared_run, "compare", compared_drawn)
    with compare_view.in_tab(tabs["Attention"], shown):
        attention.render(cap, result.scores, script_url, plain.id, drawn)
        page.take_away(plain, "attention", drawn)
    with compare_view.in_tab(tabs["Logit lens"], shown):
        findings = page.explained(lambda: findings_of(plain), "looking for answers held inside", POLICY) or []
        lens.render(cap, summary, findings, results, plain.id, drawn)
        page.take_away(plain, "lens", drawn)
    with compare_view.in_tab(tabs["Neurons"], shown):
        neurons.render(cap, results, script_url, plain.id, drawn)
        page.take_away(plain, "neurons", drawn)
    with compare_view.in_tab(tabs["Features"], shown):
        features.render(cap, results, plain.id, drawn, result.features_error, plain.features)
        page.take_away(plain, "features", drawn)
    if tabs["Graph"].open:  # a graph costs a backward pass per node: only when its tab is open
        with compare_view.in_tab(tabs["Graph"], shown):
            graphed = graph_view.render(_GraphOf(results, POLICY.graph_tokens), plain.id, drawn, plain.features,
                                        lambda compute, what: page.explained(compute, what, POLICY),
                                        POLICY.graph_tokens)
            if graphed is not None:
                page.take_away(plain, "graph", drawn)
    with compare_view.in_tab(tabs["What if"], shown):
        if effect is None:
            drawn.pop(whatif_content.TITLE, None)
        whatif.render(effect, cap.n_layers, plain.id, drawn, plain.prompt, plain.source is None)
        page.take_away(edited, "whatif", drawn)
    if tabs["Patching"].open:
        with compare_view.in_tab(tabs["Patching"], shown):
            patching_tab(plain, drawn)


main()
