from __future__ import annotations

import pytest

from vae_search.config.schema import (
    MAX_SEED,
    MAX_STUDY_NAME,
    STUDIES_DIR,
    ConfigError,
    StudyConfig,
    load_config,
    parse_config,
)
from vae_search.config.stored import config_diff


def test_shipped_studies_are_valid():
    names = sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))
    assert {"digits", "synthetic"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.name == name


def test_defaults_match_digits_toml():
    assert load_config("digits").comparable() == StudyConfig().comparable()


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[train]\nepochs = 40\n")
    config = load_config(path)
    assert config.name == "mine" and config.train.epochs == 40


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"train": {"epochs": "30"}}, "train.epochs"),
        ({"train": {"epochs": 3.5}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate"),
        ({"search": {"klstart": [5, 2]}}, "search.klstart"),
        ({"search": {"klstart": [0]}}, "search.klstart"),
        ({"search": {"klstart": [-1, 3]}}, "search.klstart"),
        ({"search": {"klstart": [0, 20], "annealtime": [0, 15]}}, "search.klstart"),
        ({"search": {"latent_dim": [0, 4]}}, "search.latent_dim"),
        ({"search": {"latent_dim": []}}, "search.latent_dim"),
        ({"search": {"reduction": ["sum", "avg"]}}, "search.reduction"),
        ({"search": {"schedule": ["sigmoidal"]}}, "search.schedule"),
        ({"data": {"dataset": "cifar"}}, "data.dataset"),
        ({"data": {"dataset": "file"}}, "data.path"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
        ({"model": {"likelihood": "poisson"}}, "model.likelihood"),
        ({"model": {"hidden": [64, 0]}}, "model.hidden"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name"),
        ({"pruner": {"name": "always"}}, "pruner.name"),
        ({"train": 5}, "train"),
        ({"run": {"grace_period": 5, "heartbeat_interval": 10}}, "run.grace_period"),
        ({"run": {"refresh_seconds": -1}}, "run.refresh_seconds"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"seed": 2**63}, "seed"),  # every trial failed: "out-of-range integer to Tensor"
        ({"name": "n" * 513}, "name"),  # Optuna's study_name column holds 512 characters
        ({"search": {"families": ["warmup", "sigmoid"]}}, "search.families"),
        ({"search": {"families": ["warmup", "warmup"]}}, "search.families"),
        # word dropout needs a decoder that reads the previous tokens: one error, named
        ({"search": {"families": ["warmup", "word_dropout"]}}, "search.families"),
        ({"search": {"families": ["warmup", "cyclical"], "schedule": ["linear", "cyclical"]}},
         "search.schedule"),
        ({"search": {"families": ["warmup", "setpoint"], "free_bits": [0.0, 0.5]}},
         "search.free_bits"),
        ({"search": {"families": ["free_bits"], "free_bits": [0.5, 0.1]}}, "search.free_bits"),
        ({"search": {"kl_target": [0.0, 5.0]}}, "search.kl_target"),
        ({"search": {"inner_steps": [0, 5]}}, "search.inner_steps"),
        ({"search": {"aggressive_epochs": [3, 1]}}, "search.aggressive_epochs"),
    ],
)
def test_invalid_configs_name_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(key), str(info.value)


def test_missing_file_lists_builtin_studies(tmp_path):
    with pytest.raises(ConfigError, match="not found.*digits"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_study")


def test_toml_syntax_error_reports_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochs = 30\nbatch_size = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML.*line 3"):
        load_config(path)


def test_overrides_are_validated():
    config = StudyConfig().with_overrides(**{"train.epochs": 40})
    assert config.train.epochs == 40
    with pytest.raises(ConfigError, match="search.klstart"):
        StudyConfig().with_overrides(**{"train.epochs": 10})


def test_seed_and_name_limits_are_inclusive():
    assert parse_config({"seed": MAX_SEED}).seed == 2**32 - 1
    assert parse_config({"name": "n" * MAX_STUDY_NAME}).name == "n" * 512


def test_the_study_name_limit_is_optunas_column():
    from optuna.storages._rdb import models

    assert models.StudyModel.__table__.c.study_name.type.length == MAX_STUDY_NAME


def test_epochs_apply_before_the_toml_is_checked(tmp_path):
    """train.epochs = 2 with the default box is no study, but --epochs 3 makes it one; an error
    that remains names the epochs given, not the TOML's."""
    from vae_search.cli import RunOptions
    from vae_search.run import resolve_config

    path = tmp_path / "e.toml"
    path.write_text("[train]\nepochs = 2\n")
    config = resolve_config(RunOptions(study=str(path), epochs=3, quiet=True))
    assert config.train.epochs == 3 and config.search.klstart[1] + config.search.annealtime[1] <= 3
    with pytest.raises(ConfigError, match="train.epochs = 2"):  # without --epochs: the TOML's
        resolve_config(RunOptions(study=str(path)))
    bad = RunOptions(study=str(path), epochs=3, set=("search.latent_dim=[0]",))
    with pytest.raises(ConfigError, match="search.latent_dim"):
        resolve_config(bad)
    with pytest.raises(ConfigError, match="seed"):
        resolve_config(RunOptions(study=str(path), epochs=3, seed=2**63))


def test_config_diff_names_changed_keys():
    a = StudyConfig().comparable()
    b = StudyConfig().with_overrides(**{"train.epochs": 40, "seed": 3}).comparable()
    assert config_diff(a, b) == ["seed: 0 -> 3", "train.epochs: 30 -> 40"]
    assert config_diff(a, a) == []


def test_a_study_stored_before_new_keys_existed_still_matches_its_defaults():
    from vae_search.config.schema import StudyConfig
    from vae_search.config.stored import config_diff, with_new_defaults

    current = StudyConfig().comparable()
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in current.items()}
    del old["model"]["decoder"], old["search"]["free_bits"]  # keys an older version lacked
    assert with_new_defaults(old) == current
    changed = StudyConfig().with_overrides(**{"model.decoder": "made"}).comparable()
    assert config_diff(with_new_defaults(old), changed) == ['model.decoder: "dense" -> "made"']


def test_a_non_editable_install_ships_the_studies_and_the_corpus(tmp_path):
    """``pip install .`` puts studies/ into the package: load_config finds them by name."""
    import subprocess
    import sys

    from tests.conftest import REPO

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), REPO],
                   check=True, capture_output=True, timeout=300)
    code = ("from vae_search.config.schema import STUDIES_DIR, load_config\n"
            "print(STUDIES_DIR)\n"
            "print(sorted(load_config(n).name for n in ('seed_mse', 'text', 'digits')))\n"
            "print((STUDIES_DIR / 'text_corpus.txt').stat().st_size > 40_000)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(target), "PATH": ""}, check=True)
    where, names, corpus = out.stdout.splitlines()
    assert where.startswith(str(target))
    from pathlib import Path

    def subpackages(root: Path) -> set[str]:
        return {str(p.parent.relative_to(root)) for p in root.rglob("__init__.py")}

    assert subpackages(target / "vae_search") == subpackages(Path(REPO) / "vae_search")
    assert names == "['digits', 'seed_mse', 'text']" and corpus == "True"
