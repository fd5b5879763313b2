"""The Keras 3 VAE (TensorFlow backend) and its fast, annealed trainer.

The model reads like the math: an encoder gives ``(mu, log sigma^2)``, a seeded ``Sampling``
layer reparameterises, a decoder gives Bernoulli logits or Gaussian means, and the training loss
is ``recon + beta * KL`` with ``beta`` a non-trainable Keras variable that the schedule sets every
epoch (read inside compiled code, so changing it needs no retrace).

:class:`Trainer` runs a whole epoch, and the validation ELBO, as single compiled calls over data
held as tensors. Trainers are cached per architecture and re-initialised per trial, so a worker
running hundreds of trials traces each architecture once and holds a bounded set of models.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_search._tf import keras, tf

ops = keras.ops

__all__ = [
    "EVAL_BATCH_SIZE",
    "EpochResult",
    "EvalResult",
    "Sampling",
    "Trainer",
    "TrainerSpec",
    "VAE",
    "build_decoder",
    "build_encoder",
    "clear_trainers",
    "configure_threads",
    "get_trainer",
]

LOG_2PI = math.log(2.0 * math.pi)
EVAL_BATCH_SIZE = 2048  # rows per compiled evaluation step (bounds memory on large data)
MAX_CACHED_TRAINERS = 16  # distinct architectures kept per process


def configure_threads(threads: int | None) -> None:
    """Limit TensorFlow's thread pools (call before any TensorFlow op runs).

    Args:
        threads: Intra-op threads per process (``None`` or 0 = TensorFlow's default).
    """
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:  # already initialised in this process: keep what it has
            pass


class Sampling(keras.layers.Layer):
    """Reparameterised draw ``z = mu + sigma * eps`` with a seeded generator."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: tuple[Any, Any]) -> Any:
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps


def build_encoder(n_features: int, hidden: tuple[int, ...], latent_dim: int) -> keras.Model:
    """Dense encoder ``x -> (z_mean, z_log_var)``."""
    x = keras.Input(shape=(n_features,), name="x")
    h = x
    for i, width in enumerate(hidden):
        h = keras.layers.Dense(width, activation="relu", name=f"enc_{i}")(h)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim: int, hidden: tuple[int, ...], n_features: int) -> keras.Model:
    """Dense decoder ``z -> output`` (Bernoulli logits or Gaussian means), mirroring widths."""
    z = keras.Input(shape=(latent_dim,), name="z")
    h = z
    for i, width in enumerate(reversed(hidden)):
        h = keras.layers.Dense(width, activation="relu", name=f"dec_{i}")(h)
    out = keras.layers.Dense(n_features, name="x_out")(h)
    return keras.Model(z, out, name="decoder")


def kl_divergence(z_mean: Any, z_log_var: Any) -> Any:
    """KL(q(z|x) || N(0, I)) per example, summed over latent dims (nats)."""
    return ops.sum(0.5 * (ops.square(z_mean) + ops.exp(z_log_var) - z_log_var - 1.0), axis=-1)


class VAE(keras.Model):
    """Annealed VAE: ``loss = recon + beta * KL`` with ``recon`` summed or averaged over data dims.

    Args:
        encoder: ``x -> (z_mean, z_log_var)``.
        decoder: ``z -> logits`` (bernoulli) or ``z -> means`` (gaussian).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (a learned per-dim log-variance).
        reduction: ``"sum"`` (the ELBO) or ``"mean"`` (reconstruction averaged over data dims,
            i.e. the KL up-weighted by N).
        seed: Seeds the sampling noise.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        *,
        likelihood: str = "bernoulli",
        reduction: str = "sum",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"unknown reduction {reduction!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.reduction = reduction
        self.sampling = Sampling(seed)
        n_features = decoder.output.shape[-1]
        self.beta = keras.Variable(0.0, trainable=False, name="beta")
        self.decoder_log_var = None
        if likelihood == "gaussian":
            self.decoder_log_var = self.add_weight(
                shape=(n_features,), initializer="zeros", name="decoder_log_var"
            )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker]

    def call(self, x: Any, training: bool = False) -> Any:
        z_mean, z_log_var = self.encoder(x, training=training)
        return self.decoder(self.sampling([z_mean, z_log_var]), training=training)

    def log_likelihood(self, x: Any, decoded: Any) -> Any:
        """log p(x|z) per example and data dim (the Gaussian includes its constant)."""
        if self.likelihood == "bernoulli":
            # log sigmoid(l) = -softplus(-l), log(1 - sigmoid(l)) = -softplus(l)
            return -(x * ops.softplus(-decoded) + (1.0 - x) * ops.softplus(decoded))
        log_var = self.decoder_log_var
        return -0.5 * (LOG_2PI + log_var + ops.square(x - decoded) * ops.exp(-log_var))

    def terms(self, x: Any, training: bool) -> tuple[Any, Any, Any]:
        """Per-example ``(recon, recon_sum, kl)``: recon reduced per ``reduction``, KL summed."""
        z_mean, z_log_var = self.encoder(x, training=training)
        z = self.sampling([z_mean, z_log_var])
        log_px = self.log_likelihood(x, self.decoder(z, training=training))
        recon_sum = -ops.sum(log_px, axis=-1)
        recon = recon_sum if self.reduction == "sum" else -ops.mean(log_px, axis=-1)
        return recon, recon_sum, kl_divergence(z_mean, z_log_var)

    def train_batch(self, x: Any) -> tuple[Any, Any, Any]:
        """One gradient step on ``mean(recon + beta * KL)``; returns (loss, recon, kl) means."""
        with tf.GradientTape() as tape:
            recon, _, kl = self.terms(x, training=True)
            loss = ops.mean(recon + self.beta * kl)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return loss, ops.mean(recon), ops.mean(kl)

    def train_step(self, data: Any) -> dict[str, Any]:
        """``Model.fit`` support (the plain recipe, used as the benchmark baseline)."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        loss, recon, kl = self.train_batch(x)
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, Any]:
        """Validation at beta = 1 with ``sum`` reduction: ``loss`` is -ELBO in nats/example."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        _, recon_sum, kl = self.terms(x, training=False)
        self.loss_tracker.update_state(ops.mean(recon_sum + kl))
        self.recon_tracker.update_state(ops.mean(recon_sum))
        self.kl_tracker.update_state(ops.mean(kl))
        return {m.name: m.result() for m in self.metrics}


@dataclass(frozen=True)
class TrainerSpec:
    """Everything that fixes a trainer's architecture and compiled code."""

    n_features: int
    hidden: tuple[int, ...]
    latent_dim: int
    likelihood: str
    reduction: str
    batch_size: int
    learning_rate: float
    dynamic_binarization: bool = False


@dataclass(frozen=True)
class EpochResult:
    """One fused epoch: training means at the epoch's beta, validation at beta = 1 (``sum``)."""

    train_loss: float  # mean over steps of recon + beta * KL (training reduction)
    train_recon: float
    train_kl: float
    neg_elbo: float  # validation -ELBO, nats per example
    recon: float
    kl: float
    active_units: int  # validation units with Var_x(E_q[z_u|x]) > the threshold


@dataclass(frozen=True)
class EvalResult:
    """Validation metrics at beta = 1, ``sum`` reduction, nats per example."""

    neg_elbo: float
    recon: float
    kl: float


class Trainer:
    """Compiled, per-epoch training and evaluation of one VAE architecture.

    Build once per :class:`TrainerSpec` (see :func:`get_trainer`), then for each trial call
    :meth:`reset` with the trial's seed and :meth:`train_epoch` / :meth:`evaluate` per epoch.
    """

    def __init__(self, spec: TrainerSpec) -> None:
        self.spec = spec
        encoder = build_encoder(spec.n_features, spec.hidden, spec.latent_dim)
        decoder = build_decoder(spec.latent_dim, spec.hidden, spec.n_features)
        self.vae = VAE(
            encoder, decoder, likelihood=spec.likelihood, reduction=spec.reduction, seed=0
        )
        self.vae.compile(optimizer=keras.optimizers.Adam(spec.learning_rate))
        self.vae.optimizer.build(self.vae.trainable_weights)
        self.shuffle_seed = keras.random.SeedGenerator(0)
        self.binarize_seed = keras.random.SeedGenerator(0)
        self.eval_seed = keras.random.SeedGenerator(0)
        self._seed_generators = [
            self.vae.sampling.seed_generator,
            self.shuffle_seed,
            self.binarize_seed,
        ]
        # One seed generator drives every kernel initializer, so reset() is one compiled call.
        self.init_seed = keras.random.SeedGenerator(0)
        self._initializers = self._seeded_initializers()
        self._train_epoch = tf.function(self._train_epoch_impl, reduce_retracing=True)
        self._evaluate = tf.function(self._evaluate_impl, reduce_retracing=True)
        self._encode = tf.function(self._encode_impl, reduce_retracing=True)
        self._epoch = tf.function(self._epoch_impl, reduce_retracing=True)
        self._reset = tf.function(self._reset_impl)

    def _dense_layers(self) -> list[keras.layers.Dense]:
        layers = [*self.vae.encoder.layers, *self.vae.decoder.layers]
        return [layer for layer in layers if isinstance(layer, keras.layers.Dense)]

    def _seeded_initializers(self) -> list[keras.initializers.Initializer]:
        """Each Dense kernel's own initializer class and config, drawing from ``init_seed``."""
        fresh = []
        for layer in self._dense_layers():
            config = {k: v for k, v in layer.kernel_initializer.get_config().items() if k != "seed"}
            fresh.append(layer.kernel_initializer.__class__(**config, seed=self.init_seed))
        return fresh

    # -- per trial -------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """Fresh weights, optimizer state and noise streams, all derived from ``seed``.

        One compiled call (eagerly, the ~50 assigns cost tens of ms per trial).
        """
        self._reset(tf.constant(seed, dtype="int64"))

    def set_beta(self, beta: float) -> None:
        self.vae.beta.assign(float(beta))

    def train_epoch(self, x_train: tf.Tensor) -> tuple[float, float, float]:
        """One shuffled pass over ``x_train`` (a tensor); returns mean (loss, recon, kl)."""
        loss, recon, kl = self._train_epoch(x_train)
        return float(loss), float(recon), float(kl)

    def evaluate(self, x: tf.Tensor, seed: int = 0) -> EvalResult:
        """-ELBO at beta = 1, ``sum`` reduction, with a fixed noise draw for comparability."""
        self.eval_seed.state.assign(np.array([seed, 1], dtype="int64"))
        neg_elbo, recon, kl = self._evaluate(x)
        return EvalResult(float(neg_elbo), float(recon), float(kl))

    def encode(self, x: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's ``(mu, logvar)`` for every row of ``x`` (for the diagnostics)."""
        mu, logvar = self._encode(x)
        return np.asarray(mu), np.asarray(logvar)

    def run_epoch(
        self,
        x_train: tf.Tensor,
        x_val: tf.Tensor,
        *,
        beta: float,
        eval_seed: int = 0,
        active_threshold: float = 0.01,
    ) -> EpochResult:
        """:meth:`set_beta`, :meth:`train_epoch`, :meth:`evaluate` and the active-unit count
        of :meth:`encode`, fused into one compiled call (the same numbers, one round-trip).
        """
        out = self._epoch(
            x_train,
            x_val,
            tf.constant(beta, dtype="float32"),
            tf.constant(eval_seed, dtype="int64"),
            tf.constant(active_threshold, dtype="float32"),
        ).numpy()
        return EpochResult(*(float(v) for v in out[:6]), active_units=int(out[6]))

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decoder means in data space (sigmoid of the logits for Bernoulli)."""
        out = self.vae.decoder(ops.convert_to_tensor(z, dtype="float32"), training=False)
        if self.spec.likelihood == "bernoulli":
            out = ops.sigmoid(out)
        return np.asarray(out)

    # -- compiled bodies -------------------------------------------------------------------

    def _train_epoch_impl(self, x_train: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        n = tf.shape(x_train)[0]
        batch = self.spec.batch_size
        steps = (n + batch - 1) // batch  # the last, partial batch too, as Model.fit does
        order = keras.random.shuffle(tf.range(n), seed=self.shuffle_seed)
        totals = tf.zeros((3,), dtype="float32")
        for step in tf.range(steps):
            idx = order[step * batch : (step + 1) * batch]
            x = tf.gather(x_train, idx)
            if self.spec.dynamic_binarization:
                noise = keras.random.uniform(tf.shape(x), seed=self.binarize_seed)
                x = tf.cast(noise < x, x.dtype)
            loss, recon, kl = self.vae.train_batch(x)
            totals += tf.stack([loss, recon, kl])
        return tf.unstack(totals / tf.cast(steps, "float32"))

    def _reset_impl(self, seed: tf.Tensor) -> None:
        zero = tf.constant(0, dtype="int64")
        for i, (layer, init) in enumerate(zip(self._dense_layers(), self._initializers)):
            # The stream an integer seed ``seed * 1009 + i`` gives: the same weights as building
            # the initializer with that seed eagerly, without a retrace per trial.
            self.init_seed.state.assign(tf.stack([seed * 1009 + i, zero]))
            layer.kernel.assign(init(layer.kernel.shape))
            layer.bias.assign(tf.zeros(layer.bias.shape))
        if self.vae.decoder_log_var is not None:
            self.vae.decoder_log_var.assign(tf.zeros(self.vae.decoder_log_var.shape))
        for var in self.vae.optimizer.variables:
            var.assign(tf.zeros(var.shape, dtype=var.dtype))
        self.vae.optimizer.learning_rate.assign(self.spec.learning_rate)
        for i, generator in enumerate(self._seed_generators):
            generator.state.assign(tf.stack([seed, tf.constant(7919 * (i + 1), dtype="int64")]))
        self.vae.beta.assign(0.0)

    def _epoch_impl(
        self,
        x_train: tf.Tensor,
        x_val: tf.Tensor,
        beta: tf.Tensor,
        eval_seed: tf.Tensor,
        active_threshold: tf.Tensor,
    ) -> tf.Tensor:
        self.vae.beta.assign(beta)
        loss, recon, kl = self._train_epoch_impl(x_train)
        self.eval_seed.state.assign(tf.stack([eval_seed, tf.constant(1, dtype="int64")]))
        neg_elbo, val_recon, val_kl = self._evaluate_impl(x_val)
        mu, _ = self._encode_impl(x_val)
        variances = tf.math.reduce_variance(mu, axis=0)
        n_active = tf.reduce_sum(tf.cast(variances > active_threshold, "float32"))
        return tf.stack([loss, recon, kl, neg_elbo, val_recon, val_kl, n_active])

    def _eval_terms(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        z_mean, z_log_var = self.vae.encoder(x, training=False)
        eps = keras.random.normal(tf.shape(z_mean), seed=self.eval_seed)
        z = z_mean + ops.exp(0.5 * z_log_var) * eps
        log_px = self.vae.log_likelihood(x, self.vae.decoder(z, training=False))
        return -ops.sum(log_px, axis=-1), kl_divergence(z_mean, z_log_var)

    def _evaluate_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        n = tf.shape(x)[0]
        steps = (n + EVAL_BATCH_SIZE - 1) // EVAL_BATCH_SIZE
        sums = tf.zeros((2,), dtype="float32")
        for step in tf.range(steps):
            recon, kl = self._eval_terms(x[step * EVAL_BATCH_SIZE : (step + 1) * EVAL_BATCH_SIZE])
            sums += tf.stack([ops.sum(recon), ops.sum(kl)])
        means = sums / tf.cast(n, "float32")
        return means[0] + means[1], means[0], means[1]

    def _encode_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.vae.encoder(x, training=False)


_TRAINERS: OrderedDict[TrainerSpec, Trainer] = OrderedDict()


def get_trainer(spec: TrainerSpec) -> Trainer:
    """The process's trainer for ``spec`` (LRU cache of :data:`MAX_CACHED_TRAINERS`)."""
    trainer = _TRAINERS.pop(spec, None)
    if trainer is None:
        trainer = Trainer(spec)
    _TRAINERS[spec] = trainer
    while len(_TRAINERS) > MAX_CACHED_TRAINERS:
        _TRAINERS.popitem(last=False)
    return trainer


def clear_trainers() -> None:
    """Drop every cached trainer and Keras' global state."""
    _TRAINERS.clear()
    keras.backend.clear_session()
