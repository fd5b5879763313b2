"""Fused GRU trial epoch for several sizes of the sequences study, alternated in one process.
Usage: PYTHONPATH=TREE python scripts/perf/gru_sizes.py (edit `variants`)
"""

import dataclasses
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import tf
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.models import get_trainer, spec_for

config = load_config("sequences")
data = load_dataset(config)
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
base = spec_for(config, data, 8)
variants = [
    dict(batch_size=100),
    dict(batch_size=100, hidden=(48,)),
    dict(batch_size=200, hidden=(48,)),
    dict(batch_size=100, unroll=False),
    dict(batch_size=100, hidden=(48,), unroll=False),
]
print("load", os.getloadavg(), flush=True)
res = {i: [] for i in range(len(variants))}
for _rep in range(2):
    for i, v in enumerate(variants):
        tr = get_trainer(dataclasses.replace(base, **v))
        tr.reset(0)
        tr.run_epoch(xt, xv, beta=1.0)
        s = time.perf_counter()
        for _ in range(4):
            tr.run_epoch(xt, xv, beta=1.0)
        res[i].append((time.perf_counter() - s) / 4)
for i, v in enumerate(variants):
    print(v, f"{statistics.median(res[i]) * 1e3:.1f} ms/epoch (fused)")
print("load", os.getloadavg())
