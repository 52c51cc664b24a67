"""Compare mode's whole content, built once for the page and the report: the scan, the circuit diff, the comparison.

No Streamlit calls here (the report is built in a download's callback). A scan or a circuit
diff that cannot be made becomes a note on the content; the rest of the comparison stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from backend import Cancelled, XrayError
from backend.run import Run
from views.content import circuit_diff as circuit_view
from views.content import compare as compare_view
from views.queries import (
    RunResults,
    circuit_diff_of,
    compare_of,
    continuation_of,
    model_of,
    scan_of,
    steering_of,
    suggestion_of,
    transcoders_of,
)

CIRCUIT = "circuit diff"  # the key under which the page's ``drawn`` book says the circuit diff was shown


def _tried(compute: Callable[[], object], what: str, notes: list[str]):
    """``compute()``, or None with a note saying why it could not be made (a cancelled run still stops)."""
    try:
        return compute()
    except Cancelled:
        raise
    except XrayError as error:
        notes.append(f"The {what} could not be made: {error}")
    return None


def auto_circuit(run: Run) -> bool:
    """Whether the page builds the circuit diff without being asked: when A reads transcoders (graphs are cheap)."""
    return transcoders_of(run.plain()) is not None


def compare_content(run: Run, candidates: tuple[str, ...], graph_tokens: int,
                    circuit: bool) -> compare_view.CompareContent:
    """The Compare tab's content for ``run`` (compare mode); ``circuit`` builds the circuit diff too."""
    plain, second = run.plain(), run.second()
    diff = compare_of(run)
    name_a, name_b = model_of(plain).info.name, model_of(second).info.name
    notes: list[str] = []
    scanned = circuit_part = None
    if not diff.not_applicable:
        def scan_part() -> circuit_view.ScanContent:
            found = scan_of(run)
            check = steering_of(run) if found.found and not diff.same_answer else None
            return circuit_view.scan_content(found, check, suggestion_of(run, candidates), run.prompt, name_a,
                                             name_b)
        scanned = _tried(scan_part, "scan", notes)
        if circuit:
            circuit_part = _tried(lambda: circuit_view.circuit_content(
                circuit_diff_of(run, graph_tokens), RunResults(plain).graph_labels(), name_a, name_b),
                "circuit diff", notes)
    goes_on = (continuation_of(plain).text, continuation_of(second).text)
    content = compare_view.content(diff, name_a, name_b, scanned, circuit_part, goes_on)
    return replace(content, notes=tuple(notes))
