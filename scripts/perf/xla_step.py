"""A trial's epoch with its step compiled by XLA (train.xla) or not, the GRU unrolled or a loop.

Prints the first (tracing) epoch and the median fused epoch of each variant, alternated.
Usage: PYTHONPATH=TREE python scripts/perf/xla_step.py STUDY LATENT graph,graph-loop,xla
(one TensorFlow thread unless THREADS is set; "graph-loop": the recurrence not unrolled; under
XLA build_vae always builds it as a loop, so "xla" is the loop).
"""

import dataclasses
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

configure_threads(int(os.environ.get("THREADS", "1")))
study, latent, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
config = load_config(study)
data = load_dataset(config)
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
base = spec_for(config, data, latent)
print("load", os.getloadavg(), "train", data.x_train.shape, flush=True)
trainers = {}
for v in variants:
    spec = dataclasses.replace(base, xla=v == "xla", unroll=base.unroll and v == "graph")
    trainer = Trainer(spec)
    trainer.reset(0)
    start = time.perf_counter()
    trainer.run_epoch(xt, xv, beta=1.0)
    print(f"{v}: first epoch (trace) {time.perf_counter() - start:.2f} s", flush=True)
    trainers[v] = trainer
for rep in range(3):
    for v, trainer in trainers.items():
        times = []
        for _ in range(5):
            start = time.perf_counter()
            result = trainer.run_epoch(xt, xv, beta=1.0)
            times.append(time.perf_counter() - start)
        print(f"rep{rep} {v}: epoch {statistics.median(times) * 1e3:.1f} ms, -ELBO "
              f"{result.neg_elbo:.2f}, load {os.getloadavg()[0]:.2f}", flush=True)
