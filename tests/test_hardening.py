"""Bad input gets one clear line and exit status 2; faults lose nothing; secrets stay hidden."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import optuna
import pytest

from vae_search.storage.connection import StorageError, make_storage
from vae_search.storage.url import StorageURL, mask_url

SECRET = "s3cr3t-pw"


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_search.run", *argv],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    check_one_line_error(proc.returncode, proc.stderr, message)


def check_one_line_error(status: object, stderr: str, message: str) -> None:
    """Exit status 2 and one line on stderr holding ``message``, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in stderr


def call_main(main: Callable[..., int], argv: list[str]) -> int:
    """A command's ``main(argv)`` in this process; its exit status (argparse exits too)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def assert_main_error(capsys, argv: list[str], message: str) -> str:
    """``vae-search ARGV`` in this process is one line holding ``message`` and exit 2."""
    from vae_search.cli import main

    status = call_main(main, argv)
    err = capsys.readouterr().err
    check_one_line_error(status, err, message)
    return err


# -- passwords -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://alice:{SECRET}@db.example:5432/opt",
        f"postgresql://alice:{SECRET}@h/db?sslmode=require",
        f"mysql+pymysql://bob:{SECRET}@h/db",
        f"not a url but user:{SECRET}@host",
        f"weird://u:{SECRET}@h:notaport/db",
    ],
)
def test_mask_url_hides_passwords(url):
    shown = mask_url(url)
    assert SECRET not in shown
    assert "***" in shown


def test_a_parsed_url_shows_only_its_masked_form():
    url = StorageURL.parse(f"postgresql+psycopg://alice:{SECRET}@db.example:5432/opt")
    assert url.masked == "postgresql+psycopg://alice:***@db.example:5432/opt"
    assert SECRET not in str(url) + repr(url) + f"{url}" and SECRET in url.text


def test_plain_urls_are_shown_as_they_are():
    for text in ("sqlite:///vae_search.db", "postgresql+psycopg://alice@h/db"):
        assert mask_url(text) == StorageURL.parse(text).masked == text


def test_unreachable_server_is_retried_then_reported_without_password():
    url = f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/nodb"
    with pytest.raises(StorageError) as info:
        make_storage(url)
    message = str(info.value)
    assert "cannot connect" in message and "attempts" in message
    assert SECRET not in message and "alice:***@127.0.0.1:1" in message


def test_cli_never_prints_the_password():
    proc = cli("--storage", f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/nodb",
               "--trials", "1", timeout=180)
    assert_one_line_error(proc, "cannot connect to postgresql+psycopg://alice:***@127.0.0.1:1")
    assert SECRET not in proc.stderr + proc.stdout


# -- storage ---------------------------------------------------------------------------------

def test_malformed_url_and_unknown_driver():
    with pytest.raises(StorageError, match="malformed storage URL"):
        make_storage("this is not a url")
    with pytest.raises(StorageError, match="'nosuchdb' is not supported"):
        make_storage("nosuchdb://u@h/db")


def test_sqlite_in_missing_or_unwritable_location(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        make_storage(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(StorageError, match="/proc/x.db"):
        make_storage("sqlite:////proc/x.db")  # unwritable even for root


def test_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database " * 100)
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        make_storage(f"sqlite:///{junk}")
    assert junk.read_text().startswith("not a database")  # left untouched


def test_incompatible_optuna_schema_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    optuna.create_study(storage=url, study_name="keep")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'v9.9.9.z'")
    with pytest.raises(StorageError, match="incompatible Optuna"):
        make_storage(url)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT study_name FROM studies").fetchall() == [("keep",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("v9.9.9.z",)
        ]


# -- data through the CLI --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "data file not found"),
        ("1d", "expected a 2-D array"),
        ("nan", "non-finite value"),
        ("range", "Bernoulli likelihood needs values in [0, 1]"),
        ("csv", "not a number"),
        ("few", "too few for a train/validation split"),
        ("no-columns", "no columns (shape (200, 0))"),
        ("directory", "is a directory"),
    ],
)
def test_bad_data_via_cli(tmp_path, setup, message):
    data = tmp_path / ("d.csv" if setup == "csv" else "d.npy")
    if setup == "no-columns":
        np.save(data, np.zeros((200, 0)))
    elif setup == "directory":
        data.mkdir()
    elif setup == "1d":
        np.save(data, np.zeros(10))
    elif setup == "nan":
        np.save(data, np.array([[0.1, np.nan]] * 10))
    elif setup == "range":
        np.save(data, np.full((10, 2), 3.0))
    elif setup == "csv":
        data.write_text("0.1,0.2\n0.3,oops\n")
    elif setup == "few":
        np.save(data, np.zeros((1, 2)))
    toml = tmp_path / "s.toml"
    toml.write_text(
        f'[data]\ndataset = "file"\npath = "{data}"\n[train]\nbatch_size = 1\nepochs = 4\n'
        "[search]\nklstart = [0, 2]\nannealtime = [0, 2]\n"
    )
    proc = cli("--study", str(toml), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--quiet")
    assert_one_line_error(proc, message)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[train]\nepochs = 30\nbatch_size = = 3\n", "invalid TOML"),
        ("[train]\nepochz = 3\n", "train.epochz: unknown key"),
        ("[train]\nepochs = 'ten'\n", "train.epochs: expected an integer"),
        ("[search]\nklstart = [9, 2]\n", "search.klstart: inverted range"),
        ("[search]\nlatent_dim = [0]\n", "search.latent_dim"),
        ("[train]\nbatch_size = 5000\n", "batch_size = 5000 is larger than the training split"),
        ("[data]\ndataset = 'imagenet'\n", "data.dataset: unknown value 'imagenet'"),
        ("[model]\nlikelihood = 'laplace'\n", "model.likelihood: unknown value"),
        ("[pruner]\nname = 'sometimes'\n", "pruner.name: unknown value"),
        ("[sampler]\nname = 'grid'\n", "sampler.name: unknown value"),
        ("seed = 9223372036854775808\n", "seed: must be in 0..4294967295"),
        ("[search]\nlatent_dim = [100000000]\n", "model too large: one trial needs about"),
        ("[model]\nhidden = [1000000000]\n", "of memory available"),
    ],
)
def test_bad_config_via_cli(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    proc = cli("--study", str(path), "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--quiet")
    assert_one_line_error(proc, message)


def test_debug_flag_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochz = 3\n")
    proc = cli("--study", str(path), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_no_eval_or_pickle_loading_in_the_package():
    import pathlib

    import vae_search

    root = pathlib.Path(vae_search.__file__).parent
    for source in root.glob("*.py"):
        text = source.read_text()
        assert "eval(" not in text.replace("evaluate(", "").replace("_eval(", ""), source
        assert "allow_pickle=True" not in text, source
        assert "pickle.load" not in text, source


def test_a_lost_connection_in_a_background_thread_is_one_warning_not_a_traceback(
    capsys, monkeypatch
):
    """Optuna's heartbeat thread dies on a dropped connection; the worker says so in one line
    (seen under pg_terminate_backend in tests/test_interrupts.py), and every other thread error
    still goes to the previous hook (Python's traceback)."""
    import threading

    from optuna.exceptions import StorageInternalError

    from vae_search.engine import worker

    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    worker._quiet_thread_storage_faults()

    def run(exc: BaseException, name: str) -> str:
        def target() -> None:
            raise exc

        t = threading.Thread(target=target, name=name)
        t.start()
        t.join()
        return capsys.readouterr().err

    err = run(StorageInternalError("commit failed"), "heartbeat-7")
    assert "warning: heartbeat-7 lost the database connection" in err
    assert len(err.strip().splitlines()) == 1 and not seen
    bug = ValueError("a real bug")
    assert run(bug, "other") == "" and seen == [bug]


# -- command-line values checked before any work ----------------------------------------------

@pytest.mark.parametrize("command", ["run", "report", "dashboard", "export", "confirm"])
@pytest.mark.parametrize(("name", "message"), [
    ("", "--study-name: must not be empty"),  # used to write into the config's own study
    ("  ", "--study-name: must not be empty"),
    ("n" * 513, "--study-name: at most 512 characters"),  # a traceback on PostgreSQL
], ids=["empty", "blank", "513-characters"])
def test_study_names_every_storage_can_hold(tmp_path, capsys, command, name, message):
    out = ["--out", str(tmp_path / "x.html")] if command == "report" else []
    out = ["--out", str(tmp_path / "x.keras")] if command == "export" else out
    assert_main_error(capsys, [command, "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                               "--study-name", name, *out], message)
    assert not (tmp_path / "x.db").exists()


@pytest.fixture
def empty_study_url(tmp_path) -> str:
    """A storage holding one study with no trials (a command's checks are what is tested)."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(storage=url, study_name="e")
    return url


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "--out", "/sys/r.html"], "--out: cannot write in /sys: Permission denied"),
    (["report", "--out", "{tmp}"], "--out: {tmp} is a directory"),
    (["report", "--out", ""], "--out: must name a file"),
    (["report", "--out", "{tmp}/no/r.html"], "--out: directory {tmp}/no does not exist"),
    (["report", "--out", "{tmp}/r.html", "--figures-dir", "/sys/figs"],
     "--figures-dir: cannot write in /sys"),
    (["report", "--out", "{tmp}/r.html", "--figures-dir", ""], "--figures-dir: must name a"),
    (["report", "--out", "{tmp}/r.html", "--figures-dir", "{tmp}/e.db"],
     "--figures-dir: {tmp}/e.db is a file"),
    (["export", "--out", "/sys/m.keras"], "--out: cannot write in /sys"),  # after re-training
    (["export", "--out", "{tmp}"], "--out: {tmp} is a directory"),
    (["export", "--trial", "abc", "--out", "{tmp}/m.keras"],  # used to load TensorFlow first
     "--trial: expected 'best' or a trial number, got 'abc'"),
    (["export", "--trial", "-1", "--out", "{tmp}/m.keras"], "--trial: expected 'best'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_output_paths_and_trials_are_checked_before_any_work(
        tmp_path, capsys, empty_study_url, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert_main_error(capsys, [*argv, "--storage", empty_study_url],
                      message.replace("{tmp}", str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.db"]  # nothing written


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--study-name", "a\nb", "--set", "name=x\ry"], "name: must be a non-empty name"),
    (["run", "--bogus\nflag"], "unrecognized arguments: --bogus\\nflag"),
    (["report", "--out", "\r"], "--out: must name a file, got '\\r'"),
    (["run", "--study", "s" * 600], "File name too long"),  # used to be exit 1 (OSError)
    (["run", "--set", "data.dataset=file", "--set", "data.path=" + "p" * 600],
     "File name too long"),
    (["report", "--out", "r" * 600], "--out: cannot write"),  # used to be a traceback
    (["report", "--out", "{tmp}/r.html", "--figures-dir", "f" * 600], "--figures-dir:"),
], ids=["control-in-config", "control-in-flag", "control-in-path", "long-study",
        "long-data-path", "long-out", "long-figures-dir"])
def test_what_the_fuzzer_found_is_one_line(tmp_path, capsys, monkeypatch, argv, message):
    """Found by tests/test_cli_props.py: a line break in the input made the error two lines;
    a name longer than the file system's limit was an OSError."""
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert_main_error(capsys, [*argv, "--storage", f"sqlite:///{tmp_path}/none/s.db"], message)


def test_optunas_read_retry_after_a_lost_connection_is_one_line(tmp_path):
    """Optuna retries a failed read of the trials and logs the whole SQLAlchemy error (the SQL,
    its parameters, a link) on the way; a worker shows the first line of the cause."""
    import inspect
    import io
    import logging

    import sqlalchemy
    from optuna.storages import RDBStorage

    from vae_search.storage.connection import READ_RETRY, quiet_read_retries

    assert READ_RETRY.strip() in inspect.getsource(RDBStorage._get_trials), (
        "Optuna's read retry no longer logs the line quiet_read_retries shortens")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught, engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT trial_id FROM trials WHERE trial_id > :n"),
                     {"n": 3})
    assert len(str(caught.value).splitlines()) > 1  # what Optuna would log as it is
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_read_retries()
    quiet_read_retries()  # idempotent
    shown = io.StringIO()
    handler = logging.StreamHandler(shown)
    logging.getLogger("optuna").addHandler(handler)  # Optuna's loggers do not propagate
    try:
        logger = optuna.logging.get_logger("optuna.storages._rdb.storage")
        logger.warning(f"{READ_RETRY}{caught.value!s}. Falling back to a slower alternative.")
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert shown.getvalue().splitlines() == [
        "reading the trials failed (no such table: trials); reading them again"]
