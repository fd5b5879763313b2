"""The ELBO a trial reaches with Keras' Adam and with FusedAdam, same seeds, side by side.

Trains latent 4 for the study's epochs (beta 0 for one epoch, then linear to 1 over 10) from
seeds 0-3 with each optimizer and prints the final validation ELBOs, their mean and sd. With
FusedAdam stepping embeddings by Adam on the summed gradient, the sequences study ended 0.29
nats lower (-36.78 against -36.49); FusedAdam now keeps Keras' rule for them (the same numbers).
Usage: PYTHONPATH=TREE python scripts/perf/adam_elbo.py STUDY (one TensorFlow thread).
"""

import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import keras, tf
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.models import configure_threads, spec_for
from vae_search.models import trainer as trainer_module

configure_threads(1)
config = load_config(sys.argv[1])
data = load_dataset(config)
xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
fused = trainer_module.FusedAdam
print("load", os.getloadavg(), flush=True)
for name, optimizer in (("keras Adam", keras.optimizers.Adam), ("FusedAdam", fused)):
    trainer_module.FusedAdam = optimizer  # what Trainer builds its optimizers from
    trainer = trainer_module.Trainer(spec_for(config, data, 4))
    trainer_module.FusedAdam = fused
    elbos = []
    for seed in range(4):
        trainer.reset(seed)
        for epoch in range(config.train.epochs):
            result = trainer.run_epoch(xt, xv, beta=min(1.0, max(0.0, (epoch - 1) / 10)))
        elbos.append(-result.neg_elbo)
    print(f"{name}: ELBO {[round(e, 2) for e in elbos]}, mean {statistics.mean(elbos):.3f}, "
          f"sd {statistics.stdev(elbos):.3f}", flush=True)
