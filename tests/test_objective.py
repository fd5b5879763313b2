from __future__ import annotations

import statistics

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import tiny_config
from vae_search import keys
from vae_search.engine.study import StudyMismatch, open_study
from vae_search.trial.objective import Objective, TrainingDiverged

GOOD = dict(klstart=0, annealtime=0, latent_dim=4, reduction="sum")
COLLAPSING = dict(klstart=0, annealtime=0, latent_dim=2, reduction="mean")
WARMUP = dict(klstart=3, annealtime=3, latent_dim=4, reduction="sum")


@pytest.fixture(scope="module")
def pruning_study(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'p.db'}"
    config = tiny_config()
    study = open_study(config, url, study_name="pruning")
    for params in [GOOD, GOOD, GOOD, COLLAPSING, WARMUP]:
        study.enqueue_trial(params)
    study.optimize(Objective(config), n_trials=5)
    return optuna.load_study(study_name="pruning", storage=url)


def test_losing_trial_is_pruned_after_its_annealing(pruning_study):
    t = pruning_study.trials[3]
    assert t.params == COLLAPSING
    assert t.state == TrialState.PRUNED
    assert t.last_step >= t.user_attrs[keys.ATTR_PRUNE_FROM_EPOCH]
    assert t.last_step < 5  # stopped early
    # diagnostics recorded at the point of pruning
    assert 0 <= t.user_attrs[keys.ATTR_ACTIVE_UNITS] <= 2
    assert len(t.user_attrs[keys.ATTR_KL_PER_DIM]) == 2
    assert isinstance(t.user_attrs[keys.ATTR_COLLAPSED], bool) and len(t.constraints) == 2
    assert len(t.user_attrs[keys.ATTR_HISTORY]["epoch"]) == t.last_step + 1


def test_warmup_trial_survives_what_a_plain_median_rule_would_kill(pruning_study):
    t = pruning_study.trials[4]
    assert t.params == WARMUP and t.state == TrialState.COMPLETE
    prune_from = t.user_attrs[keys.ATTR_PRUNE_FROM_EPOCH]
    assert prune_from == 5  # beta reaches 1 at epoch klstart + annealtime - 1 = 5
    done = [x for x in pruning_study.trials[:3] if x.state == TrialState.COMPLETE]
    below_median = [
        step for step in range(prune_from)
        if t.intermediate_values[step]
        < statistics.median(x.intermediate_values[step] for x in done)
    ]
    assert below_median, "the warm-up trial never trailed the median: the test proves nothing"


def test_every_trial_reports_the_beta1_elbo_each_epoch(pruning_study):
    for t in pruning_study.trials:
        if t.state != TrialState.COMPLETE:
            continue
        assert sorted(t.intermediate_values) == list(range(6))
        history = t.user_attrs[keys.ATTR_HISTORY]
        assert set(history) == set(keys.HISTORY_FIELDS)
        np.testing.assert_allclose(history["val_elbo"], list(t.intermediate_values.values()))
        assert t.value == pytest.approx(history["val_elbo"][-1])
        assert history["beta"][-1] == 1.0
        kl = t.user_attrs[keys.ATTR_KL_PER_DIM]
        assert len(kl) == t.params["latent_dim"]
        assert t.user_attrs[keys.ATTR_KL_TOTAL] == pytest.approx(sum(kl))
        # constraints: a collapsed trial is infeasible
        assert set(t.constraints) == {keys.CONSTRAINT_ACTIVE_UNITS, keys.CONSTRAINT_MUTUAL_INFO}
        feasible = all(c <= 0 for c in t.constraints.values())
        assert feasible == (not t.user_attrs[keys.ATTR_COLLAPSED])


def test_same_seed_same_results_in_one_process(tmp_path):
    config = tiny_config()
    values = []
    for i in range(2):
        study = open_study(config, f"sqlite:///{tmp_path / f'r{i}.db'}")
        study.enqueue_trial(WARMUP)
        study.optimize(Objective(config), n_trials=1)
        values.append((study.trials[0].value, study.trials[0].intermediate_values))
    assert values[0] == values[1]


def test_diverging_trial_fails_with_reason_and_study_goes_on(tmp_path):
    path = tmp_path / "huge.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.standard_normal((200, 8)) * 1e20)
    config = tiny_config(
        data={"dataset": "file", "path": str(path)},
        model={"likelihood": "gaussian"},
        train={"batch_size": 16},
    )
    study = open_study(config, f"sqlite:///{tmp_path / 'nan.db'}")
    study.optimize(Objective(config), n_trials=2, catch=(TrainingDiverged,))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    reason = study.trials[0].user_attrs[keys.ATTR_FAIL_REASON]
    assert "diverged at epoch 0" in reason


def test_mismatched_config_is_refused_and_study_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = tiny_config()
    open_study(config, url, study_name="s")
    other = config.with_overrides(**{"train.learning_rate": 0.01})
    with pytest.raises(StudyMismatch, match=r"train.learning_rate: 0.001 -> 0.01"):
        open_study(other, url, study_name="s")
    stored = optuna.load_study(study_name="s", storage=url).user_attrs[keys.STUDY_ATTR_CONFIG]
    assert stored == config.comparable()
    # the name and run settings do not count
    open_study(config.with_overrides(name="renamed", **{"run.max_retry": 5}), url, study_name="s")


def test_foreign_minimize_study_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    optuna.create_study(storage=url, study_name="theirs", direction="minimize")
    with pytest.raises(StudyMismatch, match="direction minimize"):
        open_study(tiny_config(), url, study_name="theirs")


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
def test_grouped_user_attrs_store_what_set_user_attr_stores(tmp_path, storage):
    from vae_search.trial.objective import set_user_attrs

    url = f"sqlite:///{tmp_path / 'g.db'}" if storage == "sqlite" else None
    study = optuna.create_study(storage=url)
    attrs = {"a": 1, "b": [0.5, 2.0], "c": {"x": [1, 2]}, "d": True}
    trial = study.ask()
    set_user_attrs(trial, attrs)
    assert trial.user_attrs == attrs
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs == attrs


def test_sampler_constraint_off_sets_no_constraints_but_keeps_the_verdict():
    """``sampler.constraint = false`` (what docs/findings.md compares against): TPE sees the ELBO
    alone, while the collapse diagnostics are recorded as usual."""
    config = tiny_config(sampler={"name": "tpe", "constraint": False})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(COLLAPSING)
    study.optimize(Objective(config), n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    assert t.constraints == {}
    assert isinstance(t.user_attrs[keys.ATTR_COLLAPSED], bool)
