"""A real ``vae_search.run`` with its fixed parts timed: the figure refreshes (the callback's
and the end-of-run one), the progress callback, ``Objective.plan`` and ``Objective.finish``.

Usage: PYTHONPATH=TREE python scripts/perf/run_fixed_costs.py RUN-ARGS...
e.g. ``--trials 60 --population auto --storage sqlite:////tmp/x.db --quiet``.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search.bench.timing import CallTimer  # noqa: E402
from vae_search.report import callbacks  # noqa: E402
from vae_search.run import main  # noqa: E402
from vae_search.trial import objective  # noqa: E402

timer = CallTimer(nested=True)  # nested: a _finish calling itself is timed once
timed = timer.wrap
callbacks.save_figures = timed("figure refresh", callbacks.save_figures)
callbacks.Progress.__call__ = timed("progress after a trial", callbacks.Progress.__call__)
objective.Objective.plan = timed("Objective.plan", objective.Objective.plan)
objective.Objective.finish = timed("Objective.finish", objective.Objective.finish)
load = " ".join(f"{v:.2f}" for v in os.getloadavg())
start = time.perf_counter()
status = main(sys.argv[1:])
wall = time.perf_counter() - start
print(f"run {' '.join(sys.argv[1:])}: {wall:.1f} s wall, exit {status}; load {load} -> "
      + " ".join(f"{v:.2f}" for v in os.getloadavg()))
for name, values in timer.every_call().items():
    print(f"  {name:<24} n={len(values):4d}  total {sum(values):6.2f} s  "
          f"mean {sum(values) / len(values) * 1e3:7.1f} ms")
