"""Widget keys: which selections belong to one run and which are the reader's own choices.

A selection whose default comes from the numbers (the position to follow, the reading
token, the clearest head behaviour, the neuron that fires hardest) belongs to one run:
one prompt through one model. Its key carries the run's id, so a new prompt opens it on
the new defaults; with a plain key Streamlit would keep the old choice, and the lens would
follow a position of the previous prompt. Preferences (a layer, a switch) keep plain keys
and stay across prompts.
"""

from __future__ import annotations

import hashlib

import streamlit as st


def run_id(*parts: object) -> str:
    """A short id for one run, from what identifies it (model, prompt, token limit)."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()


def per_run(name: str, run: str) -> str:
    """The key of a selection that starts afresh with each run."""
    return f"{name}@{run}"


def name_of(key: str) -> str:
    """The widget's name without its run id."""
    return key.split("@", 1)[0]


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
