"""Shared fixtures: tiny configurations that train in well under a second per trial.

One base configuration (:data:`TINY`) serves every test: as a :class:`StudyConfig`
(:func:`tiny_config`, the ``tiny`` fixture) or as a study TOML file for the command line
(:func:`write_tiny_toml`, the ``tiny_toml`` fixture). A test states only what it changes.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from optuna.exceptions import ExperimentalWarning  # noqa: E402

from vae_search.config.schema import StudyConfig, parse_config  # noqa: E402

warnings.filterwarnings("ignore", category=ExperimentalWarning)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Digits with small nets and few epochs.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "model": {"hidden": [32]},
    "train": {"epochs": 6, "batch_size": 128},
    "search": {"klstart": [0, 3], "annealtime": [0, 3], "latent_dim": [2, 4]},
    "sampler": {"name": "random"},
    "pruner": {"patience": 0, "n_startup_trials": 2},
    "collapse": {"mi_batch_size": 64},
}


def subprocess_env() -> dict[str, str]:
    """The environment for a child process running this checkout's vae_search.

    The repository comes first on PYTHONPATH (installed or not), and an inherited
    ``$VAE_SEARCH_STORAGE`` is dropped so every child uses the storage its test names.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env.pop("VAE_SEARCH_STORAGE", None)
    return env


def tiny_raw(**sections: Any) -> dict[str, Any]:
    """:data:`TINY` as raw data; a dict in ``sections`` updates that table's keys, anything
    else (a name, a seed, ``None`` to drop a table) replaces the entry."""
    raw = copy.deepcopy(TINY)
    for section, values in sections.items():
        if values is None:
            raw.pop(section, None)
        elif isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


def tiny_config(**sections: Any) -> StudyConfig:
    """Digits with small nets and few epochs; ``sections`` as in :func:`tiny_raw`."""
    return parse_config(tiny_raw(**sections))


def toml_text(raw: dict[str, Any]) -> str:
    """A configuration as TOML: top-level keys, then one table per section."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # strings, ints and floats are valid TOML as JSON writes them

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_tiny_toml(directory: Path, **sections: Any) -> Path:
    """Write ``tiny_raw(**sections)`` to ``directory/<name>.toml`` and return the path."""
    raw = tiny_raw(**sections)
    path = Path(directory) / f"{raw.get('name', 'tiny')}.toml"
    path.write_text(toml_text(raw))
    return path


@pytest.fixture
def tiny() -> StudyConfig:
    return tiny_config()


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Callable[..., Path]:
    """``tiny_toml(**sections)``: a tiny study TOML file in the test's ``tmp_path``."""
    return lambda **sections: write_tiny_toml(tmp_path, **sections)


def stored_figures(study: Any) -> dict[str, str]:
    """The plotly figures optuna-dashboard keeps in the study, by figure id (as JSON)."""
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    from vae_search.storage._optuna import study_system_attrs

    return get_plotly_graph_objects(study_system_attrs(study))


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
