"""Your own model (``model.builder``): the example trains end to end; broken builders get one
line naming the builder, before any study is written."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import REPO, subprocess_env, tiny_config
from vae_search import keys
from vae_search.models.builder import BuilderError, build_user_model, check_builder
from vae_search.trial.objective import Objective

EXAMPLE = "examples.conv_digits:build"


@pytest.fixture(autouse=True)
def repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(REPO)  # "examples." and "tests." builders import from here


def test_example_conv_builder_trains_end_to_end_and_reproduces():
    config = tiny_config(model={"builder": EXAMPLE, "hidden": [16]},
                         search={"latent_dim": [4], "klstart": [0, 2], "annealtime": [0, 2]})
    values = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize")
        study.enqueue_trial({"klstart": 1, "annealtime": 2, "reduction": "sum"})
        study.optimize(Objective(config), n_trials=1)
        t = study.trials[0]
        assert t.state == TrialState.COMPLETE, t.user_attrs.get(keys.ATTR_FAIL_REASON)
        assert len(t.user_attrs[keys.ATTR_KL_PER_DIM]) == 4
        assert -60.0 < t.value < -15.0  # a working Bernoulli VAE on 64 binary pixels
        values.append(t.value)
    assert values[0] == values[1]  # conv kernels are reseeded from the trial seed too


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("tests.user_builders:raising", "raised RuntimeError: out of coffee"),
        ("tests.user_builders:not_models", "must return (encoder, decoder) Keras models"),
        ("tests.user_builders:wrong_decoder_output", "bernoulli parameters of shape (64,)"),
        ("tests.user_builders:single_output_encoder", "[z_mean, z_log_var]"),
        ("tests.user_builders:missing", "has no function 'missing'"),
        ("no_such_package.models:build", "cannot import no_such_package.models"),
        ("tests.user_builders:exits", "called sys.exit(0)"),  # used to exit 0, silently
    ],
)
def test_broken_builders_name_themselves(builder, message):
    config = tiny_config(model={"builder": builder})
    with pytest.raises(BuilderError) as info:
        build_user_model(config, (64,), 4)
    text = str(info.value)
    assert builder in text and message in text and "\n" not in text


def test_a_builder_module_is_imported_from_the_current_directory(tmp_path, monkeypatch):
    """As ``python -m`` does, also for the ``vae-search`` script (no cwd on its sys.path); a
    module that exits while it is imported is one line too (it used to exit 3, silently)."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd_builder_ok.py").write_text(
        "def build(data_shape, latent_dim, config):\n    raise SystemExit('bye')\n")
    (tmp_path / "cwd_builder_exits.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(BuilderError, match=r"'cwd_builder_ok:build' called sys.exit\('bye'\)"):
        build_user_model(tiny_config(model={"builder": "cwd_builder_ok:build"}), (64,), 4)
    with pytest.raises(BuilderError, match="importing cwd_builder_exits called sys.exit.3."):
        build_user_model(tiny_config(model={"builder": "cwd_builder_exits:build"}), (64,), 4)
    monkeypatch.delitem(sys.modules, "cwd_builder_ok")


def test_the_console_script_finds_the_example_builder_from_the_repository_root(tmp_path):
    """``vae-search run --study examples/conv_digits.toml`` from the checkout: ``python -P``
    keeps the current directory off sys.path, as a console script does."""
    (tmp_path / "vae_search").symlink_to(Path(REPO) / "vae_search")  # the package, not REPO
    env = {**subprocess_env(), "PYTHONPATH": str(tmp_path)}
    code = "import sys; from vae_search.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code, "run", "--study", "examples/conv_digits.toml",
         "--set", "model.builder=examples.conv_digits:nope", "--quiet",
         "--storage", f"sqlite:///{tmp_path / 'none' / 's.db'}"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "examples.conv_digits has no function 'nope'" in proc.stderr, proc.stderr


def test_check_builder_tries_every_latent_dim():
    config = tiny_config(model={"builder": EXAMPLE}, search={"latent_dim": [2, 4]})
    from vae_search.data.datasets import load_dataset

    check_builder(config, load_dataset(config))  # the example fits every choice


def test_cli_refuses_a_broken_builder_before_writing_the_study(tmp_path):
    toml = tmp_path / "broken.toml"
    toml.write_text('name = "broken"\n[model]\nbuilder = "tests.user_builders:raising"\n'
                    "[train]\nepochs = 2\n[search]\nklstart = [0, 1]\nannealtime = [0, 1]\n")
    db = tmp_path / "s.db"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--trials", "1",
         "--storage", f"sqlite:///{db}", "--quiet"],
        capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tests.user_builders:raising" in lines[0], proc.stderr
    if db.exists():  # the storage may exist, but no study was created in it
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("select name from sqlite_master")}
            if "studies" in tables:
                assert conn.execute("select count(*) from studies").fetchone()[0] == 0
