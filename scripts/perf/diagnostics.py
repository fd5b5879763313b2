"""A trial's collapse diagnostics (``Objective.diagnostics``: encoder, active units, KL, the MI
replicates) on a trained model, median of 40 calls, latent 2 and 16, one TensorFlow thread.

Usage: ``PYTHONPATH=TREE python scripts/perf/diagnostics.py`` (alternate two trees to compare).
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search.config.schema import load_config
from vae_search.models import configure_threads
from vae_search.trial.objective import Objective
from vae_search.trial.space import TrialParams

configure_threads(1)
config = load_config("seed_mse")
objective = Objective(config)
for latent in (2, 16):
    params = TrialParams(klstart=0, annealtime=0, latent_dim=latent, reduction="sum", sigma2=0.5)
    trainer = objective.start(params, 0)
    for _ in range(5):
        objective.run_epoch(trainer, 1.0)
    times = []
    for seed in range(40):
        start = time.perf_counter()
        objective.diagnostics(trainer, 1.0, seed)
        times.append(time.perf_counter() - start)
    print(f"latent {latent}: diagnostics {statistics.median(times) * 1e3:.1f} ms, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
