"""A trial's fused epoch with Keras' Adam against FusedAdam (one kernel per weight).

Prints each variant's first (tracing) epoch and its median epoch, alternated over three rounds,
and the -ELBO after the same epochs from the same seed (the two agree to float rounding).
Usage: PYTHONPATH=TREE python scripts/perf/adam.py STUDY LATENT (one TensorFlow thread).
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import keras, tf
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.models import configure_threads, spec_for
from vae_search.models import trainer as trainer_module

configure_threads(1)
study, latent = sys.argv[1], int(sys.argv[2])
config = load_config(study)
data = load_dataset(config)
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
spec = spec_for(config, data, latent)
print("load", os.getloadavg(), "train", data.x_train.shape, "xla", spec.xla, flush=True)
fused = trainer_module.FusedAdam
trainers = {}
for name, optimizer in (("keras Adam", keras.optimizers.Adam), ("FusedAdam", fused)):
    trainer_module.FusedAdam = optimizer  # what Trainer builds its optimizers from
    trainer = trainer_module.Trainer(spec)
    trainer.reset(0)
    start = time.perf_counter()
    trainer.run_epoch(xt, xv, beta=1.0)
    print(f"{name}: first epoch (trace) {time.perf_counter() - start:.2f} s", flush=True)
    trainers[name] = trainer
trainer_module.FusedAdam = fused
for rep in range(3):
    for name, trainer in trainers.items():
        trainer.reset(0)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            result = trainer.run_epoch(xt, xv, beta=1.0)
            times.append(time.perf_counter() - start)
        print(f"rep{rep} {name}: epoch {statistics.median(times) * 1e3:.1f} ms, -ELBO after 10 "
              f"{result.neg_elbo:.3f}, load {os.getloadavg()[0]:.2f}", flush=True)
