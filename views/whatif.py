"""The what-if view: switch parts of the model off or steer it, and see the answer change."""

from __future__ import annotations

import streamlit as st

from backend.edits import PromptSteering
from backend.run import MAX_LINK_EDITS
from backend.whatif import EditEffect
from views.content import Chart, Html
from views.content import whatif as view
from views.display import layer_label, md_escape
from views.draw import draw
from views.intro import intro

STEER_DEFAULTS = ("The cat", "The dog")
EDITS = "edits"  # session key of the page's active edits: a tuple of small frozen values


def active_edits() -> tuple:
    """The edits the reader has switched on (small values: head and neuron ablations, prompt steering)."""
    return tuple(st.session_state.get(EDITS, ()))


def add_edit(edit: object) -> None:
    """Switch an edit on (once)."""
    current = active_edits()
    if edit not in current:
        st.session_state[EDITS] = (*current, edit)


def remove_edit(edit: object) -> None:
    """Switch an edit off."""
    st.session_state[EDITS] = tuple(e for e in active_edits() if e != edit)


def clear_edits() -> None:
    """Switch every edit off."""
    st.session_state[EDITS] = ()


def render(effect: EditEffect | None, n_layers: int, run: str, drawn: dict, prompt: str | None = None,
           bundled: bool = False) -> None:
    """Draw the view: the active edits, their effect on the answer, and the steering form."""
    content = view.content(effect, prompt, bundled) if effect is not None else None
    intro(None if content is None else content.sentence, view.EXPLAIN, view.CAVEAT)
    if content is not None and content.note:
        st.info(md_escape(content.note))
    _edit_list()
    if content is not None:
        drawn[view.TITLE] = effect.edits
        if content.each:
            st.markdown("**Each change alone**, then all together above:")
            for line in content.each:
                st.markdown("- " + md_escape(line))
        before, after = st.columns(2)
        before.markdown("**Next-token guesses, the model as it is**")
        draw(Html(content.before), before)
        after.markdown("**With the changes**")
        draw(Html(content.after), after)
        draw(Chart(content.trajectory, "whatif_trajectory"))
    _steering_form(n_layers, run)


def switch_off_button(edit: object, label: str, help_text: str, key: str, where=st) -> None:
    """A button that switches a part of the model off and reruns the whole page with the change."""
    if edit in active_edits():
        done = label.replace("Switch off", "Switched off:").replace("Amplify", "Amplified:")
        where.caption(md_escape(f"{done}. Undo it on the What if tab."))
    elif len(active_edits()) >= MAX_LINK_EDITS:
        where.caption(f"{MAX_LINK_EDITS} changes are in force, the most a page holds; undo one on the What if tab.")
    elif where.button(label, key=key, help=help_text):
        add_edit(edit)
        st.rerun()


def _edit_list() -> None:
    edits = active_edits()
    if not edits:
        st.info("Nothing is changed yet. Switch off a head on the Attention tab or a neuron on the Neurons tab, "
                "or steer the model below.")
        return
    st.markdown("##### Changes in force")
    row = st.container(horizontal=True)
    for i, edit in enumerate(edits):
        row.button(f"✕ {md_escape(edit.label())}", key=f"remove_edit_{i}", on_click=remove_edit,
                   args=(edit,), help="Undo this change.")
    if len(edits) > 1:
        row.button("Undo all", key="remove_all_edits", on_click=clear_edits)


def _steering_form(n_layers: int, run: str) -> None:
    st.markdown("##### Steer the model")
    with st.form(f"steer@{run}", border=True):
        first, second = st.columns(2)
        toward = first.text_input("Push toward what this prompt has…", STEER_DEFAULTS[0], max_chars=500)
        away = second.text_input("…and away from this one", STEER_DEFAULTS[1], max_chars=500)
        where, how = st.columns(2)
        layer = where.selectbox("Where", range(n_layers + 1), index=0,
                                format_func=lambda i: "at the embeddings" if i == 0 else f"after {layer_label(i)}",
                                help="The layer whose working space gets the push.")
        strength = how.slider("Strength", -10.0, 10.0, 2.0, step=0.5,
                              help="How far to push: 1 adds the difference once; negative pushes the other way.")
        if st.form_submit_button("Steer"):
            if not toward.strip() or not away.strip():
                st.warning("Type two short prompts: the direction is what separates them.")
            elif len(active_edits()) >= MAX_LINK_EDITS:
                st.warning(f"{MAX_LINK_EDITS} changes are in force, the most a page holds: undo one above first.")
            else:
                add_edit(PromptSteering(int(layer), toward, away, float(strength)))
                st.rerun()
    st.caption("Try it on the prompt \"The dog says\": steering toward \"The cat\" and away from \"The dog\" "
               "at the embeddings, strength 2, makes the model say '␣meow'.")
