"""Faults during a run lose nothing: real subprocesses, real signals, real dropped connections."""

from __future__ import annotations

import contextlib
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
    FINISHED,
    POPULATIONS,
    SIGNALS,
    assert_stopped_cleanly,
    signal_frozen,
    study_trials,
)
from vae_search import keys

# Trials of ~30 epochs of small batches (a few seconds): the connection drops land mid-trial.
# A trial whose failure could not be written while the database was down is recovered through
# its stale heartbeat (by design): a short grace period keeps that recovery inside the test.
FAULTS = {"name": "faults", "train": {"epochs": 30, "batch_size": 16},
          "search": {"klstart": [0, 10], "annealtime": [0, 10]}, "pruner": {"name": "none"},
          "run": {"heartbeat_interval": 2, "grace_period": 20}}


def _start(tmp_path: Path, url: str, name: str, trials: int,
           population: str = "1") -> subprocess.Popen:
    toml = write_tiny_toml(tmp_path, **FAULTS)
    return subprocess.Popen(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
         "--study-name", name, "--trials", str(trials), "--quiet", "--population", population,
         "--workers", "1"],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return list(study_trials(url, name).values())


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"worker exited early ({proc.returncode}): {err[-2000:]}")
        if predicate():
            return
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("timed out waiting for the worker")


def _interrupt_and_resume(
    tmp_path: Path, url: str, name: str, signum: int, *, after: int = 2, population: str = "1"
) -> None:
    proc = _start(tmp_path, url, name, trials=50, population=population)

    def finished() -> list[optuna.trial.FrozenTrial]:
        return [t for t in _trials(url, name)
                if t.state.is_finished() and t.state != TrialState.FAIL]

    _wait_for(lambda: len(finished()) >= after, proc)
    _wait_for(lambda: any(t.state == TrialState.RUNNING for t in _trials(url, name)), proc)
    # Frozen, what the study shows is what the signal meets (tests/faults.py).
    before = signal_frozen(proc, signum, lambda: study_trials(url, name))
    sent = time.monotonic()
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert took < 60, f"took {took:.1f} s to stop"
    after_signal = study_trials(url, name)
    assert_stopped_cleanly(proc.returncode, err, signum, before, after_signal,
                           epochs=FAULTS["train"]["epochs"])

    # the same command (with a small budget) resumes the study
    kept = {n: (t.params, t.intermediate_values, t.value)
            for n, t in after_signal.items() if t.state in FINISHED}
    budget = len(kept) + 1
    proc = _start(tmp_path, url, name, trials=budget, population=population)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    done = {t.number: t for t in _trials(url, name) if t.state in FINISHED}
    assert len(done) == budget
    for number, (params, values, value) in kept.items():
        t = done[number]
        assert (t.params, t.intermediate_values, t.value) == (params, values, value)


@SIGNALS
def test_signal_on_sqlite_keeps_finished_trials_and_resumes(tmp_path, signum, population):
    # A population's running members are failed as interrupted, the finished ones kept.
    _interrupt_and_resume(tmp_path, f"sqlite:///{tmp_path / 'faults.db'}", "faults", signum,
                          population=population)


@POPULATIONS
def test_sigterm_during_the_first_trace_is_clean(tmp_path, population):
    # The first trial compiles the training loop: a signal must not tear TensorFlow's tracing.
    _interrupt_and_resume(tmp_path, f"sqlite:///{tmp_path / 'trace.db'}", "faults",
                          signal.SIGTERM, after=0, population=population)


@pytest.mark.postgres
@SIGNALS
def test_signal_on_postgresql_keeps_finished_trials_and_resumes(
    tmp_path, pg_url, signum, population
):
    name = f"faults_{uuid.uuid4().hex[:10]}"
    try:
        _interrupt_and_resume(tmp_path, pg_url, name, signum, population=population)
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=pg_url)


@pytest.mark.postgres
@POPULATIONS
def test_dropped_database_connections_lose_nothing(tmp_path, pg_url, population):
    """The server drops the worker's connections again and again mid-run
    (pg_terminate_backend)."""
    import sqlalchemy

    app = f"vs_{uuid.uuid4().hex[:10]}"
    name = f"drop_{app}"
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}application_name={app}"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    proc = _start(tmp_path, url, name, trials=6, population=population)
    killed = 0
    try:
        _wait_for(lambda: sum(t.state.is_finished() for t in _trials(pg_url, name)) >= 1, proc)
        # Drop every connection of the worker every 0.25 s for 5 s: some drops hit idle pooled
        # connections (pool_pre_ping replaces them), some hit a transaction in flight.
        end = time.monotonic() + 5
        while time.monotonic() < end and proc.poll() is None:
            with admin.connect() as conn:
                killed += conn.execute(sqlalchemy.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app"), {"app": app}).scalar_one()
            time.sleep(0.25)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        admin.dispose()
    assert killed >= 1, "no connection of the worker was dropped: the test proves nothing"
    trials = _trials(pg_url, name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if proc.returncode == 0:
        assert len(finished) == 6  # reconnected and met the budget
    else:  # or stopped with one clear line
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and "database" in lines[0], err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    for t in finished:
        assert len(t.intermediate_values) == 30 and keys.ATTR_HISTORY in t.user_attrs
    optuna.delete_study(study_name=name, storage=pg_url)


@POPULATIONS
def test_sigkilled_worker_leaves_no_trial_running_on_sqlite(tmp_path, population):
    """Heartbeats work on SQLite too: the next worker on the file fails and re-queues the
    trial (or every member of the killed worker's population)."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    toml = write_tiny_toml(tmp_path, **{
        **FAULTS, "run": {"heartbeat_interval": 1, "grace_period": 4, "max_retry": 1}})
    env = subprocess_env()
    cmd = [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
           "--study-name", "faults", "--quiet", "--population", population, "--workers", "1"]
    proc = subprocess.Popen([*cmd, "--trials", "50"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values
                          for t in _trials(url, "faults")), proc)
    killed = [t.number for t in _trials(url, "faults") if t.state == TrialState.RUNNING]
    proc.kill()
    proc.communicate(timeout=60)
    # nobody closed them (one trial, or a population's members): the process is gone
    assert killed and all(t.state == TrialState.RUNNING
                          for t in _trials(url, "faults") if t.number in killed)
    time.sleep(5)  # past the grace period
    done_before = sum(t.state.is_finished() and t.state != TrialState.FAIL
                      for t in _trials(url, "faults"))
    second = subprocess.run([*cmd, "--trials", str(done_before + 2)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    trials = _trials(url, "faults")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    dead = next(t for t in trials if t.number == killed[0])
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert retries and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == dead.params


@POPULATIONS
def test_a_signal_while_optuna_asks_fails_the_asked_trial(tmp_path, monkeypatch, population):
    """SIGTERM landing after ``study.ask()`` created a trial and before the objective runs (the
    sampler's reads, the heartbeat thread's start) fails that trial as interrupted. Left RUNNING
    it would have no heartbeat, so no stale-trial check would ever fail it, and a resumed run
    would wait for it forever (scripts/faults/signal_in_ask.py)."""
    import os

    from vae_search.run import main

    url = f"sqlite:///{tmp_path / 'ask.db'}"
    toml = write_tiny_toml(tmp_path, name="ask", pruner={"name": "none"},
                           run={"heartbeat_interval": 1, "grace_period": 30})
    ask, asked = optuna.Study.ask, []

    def ask_then_signal(self, *args, **kwargs):
        trial = ask(self, *args, **kwargs)
        asked.append(trial.number)
        if len(asked) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside ask
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_signal)
    code = main(["--study", str(toml), "--storage", url, "--trials", "5", "--quiet",
                 "--population", population])
    assert code == 128 + signal.SIGTERM
    trials = optuna.load_study(study_name="ask", storage=url).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    stopped = trials[asked[1]]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs.get(keys.ATTR_FAIL_REASON) == "interrupted"
