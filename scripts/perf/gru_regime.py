"""Does the sequences regime still show its point? sum reduction, warm-ups 0/0, 5/5, 10/10,
latent 8 and 16, two seeds: ELBO, KL, active units, I(x;z).
Usage: PYTHONPATH=TREE python scripts/perf/gru_regime.py ['model.hidden=[48]' ...]
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import optuna

from vae_search.config.schema import load_config
from vae_search.trial.objective import Objective
from vae_search.trial.space import suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
sets = [s.split("=") for s in sys.argv[1:]]
config = load_config("sequences")
over = {k: eval(v) for k, v in sets}
config = config.with_overrides(**over) if over else config
obj = Objective(config)
print("sizes", over, "load", os.getloadavg()[0], flush=True)
study = optuna.create_study()
for ks, at in [(0, 0), (10, 10), (5, 5)]:
    for latent in (8, 16):
        for seed in (1, 2):
            study.enqueue_trial(
                {"latent_dim": latent, "klstart": ks, "annealtime": at, "reduction": "sum"}
            )
            t = study.ask()
            params = suggest(t, config.search, config.train.epochs, config.model)
            sched = params.make_schedule(config.train.epochs)
            tr = obj.start(params, seed)
            s = time.perf_counter()
            for e in range(config.train.epochs):
                r = obj.run_epoch(tr, sched(e))
            el = time.perf_counter() - s
            d = obj.diagnostics(tr, r.recon, seed)
            print(
                f"ks {ks} at {at} d {latent} seed {seed}: ELBO {-r.neg_elbo:.2f} KL {r.kl:.2f} AU {d.active_units} MI {d.mutual_info:.2f} collapsed {d.collapsed}  ({el:.1f} s)",
                flush=True,
            )
print("load", os.getloadavg()[0])
