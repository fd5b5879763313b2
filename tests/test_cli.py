"""The front door: ``vae-search`` and its subcommands, shared arguments, the run options, the
worker-pool size, and a quiet TensorFlow."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import REPO, subprocess_env
from vae_search import cli, keys
from vae_search.cli import AUTO_WORKERS
from vae_search.engine.pool import pool_size
from vae_search.storage.url import StorageURL

HEAVY = ("tensorflow", "keras", "optuna", "plotly", "sqlalchemy")


def _python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout, cwd=REPO)


def test_console_script_is_the_dispatcher():
    project = tomllib.loads((Path(REPO) / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["vae-search"] == "vae_search.cli:console"


def test_help_lists_every_command_fast_without_heavy_imports():
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "from vae_search.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit as exc: assert exc.code == 0\n"
        "took = time.perf_counter() - start\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(f'TOOK {took:.3f}', file=sys.stderr)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    for name in cli.COMMANDS:
        assert name in proc.stdout
    took = float(proc.stderr.split("TOOK ")[1])
    assert took < 0.3, f"vae-search --help took {took:.2f} s in-process"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_help_skips_tensorflow(command):
    code = (
        "import sys\n"
        "from vae_search.cli import main\n"
        f"try: main([{command!r}, '--help'])\n"
        "except SystemExit as exc: assert exc.code == 0, exc.code\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "%%" not in proc.stdout  # argparse unescapes %% in help, not in a description


def test_unknown_command_and_no_command_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["nope"])
    assert info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice: 'nope'" in err
    assert cli.main([]) == cli.EXIT_USAGE
    assert "commands:" in capsys.readouterr().err


def test_subcommand_errors_carry_the_command_name(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert cli.main(["report", "--storage", missing, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vae-search report: error:") and "does not exist" in err


def test_adding_a_subcommand_is_one_registration(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello_command.py").write_text(
        "def main(argv):\n    print('hello', *argv)\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "hello", cli.Command("hello_command", "say hello"))
    assert cli.main(["hello", "a", "b"]) == 0
    assert capsys.readouterr().out == "hello a b\n"


@pytest.mark.parametrize("build", [cli.build_run_parser, cli.build_report_parser,
                                   cli.build_dashboard_parser])
def test_every_command_reads_the_storage_from_the_environment(build, monkeypatch):
    extra = ["--out", "x.html"] if build is cli.build_report_parser else []
    monkeypatch.setenv(cli.STORAGE_ENV, "postgresql+psycopg://u@db/x")
    assert build().parse_args(extra).storage.text == "postgresql+psycopg://u@db/x"
    parsed = build().parse_args([*extra, "--storage", "sqlite:///a.db"]).storage
    assert parsed == StorageURL.parse("sqlite:///a.db")  # parsed once, here
    monkeypatch.delenv(cli.STORAGE_ENV)
    assert build().parse_args(extra).storage.text == "sqlite:///vae_search.db"


def test_run_options_are_frozen_and_cover_every_run_argument():
    parser = cli.build_run_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f.name for f in dataclasses.fields(cli.RunOptions)}
    options = cli.RunOptions.parse(["--trials", "3", "--workers", "2"])
    assert (options.trials, options.workers, options.child) == (3, 2, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.trials = 4  # type: ignore[misc]


@pytest.mark.parametrize(("requested", "left", "cpus", "size", "notes"), [
    (1, 5, 2, 1, []),
    (2, 8, 2, 2, []),
    (64, 1, 2, 1, ["starting 1 worker, not 64: only 1 trial is"]),  # no warning about 64
    (1000, 1, 2, 1, ["starting 1 worker, not 1000"]),  # --workers 1000 --trials 1
    (8, 5, 2, 5, ["starting 5 workers, not 8", "warning: 5 workers are more than the 2 CPU"]),
    (3, 10, 2, 3, ["warning: 3 workers are more than the 2 CPU cores"]),
    (4, 3, 8, 3, ["starting 3 workers, not 4: only 3 trials are left"]),
    # auto: one per core, at most one per TRIALS_PER_WORKER (50) trials left, silently
    (AUTO_WORKERS, 200, 2, 2, []),
    (AUTO_WORKERS, 99, 2, 1, []),
    (AUTO_WORKERS, 100, 8, 2, []),
    (AUTO_WORKERS, 1000, 8, 8, []),
    (AUTO_WORKERS, 5, 1, 1, []),
])
def test_pool_never_exceeds_trials_left_and_warns_above_the_cores(
        requested, left, cpus, size, notes):
    got, lines = pool_size(requested, left, cpus)
    assert got == size
    assert len(lines) == len(notes)
    for line, expected in zip(lines, notes, strict=True):
        assert expected in line


def test_workers_above_the_trials_left_start_one_process(tiny_toml, tmp_path):
    toml = tiny_toml(train={"epochs": 2}, search={"klstart": [0, 1], "annealtime": [0, 1]},
                     pruner={"name": "none"})
    url = f"sqlite:///{tmp_path / 'w.db'}"
    workers = (os.cpu_count() or 1) + 1
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
         "--trials", "1", "--workers", str(workers)],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # one worker starts: no competition for the cores
    assert f"starting 1 worker, not {workers}" in proc.stderr
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == 1 and trials[0].user_attrs[keys.ATTR_WORKER]
    assert time.monotonic() - started < 120


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto starts one worker per core")
def test_default_workers_use_the_cores_and_say_so(tiny_toml, tmp_path):
    """With no --workers, 100 trials left start 2 worker processes on 2 cores or more (at most
    one per 50 trials left), and the run says what it chose; fewer trials stay in one
    process."""
    toml = tiny_toml(train={"epochs": 1}, search={"klstart": [0, 0], "annealtime": [0, 1]},
                     pruner={"name": "none"})
    url = f"sqlite:///{tmp_path / 'auto.db'}"

    def run(trials: int) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
             "--trials", str(trials)],
            capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    err = run(3)
    assert "starting" not in err  # one worker: this process
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in
                optuna.load_study(study_name="tiny", storage=url).trials}) == 1
    err = run(103)  # 100 left
    assert "starting 2 workers" in err and "(auto: " in err and "100 trials left" in err, err
    # The budget counts finished trials; two workers asking at the same instant near its end
    # may add a "surplus" FAIL trial that never started (no worker attr): not counted.
    finished = optuna.load_study(study_name="tiny", storage=url).get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 103
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in finished[3:]}) == 2


def test_tensorflow_warnings_only_with_debug():
    code = (
        "import sys\n"
        "from vae_search.engine.worker import quiet_tensorflow\n"
        "quiet_tensorflow(debug=sys.argv[1] == 'debug')\n"
        "from vae_search._tf import tf\n"
        "tf.get_logger().warning('probe: triggered tf.function retracing')\n"
        "tf.get_logger().error('probe: an error')\n"
    )
    quiet, debug = _python(code, "normal"), _python(code, "debug")
    assert quiet.returncode == 0 and debug.returncode == 0, quiet.stderr + debug.stderr
    assert "retracing" not in quiet.stderr and "an error" in quiet.stderr
    assert "retracing" in debug.stderr


def test_tensorflow_is_imported_with_its_native_log_quiet(tmp_path):
    """TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, at import: a run must set it first. (Its
    native "E"-level notices, e.g. oneDNN's Eigen fallback for int32 ops, show only on some
    CPUs, so the next test alone could pass on a machine that never prints them.)"""
    code = (
        "import os, sys\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow':\n"
        "            print('level at import:', os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
        "            sys.meta_path.remove(self)\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from vae_search.run import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = _python(code, "--trials", "1", "--epochs", "2", "--workers", "1", "--quiet",
                   "--storage", f"sqlite:///{tmp_path / 'q.db'}")
    assert proc.returncode == 0, proc.stderr
    assert "level at import: 3" in proc.stdout, proc.stdout


@pytest.mark.parametrize("study", ["seed_mse", "sequences"])  # the default; a token model
def test_a_normal_run_prints_no_tensorflow_warnings(tmp_path, study):
    proc = subprocess.run(  # as a newcomer first runs it
        [sys.executable, "-m", "vae_search.run", "--study", study, "--trials", "3",
         "--epochs", "3", "--set", "data.n_samples=300"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for line in proc.stderr.replace("\r", "\n").splitlines():
        assert "WARNING" not in line and "retracing" not in line, line
        assert "tensorflow" not in line.lower() or "loading TensorFlow" in line, line
        assert "oneDNN" not in line, line


@pytest.mark.skipif(not shutil.which("chromium"), reason="would install chromium")
def test_install_test_deps_does_nothing_when_chromium_is_there():
    proc = subprocess.run([str(Path(REPO) / "scripts" / "install-test-deps")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == proc.stderr == "", proc.stderr


@pytest.mark.parametrize("traced", [False, True], ids=["plain", "under-a-tracer"])
def test_a_process_that_loaded_tensorflow_exits_without_unloading_it(traced):
    """TensorFlow's unloading took ~1 s a process: exiting() ends the process at once, its
    output flushed and its status kept, unless a profiler or tracer waits for the exit."""
    code = ("import atexit, sys\n"
            "from vae_search._tf import tf\n"
            "from vae_search.cli import exiting\n"
            "atexit.register(lambda: print(' unloaded', end=''))\n"
            f"{'sys.settrace(lambda *a: None)' if traced else ''}\n"
            "print('stored', end='')\n"
            "sys.exit(exiting(3))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3
    assert out.stdout == ("stored unloaded" if traced else "stored")
