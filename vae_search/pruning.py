"""Annealing-aware pruning: never judge a trial before its KL weight has reached 1.

During warm-up (beta < 1) the beta = 1 validation ELBO is dominated by an unconstrained KL, so a
plain median rule would kill exactly the late-``klstart`` schedules the search is meant to test.
:class:`AnnealingAwarePruner` wraps any Optuna pruner and only consults it from the epoch the
objective stored under ``prune_from_epoch`` (first epoch at beta = 1, plus a patience).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from vae_search.config import PrunerConfig
from vae_search.keys import ATTR_PRUNE_FROM_EPOCH

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["AnnealingAwarePruner", "make_pruner"]


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
    # pruner.aware = false is the naive baseline the README measures, not a recommendation.
    return AnnealingAwarePruner(inner) if config.aware else inner
