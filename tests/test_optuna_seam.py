"""The Optuna seam (``vae_search/storage/_optuna.py``): every private Optuna name it relies on.

When one of these fails after an Optuna upgrade, the message names the internal that changed;
fix ``_optuna.py`` (or replace it with a public API the new Optuna offers), nowhere else.
"""

from __future__ import annotations

import inspect

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from vae_search.storage import _optuna
from vae_search.storage.connection import make_storage


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    storage = make_storage(f"sqlite:///{tmp_path / 'seam.db'}", heartbeat=False)
    return optuna.create_study(storage=storage, study_name="seam")


def _commits(study: optuna.Study) -> list[int]:
    """A list that grows by one per transaction committed on the study's engine."""
    engine = _optuna.study_storage(study)._backend.engine
    commits: list[int] = []
    sqlalchemy.event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


def test_private_names_still_exist_with_the_shapes_we_call():
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    params = list(inspect.signature(RDBStorage._set_trial_attr_without_commit).parameters)
    assert params == ["self", "session", "model_cls", "trial_id", "key", "value"], (
        "RDBStorage._set_trial_attr_without_commit changed its signature", params)
    assert list(inspect.signature(_create_scoped_session).parameters)[:2] == [
        "scoped_session", "ignore_integrity_error"], "_create_scoped_session changed"
    assert hasattr(models, "TrialUserAttributeModel"), "models.TrialUserAttributeModel is gone"
    assert "_backend" in inspect.getsource(_CachedStorage.__init__), "_CachedStorage._backend"
    for name in ("_trial_id", "_cached_frozen_trial", "storage"):
        assert name in inspect.getsource(optuna.Trial.__init__), f"Trial.{name} is gone"
    for name in ("_storage", "_study_id"):
        assert name in inspect.getsource(optuna.Study.__init__), f"Study.{name} is gone"


def test_batched_user_attrs_are_one_transaction_and_the_same_rows(study, tmp_path):
    trial = study.ask()
    commits = _commits(study)
    attrs = {f"k{i}": [0.5 * i, i] if i % 2 else i for i in range(15)}
    _optuna.set_user_attrs(trial, attrs)
    assert len(commits) == 1, "the batched write fell back to one commit per attr"
    assert trial.user_attrs == attrs  # the trial's own cache is updated too
    again = optuna.load_study(study_name="seam", storage=f"sqlite:///{tmp_path / 'seam.db'}")
    assert again.trials[0].user_attrs == attrs  # stored exactly as set_user_attr would
    study.tell(trial, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        _optuna.set_user_attrs(trial, {"a": 1, "b": 2})  # the storage's own checks still run


def test_constraints_join_the_transaction_and_are_the_rows_set_constraint_writes(study, tmp_path):
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    assert "_CONSTRAINTS_KEY" in inspect.getsource(optuna.Trial.set_constraint), (
        "Trial.set_constraint no longer names its system attrs after _CONSTRAINTS_KEY")
    public, batched = study.ask(), study.ask()
    constraints = {"active_units": -3.0, "mutual_info": 0.25}
    public.set_user_attr("a", 1)
    for name, value in constraints.items():
        public.set_constraint(name, value)
    commits = _commits(study)
    _optuna.set_user_attrs(batched, {"a": 1}, constraints)
    assert len(commits) == 1, "attrs and constraints were not written in one transaction"
    assert batched.constraints == constraints == public.constraints
    again = optuna.load_study(study_name="seam", storage=f"sqlite:///{tmp_path / 'seam.db'}")
    first, second = again.trials
    assert first.system_attrs == second.system_attrs  # the same rows as set_constraint's
    assert first.user_attrs == second.user_attrs == {"a": 1}
    assert f"{_CONSTRAINTS_KEY}:mutual_info" in second.system_attrs


def test_constraints_set_constraint_refuses_still_do(study):
    trial = study.ask()
    with pytest.raises(ValueError, match="NaN"):
        _optuna.set_user_attrs(trial, {"a": 1, "b": 2}, {"c": float("nan")})
    assert trial.user_attrs == {"a": 1, "b": 2}  # written first, as before
    with pytest.raises(TypeError, match="float"):
        _optuna.set_user_attrs(trial, {"d": 1, "e": 2}, {"c": "high"})


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one_call"])
def test_a_retried_trial_gets_its_own_constraints_not_its_predecessors(study, batched):
    """Optuna's retry callback copies the failed trial's system attrs (constraints too) into
    the re-queued one, and ``set_constraint`` would keep them with a warning."""
    import warnings

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    failed = study.ask()
    _optuna.set_user_attrs(failed, {"a": 1, "b": 2}, {"c": 1.0, "d": 2.0})
    study.tell(failed, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, study.trials[0])
    retried = study.ask()
    inherited = study.trials[1]
    assert inherited.system_attrs.get("failed_trial") == 0
    assert inherited.constraints == {"c": 1.0, "d": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "already set" warning
        _optuna.set_user_attrs(retried, {"a": 3, "b": 4} if batched else {},
                               {"c": -1.0, "d": 0.5})
    assert retried.constraints == {"c": -1.0, "d": 0.5}
    assert study.trials[1].constraints == {"c": -1.0, "d": 0.5}


def test_single_attr_and_in_memory_storage_use_the_public_call():
    study = optuna.create_study()
    trial = study.ask()
    _optuna.set_user_attrs(trial, {"a": 1, "b": [2.0]})
    _optuna.set_user_attrs(trial, {"c": "x"})
    _optuna.set_user_attrs(trial, {})
    _optuna.set_user_attrs(trial, {"d": 1}, {"e": -1.0})
    assert study.trials[0].user_attrs == {"a": 1, "b": [2.0], "c": "x", "d": 1}
    assert study.trials[0].constraints == {"e": -1.0}


def test_fresh_trial_sees_a_change_made_by_another_process(study, tmp_path):
    trial = study.ask()
    assert _optuna.fresh_trial(trial).state == TrialState.RUNNING
    other = optuna.load_study(study_name="seam", storage=f"sqlite:///{tmp_path / 'seam.db'}")
    other.tell(trial.number, state=TrialState.FAIL)
    assert _optuna.fresh_trial(trial).state == TrialState.FAIL
    assert _optuna.study_storage(study).get_trial(trial._trial_id).state == TrialState.FAIL


def test_study_system_attrs_is_where_the_dashboard_saves_figures(study):
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    storage = _optuna.study_storage(study)
    assert _optuna.study_id(study) == storage.get_study_id_from_name("seam")
    assert _optuna.study_system_attrs(study) == {}
    save_plotly_graph_object(study, go.Figure(), graph_object_id="fig")
    assert any("fig" in key for key in _optuna.study_system_attrs(study))


def test_artifact_store_protocol_type():
    from optuna.artifacts import FileSystemArtifactStore

    store_type = _optuna.ArtifactStore
    for method in ("open_reader", "write", "remove"):
        assert callable(getattr(store_type, method, None)), f"ArtifactStore.{method} is gone"
        assert callable(getattr(FileSystemArtifactStore, method))
    with pytest.raises(AttributeError):
        _optuna.NoSuchName  # noqa: B018 (the module __getattr__ still refuses other names)


def test_trial_id_addresses_the_trial_in_its_storage(study):
    trial = study.ask()
    storage = _optuna.study_storage(study)
    assert storage.get_trial(_optuna.trial_id(trial)).number == trial.number
    assert _optuna.trial_id(trial) == storage.get_trial_id_from_study_id_trial_number(
        _optuna.study_id(study), trial.number)


def test_cached_storage_is_what_get_storage_puts_before_an_rdb_storage(tmp_path):
    """The proxy serves a subclass of it (``heartbeat.served_storage``): the class, its
    constructor and the public methods that subclass overrides and calls must stay."""
    from optuna.storages import RDBStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    cached = _optuna.CachedStorage
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=1)
    assert type(optuna.storages.get_storage(rdb)) is cached, "get_storage no longer caches"
    assert list(inspect.signature(cached.__init__).parameters) == ["self", "backend"]
    assert issubclass(cached, BaseHeartbeat), "the cache no longer forwards heartbeats"
    for name in ("create_new_trial", "set_trial_state_values", "set_trial_system_attr",
                 "record_heartbeat"):
        assert name in vars(cached), f"_CachedStorage.{name} is no longer its own method"
    served = cached(rdb)
    study = optuna.create_study(storage=served)
    trial = study.ask()
    served.record_heartbeat(_optuna.trial_id(trial))  # reaches the database's heartbeat rows


def test_unbeaten_running_trials_are_those_without_a_heartbeat_row(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'beat.db'}", heartbeat=True)
    storage.heartbeat_interval, storage.grace_period = 1, 7
    study = optuna.create_study(storage=storage, study_name="beat")
    with pytest.warns(UserWarning, match="Heartbeat"):
        unbeaten, beaten, done = study.ask(), study.ask(), study.ask()
    storage.record_heartbeat(_optuna.trial_id(beaten))
    study.tell(done, 1.0)
    assert _optuna.unbeaten_running_trials(study) == (7.0, [_optuna.trial_id(unbeaten)])
    off = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'off.db'}",
                                                   heartbeat=False))
    off.ask()
    assert _optuna.unbeaten_running_trials(off) == (0.0, [])  # no heartbeats, no judgement
