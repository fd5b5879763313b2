"""Annealing-aware pruning: never judge a trial before its KL weight has reached 1.

During warm-up (beta < 1) the beta = 1 validation ELBO is dominated by an unconstrained KL, so a
plain median rule would kill exactly the late-``klstart`` schedules the search is meant to test.
:class:`AnnealingAwarePruner` wraps any Optuna pruner and only consults it from the epoch the
objective stored under ``prune_from_epoch`` (first epoch at beta = 1, plus a patience).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from vae_search.config import PrunerConfig
from vae_search.keys import ATTR_PRUNE_FROM_EPOCH

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["AnnealingAwarePruner", "PrunerView", "make_pruner"]


class AnnealingAwarePruner(optuna.pruners.BasePruner):
    """Delegate to ``inner`` only once the trial's annealing has finished.

    Args:
        inner: The pruner that decides once pruning is allowed.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        prune_from = trial.user_attrs.get(ATTR_PRUNE_FROM_EPOCH)
        if step is None or prune_from is None or step < int(prune_from):
            return False  # still annealing (or a trial that did not say): never prune
        return self.inner.prune(study, trial)


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
    return AnnealingAwarePruner(inner)


class PrunerView:
    """The study as a median or percentile pruner reads it, read once per epoch for every
    member: its completed trials and its direction.

    ``trial.should_prune()`` re-reads every running trial from the storage (Optuna caches only
    finished ones), so P members asking one by one cost P^2 trial reads per epoch. These
    pruners read nothing but ``get_trials(states=(COMPLETE,))`` and ``direction`` (the
    population test guards it); any other pruner is asked through ``trial.should_prune()``.
    """

    def __init__(self, study: optuna.Study) -> None:
        from optuna.trial import TrialState

        self.direction = study.direction
        self.directions = study.directions
        self._complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def get_trials(self, deepcopy: bool = False, states: Any = None) -> list[Any]:
        return [t for t in self._complete if states is None or t.state in states]

    @staticmethod
    def applies(pruner: Any) -> bool:
        """Whether ``pruner`` (inside the annealing-aware wrapper) reads only what we hold."""
        inner = getattr(pruner, "inner", pruner)
        return isinstance(inner, (optuna.pruners.PercentilePruner, optuna.pruners.NopPruner))
