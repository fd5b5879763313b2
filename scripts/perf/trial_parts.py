"""Per-trial costs of a study's trial (latent 8): start, first (tracing) epoch, epoch, diagnostics,
IWAE, the artifact. Usage: PYTHONPATH=TREE python scripts/perf/trial_parts.py [STUDY]
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import optuna

from vae_search.config.schema import load_config
from vae_search.storage.artifacts import ReconstructionArtifacts
from vae_search.trial.objective import Objective

config = load_config(sys.argv[1] if len(sys.argv) > 1 else "sequences")
obj = Objective(config)
print("load", os.getloadavg())
study = optuna.create_study()
for rep in range(3):
    study.enqueue_trial({"latent_dim": 8})
    t = study.ask()
    from vae_search.trial.space import suggest

    params = suggest(t, config.search, config.train.epochs, config.model)
    s = time.perf_counter()
    tr = obj.start(params, 1)
    t_start = time.perf_counter() - s
    s = time.perf_counter()
    r = obj.run_epoch(tr, 1.0)
    t_first = time.perf_counter() - s
    s = time.perf_counter()
    for _ in range(3):
        obj.run_epoch(tr, 1.0)
    t_ep = (time.perf_counter() - s) / 3
    s = time.perf_counter()
    d = obj.diagnostics(tr, 1.0, 1)
    t_diag = time.perf_counter() - s
    s = time.perf_counter()
    obj.iwae(tr)
    t_iwae = time.perf_counter() - s
    art = ReconstructionArtifacts(None)
    s = time.perf_counter()
    art.text(tr, obj.dataset, seed=1)
    t_art = time.perf_counter() - s
    print(
        f"rep{rep} latent {params.latent_dim}: start {t_start * 1e3:.0f} ms, first epoch {t_first:.2f} s, epoch {t_ep * 1e3:.0f} ms, diag {t_diag * 1e3:.0f} ms, iwae {t_iwae * 1e3:.0f} ms, artifact text {t_art * 1e3:.0f} ms; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
