from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import write_tiny_toml
from vae_search import keys
from vae_search.run import main


@pytest.fixture
def study_file(tiny_toml):
    return tiny_toml(train={"epochs": 5}, search={"klstart": [0, 2]})


def test_three_trial_study_is_a_normal_optuna_study(tmp_path, study_file, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--study", str(study_file), "--storage", url, "--trials", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best" in out and f"optuna-dashboard {url}" in out

    study = optuna.load_study(study_name="tiny", storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert study.user_attrs[keys.STUDY_ATTR_CONFIG]["train"]["epochs"] == 5
    for t in finished:
        assert {"klstart", "annealtime", "latent_dim", "reduction"} <= set(t.params)
        assert t.intermediate_values
        for attr in (keys.ATTR_ACTIVE_UNITS, keys.ATTR_KL_PER_DIM, keys.ATTR_KL_TOTAL,
                     keys.ATTR_MUTUAL_INFO, keys.ATTR_RECON, keys.ATTR_COLLAPSED,
                     keys.ATTR_HISTORY):
            assert attr in t.user_attrs, attr

    # the optuna CLI reads it unchanged
    cli = subprocess.run(
        [sys.executable, "-c", "import sys; from optuna.cli import main; sys.exit(main())",
         "trials", "--study-name", "tiny", "--storage", url, "-f", "json"],
        capture_output=True, text=True, check=True,
    )
    rows = json.loads(cli.stdout)
    assert len(rows) == 3
    assert {"klstart", "annealtime"} <= set(rows[0]["params"])
    assert keys.ATTR_ACTIVE_UNITS in rows[0]["user_attrs"]

    # resuming adds trials up to the new budget and keeps the old ones intact
    before = {t.number: (t.params, t.intermediate_values) for t in study.trials}
    assert main(["--study", str(study_file), "--storage", url, "--trials", "5", "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny", storage=url)
    assert len([t for t in study.trials if t.state.is_finished()]) == 5
    for t in study.trials:
        if t.number in before:
            assert (t.params, t.intermediate_values) == before[t.number]

    # budget met: nothing more runs
    assert main(["--study", str(study_file), "--storage", url, "--trials", "5", "--quiet"]) == 0
    assert "already has 5 finished trials" in capsys.readouterr().out


def test_changed_config_is_refused_with_exit_2(tmp_path, study_file, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--study", str(study_file), "--storage", url, "--trials", "1", "--quiet"]) == 0
    code = main(["--study", str(study_file), "--storage", url, "--trials", "2", "--seed", "9",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "different configuration: seed: 0 -> 9" in err
    assert "Traceback" not in err
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 1


def test_epochs_override_scales_schedule_box(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    assert main(["--storage", url, "--trials", "1", "--epochs", "4", "--study-name", "e"]) == 0
    err = capsys.readouterr().err
    assert "schedule ranges scaled to klstart [0, 2], annealtime [0, 2]" in err
    stored = optuna.load_study(study_name="e", storage=url).user_attrs[keys.STUDY_ATTR_CONFIG]
    assert stored["train"]["epochs"] == 4


def test_set_overrides_any_key_type_checked_like_the_toml(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    argv = ["--storage", url, "--trials", "1", "--study-name", "s", "--study", "digits",
            "--set", "train.epochs=3", "--set", "search.klstart=[0, 1]",
            "--set", "search.annealtime=[0,1]", "--set", "model.decoder=made",
            "--set", "search.latent_dim=[2]"]
    assert main(argv) == 0
    stored = optuna.load_study(study_name="s", storage=url).user_attrs[keys.STUDY_ATTR_CONFIG]
    assert stored["train"]["epochs"] == 3 and stored["model"]["decoder"] == "made"
    assert stored["search"]["klstart"] == [0, 1] and stored["search"]["latent_dim"] == [2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.epochs=many"], "train.epochs: expected an integer, got 'many'"),
        (["--set", "train.epoch=3"], "train.epoch: unknown key"),
        (["--set", "trian.epochs=3"], "trian.epochs: unknown section 'trian'"),
        (["--set", "model.decoder=lstm"], "model.decoder: unknown value 'lstm'"),
        (["--set", "epochs"], "expected section.key=value"),
        (["--trials", "0"], "--trials: must be >= 1"),
        (["--trials", "-3"], "--trials: must be >= 1"),
        (["--trials", "many"], "expected a whole number"),
        (["--timeout", "-1"], "--timeout: must be a positive number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--study", "nope"], "study config not found"),
        (["--storage", "notaurl"], "malformed storage URL"),
        (["--storage", "mysql+nodriver://u@h/db"], "'mysql' is not supported"),
        (["--storage", "postgresql+nodriver://u@h/db"], "unknown database driver"),
        (["--storage", "sqlite:////no/such/dir/x.db"], "directory /no/such/dir does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message):
    proc = subprocess.run([sys.executable, "-m", "vae_search.run", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_help_is_fast_and_does_not_import_tensorflow():
    code = (
        "import sys; from vae_search.run import build_parser\n"
        "try: build_parser().parse_args(['--help'])\n"
        "except SystemExit: pass\n"
        "import vae_search.config.schema, vae_search.trial.schedule, vae_search.trial.space\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("population", ["1", "2"], ids=["one", "population"])
@pytest.mark.parametrize(("seconds", "expected"), [(0, 4), (3600, 2)])
def test_run_refreshes_figures_as_configured(tmp_path, monkeypatch, population, seconds,
                                             expected):
    """run.refresh_every / run.refresh_seconds reach both trial loops: every trial with no
    minimum interval, else only the first; plus the end-of-run refresh."""
    from vae_search.report import callbacks

    saved: list[int] = []
    monkeypatch.setattr(callbacks, "save_figures", lambda study: saved.append(len(study.trials)))
    toml = write_tiny_toml(tmp_path, train={"epochs": 2},
                           search={"klstart": [0, 1], "annealtime": [0, 1]},
                           run={"refresh_every": 1, "refresh_seconds": seconds})
    code = main(["--study", str(toml), "--storage", f"sqlite:///{tmp_path / 'r.db'}",
                     "--trials", "3", "--quiet", "--population", population])
    assert code == 0
    assert len(saved) == expected, saved
