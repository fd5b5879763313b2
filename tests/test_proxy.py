"""Workers behind Optuna's gRPC storage proxy (``vae-search serve``) in front of the real
PostgreSQL server: the budget, crash recovery, signals, a restarting proxy, and bad input.

The proxy runs as a real process (``serve.spawn``); so do the workers.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import stored_figures, subprocess_env, write_tiny_toml
from tests.faults import POPULATIONS, assert_stopped_cleanly, signal_frozen, study_trials
from tests.test_artifacts import serving_dashboard
from tests.test_distributed import (
    _assert_intact,
    _assert_recovered,
    _finished,
    _kill_mid_trial,
    _running_trial,
    _toml,
    _wait_all,
    _worker,
    study_name,  # noqa: F401 (fixture)
)
from tests.test_hardening import assert_one_line_error
from vae_search import keys
from vae_search.bench.loadtest import Database
from vae_search.storage import proxy as serve
from vae_search.storage._optuna import trial_id
from vae_search.storage.connection import StorageError, make_storage
from vae_search.storage.heartbeat import HEARTBEAT_KEY, StaleTrialReaper, served_storage
from vae_search.storage.url import StorageURL

GRACE = 8  # the proxy's grace period in these tests (seconds without a heartbeat)


@pytest.fixture
def own_pg_url(pg_url: str) -> Iterator[str]:
    """A scratch database of the test's own on the test server, dropped afterwards.

    A proxy fails the stale trials of every study in its database: two tests' proxies on one
    database (under xdist) would reap each other's victims, and log it in the wrong log."""
    with Database(pg_url) as scratch:
        yield scratch.url


@contextlib.contextmanager
def running_proxy(
    url: str, log: Path, *, port: int | None = None, grace: int = GRACE
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``vae-search serve`` on ``url``; yields the workers' storage URL and the process."""
    port = port or serve.free_port()
    with open(log, "a") as out:
        proc = serve.spawn(url, port=port, env=subprocess_env(), stdout=out,
                           stderr=subprocess.STDOUT,
                           extra=["--grace-period", str(grace), "--heartbeat-interval", "1",
                                  "--reap-every", "0.5"])
    try:
        yield f"grpc://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.mark.postgres
@pytest.mark.slow
@POPULATIONS
def test_three_workers_behind_the_proxy_exact_budget_and_a_killed_trial_recovered(
    tmp_path, own_pg_url, study_name, population  # noqa: F811 (fixture)
):
    toml = _toml(tmp_path, epochs=30, batch_size=32, grace=GRACE)
    budget = 6
    with running_proxy(own_pg_url, tmp_path / "serve.log") as (proxy_url, proxy):
        procs = [_worker(toml, proxy_url, study_name, budget, "--population", population)
                 for _ in range(3)]
        victim, victim_pid = _kill_mid_trial(own_pg_url, study_name, procs)
        results = _wait_all(procs)
        assert proxy.poll() is None, "the proxy died"
    trials = optuna.load_study(study_name=study_name, storage=own_pg_url).trials
    _assert_recovered(procs, results, trials, victim, victim_pid, budget)
    assert HEARTBEAT_KEY not in trials[victim.number].system_attrs  # rows, not attrs
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in _finished(trials)}) >= 2
    log = (tmp_path / "serve.log").read_text()
    assert f"trial {victim.number} of study {study_name!r}: no heartbeat" in log, log
    assert "re-queued" in log and "Traceback" not in log, log

    # the figures were refreshed through the proxy, and every finished trial has its PNG
    study = optuna.load_study(study_name=study_name, storage=own_pg_url)
    assert set(keys.FIG_IDS) <= set(stored_figures(study))
    artifacts = list((tmp_path / "vae_search-artifacts").iterdir())  # named by artifact id
    assert len(artifacts) == budget, artifacts
    assert all(a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for a in artifacts)


@pytest.mark.postgres
@POPULATIONS  # in the default suite: it once failed there alone
def test_sigterm_stops_a_worker_behind_the_proxy_cleanly(
    tmp_path, own_pg_url, study_name, population  # noqa: F811 (fixture)
):
    toml = _toml(tmp_path, epochs=30, batch_size=32)
    with running_proxy(own_pg_url, tmp_path / "serve.log") as (proxy_url, _):
        proc = _worker(toml, proxy_url, study_name, 5, "--population", population)
        deadline = time.monotonic() + 120
        trial = None
        while trial is None and time.monotonic() < deadline:
            time.sleep(0.5)
            trial, _ = _running_trial(own_pg_url, study_name, {proc.pid}, epochs=1)
        assert trial is not None, "no trial started"
        # Frozen, what the study shows is what the signal meets (tests/faults.py).
        before = signal_frozen(proc, signal.SIGTERM, lambda: study_trials(own_pg_url, study_name))
        _, err = proc.communicate(timeout=60)
    after = study_trials(own_pg_url, study_name)
    assert_stopped_cleanly(proc.returncode, err, signal.SIGTERM, before, after,
                           epochs=30)
    assert trial.number in before


@pytest.mark.postgres
@pytest.mark.slow
@POPULATIONS
def test_workers_ride_out_a_proxy_restart(tmp_path, own_pg_url, study_name, population):  # noqa: F811
    toml = _toml(tmp_path, epochs=12, batch_size=32)
    port = serve.free_port()
    budget = 4
    with running_proxy(own_pg_url, tmp_path / "serve.log", port=port) as (proxy_url, proxy):
        procs = [_worker(toml, proxy_url, study_name, budget, "--population", population)
                 for _ in range(2)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            running, _ = _running_trial(own_pg_url, study_name, {p.pid for p in procs}, 1)
            if running is not None:
                break
        assert running is not None, "no trial started"
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(timeout=30) == 0
        time.sleep(3)  # the workers' calls fail meanwhile
    with running_proxy(own_pg_url, tmp_path / "serve.log", port=port):
        results = _wait_all(procs)
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err, err
    assert any("connection lost (proxy: UNAVAILABLE" in err for _, _, err in results), results
    trials = optuna.load_study(study_name=study_name, storage=own_pg_url).trials
    assert len(_finished(trials)) == budget
    for t in _finished(trials):
        _assert_intact(t)
    for t in trials:  # the trials caught by the restart were failed, none left running
        assert t.state != TrialState.RUNNING


def test_local_workers_through_a_proxy_on_sqlite(tmp_path):
    """``--workers 2`` behind the proxy: the pool's parent and children all go through it."""
    toml = _toml(tmp_path)
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    with running_proxy(url, tmp_path / "serve.log") as (proxy_url, _):
        proc = subprocess.run(
            [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage",
             proxy_url, "--trials", "6", "--workers", "2", "--quiet"],
            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    trials = optuna.load_study(study_name="dist", storage=url).trials
    assert len(_finished(trials)) == 6
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in _finished(trials)}) == 2
    assert f"browse: vae-search dashboard --storage {proxy_url}" in proc.stdout


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_trial_started_through_the_proxy_is_covered_before_its_first_relayed_beat(tmp_path):
    """A worker killed while sampling (before its relay starts) still leaves a stale trial:
    the proxy records a heartbeat when the trial starts. Relayed beats keep a trial alive."""
    from vae_search.config.schema import RunConfig

    url = f"sqlite:///{tmp_path / 'served.db'}"
    backend = make_storage(url, run=RunConfig(heartbeat_interval=1, grace_period=1, max_retry=1))
    storage = served_storage(backend)
    study = optuna.create_study(storage=storage, study_name="s")
    orphan = study.ask()  # never beats again
    alive = study.ask()
    reaper = StaleTrialReaper(storage, log=lambda line: None)
    for _ in range(5):
        time.sleep(0.6)
        storage.set_trial_system_attr(trial_id(alive), HEARTBEAT_KEY, time.time())
        reaper.sweep()
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    assert HEARTBEAT_KEY not in trials[alive.number].system_attrs
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == TrialState.WAITING
    # the retry is re-queued once (max_retry 1); when it dies too, it is not re-queued again
    picked = study.ask()
    assert picked.number == retry.number
    time.sleep(2.5)  # SQLite's clock has whole seconds
    reaper.sweep()
    trials = study.get_trials()
    assert trials[retry.number].state == TrialState.FAIL
    assert [t.number for t in trials if t.system_attrs.get("failed_trial") == orphan.number] == [
        retry.number]  # no second retry


# -- bad input -------------------------------------------------------------------------------

def _serve(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_search", "serve", *argv], capture_output=True,
                          text=True, timeout=timeout, env=subprocess_env())


def test_proxy_refuses_an_unreachable_database_in_one_line():
    proc = _serve("--storage", "postgresql+psycopg://alice:s3cr3t@127.0.0.1:1/nodb",
                  "--port", str(serve.free_port()))
    assert_one_line_error(proc, "cannot connect to postgresql+psycopg://alice:***@127.0.0.1:1")
    assert "s3cr3t" not in proc.stderr + proc.stdout


def test_proxy_refuses_a_port_in_use_and_a_proxy_url(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = _serve("--storage", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(port))
    assert_one_line_error(proc, f"cannot serve on 127.0.0.1:{port}")
    proc = _serve("--storage", "grpc://127.0.0.1:13000")
    assert_one_line_error(proc, "serve needs the database URL")
    proc = _serve("--port", "0")
    assert_one_line_error(proc, "--port")


@pytest.mark.parametrize(("argv", "message"), [
    (["--grace-period", "1"], "--grace-period: must exceed the workers' heartbeat interval "
     "(--heartbeat-interval, their run.heartbeat_interval: 10 s), got 1"),
    (["--grace-period", "10"], "heartbeat interval"),
    (["--grace-period", "5", "--heartbeat-interval", "5"], "5 s), got 5"),
    (["--heartbeat-interval", "0"], "--heartbeat-interval: must be >= 1"),
])
def test_a_grace_period_within_the_heartbeat_interval_is_refused(tmp_path, capsys, argv, message):
    """It used to fail healthy trials as stale: heartbeats come every 10 s by default."""
    from tests.test_hardening import assert_main_error

    assert_main_error(capsys, ["serve", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                               "--port", str(serve.free_port()), *argv], message)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_the_stale_trial_line_says_what_the_retry_callback_did(tmp_path):
    """The callback reads the retry history before this retry, and appends to it: the line
    used to say "not re-queued" for the last retry allowed, which then ran."""
    from vae_search.config.schema import RunConfig
    from vae_search.storage.heartbeat import report_stale_trials

    backend = make_storage(f"sqlite:///{tmp_path / 'r.db'}",
                           run=RunConfig(heartbeat_interval=1, grace_period=2, max_retry=2))
    lines: list[str] = []
    report_stale_trials(backend, max_retry=2, log=lines.append)
    study = optuna.create_study(storage=backend, study_name="s")
    study.enqueue_trial({"x": 0.5})
    for _ in range(3):  # the original, then its two retries, each dying
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, state=TrialState.FAIL)
        backend.heartbeat_stale_trial_callback(study, study.trials[trial.number])
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 0 and len(study.trials) == 3
    assert "re-queued with the same parameters (retry 1 of at most 2)" in lines[0]
    assert "re-queued with the same parameters (retry 2 of at most 2)" in lines[1]
    assert "not re-queued (max_retry 2 reached)" in lines[2]
    assert len(lines) == 3


@pytest.mark.parametrize("url, message", [
    ("grpc://", "malformed proxy URL"),
    ("grpc://host:notaport", "malformed proxy URL"),
    ("grpc://host:1234/db", "malformed proxy URL"),
])
def test_malformed_proxy_urls(url, message):
    with pytest.raises(StorageError, match=message):
        StorageURL.parse(url)


def test_proxy_urls_parse():
    assert StorageURL.parse("grpc://proxy:13001").proxy == ("proxy", 13001)
    assert StorageURL.parse("GRPC://10.0.0.7").proxy == ("10.0.0.7", 13000)
    assert StorageURL.parse("postgresql+psycopg://u@h/db").proxy is None


def test_worker_with_no_proxy_there_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from vae_search import run
    from vae_search.storage import connection

    monkeypatch.setattr(connection, "PROXY_CONNECT_TIMEOUT", 1.0)
    toml = write_tiny_toml(tmp_path)
    port = serve.free_port()
    code = run.main(["--study", str(toml), "--storage", f"grpc://127.0.0.1:{port}", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"cannot reach the storage proxy at grpc://127.0.0.1:{port}" in lines[0]


def test_report_and_dashboard_read_through_the_proxy_too(tmp_path):
    """``report`` and ``dashboard`` normally read the database; a proxy URL works as well."""
    import json
    import urllib.request

    from vae_search.storage.connection import load_study

    url = f"sqlite:///{tmp_path / 'r.db'}"
    optuna.create_study(storage=url, study_name="r").optimize(lambda t: 1.0, n_trials=2)
    with running_proxy(url, tmp_path / "serve.log") as (proxy_url, _):
        study = load_study(proxy_url, None)
        assert study.study_name == "r" and len(study.trials) == 2
        with serving_dashboard(proxy_url, tmp_path) as base, \
                urllib.request.urlopen(f"{base}/api/studies") as resp:
            listed = json.loads(resp.read())["study_summaries"]
    assert [s["study_name"] for s in listed] == ["r"]
