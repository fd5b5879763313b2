"""One artifact store for every worker and the dashboard: a shared directory, or S3.

S3 is tested for real against a local S3-compatible endpoint (moto's server, on 127.0.0.1; no
network): workers upload through Optuna's ``Boto3ArtifactStore`` and the dashboard serves the
PNG from the same bucket over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import subprocess_env, write_tiny_toml
from tests.test_hardening import assert_one_line_error
from vae_search.cli import ARTIFACTS_ENV
from vae_search.storage import proxy as serve
from vae_search.storage._optuna import study_id, trial_id
from vae_search.storage.artifacts import make_artifact_store
from vae_search.storage.connection import StorageError

PNG = b"\x89PNG\r\n\x1a\n"
BUCKET = "vae-artifacts"
TIMEOUT = 300  # seconds for a worker or the dashboard to do its part on a busy machine


@contextlib.contextmanager
def local_s3() -> Iterator[dict[str, str]]:
    """A local S3 endpoint with one bucket; yields the environment that points boto3 at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = serve.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with _environ(env):
            boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.stop()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_worker(cwd: Path, toml: Path, url: str, trials: int, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
         "--trials", str(trials), "--quiet"],
        cwd=cwd, env={**subprocess_env(), **env}, capture_output=True, text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "artifact not saved" not in proc.stderr, proc.stderr


@contextlib.contextmanager
def serving_dashboard(storage: str, cwd: Path, *extra: str,
                      env: dict[str, str] | None = None) -> Iterator[str]:
    """``vae-search dashboard`` in a child process; yields its base URL once it answers."""
    port = serve.free_port()
    with open(cwd / "dashboard.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vae_search.report.dashboard", "--storage", storage, "--port",
             str(port), *extra],
            cwd=cwd, env={**subprocess_env(), **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, (cwd / "dashboard.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=10):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _dashboard_serves_every_png(url: str, artifacts: str, env: dict[str, str],
                                tmp_path: Path) -> int:
    """Start ``vae-search dashboard`` on the store; fetch every trial's PNG from it over HTTP."""
    from optuna.artifacts import get_all_artifact_meta
    from optuna.storages import RDBStorage

    study = optuna.load_study(study_name="tiny", storage=url)
    finished = study.get_trials(states=(TrialState.COMPLETE,))  # a pruned trial has none
    fetched = 0
    with serving_dashboard(url, tmp_path, "--artifacts", artifacts, env=env) as base:
        for trial in finished:
            (meta,) = get_all_artifact_meta(trial, storage=RDBStorage(url))
            address = f"{base}/artifacts/{study_id(study)}/{trial_id(trial)}/{meta.artifact_id}"
            with urllib.request.urlopen(address, timeout=10) as resp:
                assert resp.read()[:8] == PNG
                fetched += 1
    return fetched


def test_workers_in_different_directories_share_one_directory_store_with_the_dashboard(
    tmp_path,
):
    toml = write_tiny_toml(tmp_path, search={"klstart": [0, 1], "annealtime": [0, 1]},
                           train={"epochs": 2})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = tmp_path / "mounted-store"
    for machine in ("a", "b"):  # two "machines": different working directories, one mount
        (tmp_path / machine).mkdir()
        trials = 1 if machine == "a" else 2
        _run_worker(tmp_path / machine, toml, url, trials, {ARTIFACTS_ENV: str(store)})
    assert len(list(store.iterdir())) == 2
    assert not list((tmp_path / "a").iterdir())  # nothing beside the worker
    assert _dashboard_serves_every_png(url, str(store), {}, tmp_path) == 2


def test_workers_and_the_dashboard_share_an_s3_bucket(tmp_path):
    import boto3

    toml = write_tiny_toml(tmp_path, search={"klstart": [0, 1], "annealtime": [0, 1]},
                           train={"epochs": 2})
    url = f"sqlite:///{tmp_path / 's3.db'}"
    with local_s3() as env:
        _run_worker(tmp_path, toml, url, 2, {**env, ARTIFACTS_ENV: f"s3://{BUCKET}"})
        with _environ(env):
            keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
        assert len(keys) == 2
        assert _dashboard_serves_every_png(url, f"s3://{BUCKET}", env, tmp_path) == 2
    assert not (tmp_path / "s3-artifacts").exists()  # not the default directory


def test_a_store_that_cannot_be_used_is_one_line_before_anything_is_written(tmp_path):
    toml = write_tiny_toml(tmp_path)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    cmd = [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url]
    for artifacts, message in (("/proc/no/such", "cannot write artifacts to /proc/no/such"),
                               ("s3://", "malformed artifact store"),
                               ("s3://bucket/prefix", "malformed artifact store")):
        proc = subprocess.run([*cmd, "--artifacts", artifacts], capture_output=True, text=True,
                              env=subprocess_env(), timeout=TIMEOUT)
        assert_one_line_error(proc, message)
    assert not optuna.get_all_study_names(url)


def test_a_missing_bucket_is_refused(tmp_path):
    with local_s3() as env, _environ(env), pytest.raises(StorageError, match="no-such-bucket"):
        make_artifact_store("sqlite:///x.db", "s3://no-such-bucket")


def test_a_process_builds_its_store_once(tmp_path, monkeypatch):
    import optuna.artifacts

    from vae_search import search
    from vae_search.storage.artifacts import artifact_hook, artifact_store

    url = f"sqlite:///{tmp_path / 'once.db'}"
    store = artifact_store(url)
    assert artifact_store(url) is store and artifact_hook(url).artifact_store is store
    assert make_artifact_store(url) is not store  # a new one when asked for one
    for place in ("a", "b"):  # a relative directory is another directory elsewhere
        (tmp_path / place).mkdir()
        monkeypatch.chdir(tmp_path / place)
        assert artifact_store(url, "mine") is artifact_store(url, tmp_path / place / "mine")
    assert artifact_store(url, "mine") is not artifact_store(url, tmp_path / "a" / "mine")

    built: list[str] = []

    class Counted(optuna.artifacts.FileSystemArtifactStore):
        def __init__(self, base_path: str) -> None:
            built.append(base_path)
            super().__init__(base_path)

    monkeypatch.setattr(optuna.artifacts, "FileSystemArtifactStore", Counted)
    tiny = {"train.epochs": 2, "search.klstart": [0, 1], "search.annealtime": [0, 1],
            "search.latent_dim": [2], "model.hidden": [16]}
    run_url = f"sqlite:///{tmp_path / 'run.db'}"
    study = search("digits", trials=2, storage=run_url, overrides=tiny)
    assert built == [str(tmp_path / "run-artifacts")]  # checked at the start, used by the loop
    assert len(list((tmp_path / "run-artifacts").iterdir())) == len(study.trials) == 2
