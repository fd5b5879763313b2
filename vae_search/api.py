"""The Python API: a search from a notebook, without the command line.

``vae_search.search`` runs the same worker as ``vae-search run`` (budget, resume, diagnostics,
figures, artifacts) in this process and returns the Optuna study. Its arguments mean what the
command's flags mean, and its configuration is built the command's way
(:func:`vae_search.run.resolve_config`).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["search"]


def search(
    study: str = "seed_mse",
    trials: int = 20,
    storage: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    epochs: int | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    quiet: bool = True,
) -> optuna.Study:
    """Run (or resume) a study until it has ``trials`` finished trials; return it.

    Args:
        study: A study name under ``studies/`` or a path to a TOML file.
        trials: The study-wide budget of finished (complete + pruned) trials.
        storage: A SQLAlchemy URL or ``grpc://host:port`` (default: ``$VAE_SEARCH_STORAGE``, else
            ``sqlite:///vae_search.db`` in the working directory).
        overrides: ``{"section.key": value}``, type-checked like the TOML,
            e.g. ``{"search.latent_dim": [4, 8]}`` (``--set``). ``"train.epochs"`` here sets
            the epochs alone, and is refused when the schedule box does not fit in them.
        epochs: Train this many epochs, scaling the schedule box to fit when needed
            (``--epochs``; applied after ``overrides``).
        study_name: The Optuna study name (default: the config's name).
        timeout: Stop starting new trials after this many seconds.
        quiet: No progress bar.

    Returns:
        The study (``study.best_trial``, ``study.trials_dataframe()``, ...).

    Raises:
        vae_search.config.schema.ConfigError: a bad study file or override.
        vae_search.data.datasets.DataError: data that cannot be loaded.
        vae_search.storage.connection.StorageError: a storage that cannot be opened.
        vae_search.engine.study.StudyMismatch: the study exists with another configuration.
        KeyboardInterrupt: interrupted; finished trials are kept, call again to resume.
    """
    from vae_search.cli import RunOptions, default_storage
    from vae_search.engine.signals import SignalState
    from vae_search.engine.worker import run_worker
    from vae_search.run import resolve_config
    from vae_search.storage.connection import load_study
    from vae_search.storage.url import StorageURL

    url = StorageURL.parse(storage or default_storage())
    options = RunOptions(trials=trials, timeout=timeout, study=str(study), storage=url,
                         study_name=study_name, epochs=epochs, quiet=quiet)
    config = resolve_config(options, overrides)
    signals = SignalState()
    saved = signals.install()
    try:
        run_worker(options, config, signals)
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
    return load_study(url, study_name or config.name)
