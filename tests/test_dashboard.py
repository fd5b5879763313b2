"""``vae-search dashboard``: bad input, and the real server seen by a real browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import subprocess_env
from tests.test_report import MIXED, families_study, make_trial, new_study
from vae_search import keys
from vae_search.report import dashboard
from vae_search.storage._optuna import study_id, study_system_attrs

ROOT = Path(__file__).resolve().parent.parent
CI_ARTIFACTS = ROOT / "ci-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")
SERVER_START_TIMEOUT = 60.0  # seconds for the figures refresh + server start on a busy machine
PAGE_BUDGET_MS = 20000  # virtual time the page gets to fetch the study and draw the plots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (["--storage", "sqlite:///{tmp}/missing.db"], "does not exist"),
    (["--storage", "sqlite:///{tmp}/s.db", "--study-name", "nope"], "no study 'nope'"),
    (["--storage", "postgresql://u:hunter2@127.0.0.1:1/db"], "u:***@"),
    (["--port", "99999"], "--port"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    new_study(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:  # in-process: these all stop before the server starts
        code = dashboard.main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "hunter2" not in err + out


def test_a_busy_port_is_refused_before_anything_is_announced(tmp_path, capsys):
    """It used to refresh the figures and print "serving ... at http://..." first."""
    new_study(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code = dashboard.main(["--storage", f"sqlite:///{tmp_path / 's.db'}",
                               "--port", str(port)])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"cannot serve on 127.0.0.1:{port}" in lines[0] and out == "", out


def _chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.browser
def test_dashboard_study_page_shows_our_collapse_map_in_chromium(tmp_path):
    # A missing browser is a failure, not a skip: scripts/install-test-deps (part of the README's
    # test command and of .ci/run) installs it; deselect locally with -m "not browser".
    assert shutil.which(CHROMIUM), f"{CHROMIUM} missing: run scripts/install-test-deps"
    study = new_study(tmp_path, "browser-study")
    for i, (state, ks, at, d, red, active, elbo, stop) in enumerate(MIXED):
        study.add_trial(make_trial(i, state=state, klstart=ks, annealtime=at, latent_dim=d,
                                   reduction=red, active=active, elbo=elbo, stop=stop))
    assert not study_system_attrs(study)  # no figures yet
    families = families_study(tmp_path, "browser-families")  # same file: served beside it
    url = f"sqlite:///{tmp_path / 's.db'}"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vae_search", "dashboard", "--storage", url, "--port",
         str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(0.5)
        page = f"{base}/dashboard/studies/{study_id(study)}"
        dom = _chromium([f"--virtual-time-budget={PAGE_BUDGET_MS}", "--dump-dom", page],
                        tmp_path / "profile-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert "browser-study" in html  # the study's page, rendered by the React app
        # our figure's container, filled by plotly.js (an SVG with our title), in the page
        start = html.index(f'id="user-defined-plot:{keys.FIG_COLLAPSE_MAP}"')
        plot = html[start:start + 200_000]
        assert "main-svg" in plot and "Collapse map" in plot and "reduction = mean" in plot
        for fid in keys.FIG_IDS:
            assert f"user-defined-plot:{fid}" in html
        # the collapse probability by schedule, drawn with its Wilson error bars
        start = html.index(f'id="user-defined-plot:{keys.FIG_COLLAPSE_PROBABILITY}"')
        plot = html[start:start + 200_000]
        assert "main-svg" in plot and "Collapse probability by schedule" in plot
        assert "errorbar" in plot and "search trials (mean)" in plot
        # a study searching remedy families: the rates by family, with their intervals
        dom = _chromium([f"--virtual-time-budget={PAGE_BUDGET_MS}", "--dump-dom",
                         f"{base}/dashboard/studies/{study_id(families)}"],
                        tmp_path / "profile-families")
        assert dom.returncode == 0, dom.stderr[-2000:]
        start = dom.stdout.index(f'id="user-defined-plot:{keys.FIG_COLLAPSE_PROBABILITY}"')
        plot = dom.stdout[start:start + 200_000]
        assert "main-svg" in plot and "search trials by remedy family" in plot
        assert "family: free_bits" in plot and "errorbar" in plot

        CI_ARTIFACTS.mkdir(exist_ok=True)
        shot = CI_ARTIFACTS / "dashboard-study-page.png"
        shot.unlink(missing_ok=True)
        png = _chromium([f"--virtual-time-budget={PAGE_BUDGET_MS}", "--window-size=1600,2400",
                         f"--screenshot={shot}", page], tmp_path / "profile-shot")
        assert png.returncode == 0, png.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # the server only read the study: the trials are as we made them
    again = optuna.load_study(study_name="browser-study", storage=url)
    assert [t.state for t in again.trials] == [row[0] for row in MIXED]
    assert TrialState.RUNNING not in {t.state for t in again.trials}
