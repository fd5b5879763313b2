"""Storage share of seed_mse trials, in-process: ``PYTHONPATH=TREE python scripts/perf/storage_ab.py
N URL LABEL``. Run it with PYTHONPATH on two trees (before / after) back to back for an A/B; the
same seed gives the same trials (same pruned count and epochs). Prints hot (training-thread)
storage seconds, background seconds, and per method (seconds, or [hot s, calls, background s]).
"""

import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import optuna
from optuna.exceptions import ExperimentalWarning

warnings.filterwarnings("ignore", category=ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)
try:
    from vae_search.bench.timing import CallTimer
except ImportError:  # a tree from before bench/timing.py (an A/B against an older tree)
    from vae_search.bench.worker import StorageTimer as CallTimer
from vae_search.config.schema import load_config
from vae_search.engine.study import open_study
from vae_search.storage._optuna import study_storage
from vae_search.storage.connection import make_storage
from vae_search.trial import objective as om

n = int(sys.argv[1])
url = sys.argv[2]
config = load_config("seed_mse")
study = open_study(config, make_storage(url, run=config.run), study_name=f"s{time.time_ns()}")
timer = CallTimer(study_storage(study))
from vae_search.storage.report_writer import ReportWriter  # noqa: E402

ReportWriter.flush = timer.wrap("WAIT", ReportWriter.flush)
ReportWriter.__exit__ = timer.wrap("WAIT", ReportWriter.__exit__)
om.set_user_attrs = timer.wrap("set_user_attrs", om.set_user_attrs)
objective = om.Objective(config, worker="bench")
s = time.perf_counter()
study.optimize(objective, n_trials=n)
wall = time.perf_counter() - s
bg = timer.background_seconds
print(
    f"{sys.argv[3]}: load {os.getloadavg()[0]:.2f} wall {wall:.1f} s ({wall / n * 1e3:.0f} ms/trial), hot storage {timer.seconds:.2f} s = {timer.seconds / wall:.1%}, background {bg:.2f} s, calls {timer.calls}"
)
items = sorted(timer.by_method.items(), key=lambda kv: -(kv[1][0] + kv[1][2]))
for k, v in items[:8]:
    print(f"    {k:32s} {v}")
pr = sum(t.state.name == "PRUNED" for t in study.trials)
print("    pruned", pr, "epochs", sum(len(t.intermediate_values) for t in study.trials), flush=True)
if not url.startswith("sqlite"):
    optuna.delete_study(study_name=study.study_name, storage=url)
