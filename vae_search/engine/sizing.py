"""How many trials a worker trains side by side (the loop's slots, P).

Small dense and made VAEs are bound by TensorFlow's per-op dispatch, so P of them stacked into
one model (:class:`~vae_search.models.population.PopulationTrainer`) cost little more than one.
``--population auto`` takes P from the cores and the memory; a gru decoder or a user's builder
trains one trial at a time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_search.cli import RunOptions
    from vae_search.config.schema import StudyConfig

__all__ = ["MAX_POPULATION", "MEMBERS_PER_CORE", "default_population", "population_size"]

MEMBERS_PER_CORE = 8  # measured: per-member cost levels off around 16 members on 2 cores
MAX_POPULATION = 32  # more only adds sampler lag (constant-liar trials) for little speed
MEMORY_SHARE = 0.25  # of the available memory a population may take


def _member_bytes(config: StudyConfig, n_features: int, rows: int) -> int:
    """A generous per-member memory estimate: weights x 4 (value, Adam's two moments, the
    gradient) and the activations of a training batch and of the validation split."""
    widths = (n_features, *config.model.hidden, 2 * max(config.search.latent_dim))
    weights = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if config.model.decoder == "made":
        latent = max(config.search.latent_dim)
        weights += n_features * n_features + sum(config.model.hidden) * latent
    activations = (config.train.batch_size + rows) * 4 * sum(widths)
    return 4 * (4 * weights + activations)


def default_population(config: StudyConfig, n_features: int, rows: int, *,
                       cpus: int | None = None, available: int | None = None) -> int:
    """``min(MAX_POPULATION, MEMBERS_PER_CORE x cores, MEMORY_SHARE x available memory /
    per-member memory)``, at least 1.

    Args:
        config: The study.
        n_features: Data dims.
        rows: Validation rows (evaluated for every member at once).
        cpus: CPU cores (default: this process's).
        available: Available memory in bytes (default: this machine's, via ``os.sysconf``).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2**31
    by_memory = int(MEMORY_SHARE * available) // _member_bytes(config, n_features, rows)
    return max(1, min(MAX_POPULATION, MEMBERS_PER_CORE * cpus, by_memory))


def population_size(options: RunOptions, config: StudyConfig, dataset: Any,
                    trials_left: int) -> tuple[int, str]:
    """How many trials this worker trains side by side, and a note when it is not what was
    asked for (gru and user builders train one at a time)."""
    from vae_search.models.population import FAMILIES

    asked = options.population
    if config.model.builder or config.model.decoder not in FAMILIES:
        what = "model.builder" if config.model.builder else f"the {config.model.decoder} decoder"
        note = f"note: --population {asked}: {what} trains one trial at a time" if (
            asked and asked > 1) else ""
        return 1, note
    n_features = int(dataset.x_train.shape[1])
    # A --workers child runs with --threads = cores / workers: its share of the cores.
    size = asked or default_population(config, n_features, int(dataset.x_val.shape[0]),
                                       cpus=options.threads)
    return max(1, min(size, trials_left)), ""
