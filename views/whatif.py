"""The what-if view: switch parts of the model off or steer it, and see the answer change."""

from __future__ import annotations

import streamlit as st

from backend.edits import PromptSteering
from backend.run import MAX_LINK_EDITS
from backend.whatif import EditEffect
from views import captions, coloured, figures
from views.display import layer_label, md_escape
from views.intro import intro

EXPLAIN = """
The other views show what happens inside; they cannot say whether it *matters*. Here you
change the model and watch the answer:
- **Switch off** a head (on the Attention tab) or a neuron (on the Neurons tab): its
  output becomes zero, as if it were not there.
- **Steer**: add a direction to the model's working space (the residual stream) at one
  layer. The direction is what separates two short prompts, e.g. "The cat" minus "The dog";
  pushing along it makes the model behave more like the first.

If the answer collapses when a part is switched off, the model needs that part for this
prompt. If nothing changes, it does not (or another part does the same job).
"""
CAVEAT = ("Switching a part off tests this prompt, not the part's role in general: the model never saw "
          "a zero there during training, and other parts can take over. Steering far (large strengths) "
          "pushes the model where it has never been, and its guesses then mean little.")
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


def render(effect: EditEffect | None, n_layers: int, run: str) -> None:
    """Draw the view: the active edits, their effect on the answer, and the steering form."""
    labels = [captions.edit_label(e) for e in active_edits()]
    intro(None if effect is None else captions.edit_effect_sentence(labels, effect), EXPLAIN, CAVEAT)
    _edit_list()
    if effect is not None:
        _before_after(effect)
    _steering_form(n_layers, run)


def switch_off_button(edit: object, label: str, help_text: str, key: str) -> None:
    """A button that switches a part of the model off and reruns the whole page with the change."""
    if edit in active_edits():
        st.caption(f"{label.replace('Switch off', 'Switched off:')}. Undo it on the What if tab.")
    elif len(active_edits()) >= MAX_LINK_EDITS:
        st.caption(f"{MAX_LINK_EDITS} changes are in force, the most a page holds; undo one on the What if tab.")
    elif st.button(label, key=key, help=help_text):
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
        row.button(f"✕ {md_escape(captions.edit_label(edit))}", key=f"remove_edit_{i}", on_click=remove_edit,
                   args=(edit,), help="Undo this change.")
    if len(edits) > 1:
        row.button("Undo all", key="remove_all_edits", on_click=clear_edits)


def _before_after(effect: EditEffect) -> None:
    before, after = st.columns(2)
    before.markdown("**Next-token guesses, the model as it is**")
    before.html(coloured.guesses_html(effect.before_tokens, effect.before_probs))
    after.markdown("**With the changes**")
    after.html(coloured.guesses_html(effect.after_tokens, effect.after_probs))
    st.plotly_chart(figures.before_after(effect.answer_before, effect.answer_after, effect.answer),
                    width="stretch", config=figures.CONFIG, key="whatif_trajectory")


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
            else:
                add_edit(PromptSteering(int(layer), toward, away, float(strength)))
                st.rerun()
    st.caption("Try it on the prompt \"The dog says\": steering toward \"The cat\" and away from \"The dog\" "
               "at the embeddings, strength 2, makes the model say ' meow'.")
