"""The compare view: one prompt through two models, where they part ways and where the difference lives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from backend.compare import ModelDiff
from backend.edits import Edit
from backend.loading import TWIN_ID
from views.content import Chart, Html
from views.content import circuit_diff as circuit_view
from views.content import compare as view
from views.display import md_escape, visible
from views.draw import draw, draw_text
from views.intro import intro
from views.page import scroll_marker
from views.sidebar import BUNDLED, DEMO, OTHER, POPULAR, TWIN
from views.whatif import EDITS

WHAT_IF = "What if"
BUILD_CIRCUIT = "circuit_for"  # session key: the run whose circuit diff the reader asked for


def _try_prompt(prompt: str) -> None:
    """Button callback: the scan's suggested prompt in the prompt box (compare mode stays on)."""
    st.session_state.prompt = prompt


def _switch_to_b(second: str, edit: Edit) -> None:
    """Button callback: model B becomes the page's model, with one part switched off, on the What if tab."""
    source = None if second == "demo" else second
    if source is None:
        st.session_state.model_pick = DEMO
    elif source == TWIN_ID:
        st.session_state.model_pick = TWIN
    elif source in POPULAR or source in BUNDLED.values():
        st.session_state.model_pick = source
    else:
        st.session_state.model_pick = OTHER
        st.session_state.model_typed = source
    st.session_state.compare_on = False
    st.session_state[EDITS] = (edit,)
    st.session_state.view_tab = WHAT_IF


def _ask_circuit(run_id: str) -> None:
    st.session_state[BUILD_CIRCUIT] = run_id


def scan_part(content: view.CompareContent) -> None:
    """The top of the tab, as a talk goes: what changed, found without a prompt (the scan)."""
    scan = content.scan
    if scan is not None:
        st.subheader(circuit_view.SCAN_TITLE)
        intro(scan.sentence, circuit_view.SCAN_EXPLAIN, circuit_view.SCAN_CAVEAT)
        draw(scan.table)
        draw_text(scan.steering)
        draw_text(scan.suggestion_note, "caption")
        if scan.suggestion is not None:
            st.button("Try the prompt it suggests", on_click=_try_prompt, args=(scan.suggestion,), key="scan_try")
    st.subheader("This prompt, layer by layer")


def circuit_part(content: view.CompareContent, second: str, run_id: str) -> None:
    """After the layers, as a talk goes: is A's circuit still in B, and what suppresses the answer."""
    circuit = content.circuit
    st.subheader(circuit_view.CIRCUIT_TITLE)
    if circuit is None:
        if not content.notes:
            st.caption("A circuit diff builds both models' attribution graphs over their MLP neurons (this model "
                       "has no transcoders chosen): a backward pass per neuron, which can take minutes.")
            st.button("Build the circuit diff", on_click=_ask_circuit, args=(run_id,), key="circuit_build")
    else:
        intro(circuit.sentence, circuit_view.CIRCUIT_EXPLAIN, circuit_view.CIRCUIT_CAVEAT)
        draw_text(circuit.path)
        if circuit.errors is not None:
            draw(Chart(circuit.errors, "circuit_errors"))
            draw_text(circuit.errors_note, "caption")
        draw(Chart(circuit.graph, "circuit_graph"))
        draw_text(circuit.graph_note, "caption")
        if circuit.suppressors is not None:
            draw(circuit.suppressors)
        if circuit.switches:
            st.caption("Each button opens model B on its own, with that part switched off, on the What if tab:")
            row = st.container(horizontal=True)
            for k, (label, edit) in enumerate(circuit.switches):
                row.button(label, on_click=_switch_to_b, args=(second, edit), key=f"circuit_off_{k}")
    for note in content.notes:
        draw_text(note, "info")


SHOWN = "compare_shown"  # session key: which model the single-model tabs show (0: A, 1: B)


def shown_model(titles: tuple[str, str]) -> tuple[str, bool]:
    """The model the single-model tabs show (its title) and whether it is B; the choice is drawn by ``shown_choice``."""
    second = st.session_state.get(SHOWN) == 1
    return titles[1 if second else 0], second


def shown_choice(titles: tuple[str, str]) -> None:
    """Above the tabs: which model Attention, Logit lens, Neurons, Features, Graph, What if and Patching show."""
    st.radio("The other tabs show", (0, 1), format_func=lambda i: titles[i], key=SHOWN, horizontal=True,
             help="Compare reads both models; the other tabs look inside one of them. Changes (What if) and "
                  "patching then run on that model.")


@contextmanager
def in_tab(tab, shown: str | None) -> Iterator[None]:
    """Draw inside ``tab``; in compare mode, first a caption naming the model it shows."""
    with tab:
        if shown is not None:
            st.caption(md_escape(f"This tab shows {shown}. The choice above the tabs switches model."))
        yield


def header(content: view.CompareContent, tokens: list[str]) -> None:
    """What each model goes on to say and the plain verdict first (a phone shows them at once); then the guesses."""
    side = content.header
    scroll_marker()
    for line in side.answers():
        draw_text(line, "lead")
    if side.verdict:
        st.success(md_escape(side.verdict))
    st.markdown(f"Both models read the same **{len(tokens)} tokens**:")
    st.text(" | ".join(visible(t) for t in tokens))
    for col, title, lead, guesses in zip(st.columns(2), side.titles, side.leads, side.guesses, strict=True):
        col.markdown(f"**{md_escape(title)} says next**: {md_escape(lead)}")
        draw(Html(guesses), col)


def render(diff: ModelDiff, content: view.CompareContent) -> None:
    """The sentence, the four charts, what changed in heads and neurons, and the caveat."""
    intro(content.sentence, view.EXPLAIN, view.CAVEAT)
    draw(Chart(content.tracks, "compare_tracks"))
    draw(Chart(content.kl, "compare_kl"))
    if content.not_applicable:
        draw_text(content.not_applicable, "info")
        return
    left, right = st.columns(2)
    if content.weights is not None:
        draw(Chart(content.weights, "compare_weights"), left)
        draw_text(content.weights_note, "caption", left)
    if content.patch is None:
        draw_text(content.patch_note, "info", right)
    else:
        draw(Chart(content.patch, "compare_patch"), right)
        draw_text(content.patch_note, "caption", right)
    with st.expander("Heads and neurons that changed most"):
        if content.heads is not None:
            draw(Chart(content.heads, "compare_heads"))
            draw_text(view.HEADS_NOTE, "caption")
        draw(content.neurons)
