"""Is a regime's epoch bound by its arithmetic or by the per-step dispatch? Its epoch at
several batch sizes, the same data and model, the study's own step (XLA for a GRU).

An epoch over N rows at batch B runs ceil(N / B) steps doing the same arithmetic in all.
If it costs about the same at every B, the arithmetic bounds it: training P trials side by
side (a population) or any other cut of the per-step cost cannot make it much cheaper.
If it falls with B, the fit ``epoch = floor + steps * per_step`` says how much of the
study's epoch (at its own batch size) is per-step cost that batching could amortise.

Usage: PYTHONPATH=TREE python scripts/perf/batch_scaling.py STUDY [LATENT] [B1,B2,...]
(one TensorFlow thread; three rounds, alternated; the first epoch of each traces).
"""

import dataclasses
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import tf
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.models import configure_threads, spec_for
from vae_search.models.trainer import Trainer

configure_threads(1)
study = sys.argv[1]
latent = int(sys.argv[2]) if len(sys.argv) > 2 else 8
config = load_config(study)
data = load_dataset(config)
own = config.train.batch_size
batches = [int(b) for b in sys.argv[3].split(",")] if len(sys.argv) > 3 else [own, 4 * own]
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
n = data.x_train.shape[0]
print(f"{study}: {n} training rows, latent {latent}, xla {spec_for(config, data, latent).xla}, "
      f"load {os.getloadavg()[0]:.2f}", flush=True)
trainers = {}
for b in batches:
    trainer = Trainer(dataclasses.replace(spec_for(config, data, latent), batch_size=b))
    trainer.reset(0)
    trainer.run_epoch(xt, xv, beta=1.0)  # traces (and compiles)
    trainers[b] = trainer
epochs: dict[int, list[float]] = {b: [] for b in batches}
for rnd in range(3):
    for b, trainer in trainers.items():
        for _ in range(5):
            start = time.perf_counter()
            trainer.run_epoch(xt, xv, beta=1.0)
            epochs[b].append(time.perf_counter() - start)
    print(f"round {rnd}: load {os.getloadavg()[0]:.2f}", flush=True)
median = {b: statistics.median(t) * 1e3 for b, t in epochs.items()}
for b in batches:
    print(f"batch {b:5d}: {math.ceil(n / b):4d} steps, epoch {median[b]:7.1f} ms")
small, large = min(batches), max(batches)
steps_small, steps_large = math.ceil(n / small), math.ceil(n / large)
per_step = (median[small] - median[large]) / (steps_small - steps_large)
floor = median[small] - per_step * steps_small
ratio = f"epoch at {small} / at {large}: {median[small] / median[large]:.2f}x"
if per_step <= 0:
    print(f"the epoch does not fall with fewer steps ({ratio}): its arithmetic bounds it")
else:
    share = per_step * math.ceil(n / own) / (floor + per_step * math.ceil(n / own))
    print(f"fit: {per_step:.3f} ms per step + {floor:.1f} ms per epoch; at batch {own} (the "
          f"study's) the per-step part is {100 * share:.0f}% of the epoch; {ratio}")
