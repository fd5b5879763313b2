"""How big a trial is in memory, whether it fits, and how many trials a worker trains side by
side (the loop's slots, P).

Small dense and made VAEs are bound by TensorFlow's per-op dispatch, so P of them stacked into
one model (:class:`~vae_search.models.population.PopulationTrainer`) cost little more than one.
``--population auto`` takes P from the cores and the memory; a gru decoder, a user's builder
or a study searching the ``aggressive`` family trains one trial at a time. A model that could
not fit in the available memory even alone is refused before anything is allocated
(:func:`check_fits`). No TensorFlow here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_search.config.schema import ConfigError

if TYPE_CHECKING:
    from vae_search.cli import RunOptions
    from vae_search.config.schema import StudyConfig

__all__ = ["MAX_POPULATION", "MEMBERS_PER_CORE", "TRIALS_PER_WORKER", "available_memory",
           "check_fits", "cpu_cores", "default_population", "default_workers", "model_bytes",
           "population_size"]

MEMBERS_PER_CORE = 8  # measured: per-member cost levels off around 16 members on 2 cores
MAX_POPULATION = 32  # more only adds sampler lag (constant-liar trials) for little speed
MEMORY_SHARE = 0.25  # of the available memory a population may take
UNKNOWN_MEMORY = 2**31  # bytes assumed available when the machine does not say
# --workers auto: one more worker process for every this many trials left, up to the cores. A
# worker's start-up (TensorFlow's import, traces, the data) is paid again by each process:
# measured on 2 cores, 2 workers were 0.87x one at 40 trials and 1.45x at 200
# (docs/performance.md), so a short run stays in one process.
TRIALS_PER_WORKER = 50


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, capped by a cgroup v2 CPU
    quota (``cpu.max``, e.g. a container's ``--cpus``) when there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_workers(trials_left: int, cores: int, per_worker: int = TRIALS_PER_WORKER) -> int:
    """``--workers auto``: one worker process per core, but at most one per ``per_worker``
    trials left (at least 1). Separate processes beat TensorFlow's own threading for these
    small models (docs/performance.md)."""
    return max(1, min(cores, trials_left // per_worker))


def model_bytes(config: StudyConfig, n_features: int, rows: int, vocab_size: int = 0) -> int:
    """A generous memory estimate of one trial at the widest searched latent dim: weights x 4
    (value, Adam's two moments, the gradient) and the activations of a training batch and of
    the validation split, in float32 bytes. From the config and the data's shape alone.

    Args:
        config: The study (``model.builder`` models are the user's: not estimated, 0).
        n_features: Data dims N (flat) or sequence length L (tokens).
        rows: Validation rows (evaluated at once).
        vocab_size: Token data: the number of ids.
    """
    m, latent = config.model, max(config.search.latent_dim)
    examples = config.train.batch_size + rows
    if m.builder:
        return 0
    if m.decoder == "gru":  # embeddings, a GRU each way (3 gates), the heads, the logits
        e, u, v = m.embedding_dim, (m.hidden or (0,))[0], vocab_size
        gru_in = e + (e + latent)
        weights = (2 * v + 2) * e + 3 * (gru_in * u + 2 * u * u + 4 * u) + 3 * u * latent + u * v
        activations = examples * n_features * (2 * e + 6 * u + v)
        return 4 * (4 * weights + activations)
    widths = (n_features, *m.hidden, 2 * latent)
    weights = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if m.decoder == "made":
        weights += n_features * n_features + sum(m.hidden) * latent
    activations = examples * 4 * sum(widths)
    return 4 * (4 * weights + activations)


def available_memory() -> int:
    """Bytes this process may still allocate: the kernel's ``MemAvailable`` (free memory plus
    what the page cache would give back), capped by a cgroup v2 limit when there is one."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = UNKNOWN_MEMORY
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_fits(config: StudyConfig, dataset: Any, *, available: int | None = None) -> None:
    """Refuse a model that could not fit in memory even alone, before it is allocated.

    Raises:
        ConfigError: :func:`model_bytes` of one trial exceeds :func:`available_memory`.
    """
    need = model_bytes(config, int(dataset.x_train.shape[1]), int(dataset.x_val.shape[0]),
                       dataset.vocab_size)
    available = available_memory() if available is None else available
    if need > available:
        m = config.model
        raise ConfigError(
            f"model too large: one trial needs about {_gb(need)} (search.latent_dim up to "
            f"{max(config.search.latent_dim)}, model.hidden {list(m.hidden)}, data shape "
            f"{tuple(dataset.x_train.shape[1:])}: weights, Adam's moments, gradients, "
            "activations), "
            f"more than the {_gb(available)} of memory available; lower search.latent_dim or "
            "model.hidden"
        )


def default_population(config: StudyConfig, n_features: int, rows: int, *,
                       cpus: int | None = None, available: int | None = None) -> int:
    """``min(MAX_POPULATION, MEMBERS_PER_CORE x cores, MEMORY_SHARE x available memory /
    per-member memory)``, at least 1.

    Args:
        config: The study.
        n_features: Data dims.
        rows: Validation rows (evaluated for every member at once).
        cpus: CPU cores (default: this process's).
        available: Available memory in bytes (default: :func:`available_memory`).
    """
    if cpus is None:
        cpus = cpu_cores()
    if available is None:
        available = available_memory()
    by_memory = int(MEMORY_SHARE * available) // max(1, model_bytes(config, n_features, rows))
    return max(1, min(MAX_POPULATION, MEMBERS_PER_CORE * cpus, by_memory))


def population_size(options: RunOptions, config: StudyConfig, dataset: Any,
                    trials_left: int) -> tuple[int, str]:
    """How many trials this worker trains side by side, and a note when it is not what was
    asked for (gru, user builders and the aggressive family train one at a time)."""
    from vae_search.models.population import FAMILIES

    asked = options.population
    # Aggressive encoder training steps a trial's encoder and decoder apart: its own trainer.
    aggressive = "aggressive" in config.search.families
    if config.model.builder or config.model.decoder not in FAMILIES or aggressive:
        what = ("model.builder" if config.model.builder else "the aggressive family"
                if aggressive else f"the {config.model.decoder} decoder")
        note = f"note: --population {asked}: {what} trains one trial at a time" if (
            asked and asked > 1) else ""
        return 1, note
    n_features = int(dataset.x_train.shape[1])
    # A --workers child runs with --threads = cores / workers: its share of the cores.
    size = asked or default_population(config, n_features, int(dataset.x_val.shape[0]),
                                       cpus=options.threads)
    return max(1, min(size, trials_left)), ""
