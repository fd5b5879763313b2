"""The fused epoch's cost under variants that were tried and dropped, side by side in one
process (each variant its own trainer; medians of 15 epochs, three rounds alternated), with the
-ELBO after the same epochs from the same seed (equal results show the variant is the same
computation).

Usage: ``PYTHONPATH=. python scripts/perf/epoch_variants.py STUDY LATENT VARIANT...`` with
VARIANT among ``graph`` (as shipped: TensorFlow's default executor), ``single`` (its
single-threaded executor, ``tf.experimental.function_executor_type``; not shipped: with one
intra-op thread it deadlocks the aggressive epoch, whose encoder loop is a ``While`` inside the
epoch's), ``static`` (full batches with a known shape in the loop, the partial batch after it)
and ``encoder-once`` (the active units from the validation pass's own posterior means).
oneDNN is a process setting: run ``TF_ENABLE_ONEDNN_OPTS=0`` (or 1) with ``graph`` alone, in
alternated processes.
"""

import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from vae_search._tf import keras, tf  # noqa: E402
from vae_search.config.schema import load_config  # noqa: E402
from vae_search.data.datasets import load_dataset  # noqa: E402
from vae_search.models import configure_threads, kl_divergence, spec_for  # noqa: E402
from vae_search.models.trainer import Trainer  # noqa: E402

configure_threads(1)
ops = keras.ops


class StaticTrainer(Trainer):
    def _train_epoch_impl(self, x_train, inner_steps=None):  # noqa: ANN001, ANN202
        n, batch = tf.shape(x_train)[0], self.spec.batch_size
        full = n // batch
        order = keras.random.shuffle(tf.range(n), seed=self.shuffle_seed)
        totals = tf.zeros((3,), dtype="float32")
        for step in tf.range(full):
            index = order[step * batch : (step + 1) * batch]
            index.set_shape([batch])
            totals += tf.stack(self._step(self._rows(x_train, index)))
        if n % batch > 0:
            totals += tf.stack(self._step(self._rows(x_train, order[full * batch :])))
        return tf.unstack(totals / tf.cast((n + batch - 1) // batch, "float32"))


class EncoderOnceTrainer(Trainer):
    def _epoch_impl(self, x_train, x_val, beta, eval_seed, active_threshold,  # noqa: ANN001, ANN202
                    inner_steps=None):
        self.vae.beta.assign(beta)
        loss, recon, kl = self._train_epoch_impl(x_train, inner_steps)
        self.eval_seed.state.assign(tf.stack([eval_seed, tf.constant(1, dtype="int64")]))
        mu, log_var = self.vae.posterior(x_val, training=False)  # the validation split, one chunk
        z = self.vae.sampling.sample(mu, log_var, self.eval_seed)
        val_recon = ops.mean(-self.vae.log_px(x_val, z, False))
        val_kl = ops.mean(ops.sum(kl_divergence(mu, log_var), axis=1))
        n_active = tf.reduce_sum(tf.cast(tf.math.reduce_variance(mu, axis=0) > active_threshold,
                                         "float32"))
        return tf.stack([loss, recon, kl, val_recon + val_kl, val_recon, val_kl, n_active])


study, latent, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:] or ["graph"]
config = load_config(study)
data = load_dataset(config)
x_train, x_val = tf.constant(data.x_train), tf.constant(data.x_val)
spec = spec_for(config, data, latent)
classes = {"graph": Trainer, "static": StaticTrainer, "encoder-once": EncoderOnceTrainer,
           "single": Trainer}


def executor(variant: str) -> contextlib.AbstractContextManager[None]:
    if variant == "single":
        return tf.experimental.function_executor_type("SINGLE_THREADED_EXECUTOR")
    return contextlib.nullcontext()


print(f"{study} latent {latent}, oneDNN {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}, "
      f"load {os.getloadavg()[0]:.2f}", flush=True)
trainers = {}
for variant in variants:
    trainer = classes[variant](spec)
    trainer.reset(0)
    start = time.perf_counter()
    with executor(variant):  # the first call traces: under the executor it will run under
        trainer.run_epoch(x_train, x_val, beta=1.0)
    print(f"{variant}: first epoch (trace) {time.perf_counter() - start:.2f} s", flush=True)
    trainers[variant] = trainer
for rep in range(3):
    for variant, trainer in trainers.items():
        trainer.reset(0)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            with executor(variant):
                result = trainer.run_epoch(x_train, x_val, beta=1.0)
            times.append(time.perf_counter() - start)
        print(f"round {rep} {variant}: epoch {statistics.median(times) * 1e3:.2f} ms, -ELBO "
              f"after 15 {result.neg_elbo:.4f}, active {result.active_units}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
