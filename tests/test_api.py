"""The Python API: ``vae_search.search`` and ``vae_search.load_config``, as a notebook uses them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from optuna.trial import TrialState

import vae_search
from tests.conftest import subprocess_env
from vae_search import keys
from vae_search.config.schema import ConfigError

TINY = {"train.epochs": 3, "train.batch_size": 128, "search.klstart": [0, 1],
        "search.annealtime": [0, 1], "search.latent_dim": [2], "model.hidden": [16]}


def test_search_runs_resumes_and_returns_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    study = vae_search.search("digits", trials=2, storage=url, overrides=TINY)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2 and study.study_name == "digits"
    assert all(keys.ATTR_COLLAPSED in t.user_attrs for t in finished)
    assert study.user_attrs[keys.STUDY_ATTR_CONFIG]["train"]["epochs"] == 3
    again = vae_search.search("digits", trials=3, storage=url, overrides=TINY)  # resumes
    assert len([t for t in again.trials if t.state.is_finished()]) == 3


def test_search_raises_on_bad_overrides_and_load_config_reads_studies(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        vae_search.search("digits", trials=1, storage=f"sqlite:///{tmp_path / 'b.db'}",
                          overrides={"train.epochs": "ten"})
    config = vae_search.load_config("seed_mse")
    assert (config.model.likelihood, config.model.variance, config.model.sigma2) == (
        "gaussian", "fixed", 0.5)


def test_importing_the_package_does_not_import_tensorflow_or_optuna():
    code = ("import sys, vae_search; vae_search.load_config('digits'); "
            "print(sorted(m for m in ('tensorflow', 'optuna', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), check=True).stdout.strip()
    assert out == "[]"


def test_epochs_means_what_the_commands_epochs_means(tmp_path):
    from vae_search import search
    from vae_search.run import RunOptions, resolve_config

    small = {"search.latent_dim": [2], "model.hidden": [16], "train.batch_size": 128}
    with pytest.raises(ConfigError, match="klstart"):  # the epochs alone: the box needs 30
        search("digits", trials=1, storage=f"sqlite:///{tmp_path / 'e.db'}",
               overrides={**small, "train.epochs": 2})
    study = search("digits", trials=1, storage=f"sqlite:///{tmp_path / 'a.db'}", overrides=small,
                   epochs=2)
    stored = study.user_attrs[keys.STUDY_ATTR_CONFIG]
    assert stored["train"]["epochs"] == 2
    assert stored["search"]["klstart"] == stored["search"]["annealtime"] == [0, 1]  # scaled
    # the same configuration as vae-search run --epochs 2 --set ... (one path for both)
    cli = resolve_config(RunOptions.parse(
        ["--study", "digits", "--epochs", "2", "--quiet",
         *(f"--set={key}={value}".replace(" ", "") for key, value in small.items())]))
    assert cli.comparable() == stored
