"""Shared fixtures: tiny configurations that train in well under a second per trial."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from optuna.exceptions import ExperimentalWarning  # noqa: E402

from vae_search.config import StudyConfig, parse_config  # noqa: E402

warnings.filterwarnings("ignore", category=ExperimentalWarning)


def tiny_config(**sections: dict) -> StudyConfig:
    """Digits with small nets and few epochs; ``sections`` override whole-table keys."""
    raw: dict = {
        "name": "tiny",
        "seed": 0,
        "model": {"hidden": [32]},
        "train": {"epochs": 6, "batch_size": 128},
        "search": {"klstart": [0, 3], "annealtime": [0, 3], "latent_dim": [2, 4]},
        "sampler": {"name": "random"},
        "pruner": {"patience": 0, "n_startup_trials": 2},
        "collapse": {"mi_batch_size": 64},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_config(raw)


@pytest.fixture
def tiny() -> StudyConfig:
    return tiny_config()
