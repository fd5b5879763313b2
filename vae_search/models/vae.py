"""The annealed VAE, top to bottom like the math.

``q(z|x) = N(mu(x), diag sigma^2(x))`` from the encoder; ``z = mu + sigma * eps`` from the one
seeded :class:`Sampling` path (training and evaluation both draw through it); ``p(x|z)`` from the
decoder and a likelihood layer. The training loss is

    loss = recon_scale * E_q[-log p(x|z)] + beta * sum_j max(free_bits, KL_j)

with ``KL_j`` the minibatch mean of the closed-form KL of latent dim ``j``. ``recon_scale`` is 1
for ``sum`` and ``1/N`` for ``mean`` (reconstruction averaged over the N data positions, what
``keras.losses.mse`` on a flat batch does); ``free_bits = 0`` is the plain KL. ``beta``,
``recon_scale`` and ``free_bits`` are non-trainable variables: the schedule and the trial set them
without retracing compiled code.

A decoder with one input ``z`` is factorized given z; a decoder with two inputs ``[z, x]`` is
autoregressive (teacher forcing: position i sees x only through x_<i).
"""

from __future__ import annotations

import math
from typing import Any

from vae_search._tf import keras, tf
from vae_search.models.likelihoods import LOG_2PI

ops = keras.ops

__all__ = ["Sampling", "VAE", "kl_divergence"]


class Sampling(keras.layers.Layer):
    """The reparameterised draw ``z = mu + sigma * eps``, ``eps ~ N(0, I)`` from a seeded stream."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample(self, z_mean: Any, z_log_var: Any, seed: Any = None) -> Any:
        """Draw with ``seed`` (a SeedGenerator, e.g. a fixed evaluation stream) or our own."""
        eps = keras.random.normal(ops.shape(z_mean), seed=seed or self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def call(self, inputs: tuple[Any, Any]) -> Any:
        return self.sample(*inputs)


def kl_divergence(z_mean: Any, z_log_var: Any) -> Any:
    """KL(q(z|x) || N(0, I)) per example and latent dim, nats: ``(B, D)``."""
    return 0.5 * (ops.square(z_mean) + ops.exp(z_log_var) - z_log_var - 1.0)


class VAE(keras.Model):
    """Encoder, sampling, decoder and likelihood, with the annealed loss.

    Args:
        encoder: ``x -> (z_mean, z_log_var)``.
        decoder: ``z -> params`` (factorized) or ``[z, x] -> params`` (autoregressive).
        likelihood: A layer of :mod:`vae_search.models.likelihoods`.
        seed: Seeds the sampling noise (the trainer reseeds it per trial).
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model,
                 likelihood: keras.layers.Layer, *, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.sampling = Sampling(seed)
        self.autoregressive = len(decoder.inputs) == 2
        self.n_positions = math.prod(int(d) for d in encoder.inputs[0].shape[1:])
        self.beta = keras.Variable(0.0, trainable=False, name="beta")
        self.recon_scale = keras.Variable(1.0, trainable=False, name="recon_scale")
        self.free_bits = keras.Variable(0.0, trainable=False, name="free_bits")
        # 0 replaces q(z|x) by the prior: z carries nothing about x (the decoder-only baseline).
        self.code_gate = keras.Variable(1.0, trainable=False, name="code_gate")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker]

    def set_reduction(self, reduction: str) -> None:
        """``sum``: the ELBO's reconstruction; ``mean``: averaged over the data positions."""
        if reduction not in ("sum", "mean"):
            raise ValueError(f"unknown reduction {reduction!r}")
        self.recon_scale.assign(1.0 if reduction == "sum" else 1.0 / self.n_positions)

    def decode(self, z: Any, x: Any, training: bool = False) -> Any:
        """The likelihood's parameters; ``x`` feeds an autoregressive decoder (teacher forcing)."""
        if self.autoregressive:
            return self.decoder([z, x], training=training)
        return self.decoder(z, training=training)

    def posterior(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        """``(z_mean, z_log_var)`` of q(z|x); ``N(0, I)`` for every x when ``code_gate`` is 0
        (then the KL is exactly 0 and the decoder sees prior draws, independent of x)."""
        z_mean, z_log_var = self.encoder(x, training=training)
        return self.code_gate * z_mean, self.code_gate * z_log_var

    def call(self, x: Any, training: bool = False) -> Any:
        z_mean, z_log_var = self.posterior(x, training=training)
        return self.decode(self.sampling.sample(z_mean, z_log_var), x, training)

    def log_px(self, x: Any, z: Any, training: bool = False) -> Any:
        """``log p(x|z)`` per example, summed over the data positions: ``(B,)``."""
        log_px = self.likelihood.log_prob(x, self.decode(z, x, training))
        return ops.sum(ops.reshape(log_px, (ops.shape(log_px)[0], -1)), axis=1)

    def terms(self, x: Any, *, training: bool, seed: Any = None) -> tuple[Any, Any]:
        """Per example: ``-log p(x|z)`` summed over positions ``(B,)``, and KL ``(B, D)``."""
        z_mean, z_log_var = self.posterior(x, training=training)
        z = self.sampling.sample(z_mean, z_log_var, seed)
        return -self.log_px(x, z, training), kl_divergence(z_mean, z_log_var)

    def log_weights(self, x: Any, k: Any, seed: Any) -> Any:
        """Importance log-weights ``log p(x, z_s) - log q(z_s|x)``, ``z_s ~ q(z|x)``: ``(k, B)``.

        The IWAE bound is ``log mean_s exp(w_s)`` (Burda et al. 2016). An autoregressive
        decoder is evaluated with teacher forcing on ``x``, which is exact for ``log p(x|z)``.
        """
        z_mean, z_log_var = self.posterior(x)
        b, d = tf.shape(z_mean)[0], tf.shape(z_mean)[1]
        eps = keras.random.normal(tf.stack([k, b, d]), seed=seed)
        z = z_mean[None] + ops.exp(0.5 * z_log_var)[None] * eps
        log_q = -0.5 * ops.sum(ops.square(eps) + z_log_var[None] + LOG_2PI, axis=2)
        log_prior = -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=2)
        rows = tf.concat([[k * b], tf.shape(x)[1:]], axis=0)
        xs = tf.reshape(tf.broadcast_to(x[None], tf.concat([[k], tf.shape(x)], axis=0)), rows)
        log_px = self.log_px(xs, tf.reshape(z, tf.stack([k * b, d])))
        return tf.reshape(log_px, tf.stack([k, b])) + log_prior - log_q

    def training_loss(self, recon: Any, kl: Any) -> tuple[Any, Any, Any]:
        """``recon_scale * mean(recon) + beta * sum_j max(free_bits, mean_x KL_j)``."""
        recon_term = self.recon_scale * ops.mean(recon)
        kl_term = ops.sum(ops.maximum(self.free_bits, ops.mean(kl, axis=0)))
        return recon_term + self.beta * kl_term, recon_term, ops.mean(ops.sum(kl, axis=1))

    @property
    def decoder_weights(self) -> list[Any]:
        """p(x|z)'s trainable weights: the decoder's and the likelihood's (a learned variance)."""
        return [*self.decoder.trainable_weights, *self.likelihood.trainable_weights]

    def train_batch(self, x: Any, weights: list[Any] | None = None,
                    optimizer: Any = None) -> tuple[Any, Any, Any]:
        """One Adam step on the training loss; returns (loss, recon, plain KL) batch means.

        Args:
            x: The batch.
            weights: The weights this step updates (default: all); the others are untouched
                (aggressive training steps the encoder and the decoder apart).
            optimizer: Its optimizer (default: the model's).
        """
        weights = self.trainable_weights if weights is None else weights
        with tf.GradientTape() as tape:
            recon, kl = self.terms(x, training=True)
            loss, recon_term, kl_mean = self.training_loss(recon, kl)
        grads = tape.gradient(loss, weights)
        (optimizer or self.optimizer).apply(grads, weights)
        return loss, recon_term, kl_mean

    def train_step(self, data: Any) -> dict[str, Any]:
        """``Model.fit`` support: the plain recipe, the benchmark's baseline."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        loss, recon, kl = self.train_batch(x)
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, Any]:
        """Validation at beta = 1, ``sum``: ``loss`` is -ELBO in nats per example."""
        x = data[0] if isinstance(data, (tuple, list)) else data
        recon, kl = self.terms(x, training=False)
        kl_sum = ops.sum(kl, axis=1)
        self.loss_tracker.update_state(ops.mean(recon + kl_sum))
        self.recon_tracker.update_state(ops.mean(recon))
        self.kl_tracker.update_state(ops.mean(kl_sum))
        return {m.name: m.result() for m in self.metrics}
