"""The one seam to Optuna's internals: every private Optuna name used by vae_search is here.

Everything else in the package uses Optuna's public API only. Each name below is guarded by
``tests/test_optuna_seam.py``, which fails loudly (naming the internal) when an Optuna upgrade
changes what is relied on, instead of letting a worker break mid-study:

* :func:`set_user_attrs`: several trial user attrs, and constraints, in one storage transaction
  (Optuna's RDB storage has no public batched write; a loop of ``trial.set_user_attr`` is one
  commit each; a constraint is a system attr named after Optuna's private ``_CONSTRAINTS_KEY``).
* :func:`study_storage`, :func:`study_id`, :func:`study_system_attrs`, :func:`fresh_trial`: the
  storage behind a study, its id, and a trial's current row (no public accessors exist).
* :func:`trial_id`: a running trial's id in its storage (the gRPC heartbeat relay needs it).
* :func:`unbeaten_running_trials`: the running trials with no heartbeat row (Optuna's
  stale-trial check skips them: they have nothing to be late against), from Optuna's RDB
  schema.
* :data:`ArtifactStore`: the artifact-store protocol type (only for annotations).
* :data:`CachedStorage`: the in-process cache Optuna puts in front of an RDB storage (what
  ``optuna.storages.get_storage`` returns for one, and what Optuna's docs tell the gRPC proxy
  to serve); the proxy's storage subclasses it to turn relayed heartbeats into heartbeat rows.

Importing this module does not import Optuna: the names are resolved when first used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.storages import BaseStorage
    from optuna.storages._cached_storage import _CachedStorage as CachedStorage  # noqa: F401

__all__ = [
    "ArtifactStore",
    "CachedStorage",
    "fresh_trial",
    "set_user_attrs",
    "study_id",
    "study_storage",
    "study_system_attrs",
    "trial_id",
    "unbeaten_running_trials",
]



def __getattr__(name: str) -> Any:
    """``ArtifactStore`` and ``CachedStorage`` at run time, imported on first use (Optuna
    exports no public name for either)."""
    if name == "ArtifactStore":
        from optuna.artifacts._protocol import ArtifactStore

        return ArtifactStore
    if name == "CachedStorage":
        from optuna.storages._cached_storage import _CachedStorage

        return _CachedStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (Optuna's cache wrapper around an RDB storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (optuna-dashboard's study pages are addressed by it)."""
    return study._study_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attrs, where optuna-dashboard keeps the figures saved in the study."""
    return study._storage.get_study_system_attrs(study._study_id)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The trial's id in its storage (storage calls are addressed by it, not by its number)."""
    return trial._trial_id


def unbeaten_running_trials(study: optuna.Study) -> tuple[float, list[int]]:
    """The storage's grace period, and the ids of the study's RUNNING trials that have no
    heartbeat row.

    Optuna's stale-trial check (``fail_stale_trials``) only judges a trial by its last
    heartbeat, so a trial whose worker stopped between creating it and its first heartbeat (a
    connection dropped while ``study.ask()`` sampled, a worker killed there) stays RUNNING for
    ever. ``(0.0, [])`` for a storage without heartbeats or other than Optuna's RDB storage
    (behind the gRPC proxy, the proxy records a first heartbeat when a trial is created).
    """
    import sqlalchemy
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, RDBStorage) or backend.heartbeat_interval is None:
        return 0.0, []
    grace = backend.grace_period or 2 * backend.heartbeat_interval  # Optuna's own default
    trials = models.TrialModel.__table__
    beats = models.TrialHeartbeatModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id)
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study._study_id, trials.c.state == TrialState.RUNNING,
               beats.c.trial_id.is_(None))
    )
    with backend.engine.connect() as conn:
        return float(grace), list(conn.scalars(query))


def fresh_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial's current row in the storage (its state may have been changed by another
    process, e.g. failed as stale by a worker that saw no heartbeat)."""
    return trial.storage.get_trial(trial._trial_id)


def set_user_attrs(
    trial: optuna.Trial, attrs: Mapping[str, Any],
    constraints: Mapping[str, float] | None = None,
) -> None:
    """``trial.set_user_attr`` for every item, and ``trial.set_constraint`` for every item of
    ``constraints``, in one storage transaction when possible.

    Each ``set_user_attr`` is its own commit (an fsync on SQLite, a round-trip on PostgreSQL),
    and each ``set_constraint`` a read of the trial's system attrs plus a commit. For Optuna's
    RDB storage (behind its cache or not) the rows are written in one transaction through the
    storage's own per-attribute upsert, so the stored rows are the same; any other storage (or
    an Optuna without that internal: the seam test fails first) falls back to one call per key.
    Measured with 15 attrs per call: about 7 ms batched against 9 ms looped on SQLite, 20 ms
    against 27 ms on PostgreSQL; a trial's diagnostics (10 attrs) and its two constraints,
    6.5 ms against 9.5 ms on SQLite (load 0.9).

    A constraint ``set_constraint`` would refuse (not a number, NaN) still goes through
    ``set_constraint``, after the rest, so it raises as before. One already set is overwritten,
    where ``set_constraint`` would keep the old value with a warning: a trial re-queued by
    Optuna's retry callback inherits its failed predecessor's system attrs, constraints
    included, and trains with its own seed, so its feasibility must be its own.

    Args:
        trial: A running trial.
        attrs: User-attr keys and JSON-serializable values.
        constraints: Constraint names and values (feasible when <= 0), as ``set_constraint``.
    """
    from optuna.storages import RDBStorage

    storage = trial.storage
    backend = getattr(storage, "_backend", storage)
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    system, late = _constraint_rows(trial, constraints or {})
    if write is None or not isinstance(backend, RDBStorage) or len(attrs) + len(system) < 2:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for key, value in system.items():  # set_constraint's row, overwriting an inherited one
            storage.set_trial_system_attr(trial._trial_id, key, value)
            trial._cached_frozen_trial.system_attrs[key] = value
    else:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(backend.scoped_session, True) as session:
            for key, value in attrs.items():
                write(session, models.TrialUserAttributeModel, trial._trial_id, key, value)
            for key, value in system.items():
                write(session, models.TrialSystemAttributeModel, trial._trial_id, key, value)
        trial._cached_frozen_trial.user_attrs.update(attrs)
        trial._cached_frozen_trial.system_attrs.update(system)
    for name, value in late.items():
        trial.set_constraint(name, value)


def _constraint_rows(
    trial: optuna.Trial, constraints: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """The system-attr rows ``trial.set_constraint`` would write for ``constraints``, and the
    constraints it would refuse (left to it: it raises)."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    rows: dict[str, float] = {}
    late: dict[str, float] = {}
    for name, value in constraints.items():
        key = f"{_CONSTRAINTS_KEY}:{name}"
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and not math.isnan(value)):
            rows[key] = float(value)
        else:
            late[name] = value
    return rows, late
