"""GRU trial epoch (sequences, latent 8): unrolled vs loop trainer vs Model.fit, alternated.
Usage: PYTHONPATH=TREE python scripts/perf/gru_epoch.py [unroll,loop,fit]
"""

import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import tf
from vae_search.bench import command as bench
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.models import get_trainer, spec_for

config = load_config("sequences")
data = load_dataset(config)
print("load", os.getloadavg(), "train", data.x_train.shape, "val", data.x_val.shape, flush=True)
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
variants = sys.argv[1].split(",") if len(sys.argv) > 1 else ["unroll", "loop", "fit"]
base = spec_for(config, data, 8)
for rep in range(2):
    for v in variants:
        if v == "fit":
            case = bench.Case("gru", dataclasses.replace(base, unroll=True), epochs=4, repeats=1)
            r = bench.run_baseline(case, data.x_train, data.x_val, seed=0)
            print(
                f"rep{rep} fit(unroll) epoch {r['epoch'] * 1e3:.1f} ms  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            continue
        spec = dataclasses.replace(base, unroll=(v == "unroll"))
        tr = get_trainer(spec)
        tr.reset(0)
        tr.run_epoch(xt, xv, beta=1.0)
        ts = []
        for _ in range(5):
            s = time.perf_counter()
            tr.run_epoch(xt, xv, beta=1.0)
            ts.append(time.perf_counter() - s)
        tr.train_epoch(xt)
        tt = []
        for _ in range(5):
            s = time.perf_counter()
            tr.train_epoch(xt)
            tt.append(time.perf_counter() - s)
        print(
            f"rep{rep} {v}: fused run_epoch {statistics.median(ts) * 1e3:.1f} ms, train_epoch {statistics.median(tt) * 1e3:.1f} ms  load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
