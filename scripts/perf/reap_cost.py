"""What the stale-trial check costs a worker: Optuna's check, the query for running trials that
never had a heartbeat, and both as a worker calls them, on a study of 200 finished trials and
two running ones. Usage: PYTHONPATH=TREE python scripts/perf/reap_cost.py URL
"""

import os
import sys
import time
import warnings

import optuna

from vae_search.config.schema import RunConfig
from vae_search.storage import _optuna
from vae_search.storage.connection import make_storage
from vae_search.storage.heartbeat import StaleTrials

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = sys.argv[1]
storage = make_storage(url, run=RunConfig(heartbeat_interval=10, grace_period=120))
name = f"reap-{time.time_ns()}"
study = optuna.create_study(storage=storage, study_name=name)
for i in range(200):
    trial = study.ask()
    study.tell(trial, float(i))
for _ in range(2):
    storage.record_heartbeat(_optuna.trial_id(study.ask()))


stale = StaleTrials()


def ms(call, n=200):
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e3


for _ in range(3):
    a = ms(lambda: optuna.storages.fail_stale_trials(study))
    b = ms(lambda: _optuna.unbeaten_running_trials(study))
    c = ms(lambda: stale.check(study))
    print(f"Optuna's check {a:.2f} ms, the no-heartbeat query {b:.2f} ms, both as a worker "
          f"calls them {c:.2f} ms; load {os.getloadavg()[0]:.2f}")
optuna.delete_study(study_name=name, storage=url)
