"""Steady-state epoch cost, one at a time vs a population, side by side in one process:
``PYTHONPATH=TREE python scripts/perf/population_epoch.py [STUDY] [P ...]`` (default seed_mse,
P = 8 16 32). Also times moving a member into and out of a slot (``load`` + ``unload``)."""

import os
import sys
import time

from vae_search.config.schema import load_config
from vae_search.models import get_trainer, spec_for
from vae_search.models.population import PopulationTrainer
from vae_search.trial.objective import Objective
from vae_search.trial.space import TrialParams

study = sys.argv[1] if len(sys.argv) > 1 else "seed_mse"
sizes = [int(p) for p in sys.argv[2:]] or [8, 16, 32]
config = load_config(study)
objective = Objective(config)
dims = config.search.latent_dim
sigma2 = config.model.sigma2 if config.model.variance == "fixed" else None


def member(latent_dim: int, seed: int):
    params = TrialParams(klstart=0, annealtime=0, latent_dim=latent_dim, reduction="sum",
                         sigma2=sigma2)
    return objective.start(params, seed)


def per_call_ms(fn, repeats: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per call, after two warm-up calls (traces)."""
    fn()
    fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return ((time.perf_counter() - wall) / repeats * 1e3,
            (time.process_time() - cpu) / repeats * 1e3)


one = member(8, 1)
wall, cpu = per_call_ms(lambda: objective.run_epoch(one, 1.0), 20)
print(f"{study} one at a time, latent 8: {wall:.1f} ms wall, {cpu:.1f} ms CPU per epoch")
for size in sizes:
    population = PopulationTrainer(get_trainer(spec_for(config, objective.dataset, max(dims))),
                                   size)
    members = [member(dims[s % len(dims)], s) for s in range(size)]
    for slot, trainer in enumerate(members):
        population.load(slot, trainer)
    betas = [1.0] * size
    wall, cpu = per_call_ms(lambda p=population, b=betas: p.run_epoch(
        objective.x_train, objective.x_val, b, eval_seed=0, active_threshold=0.01), 10)
    print(f"P={size}: {wall:.1f} ms wall per epoch, {wall / size:.2f} ms wall and "
          f"{cpu / size:.2f} ms CPU per member-epoch")
moves = 200
start = time.perf_counter()
for i in range(moves):
    trainer = members[i % len(members)]
    population.load(i % population.size, trainer)
    population.unload(i % population.size, trainer)
print(f"load + unload: {(time.perf_counter() - start) / moves * 1e3:.1f} ms per member "
      f"(traces included); load average {os.getloadavg()[0]:.2f}")
