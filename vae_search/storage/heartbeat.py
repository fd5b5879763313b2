"""Heartbeats through the gRPC storage proxy, so a killed worker's trial is still recovered.

Optuna's gRPC storage proxy has no heartbeat call: behind it, Optuna's optimize loop records no
heartbeat and its stale-trial check (``fail_stale_trials``) does nothing. vae_search relays them,
and the proxy process (``vae-search serve``, which talks to the database) does the recovery with
Optuna's own machinery:

* **Worker** (:class:`Heartbeats`): while trials run, one thread beats for each of them every
  ``run.heartbeat_interval`` s: on a database, Optuna's ``record_heartbeat``; behind the
  proxy, a trial system-attr write under :data:`HEARTBEAT_KEY` (an ordinary storage call,
  which the proxy forwards like any other).
* **Proxy** (:func:`served_storage`): the storage the proxy serves turns that write into the
  trial's Optuna heartbeat row (``record_heartbeat``, stamped by the database clock; the attr
  itself is not stored), and records a first heartbeat the moment a trial starts running
  through the proxy, so a worker killed before its first beat (while sampling) is covered too.
* **Recovery** (:class:`StaleTrialReaper`): a thread of the proxy process runs Optuna's
  ``fail_stale_trials`` on every study every few seconds. A trial with no heartbeat for the
  proxy's grace period is failed and re-queued by ``RetryHeartbeatStaleTrialCallback`` (at most
  ``max_retry`` times): the same rows and lineage (``failed_trial``, ``retry_history``) as when
  the workers talk to the database directly, where their own heartbeats do the same.

Importing this module does not import Optuna.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.storage._optuna import study_id, study_storage, unbeaten_running_trials

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, RDBStorage

__all__ = [
    "DEFAULT_REAP_EVERY",
    "HEARTBEAT_KEY",
    "Heartbeats",
    "StaleTrialReaper",
    "StaleTrials",
    "report_stale_trials",
    "served_storage",
]

HEARTBEAT_KEY = "vae_search:heartbeat"  # the system attr a relayed heartbeat is written as
DEFAULT_REAP_EVERY = 2.0  # seconds between the proxy's stale-trial sweeps
STUDY_REFRESH = 30.0  # seconds between re-reads of the list of studies to sweep


class Heartbeats:
    """Heartbeats for every running trial of a worker, from one daemon thread.

    The trial loop asks and tells (Optuna's optimize loop, which beats for its one trial, is
    not used), so a database storage gets ``record_heartbeat`` and the gRPC proxy the relayed
    system attr, every ``interval`` seconds, for each trial id registered. A missed beat (the
    proxy restarting) is retried at the next interval; a trial is only judged stale after the
    grace period without any.
    """

    def __init__(self, storage: Any, interval: float) -> None:
        from optuna.storages import GrpcStorageProxy

        self.ids: set[int] = set()
        self.beat: Callable[[int], Any] | None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if isinstance(storage, GrpcStorageProxy):
            self.beat = lambda tid: storage.set_trial_system_attr(tid, HEARTBEAT_KEY, time.time())
        elif getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:
            self.beat = storage.record_heartbeat
            interval = storage.get_heartbeat_interval()
        else:
            self.beat = None
        self._thread = None
        if self.beat is not None:
            self._thread = threading.Thread(target=self._run, args=(interval,),
                                            name="heartbeats", daemon=True)
            self._thread.start()

    def add(self, tid: int) -> None:
        if self.beat is not None:
            with self._lock:
                self.ids.add(tid)
            self.beat(tid)  # at once, as the optimize loop does when a trial starts

    def discard(self, tid: int) -> None:
        with self._lock:
            self.ids.discard(tid)

    def _run(self, interval: float) -> None:
        beat = self.beat
        assert beat is not None
        while not self._stop.wait(interval):
            with self._lock:
                ids = list(self.ids)
            for tid in ids:
                with contextlib.suppress(Exception):  # a missed beat: the next one tries again
                    beat(tid)

    def close(self) -> None:
        self._stop.set()


UNBEATEN = ("no heartbeat: its worker stopped (a lost database connection, or killed) between "
            "creating it and its first heartbeat; it never trained")


class StaleTrials:
    """Optuna's stale-trial check, and the same for trials that never had a heartbeat.

    Optuna fails (and, with the retry callback, re-queues) a RUNNING trial whose last heartbeat
    is older than the grace period, but skips one with no heartbeat at all: its worker stopped
    between ``study.ask()`` creating it and the first beat, and it would hold a place in the
    budget for ever. Such a trial is failed once this process has seen it without a heartbeat
    for the grace period (its own monotonic clock: no comparison of two machines' clocks or
    time zones, as its stored start time would need), with ``fail_reason`` :data:`UNBEATEN`,
    and not re-queued: it never trained. One instance per checking loop (a worker's budget
    gate, the proxy's reaper).

    Args:
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._first_seen: dict[tuple[int, int], float] = {}  # (study, trial id) -> when

    def check(self, study: optuna.Study) -> None:
        """One pass over ``study``: Optuna's check, then the trials without a heartbeat."""
        import warnings

        import optuna
        from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
        from optuna.trial import TrialState

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        grace, ids = unbeaten_running_trials(study)
        sid, now, unbeaten = study_id(study), self.clock(), set(ids)
        # Forget what got a heartbeat or ended meanwhile; remember what is new.
        seen = {key: at for key, at in self._first_seen.items()
                if key[0] != sid or key[1] in unbeaten}
        for tid in ids:
            seen.setdefault((sid, tid), now)
        self._first_seen = seen
        storage = study_storage(study)
        for tid in ids:
            if now - seen[(sid, tid)] < grace:
                continue
            with contextlib.suppress(UpdateFinishedTrialError):  # another worker was first
                storage.set_trial_user_attr(tid, keys.ATTR_FAIL_REASON, UNBEATEN)
                storage.set_trial_state_values(tid, TrialState.FAIL)
            del seen[(sid, tid)]


def served_storage(backend: RDBStorage) -> BaseStorage:
    """The storage ``vae-search serve`` hands to Optuna's gRPC proxy: Optuna's in-process cache
    over ``backend`` (as Optuna's docs advise for the proxy), where a relayed heartbeat becomes
    the trial's heartbeat row and a trial starting to run gets its first one.

    Args:
        backend: The database, with heartbeats on (``grace_period``, retry callback).
    """
    return _served_class()(backend)


@functools.cache
def _served_class() -> type:
    from optuna.trial import TrialState

    from vae_search.storage._optuna import CachedStorage

    class ServedStorage(CachedStorage):
        """Optuna's cached RDB storage, plus heartbeats relayed by workers behind the proxy."""

        def __init__(self, backend: RDBStorage) -> None:
            super().__init__(backend)
            self.active_study_ids: set[int] = set()  # studies with trials started here

        def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
            if key == HEARTBEAT_KEY:
                self.record_heartbeat(trial_id)
            else:
                super().set_trial_system_attr(trial_id, key, value)

        def create_new_trial(
            self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None
        ) -> int:
            new_id = super().create_new_trial(study_id, template_trial)
            if template_trial is None or template_trial.state == TrialState.RUNNING:
                self.record_heartbeat(new_id)  # covered from its first moment
                self.active_study_ids.add(study_id)
            return new_id

        def set_trial_state_values(
            self, trial_id: int, state: TrialState, values: Any = None
        ) -> bool:
            updated = super().set_trial_state_values(trial_id, state, values)
            if updated and state == TrialState.RUNNING:  # a queued trial (a retry) starts
                self.record_heartbeat(trial_id)
            return updated

    return ServedStorage


def report_stale_trials(
    backend: RDBStorage, *, max_retry: int | None, log: Callable[[str], None]
) -> None:
    """Make the database's stale-trial callback also say, in one line, what it did.

    Args:
        backend: The database, with heartbeats and a ``RetryHeartbeatStaleTrialCallback``.
        max_retry: That callback's limit (it does not expose it).
        log: Where the line goes.
    """
    retry = backend.heartbeat_stale_trial_callback
    if retry is None:
        return

    def logged(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Read before the callback runs: it appends this trial to the very list it read
        # (a shallow copy of the system attrs). Its rule: the retry is the history's
        # len + 1-th; it is queued unless that exceeds max_retry.
        retries = len(trial.system_attrs.get("retry_history", [])) + 1
        retry(study, trial)
        if max_retry is not None and retries > max_retry:
            outcome = f"not re-queued (max_retry {max_retry} reached)"
        else:
            limit = "" if max_retry is None else f" of at most {max_retry}"
            outcome = f"re-queued with the same parameters (retry {retries}{limit})"
        log(f"trial {trial.number} of study {study.study_name!r}: no heartbeat for "
            f"{backend.grace_period} s; failed and {outcome}")

    backend.heartbeat_stale_trial_callback = logged


class StaleTrialReaper:
    """Fails and re-queues the trials whose heartbeats stopped, in every study of the storage.

    Runs in the proxy process (:meth:`run` in a thread); :meth:`sweep` is one pass.

    Args:
        storage: The served storage (:func:`served_storage`; heartbeats on).
        every: Seconds between sweeps.
        log: Where the one-line reports go (failed trials, database outages).
    """

    def __init__(
        self, storage: BaseStorage, *, every: float = DEFAULT_REAP_EVERY,
        log: Callable[[str], None] = print,
    ) -> None:
        self.storage = storage
        self.every = every
        self.log = log
        self.stale = StaleTrials()
        self._studies: dict[int, optuna.Study] = {}
        self._listed_at = -float("inf")

    def _refresh(self) -> None:
        import optuna

        active: set[int] = getattr(self.storage, "active_study_ids", set())
        stale_list = time.monotonic() - self._listed_at > STUDY_REFRESH
        if not stale_list and active <= set(self._studies):
            return
        known = {study.study_name: study for study in self._studies.values()}
        studies = [known.get(frozen.study_name) or optuna.Study(frozen.study_name, self.storage)
                   for frozen in self.storage.get_all_studies()]
        self._studies = {study_id(study): study for study in studies}
        self._listed_at = time.monotonic()

    def sweep(self) -> None:
        """Fail (and re-queue) the stale trials of every study once."""
        self._refresh()
        for study in list(self._studies.values()):
            try:
                self.stale.check(study)
            except KeyError:  # the study was deleted meanwhile
                self._listed_at = -float("inf")

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``every`` seconds until ``stop`` is set; a database outage is reported
        once and ridden out."""
        from vae_search.storage.connection import error_reason, storage_faults

        faults = storage_faults()
        down = False
        while not stop.wait(self.every):
            try:
                self.sweep()
            except faults as exc:
                if not down:
                    self.log(f"warning: stale-trial check: database unavailable "
                             f"({error_reason(exc)}); retrying every {self.every:g} s")
                down = True
                continue
            except Exception as exc:  # noqa: BLE001 (the thread must outlive any one sweep)
                self.log(f"warning: stale-trial check failed: {error_reason(exc)}")
                continue
            if down:
                self.log("stale-trial check: database back")
                down = False
