"""The storage load test (``python -m vae_search.bench.command --storage-load``) runs here, bounded.

No timing assertions (the machine is shared): the numbers live in docs/performance.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy

from tests.conftest import subprocess_env
from vae_search.bench.loadtest import LoadSpec, RunResult, print_results


@pytest.mark.postgres
def test_quick_load_test_runs_both_modes_and_cleans_up(pg_url):
    proc = subprocess.run(
        [sys.executable, "-m", "vae_search.bench.command", "--storage-load", "--quick",
         "--postgres", pg_url],
        capture_output=True, text=True, timeout=600, env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] in (["direct"], ["proxy"])}
    assert set(rows) == {"direct", "proxy"}, proc.stdout
    for mode, cells in rows.items():
        workers, rate, wall, connections = int(cells[1]), float(cells[2]), float(cells[3]), int(
            cells[4])
        assert workers == 4 and rate > 0 and wall > 0, cells
        assert 1 <= connections <= (9 if mode == "proxy" else 4 * 4), cells  # proxy: threads + 1
        assert all("/" in cell for cell in cells[6:]), cells  # every call has p50/p99
    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as conn:
        left = conn.execute(sqlalchemy.text(
            "select count(*) from pg_database where datname like 'vae_search_load_%'")).scalar()
    engine.dispose()
    assert left == 0, "a scratch database was left behind"


def test_bad_input_and_an_unreachable_server_are_one_line():
    for argv, message in ((["--workers", "8,x"], "--workers"),
                          (["--postgres", "postgresql+psycopg://u:pw@127.0.0.1:1/db",
                            "--quick"], "error")):
        proc = subprocess.run([sys.executable, "-m", "vae_search.bench.loadtest", *argv],
                              capture_output=True, text=True, timeout=120, env=subprocess_env())
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
        assert "pw@" not in proc.stderr


def test_a_run_that_could_not_start_is_shown_as_such(capsys):
    spec = LoadSpec(workers=(128,))
    print_results([RunResult("direct", 128, note="not run: needs about 256 connections")], spec)
    assert "direct      128  not run: needs about 256 connections" in capsys.readouterr().out
