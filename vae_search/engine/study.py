"""Create or join a vae_search study: sampler, pruner, stored configuration, mismatch checks."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import ExperimentalWarning

from vae_search import __version__, keys
from vae_search.config.schema import ConfigError, StudyConfig, study_name_problem
from vae_search.config.stored import config_diff, with_new_defaults
from vae_search.trial.pruning import make_pruner

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = ["DIRECTION", "StudyMismatch", "directions", "make_sampler", "metric_names",
           "open_study"]

DIRECTION = "maximize"  # the validation ELBO (and I(x;z) in a pareto study)
CONFIG_WAIT = 30.0  # seconds a joining worker waits for the creator to store the configuration
CONFIG_POLL = 0.2  # seconds between those checks


def _wait_for_config(study: optuna.Study, timeout: float) -> dict | None:
    """The stored configuration once the study's creator has written it (``None`` on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = study.user_attrs.get(keys.STUDY_ATTR_CONFIG)  # read from the storage
        if stored is not None or time.monotonic() >= deadline:
            return stored
        time.sleep(CONFIG_POLL)


class StudyMismatch(RuntimeError):
    """The stored study was made with another configuration or direction."""


def metric_names(config: StudyConfig) -> list[str]:
    """The study's objective names: the ELBO, and I(x;z) when ``search.objective = "pareto"``."""
    if config.search.objective == "pareto":
        return [keys.OBJECTIVE_NAME, keys.OBJECTIVE_MI_NAME]
    return [keys.OBJECTIVE_NAME]


def directions(config: StudyConfig) -> list[str]:
    """One ``DIRECTION`` per objective."""
    return [DIRECTION] * len(metric_names(config))


def make_sampler(config: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler (multivariate, grouped TPE by default), seeded."""
    if config.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=config.sampler.n_startup_trials,
            multivariate=True,
            group=True,  # the cyclical schedule's parameters are conditional
            constant_liar=True,  # parallel workers do not all sample the same point
        )


def open_study(
    config: StudyConfig,
    storage: str | BaseStorage,
    *,
    study_name: str | None = None,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """Create the study, or join it if it exists with the same configuration.

    Race-free: when many workers start at once, exactly one creates the study and stores the
    configuration; the others wait (up to ``CONFIG_WAIT`` seconds) for it and compare. A study
    whose configuration differs is refused and left unchanged. A ``pareto`` study has two
    objectives and no pruner (Optuna does not prune multi-objective studies).

    Args:
        config: The resolved study configuration (stored in the study on creation).
        storage: An Optuna storage or URL.
        study_name: Defaults to ``config.name``.
        sampler_seed: Defaults to ``config.seed`` (workers pass distinct seeds).

    Raises:
        ConfigError: a blank ``study_name``, or one too long for Optuna's tables.
        StudyMismatch: the study exists with another configuration or direction.
    """
    if study_name is not None and (problem := study_name_problem(study_name)):
        raise ConfigError(f"study_name: {problem}")  # (the command line refused it already)
    name = study_name or config.name
    if isinstance(storage, str):
        storage = optuna.storages.get_storage(storage)
    # Exactly one worker creates the study: creation is one INSERT on a unique name, so among
    # workers starting at once on a fresh database one wins and the others load its study.
    wanted = directions(config)
    try:
        storage.create_new_study(
            directions=[optuna.study.StudyDirection.MAXIMIZE] * len(wanted), study_name=name
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    pareto = config.search.objective == "pareto"
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(config, config.seed if sampler_seed is None else sampler_seed),
        pruner=(optuna.pruners.NopPruner() if pareto
                else make_pruner(config.pruner, config.train.epochs)),
    )
    shown = [d.name.lower() for d in study.directions]
    if shown != wanted:
        raise StudyMismatch(
            f"study {name!r} exists with direction {', '.join(shown)}, not "
            f"{', '.join(wanted)}; it was not made by vae_search with this search.objective "
            "(choose another --study-name)"
        )
    current = config.comparable()
    stored = study.user_attrs.get(keys.STUDY_ATTR_CONFIG)
    if stored is None and not created and not study.trials:
        # The creator writes the configuration right after creating the study; a worker that
        # lost the creation race waits for it rather than writing its own (which could differ).
        stored = _wait_for_config(study, CONFIG_WAIT)
    if stored is None:
        if study.trials:
            raise StudyMismatch(
                f"study {name!r} already has trials but no vae_search configuration; "
                "choose another --study-name"
            )
        study.set_user_attr(keys.STUDY_ATTR_CONFIG, current)
        study.set_user_attr(keys.STUDY_ATTR_VERSION, __version__)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(metric_names(config))
    elif with_new_defaults(stored) != current:
        diffs = config_diff(with_new_defaults(stored), current)
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise StudyMismatch(
            f"study {name!r} was created with a different configuration: "
            f"{'; '.join(diffs[:3])}{more}. Use the same config, or a new --study-name"
        )
    return study
