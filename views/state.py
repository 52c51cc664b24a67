"""Widget keys: which selections belong to one run and which are the reader's own choices.

A selection whose default comes from the numbers (the position to follow, the reading
token, the clearest head behaviour, the neuron that fires hardest) belongs to one run:
one prompt through one model. Its key carries the run's id, so a new prompt opens it on
the new defaults; with a plain key Streamlit would keep the old choice, and the lens would
follow a position of the previous prompt. Preferences (a layer, a switch) keep plain keys
and stay across prompts. The run's id is ``backend.run.Run.id`` (model, prompt, token
limit, edits); the views key their selections by the run without edits, so switching a
part of the model off keeps them.
"""

from __future__ import annotations


def per_run(name: str, run: str) -> str:
    """The key of a selection that starts afresh with each run."""
    return f"{name}@{run}"


def name_of(key: str) -> str:
    """The widget's name without its run id."""
    return key.split("@", 1)[0]

