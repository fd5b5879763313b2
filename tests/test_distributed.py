"""Many workers on one shared database: the real PostgreSQL server, real processes, real signals.

The server URL comes from ``VAE_SEARCH_TEST_PG_URL`` (default: database ``test`` on
127.0.0.1:5432). Without a server these tests skip locally and fail in CI (``CI=true``). Each
test uses its own study name (or a scratch database) and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import subprocess_env, write_tiny_toml
from tests.faults import (
    POPULATIONS,
    SIGNALS,
    assert_stopped_cleanly,
    finished,
    freeze,
    pool_workers,
    signal_frozen,
    study_trials,
    thaw,
)
from vae_search import keys
from vae_search.bench.loadtest import Database
from vae_search.engine.budget import FAIL_SURPLUS
from vae_search.storage.connection import worker_seed

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 240  # seconds any group of worker processes may take

@pytest.fixture
def study_name(pg_url):
    name = f"dist_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=pg_url)


def _toml(tmp_path: Path, *, epochs: int = 5, batch_size: int = 128, grace: int = 30) -> Path:
    return write_tiny_toml(
        tmp_path, name="dist", train={"epochs": epochs, "batch_size": batch_size},
        search={"klstart": [0, 2]}, pruner={"name": "none"},
        run={"heartbeat_interval": 1, "grace_period": grace, "max_retry": 2},
    )


def _worker(toml: Path, url: str, name: str, trials: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
         "--study-name", name, "--trials", str(trials), "--quiet", *extra],
        cwd=toml.parent, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _wait_all(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=WORKER_TIMEOUT)
        results.append((proc.returncode, out, err))
    return results


def _finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _assert_intact(trial: optuna.trial.FrozenTrial) -> None:
    """Params, per-epoch reports and the stored history agree (nothing lost or mixed up)."""
    assert {"klstart", "annealtime", "latent_dim", "reduction"} <= set(trial.params)
    steps = sorted(trial.intermediate_values)
    assert steps == list(range(len(steps))) and steps, trial.number
    history = trial.user_attrs[keys.ATTR_HISTORY]
    assert history["epoch"] == steps
    assert history["val_elbo"] == pytest.approx([trial.intermediate_values[s] for s in steps])
    if trial.state == TrialState.COMPLETE:
        assert trial.value == pytest.approx(trial.intermediate_values[steps[-1]])


def _assert_only_surplus_failures(trials: list[optuna.trial.FrozenTrial]) -> None:
    for t in trials:
        assert t.state != TrialState.RUNNING, f"trial {t.number} left RUNNING"
        if t.state == TrialState.FAIL:
            reason = str(t.user_attrs.get(keys.ATTR_FAIL_REASON, ""))
            assert reason.startswith(FAIL_SURPLUS), (t.number, reason)
            assert not t.intermediate_values, "a surplus trial must not have trained"


def test_worker_seeds_are_distinct_and_stable():
    seeds = {worker_seed(0, f"host#{i}") for i in range(64)}
    assert len(seeds) == 64
    assert worker_seed(0, "host#1") == worker_seed(0, "host#1") != worker_seed(1, "host#1")


@pytest.mark.postgres
def test_three_workers_share_an_exact_budget(tmp_path, pg_url, study_name):
    toml = _toml(tmp_path)
    budget = 7
    procs = [_worker(toml, pg_url, study_name, budget) for _ in range(3)]
    for code, _, err in _wait_all(procs):
        assert code == 0, err
        assert "Traceback" not in err, err

    trials = optuna.load_study(study_name=study_name, storage=pg_url).trials
    finished = _finished(trials)
    assert len(finished) == budget
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == max(numbers) + 1
    for t in finished:
        _assert_intact(t)
    _assert_only_surplus_failures(trials)
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in finished}) >= 2  # the work was shared


def _running_trial(url: str, name: str, pids: set[int], epochs: int = 2):
    """A running trial of one of ``pids`` that reported ``epochs`` epochs, and its pid."""
    for t in study_trials(url, name).values():
        if t.state != TrialState.RUNNING:
            continue
        pid = int(str(t.user_attrs.get(keys.ATTR_WORKER, ":0")).rsplit(":", 1)[1])
        if pid in pids and len(t.intermediate_values) >= epochs:
            return t, pid
    return None, None


def _kill_mid_trial(url: str, name: str, procs: list[subprocess.Popen]):
    """SIGKILL the worker of a trial seen past its second epoch; the trial and pid.

    The worker is frozen first and killed only if the trial is still RUNNING as frozen (it may
    have finished since the poll: stored reports lag the training), so the trial is certainly
    one the kill leaves behind (tests/faults.py)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(0.5)
        victim, pid = _running_trial(url, name, {p.pid for p in procs})
        if victim is None:
            continue
        freeze([pid])
        frozen = study_trials(url, name)
        if frozen[victim.number].state == TrialState.RUNNING:
            os.kill(pid, signal.SIGKILL)
            return frozen[victim.number], pid
        thaw([pid])
    raise AssertionError("no trial reached its second epoch in time")


def _assert_recovered(procs, results, trials, victim, victim_pid, budget: int) -> None:
    """The killed worker's trial failed and was retried once elsewhere with its parameters;
    the others finished cleanly; the budget is met exactly by intact trials."""
    for proc, (code, _, err) in zip(procs, results):
        if proc.pid == victim_pid:
            assert code == -signal.SIGKILL
        else:
            assert code == 0 and "Traceback" not in err, err
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs[keys.ATTR_WORKER] != killed.user_attrs[keys.ATTR_WORKER]
    finished = _finished(trials)
    assert len(finished) == budget  # exactly: no surplus trial trained, the retry counted once
    for t in finished:
        _assert_intact(t)
    # The victim's other trials (a population's members, killed with it) failed the same way:
    # as stale, each retried once with its parameters.
    dead = killed.user_attrs[keys.ATTR_WORKER]
    others = [t for t in trials if t.number != victim.number
              and t.state == TrialState.FAIL and t.user_attrs.get(keys.ATTR_WORKER) == dead
              and keys.ATTR_FAIL_REASON not in t.user_attrs]
    for t in others:
        (again,) = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert again.params == t.params
    _assert_only_surplus_failures(
        [t for t in trials if t.number != victim.number and t not in others])


@pytest.mark.postgres
@pytest.mark.slow
@POPULATIONS
def test_killed_worker_trial_fails_and_is_retried_elsewhere(
    tmp_path, pg_url, study_name, population
):
    toml = _toml(tmp_path, epochs=30, batch_size=32, grace=8)
    budget = 6
    procs = [_worker(toml, pg_url, study_name, budget, "--population", population)
             for _ in range(3)]
    victim, victim_pid = _kill_mid_trial(pg_url, study_name, procs)
    results = _wait_all(procs)
    trials = optuna.load_study(study_name=study_name, storage=pg_url).trials
    _assert_recovered(procs, results, trials, victim, victim_pid, budget)


@pytest.mark.postgres
@pytest.mark.slow
def test_eight_workers_on_a_fresh_database_create_one_study(tmp_path, pg_url):
    toml = _toml(tmp_path)
    start_at = time.time() + 6.0  # every process has imported Optuna by then
    code = (
        "import sys, time\n"
        "from vae_search.storage._optuna import study_id\n"
        "from vae_search.engine.worker import open_worker_study\n"
        "from vae_search.run import RunOptions, resolve_config\n"
        "options = RunOptions.parse(sys.argv[1:])\n"
        "config = resolve_config(options)\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        "study = open_worker_study(options, config)\n"
        "print(study_id(study))\n"
    )
    with Database(pg_url) as scratch:
        url = scratch.url
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, "--study", str(toml), "--storage", url],
                cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        results = _wait_all(procs)
        for rc, _, err in results:
            assert rc == 0, err
        assert len({out.strip() for _, out, _ in results}) == 1
        summaries = optuna.get_all_study_summaries(storage=url)
        assert [s.study_name for s in summaries] == ["dist"]
        assert keys.STUDY_ATTR_CONFIG in summaries[0].user_attrs


@pytest.mark.postgres
def test_worker_with_another_config_is_refused_and_study_unchanged(tmp_path, pg_url, study_name):
    toml = _toml(tmp_path)
    (code, _, err), = _wait_all([_worker(toml, pg_url, study_name, 1)])
    assert code == 0, err
    study = optuna.load_study(study_name=study_name, storage=pg_url)
    before = (study.user_attrs, [(t.number, t.state, t.params) for t in study.trials])

    proc = _worker(toml, pg_url, study_name, 3, "--seed", "9")
    (code, out, err), = _wait_all([proc])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "different configuration: seed: 0 -> 9" in lines[0], err

    study = optuna.load_study(study_name=study_name, storage=pg_url)
    assert (study.user_attrs, [(t.number, t.state, t.params) for t in study.trials]) == before


def test_two_local_workers_on_a_sqlite_file(tmp_path):
    toml = _toml(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
         "--trials", "8", "--workers", "2", "--quiet"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "locked" not in proc.stderr.lower(), proc.stderr
    trials = optuna.load_study(study_name="dist", storage=url).trials
    assert len(_finished(trials)) == 8
    _assert_only_surplus_failures(trials)
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in _finished(trials)}) == 2
    assert "best" in proc.stdout  # one summary, from the parent
    assert proc.stdout.count("study 'dist'") == 1


@pytest.mark.postgres
@SIGNALS  # in the default suite: what a user's Ctrl-C meets most (the default starts workers)
def test_signal_stops_all_local_workers_cleanly(tmp_path, pg_url, study_name, signum, population):
    epochs = 30
    toml = _toml(tmp_path, epochs=epochs, batch_size=32)
    budget = 20
    parent = _worker(toml, pg_url, study_name, budget, "--workers", "2", "--population", population)
    deadline = time.monotonic() + 120
    trials: dict[int, optuna.trial.FrozenTrial] = {}
    workers: list[int] = []
    while time.monotonic() < deadline:
        time.sleep(0.5)
        trials, workers = study_trials(pg_url, study_name), pool_workers(parent.pid)
        if (len(workers) == 2 and finished(trials)
                and any(t.state == TrialState.RUNNING for t in trials.values())):
            break
    assert len(workers) == 2 and finished(trials), "the workers did not get going"
    # Both workers frozen while the parent forwards the signal (tests/faults.py).
    before = signal_frozen(parent, signum, lambda: study_trials(pg_url, study_name), workers)
    _, err = parent.communicate(timeout=60)
    after = study_trials(pg_url, study_name)
    assert_stopped_cleanly(parent.returncode, err, signum, before, after,
                           epochs=epochs)
    kept = finished(after)
    assert 1 <= len(kept) < budget
    for t in kept.values():
        _assert_intact(t)

    # re-running resumes: the finished trials are kept, the budget is met exactly
    resumed = _worker(toml, pg_url, study_name, len(kept) + 1, "--population", population)
    (code, _, err), = _wait_all([resumed])
    assert code == 0, err
    again = finished(study_trials(pg_url, study_name))
    assert len(again) == len(kept) + 1
    for number, t in kept.items():
        assert (again[number].params, again[number].intermediate_values) == (
            t.params, t.intermediate_values)


@pytest.mark.postgres
@pytest.mark.slow
def test_heartbeats_keep_beating_through_a_long_compiled_epoch(tmp_path, pg_url, study_name):
    """One compiled epoch lasting several grace periods is not taken for a dead worker.

    The heartbeat is a Python thread; it only beats if TensorFlow releases the GIL while the
    compiled epoch runs. This test plays a second worker that fails stale trials every 0.5 s.
    """
    from vae_search.config.schema import load_config
    from vae_search.storage.connection import make_storage

    toml = write_tiny_toml(  # one epoch must outlast 2 grace periods even on a quiet machine
        tmp_path, name="long_epoch", data={"dataset": "synthetic", "n_samples": 60000},
        model={"hidden": [512, 512]}, train={"epochs": 1, "batch_size": 16},
        search={"klstart": [0, 0], "annealtime": [0, 1], "latent_dim": [4]},
        pruner={"name": "none"}, run={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 2},
    )
    config = load_config(str(toml))
    proc = _worker(toml, pg_url, study_name, 1, "--threads", "1")
    reaper = None
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if reaper is None:
                try:
                    reaper = optuna.load_study(
                        study_name=study_name, storage=make_storage(pg_url, run=config.run)
                    )
                except KeyError:
                    continue
            optuna.storages.fail_stale_trials(reaper)
        (code, _, err), = _wait_all([proc])
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    (trial,) = optuna.load_study(study_name=study_name, storage=pg_url).trials
    assert trial.state == TrialState.COMPLETE
    # the single epoch (trial start to its one report) lasted well over the grace period
    assert trial.duration.total_seconds() > 2 * config.run.grace_period
