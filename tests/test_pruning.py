from __future__ import annotations

import optuna

from tests.conftest import tiny_config
from vae_search.config.schema import PrunerConfig
from vae_search.keys import ATTR_PRUNE_FROM_EPOCH
from vae_search.trial.pruning import AnnealingAwarePruner, make_pruner


def _study():
    return optuna.create_study(
        direction="maximize",
        pruner=AnnealingAwarePruner(optuna.pruners.MedianPruner(n_startup_trials=2)),
    )


def _finish_good_trials(study, n=3, steps=10):
    for _ in range(n):
        t = study.ask()
        for step in range(steps):
            t.report(-10.0, step)
        study.tell(t, -10.0)


def test_bad_trial_is_not_pruned_during_warmup_but_is_after():
    study = _study()
    _finish_good_trials(study)
    t = study.ask()
    t.set_user_attr(ATTR_PRUNE_FROM_EPOCH, 6)
    for step in range(6):
        t.report(-1000.0, step)  # far worse than the median: a plain pruner would stop it
        assert not t.should_prune(), step
    t.report(-1000.0, 6)
    assert t.should_prune()


def test_trial_without_annealing_info_is_never_pruned():
    study = _study()
    _finish_good_trials(study)
    t = study.ask()
    for step in range(10):
        t.report(-1000.0, step)
    assert not t.should_prune()


def test_plain_median_would_have_pruned_during_warmup():
    # the control: without the wrapper, the same warm-up trial is killed at once
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2)
    )
    _finish_good_trials(study)
    t = study.ask()
    t.report(-1000.0, 0)
    assert t.should_prune()


def test_make_pruner_kinds():
    assert isinstance(make_pruner(PrunerConfig(name="none"), 10), optuna.pruners.NopPruner)
    median = make_pruner(PrunerConfig(name="median"), 10)
    assert isinstance(median, AnnealingAwarePruner)
    assert isinstance(median.inner, optuna.pruners.MedianPruner)
    hyper = make_pruner(PrunerConfig(name="hyperband"), 10)
    assert isinstance(hyper.inner, optuna.pruners.HyperbandPruner)


def test_naive_pruner_is_plain_and_is_asked_during_warm_up(tmp_path):
    """``pruner.aware = false`` (the baseline docs/findings.md measures): a plain MedianPruner, and
    the objective asks the pruner from the first epoch, at beta = 0."""
    assert type(make_pruner(PrunerConfig(aware=False), 10)) is optuna.pruners.MedianPruner
    from vae_search.trial.objective import Objective

    class Always(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return True

    # beta reaches 1 at epoch 5; with patience 1 the aware pruner is first asked at epoch 6
    for aware, pruned_at in ((False, 0), (True, 6)):
        config = tiny_config(train={"epochs": 8}, pruner={"aware": aware, "patience": 1})
        study = optuna.create_study(direction="maximize", pruner=Always())
        study.enqueue_trial({"klstart": 3, "annealtime": 3, "latent_dim": 2, "reduction": "sum"})
        study.optimize(Objective(config), n_trials=1)
        trial = study.trials[0]
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["full_beta_epoch"] == 5
        assert max(trial.intermediate_values) == pruned_at


def test_prune_values_answers_what_should_prune_answers():
    # The objective decides on its own reported values while the report thread stores them.
    study = _study()
    _finish_good_trials(study)
    pruner = study.pruner
    for values in ([-1000.0] * 8, [-5.0] * 8, [-5.0, -1000.0, -20.0, -10.0, -9.0, -11.0, -30.0]):
        t = study.ask()
        t.set_user_attr(ATTR_PRUNE_FROM_EPOCH, 3)
        for step, value in enumerate(values):
            t.report(value, step)
            snapshot = dict(enumerate(values[: step + 1]))
            assert pruner.prune_values(study, t.number, snapshot, 3) == t.should_prune(), step
        study.tell(t, values[-1])


def test_prune_values_defers_to_should_prune_for_other_pruners():
    hyperband = AnnealingAwarePruner(optuna.pruners.HyperbandPruner(min_resource=1,
                                                                    max_resource=10))
    study = optuna.create_study(direction="maximize", pruner=hyperband)
    assert hyperband.prune_values(study, 0, {5: -1.0}, 0) is None


def test_completed_trials_are_read_once_per_trial_while_fresh(monkeypatch):
    study = _study()
    _finish_good_trials(study)
    reads = []
    real = study.get_trials

    def counting(*args, **kwargs):
        reads.append(kwargs.get("states"))
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "get_trials", counting)
    t = study.ask()
    t.set_user_attr(ATTR_PRUNE_FROM_EPOCH, 0)
    for step in range(5):
        t.report(-10.0, step)
        t.should_prune()
    assert len(reads) == 1  # not once per epoch
    study.tell(t, -10.0)
    t = study.ask()  # a new trial reads the completed trials again (one more is complete)
    t.set_user_attr(ATTR_PRUNE_FROM_EPOCH, 0)
    t.report(-10.0, 0)
    t.should_prune()
    assert len(reads) == 2
