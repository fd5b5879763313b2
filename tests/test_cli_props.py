"""Property tests: any command line to any subcommand is either done (``--help``: exit 0) or one
line and exit status 2, never a traceback (without ``--debug``), and never starts real work.

Each command runs in this process through ``vae-search``'s own dispatcher (:func:`cli.main`), on
a storage in a directory that does not exist, so whatever passes every check stops at the
storage: nothing trains, serves or writes. ``bench`` is checked at its parse stage only (past
it, it measures).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.test_hardening import call_main
from vae_search import cli
from vae_search.bench.command import build_parser as build_bench_parser
from vae_search.storage.proxy import build_parser as build_serve_parser
from vae_search.storage.proxy import free_port

PARSERS = {
    "run": cli.build_run_parser,
    "report": cli.build_report_parser,
    "dashboard": cli.build_dashboard_parser,
    "export": cli.build_export_parser,
    "confirm": cli.build_confirm_parser,
    "serve": build_serve_parser,
    "bench": build_bench_parser,
}
NOT_FUZZED = {"--debug", "--help"}  # tracebacks on purpose; --help would end most parses
PORT = free_port()  # nobody listens there (a port in use is a one-line error too)


def _flags(command: str) -> list[str]:
    parser: argparse.ArgumentParser = PARSERS[command]()
    return sorted(flag for action in parser._actions for flag in action.option_strings
                  if flag.startswith("--") and flag not in NOT_FUZZED)


# Values a hurried or hostile user types: empty, blank, signs, huge, not numbers, format
# characters, paths that are directories, unwritable or missing, names and overrides.
VALUES = [
    "", " ", "0", "1", "2", "-1", "3.5", "abc", "1e999", "nan", "inf", "-inf", "auto", "best",
    "9223372036854775808", "4294967296", "99999", "65536", "%", "%%", "%(prog)s", "-", "--",
    "ñ", "a\nb", "\r", "a" * 600, "/", "/sys/x", "/sys/x.html", "{tmp}", "{tmp}/x.html",
    "{tmp}/x.keras", "{tmp}/missing/x.html", "127.0.0.1", "::1", "not a host!", "digits",
    "seed_mse", "sequences", "no_such_study", "{tmp}/bad.toml", "examples/conv_digits.toml",
    "grpc://", "grpc://127.0.0.1:1", "sqlite:///{tmp}/missing/y.db", "not a url",
]
ASSIGNMENTS = [
    "seed=1", "seed=-1", "seed=18446744073709551616", "train.epochs=0", "train.epochs=2",
    "search.latent_dim=[100000000]", "search.latent_dim=[]", "model.hidden=[1000000000]",
    "model.hidden=[]", "model.builder=no_such_module_q:b", "model.builder=os:getcwd",
    "model.builder=sys:exit",
    "nokey", "=", "name=", "name=a b", "name=a\nb", "data.dataset=mnist", "data.dataset=file",
    "data.path=/", "data.path={tmp}", "data.path=" + "p" * 600, "train.batch_size=100000",
    "search.klstart=[5,1]", "run.grace_period=1", "bogus.key=1", "train=3",
    "search.reduction=['avg']", "model.decoder=gru", "data.dataset=sequences",
]
REQUIRED = {"report": ["--out", "{tmp}/r.html"], "export": ["--out", "{tmp}/m.keras"]}
# Values each flag takes when the user means well: command lines that get past the parser.
PLAUSIBLE = {
    "--trials": ["1", "3"], "--timeout": ["0.5", "60"], "--epochs": ["1", "3"],
    "--study": ["digits", "seed_mse", "sequences", "{tmp}/bad.toml"], "--seed": ["0", "7"],
    "--study-name": ["s", "another"], "--artifacts": ["{tmp}/art", "s3://"],
    "--artifact-dir": ["{tmp}/art"], "--set": ASSIGNMENTS, "--workers": ["1", "2"],
    "--threads": ["1"], "--population": ["1", "auto", "4"], "--worker-index": ["0"],
    "--out": ["{tmp}/r.html", "{tmp}/m.keras"], "--figures-dir": ["{tmp}/figs"],
    "--trial": ["best", "0"], "--top": ["0", "2"], "--seeds": ["1", "3"], "--like": ["0"],
    "--host": ["127.0.0.1"], "--port": ["{port}"], "--grace-period": ["11", "120"],
    "--heartbeat-interval": ["1", "10"], "--max-retry": ["0", "2"], "--reap-every": ["0.5"],
    "--storage": ["sqlite:///{tmp}/missing/z.db"], "--postgres": ["postgresql://u@h/db"],
    "--worker": ["seed_mse"], "--worker-trials": ["1,2"], "--worker-epochs": ["1"],
}


def _argv(command: str) -> st.SearchStrategy[list[str]]:
    flags = _flags(command)
    token = st.one_of(st.sampled_from(flags), st.sampled_from(VALUES),
                      st.text(max_size=6).filter(lambda t: "\x00" not in t))
    junk = st.tuples(st.sampled_from(flags), st.sampled_from(VALUES)).map(list)
    meant = st.sampled_from(flags).flatmap(
        lambda flag: st.sampled_from(PLAUSIBLE[flag]).map(lambda v: [flag, v])
        if flag in PLAUSIBLE else st.just([flag]))
    pieces = st.one_of(meant, meant, meant, meant, junk, token.map(lambda t: [t]))
    return st.lists(pieces, max_size=5).map(
        lambda ps: [*REQUIRED.get(command, []), *(t for p in ps for t in p)])


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-props")
    (path / "bad.toml").write_text("[train]\nepochs = 2\n")
    # Warm up: the model.builder check imports TensorFlow, whose Keras imports IPython when
    # it is installed, which raises the recursion limit: Hypothesis warns about that inside
    # a test.
    with contextlib.redirect_stderr(io.StringIO()):
        call_main(cli.main, ["run", "--set", "model.builder=no_such_module_q:b",
                             "--storage", f"sqlite:///{path}/missing/s.db"])
    return path


def _check(status: int, out: str, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err + out, err
    if status == 0:
        assert "usage:" in out, (argv, out, err)  # only --help ends well here
        return
    assert status == 2, (argv, status, err)
    lines = [line for line in err.splitlines() if line.strip()]
    problems = [line for line in lines if not line.startswith(("note:", "warning:"))]
    assert len(problems) == 1 and " error: " in problems[0], (argv, err)


@pytest.mark.parametrize("command", [c for c in PARSERS if c != "bench"])
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_command_line_is_help_or_one_line_and_exit_2(command, data, tmp, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp)  # a stray sqlite:///vae_search.db would land here, and is refused
    monkeypatch.delenv(cli.STORAGE_ENV, raising=False)
    monkeypatch.delenv(cli.ARTIFACTS_ENV, raising=False)
    argv = [a.replace("{tmp}", str(tmp)).replace("{port}", str(PORT))
            for a in data.draw(_argv(command), label="argv")]
    argv += ["--storage", f"sqlite:///{tmp}/missing/s.db"]  # the last --storage wins
    status = call_main(cli.main, [command, *argv])
    out, err = capsys.readouterr()
    _check(status, out, err, argv)
    event("help" if status == 0 else "parser" if "(see --help)" in err else "past the parser")
    assert not (tmp / "missing").exists() and not (tmp / "vae_search.db").exists()


@settings(max_examples=150, deadline=None)
@given(argv=_argv("bench"))
def test_any_bench_command_line_parses_or_is_one_line(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = call_main(lambda a: (build_bench_parser().parse_args(a), 3)[1], argv)
    if status != 3:  # parsed: the bench would start measuring here
        _check(status, out.getvalue(), err.getvalue(), argv)
