"""What a trial pays besides its epochs, on a real SQLite study: the decoder-only baseline
(once per study), each part of ``Objective.finish`` (encode + diagnostics, IWAE, the attr
writes, the artifact), the progress bar's read, and one figure refresh split into its parts.

Usage: PYTHONPATH=TREE python scripts/perf/fixed_costs.py [STUDY] [TRIALS]
(default seed_mse, 24 trials; a temporary database and artifact directory).
"""

import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

from vae_search.bench.timing import CallTimer  # noqa: E402
from vae_search.config.schema import load_config  # noqa: E402
from vae_search.engine.study import open_study  # noqa: E402
from vae_search.report import Progress  # noqa: E402
from vae_search.report.figures import FIGURE_BUILDERS  # noqa: E402
from vae_search.report.rows import study_config, trial_rows  # noqa: E402
from vae_search.storage.artifacts import ReconstructionArtifacts, make_artifact_store  # noqa: E402
from vae_search.storage.connection import make_storage  # noqa: E402
from vae_search.trial import objective as objective_module  # noqa: E402
from vae_search.trial.objective import Objective  # noqa: E402

STUDY = sys.argv[1] if len(sys.argv) > 1 else "seed_mse"
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 24
timer = CallTimer(nested=True)  # "_finish (all)" and its parts
timed = timer.wrap


def load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def show(name: str, values: list[float]) -> None:
    ms = [v * 1e3 for v in values]
    rest = ms[1:] or ms  # the first call of a part may include a trace
    print(f"  {name:<28} n={len(ms):3d}  first {ms[0]:7.1f} ms  median(rest) "
          f"{statistics.median(rest):7.1f} ms  total {sum(ms) / 1e3:6.2f} s")


tmp = Path(tempfile.mkdtemp(prefix="fixed_costs-"))
url = f"sqlite:///{tmp / 'study.db'}"
config = load_config(STUDY)
print(f"{STUDY}, {TRIALS} trials, {url}; {load()}", flush=True)
study = open_study(config, make_storage(url, run=config.run))
artifacts = ReconstructionArtifacts(make_artifact_store(url))
obj = Objective(config, worker="perf", on_finish=timed("_finish: artifact", artifacts))
obj.decoder_only_nll = timed("plan: baseline", obj.decoder_only_nll)
obj.diagnostics = timed("_finish: encode+diagnose", obj.diagnostics)
obj.iwae = timed("_finish: iwae", obj.iwae)
obj.plan = timed("plan", obj.plan)
obj.finish = timed("_finish (all)", obj.finish)
obj.start = timed("start", obj.start)
objective_module.set_user_attrs = timed("set_user_attrs", objective_module.set_user_attrs)
progress = Progress(study, TRIALS, enabled=False)
start = time.perf_counter()
study.optimize(timed("trial (all)", obj), n_trials=TRIALS,
               callbacks=[timed("progress (after a trial)", progress)])
wall = time.perf_counter() - start
print(f"{TRIALS} trials in {wall:.1f} s; {load()}")
times = timer.every_call()  # the attr writes run on the report thread
for name in sorted(times):
    show(name, times[name])

# The loop's way to end a trial: Objective.finish on the loop's shared writer.
from vae_search.storage.report_writer import ReportWriter  # noqa: E402

for calls in (timer.hot, timer.background):
    for name in [n for n in calls if n.startswith("_finish")]:
        calls.pop(name)
with ReportWriter(name="reports") as shared:
    for _ in range(12):
        trial = study.ask()
        run = obj.begin(trial, shared)
        trainer = obj.start(run.plan.params, run.plan.seed)
        for _ in range(3):
            run.after_epoch(obj.run_epoch(trainer, run.beta), shared)
        obj.finish(run, trainer, shared)
        study.tell(trial, run.elbo)
print(f"the loop's finish (a shared ReportWriter), 12 trials; {load()}")
times = timer.every_call()
for name in sorted(n for n in times if n.startswith("_finish")):
    show(name, times[name])

# One figure refresh on the study just run, split into its parts (three repeats).
from optuna_dashboard import save_plotly_graph_object  # noqa: E402

parts: dict[str, list[float]] = defaultdict(list)
for _ in range(3):
    t0 = time.perf_counter()
    cfg = study_config(study)
    rows = trial_rows(study, cfg)
    parts["read rows"].append(time.perf_counter() - t0)
    for fid, build in FIGURE_BUILDERS.items():
        t = time.perf_counter()
        fig = build(study, rows, cfg)
        parts[f"build {fid}"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fig.to_json()
        parts[f"to_json {fid}"].append(time.perf_counter() - t)
        t = time.perf_counter()
        save_plotly_graph_object(study, fig, graph_object_id=fid)  # to_json again, then write
        parts[f"save {fid}"].append(time.perf_counter() - t)
    parts["refresh (all)"].append(time.perf_counter() - t0)
from vae_search.report.figures import save_figures  # noqa: E402

for _ in range(3):
    t = time.perf_counter()
    save_figures(study)
    parts["save_figures()"].append(time.perf_counter() - t)
print(f"figure refresh at {len(study.trials)} trials; {load()}")
for name, values in parts.items():
    show(name, values)
