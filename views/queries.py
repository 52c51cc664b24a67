"""The process's shared models and caches, and every question the page asks of a run.

A run (``backend.run.Run``) is the key of everything computed from it. Two caches bounded
by bytes hold the results: ``analyses()`` the captures with their lens summaries and head
scores (and comparisons), ``results()`` the small results derived from them (trajectories,
neuron effects, edit effects, sweeps, findings). Long work asks ``abandoned`` between its
blocks whether anyone still waits for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import streamlit as st

import backend
from backend import Capture, LensSummary, LoadedModel, XrayError, load_model, token_trajectory
from backend.atlas import FeatureCard, feature_card
from backend.buffers import release_free_memory
from backend.cache import ByteCache
from backend.compare import CircuitDiff, ModelDiff, circuit_diff, compare
from backend.continuation import Continuation, continuation
from backend.features import SAE, Transcoders, load_features
from backend.graph import Graph, attribute
from backend.heads import HeadScores, head_scores
from backend.neurons import NeuronEffect, neuron_effect, readout_change
from backend.patching import PatchingSweep, patching_sweep
from backend.run import Run
from backend.scan import Scan, SteeringCheck, scan, steering_check, suggest
from backend.suppressed import Finding, name_suppressors, suppressed
from backend.whatif import EditEffect, edit_effect
from views.policy import Policy

MiB = 2**20
RESULTS_CACHE_BYTES = 64 * MiB  # trajectories, neuron effects, edit effects, patching sweeps


@dataclass(frozen=True, eq=False)
class Analysis:
    """One prompt through one model: the capture and what every view derives from it."""

    capture: Capture  # with the run's feature activations when its dictionaries loaded
    summary: LensSummary
    scores: HeadScores
    features_error: str | None = None  # why the run's dictionaries did not load (the rest of the page goes on)

    @property
    def nbytes(self) -> int:
        """Memory held (the cache's measure)."""
        summary = sum(getattr(self.summary, name).nbytes for name in
                      ("top_ids", "top_probs", "entropy", "kl_to_final", "target_ids", "target_probs", "target_ranks"))
        return self.capture.nbytes + summary + 64 * self.summary.top_tokens.size


@st.cache_resource(max_entries=Policy.from_env().model_slots, show_spinner=False)
def get_model(source: str | None, device: str, dtype: str) -> LoadedModel:
    """One shared model per (source, device, dtype); at most three kept (public mode: every listed one)."""
    return load_model(source, device=device, dtype=None if dtype == "auto" else dtype)


@st.cache_resource(show_spinner=False)
def analyses() -> ByteCache:
    """Captures with their lens summaries, and comparisons: 1 GiB by default (``XRAY_CACHE_MB``), 16 entries."""
    return ByteCache(int(os.environ.get("XRAY_CACHE_MB", "1024")) * MiB, max_entries=16)


@st.cache_resource(show_spinner=False)
def results() -> ByteCache:
    """The small results derived from runs, each keyed by what it is and its run."""
    return ByteCache(RESULTS_CACHE_BYTES, max_entries=2048)


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
        dictionaries, error = None, None
        if run.features is not None:
            try:
                dictionaries = load_features(lm, run.features)
            except XrayError as failure:
                error = str(failure)
        # looked up on the package at each call, so a test can stand in for them
        cap = backend.capture(lm, run.prompt, max_tokens=run.max_tokens, should_stop=should_stop,
                              features=dictionaries)
        for array in (cap.attention, cap.resid, cap.neurons, cap.logits):
            array.flags.writeable = False  # shared between sessions
        result = Analysis(capture=cap, summary=backend.lens_summary(lm, cap, should_stop=should_stop),
                          scores=head_scores(cap), features_error=error)
        release_free_memory()  # the lens's work buffers and the forward's activations are gone now
        return result

    return analyses().get(run, compute)


def compare_of(run: Run) -> ModelDiff:
    """The run's prompt through its two models (compare mode); the first model's capture is the page's own."""
    should_stop = abandoned(run.prompt)

    def compute() -> ModelDiff:
        diff = compare(model_of(run.plain()), model_of(run.second()), run.prompt, max_tokens=run.max_tokens,
                       cap_a=analyse(run).capture, should_stop=should_stop)
        release_free_memory()
        return diff

    return analyses().get(("compare", run.plain(), run.compare), compute)


def continuation_of(run: Run) -> Continuation:
    """What the run's model, as it is (no edits), goes on to say: a few greedy tokens."""
    plain = run.plain()
    should_stop = abandoned(run.prompt)
    return results().get(("continuation", plain), lambda: continuation(
        model_of(plain), plain.prompt, max_tokens=plain.max_tokens, should_stop=should_stop))


FINDING_GRAPH_TOKENS = 32  # a finding at the last position is explained by a graph up to this length


def transcoders_of(run: Run) -> Transcoders | None:
    """The run's transcoders, when it reads transcoders that load (else None: graphs use neurons)."""
    if run.features is None:
        return None
    try:
        found = load_features(model_of(run), run.features)
    except XrayError:
        return None
    return found if isinstance(found, Transcoders) else None


def findings_of(run: Run) -> list[Finding]:
    """What the model's earlier layers preferred and its output pushed down (``backend.suppressed``).

    With transcoders, a finding at the last position also names what pushes it down
    (``backend.suppressed.name_suppressors``), checked by switching the first part off.
    """
    plain = run.plain()

    def compute() -> list[Finding]:
        lm, cap = model_of(plain), analyse(plain).capture
        found = suppressed(lm, cap)
        tc = transcoders_of(plain) if found else None
        return name_suppressors(lm, cap, found, tc, max_tokens=FINDING_GRAPH_TOKENS) if tc is not None else found
    return results().get(("suppressed", plain), compute)


def _pair(run: Run) -> tuple:
    return run.source, run.device, run.dtype, run.compare


def scan_of(run: Run) -> Scan:
    """The scan of the run's two models on the shipped neutral text (no prompt: one per pair)."""
    should_stop = abandoned(run.prompt)
    return analyses().get(("scan", *_pair(run)), lambda: scan(model_of(run.plain()), model_of(run.second()),
                                                             should_stop=should_stop))


def suggestion_of(run: Run, candidates: tuple[str, ...]) -> str | None:
    """Which of ``candidates`` the scan says to look at (``backend.scan.suggest``)."""
    return results().get(("scan suggestion", *_pair(run), candidates),
                         lambda: suggest(model_of(run.plain()), scan_of(run), candidates))


def steering_of(run: Run) -> SteeringCheck:
    """Does adding the scan's difference to A move A toward B on the run's prompt."""
    return results().get(("scan steering", run.plain(), run.compare),
                         lambda: steering_check(model_of(run.plain()), model_of(run.second()), scan_of(run),
                                                run.prompt, max_tokens=run.max_tokens))


def circuit_diff_of(run: Run, max_tokens: int) -> CircuitDiff:
    """Both models' graphs of the run's prompt with A's transcoders (or neurons), matched, and B's suppressors."""
    should_stop = abandoned(run.prompt)
    plain = run.plain()
    return analyses().get(("circuit diff", plain, run.compare, max_tokens),
                          lambda: circuit_diff(model_of(plain), model_of(run.second()), run.prompt,
                                               transcoders=transcoders_of(plain), max_tokens=max_tokens,
                                               should_stop=should_stop))


def edit_effect_of(run: Run) -> EditEffect:
    """The edited run against the plain one, at the last position (the edited capture is not kept)."""
    should_stop = abandoned(run.prompt)
    return results().get(("edit effect", run), lambda: edit_effect(model_of(run), analyse(run).capture, run.edits,
                                                                  max_tokens=run.max_tokens, should_stop=should_stop))


def sweep_of(clean: Run, corrupt: Run, answer_id: int, foil_id: int) -> PatchingSweep:
    """The patching sweep of a clean and a corrupt prompt on one model."""
    return results().get(("sweep", clean, corrupt.prompt, answer_id, foil_id),
                         lambda: patching_sweep(model_of(clean), clean.prompt, corrupt.prompt, answer_id, foil_id,
                                                max_tokens=clean.max_tokens, should_stop=abandoned(clean.prompt)))


@dataclass(frozen=True)
class RunResults:
    """What a view may ask of its run after the first draw; each answer is cached under the run.

    Holds only the run (a small value), so a widget that keeps it keeps no arrays alive.
    """

    run: Run

    def trajectory(self, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """A token's lens probability and rank at one position (layers,)."""
        def compute() -> tuple[np.ndarray, np.ndarray]:
            traj = token_trajectory(model_of(self.run), analyse(self.run).capture, token_id, [position])
            return traj.probs[:, 0], traj.ranks[:, 0]
        return results().get(("trajectory", self.run, token_id, position), compute)

    def effect(self, layer: int, neuron: int, position: int) -> NeuronEffect:
        """A neuron's direct effect on the next-token logits at one position."""
        return results().get(("effect", self.run, layer, neuron, position),
                             lambda: neuron_effect(model_of(self.run), analyse(self.run).capture, layer, neuron,
                                                   position))

    def graph_full(self, max_tokens: int) -> Graph:
        """The run's unpruned attribution graph: transcoder features when the run reads transcoders, else neurons."""
        should_stop = abandoned(self.run.prompt)

        def compute() -> Graph:
            lm = model_of(self.run)
            found = analyse(self.run)
            tc = None
            if found.capture.features is not None and self.run.features is not None:
                dictionaries = self.dictionaries()
                tc = dictionaries if isinstance(dictionaries, Transcoders) else None
            graph = attribute(lm, self.run.prompt, transcoders=tc, max_tokens=max_tokens, node_threshold=1.0,
                              edge_threshold=1.0, should_stop=should_stop)
            return graph.full if graph.full is not None else graph
        return analyses().get(("graph", self.run, max_tokens), compute)

    def graph(self, node_threshold: float, max_tokens: int = 64) -> Graph:
        """The run's graph pruned at ``node_threshold`` of the influence (edges at 98%)."""
        return results().get(("graph pruned", self.run, max_tokens, node_threshold),
                             lambda: self.graph_full(max_tokens).prune(node_threshold, 0.98))

    def graph_labels(self) -> dict:
        """(layer, feature) -> the atlas's label, for the run's transcoders (empty without an atlas)."""
        atlas = getattr(self.dictionaries(), "atlas", None) if self.run.features is not None else None
        if atlas is None:
            return {}
        return {(layer, feature): label for layer, row in enumerate(atlas.labels) for feature, label in enumerate(row)}

    def dictionaries(self) -> Transcoders | SAE:
        """The run's feature dictionaries (loaded once per model)."""
        return load_features(model_of(self.run), self.run.features)

    def feature_labels(self, layer: int) -> tuple[str, ...] | None:
        """The atlas's labels of one layer's features, when the dictionaries ship an atlas."""
        atlas = getattr(self.dictionaries(), "atlas", None)
        return atlas.labels[layer] if atlas is not None else None

    def feature_card(self, layer: int, feature: int) -> FeatureCard | None:
        """The atlas's entry for one feature, or None without an atlas."""
        atlas = getattr(self.dictionaries(), "atlas", None)
        if atlas is None:
            return None
        return results().get(("feature card", self.run.features, self.run.source, layer, feature),
                             lambda: feature_card(atlas, model_of(self.run).tokenizer, layer, feature))

    def feature_effect(self, layer: int, feature: int, position: int) -> tuple:
        """What a feature's decoder vector promotes and suppresses at one position's final residual."""
        def compute() -> tuple:
            found = self.dictionaries()
            dictionary = found.layers[layer] if isinstance(found, Transcoders) else found.dictionary
            cap = analyse(self.run).capture
            return readout_change(model_of(self.run), cap.resid[cap.n_layers, position],
                                  dictionary.W_dec[feature].numpy())
        return results().get(("feature effect", self.run, layer, feature, position), compute)
