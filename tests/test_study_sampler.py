"""The study's sampler: does the collapse constraint steer TPE away from collapsed trials?

A toy objective with the shape of the hard regimes (``text``, ``sequences``): the collapsed
region scores slightly *better* than the healthy one, so the ELBO alone pulls TPE into it.
Our sampler (``study.make_sampler``) with the constraint the objective sets
(``trial.set_constraint``, as :class:`~vae_search.trial.objective.Objective` does) must keep most
trials healthy; without it, TPE must drift into the collapsed region (the test can fail both
ways).
"""

from __future__ import annotations

import optuna

from tests.conftest import tiny_config
from vae_search import keys
from vae_search.engine.study import make_sampler

TRIALS = 80
COLLAPSED_FROM = 0.6  # x above this "collapses" and scores a little better


def _run(constraint: bool) -> list[bool]:
    config = tiny_config(sampler={"name": "tpe", "n_startup_trials": 10})
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config, seed=3))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("klstart_like", 0.0, 1.0)
        collapsed = x > COLLAPSED_FROM
        if constraint:  # min_active_units - active_units: feasible when <= 0
            trial.set_constraint(keys.CONSTRAINT_ACTIVE_UNITS, 1.0 if collapsed else -1.0)
        # healthy: best at x = 0.3; collapsed: flat and 0.05 nats above the healthy best
        return -41.25 if collapsed else -41.3 - 0.5 * (x - 0.3) ** 2

    study.optimize(objective, n_trials=TRIALS)
    return [t.params["klstart_like"] > COLLAPSED_FROM for t in study.trials]


def test_the_collapse_constraint_steers_tpe_to_healthy_trials():
    late = slice(TRIALS // 2, None)  # after TPE has modelled the space
    with_constraint = _run(True)[late]
    without = _run(False)[late]
    assert sum(with_constraint) / len(with_constraint) < 0.25
    assert sum(without) / len(without) > 0.6
