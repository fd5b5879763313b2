"""Annealing-aware pruning: never judge a trial before its KL weight has reached 1.

During warm-up (beta < 1) the beta = 1 validation ELBO is dominated by an unconstrained KL, so a
plain median rule would kill exactly the late-``klstart`` schedules the search is meant to test.
:class:`AnnealingAwarePruner` wraps any Optuna pruner and only consults it from the epoch the
objective stored under ``prune_from_epoch`` (first epoch at beta = 1, plus a patience).

A median (percentile) rule reads every completed trial from the storage at each check: one query
per epoch per trial, the largest storage cost left on the training thread. The wrapper hands it
a view in which that list is read at most once per :data:`COMPLETED_REFRESH_SECONDS` (and anew
for each trial, or whenever a member of a population completes), through the public
``study.get_trials``. With one worker nothing completes while a trial trains (nor while no
member of a population completes), so the decisions are the same; with several,
a trial completed by another worker in the last few seconds joins the median at the next
refresh, which is no later than Optuna's own cross-process view guarantees anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from vae_search.config.schema import PrunerConfig
from vae_search.keys import ATTR_PRUNE_FROM_EPOCH

__all__ = ["COMPLETED_REFRESH_SECONDS", "AnnealingAwarePruner", "make_pruner", "should_prune"]

COMPLETED_REFRESH_SECONDS = 2.0  # the median rule's completed trials are re-read this often
_COMPLETE = (TrialState.COMPLETE,)


class _CompletedTrialsView:
    """``study`` for a percentile pruner, with ``get_trials(states=(COMPLETE,))`` served from a
    list read once; every other attribute is the study's."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self._study = study
        self._completed = completed

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if deepcopy or states is None or tuple(states) != _COMPLETE:
            return self._study.get_trials(deepcopy=deepcopy, states=states)
        return self._completed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class AnnealingAwarePruner(optuna.pruners.BasePruner):
    """Delegate to ``inner`` only once the trial's annealing has finished.

    Args:
        inner: The pruner that decides once pruning is allowed.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner
        # (study name, read key), read at, completed trials
        self._completed: tuple[tuple[str, Hashable], float, list[FrozenTrial]] | None = None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self._prune(study, trial, trial.number)

    def _prune(self, study: optuna.Study, trial: FrozenTrial, read: Hashable) -> bool:
        step = trial.last_step
        prune_from = trial.user_attrs.get(ATTR_PRUNE_FROM_EPOCH)
        if step is None or prune_from is None or step < int(prune_from):
            return False  # still annealing (or a trial that did not say): never prune
        if not isinstance(self.inner, optuna.pruners.PercentilePruner):  # MedianPruner is one
            return self.inner.prune(study, trial)
        return self.inner.prune(self._view(study, read), trial)  # type: ignore[arg-type]

    def prune_values(
        self, study: optuna.Study, number: int, values: Mapping[int, float], prune_from: int,
        *, read: Hashable | None = None,
    ) -> bool | None:
        """What ``trial.should_prune()`` answers once ``values`` (step -> reported value) are
        stored, decided without waiting for the writes: ``None`` when the inner pruner reads
        more of the trial than its values (e.g. Hyperband's rung attrs), so the caller must
        store them and ask ``should_prune``.

        A median (percentile) rule reads only the trial's number, values and last step, the
        completed trials and the study's direction, so a snapshot holding exactly those gets
        the same answer.

        Args:
            read: Which read of the completed trials may be shared (default: the trial's
                number, one read per trial). A population passes one key per epoch, so its P
                members share one read instead of P.
        """
        if not isinstance(self.inner, optuna.pruners.PercentilePruner):
            return None
        snapshot = FrozenTrial(
            number=number, state=TrialState.RUNNING, value=None, datetime_start=None,
            datetime_complete=None, params={}, distributions={},
            user_attrs={ATTR_PRUNE_FROM_EPOCH: prune_from}, system_attrs={},
            intermediate_values={int(k): float(v) for k, v in values.items()}, trial_id=-1,
        )
        return self._prune(study, snapshot, number if read is None else read)

    def _view(self, study: optuna.Study, read: Hashable) -> _CompletedTrialsView:
        now, key = time.monotonic(), (study.study_name, read)
        cached = self._completed
        if cached is None or cached[0] != key or now - cached[1] > COMPLETED_REFRESH_SECONDS:
            cached = (key, now, study.get_trials(deepcopy=False, states=_COMPLETE))
            self._completed = cached
        return _CompletedTrialsView(study, cached[2])


def should_prune(
    trial: optuna.Trial, values: Mapping[int, float], prune_from: int, *,
    read: Hashable | None = None, store: Callable[[], object] | None = None,
) -> bool:
    """``trial.should_prune()`` for a trial whose reported ``values`` may not be stored yet.

    The annealing-aware median rule decides from ``values`` themselves (:meth:`prune_values`,
    sharing the completed-trials read ``read``); any other pruner reads the trial from the
    storage, so ``store()`` is called first to wait for the report writes.

    Args:
        trial: The running trial.
        values: Its reported values, step -> value.
        prune_from: Its ``prune_from_epoch``.
        read: See :meth:`AnnealingAwarePruner.prune_values`.
        store: Waits until the trial's queued reports are stored.
    """
    pruner = trial.study.pruner
    if isinstance(pruner, optuna.pruners.NopPruner):
        return False
    if isinstance(pruner, AnnealingAwarePruner):
        decided = pruner.prune_values(trial.study, trial.number, values, prune_from, read=read)
        if decided is not None:
            return decided
    if store is not None:
        store()
    return trial.should_prune()


def make_pruner(config: PrunerConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner, wrapped so that it respects each trial's annealing."""
    if config.name == "none":
        return optuna.pruners.NopPruner()
    if config.name == "hyperband":
        inner: optuna.pruners.BasePruner = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=3
        )
    else:
        inner = optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials)
    # pruner.aware = false is the naive baseline docs/findings.md measures, not a recommendation.
    return AnnealingAwarePruner(inner) if config.aware else inner
