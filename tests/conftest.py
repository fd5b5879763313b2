"""Shared fixtures: tiny configurations that train in well under a second per trial."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from optuna.exceptions import ExperimentalWarning  # noqa: E402

from vae_search.config import StudyConfig, parse_config  # noqa: E402

warnings.filterwarnings("ignore", category=ExperimentalWarning)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env() -> dict[str, str]:
    """The environment for a child process running this checkout's vae_search.

    The repository comes first on PYTHONPATH (installed or not), and an inherited
    ``$VAE_SEARCH_STORAGE`` is dropped so every child uses the storage its test names.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env.pop("VAE_SEARCH_STORAGE", None)
    return env


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


PG_URL_ENV = "VAE_SEARCH_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test PostgreSQL server; unreachable is a failure in CI (CI=true), a skip elsewhere."""
    import sqlalchemy

    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 (any failure to reach the server)
        message = f"PostgreSQL at {url} is not usable: {str(exc).splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url
