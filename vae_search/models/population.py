"""Population training: P trials of one study trained as one stacked model.

Small VAEs are bound by TensorFlow's per-op dispatch, not by arithmetic (see the trainer), so P
models cost little more than one when each of their dense layers becomes one batched matmul
over a stacked kernel ``[P, in, out]``. Each slot ``p`` of the population is a whole trial:

* its weights are a snapshot of a one-at-a-time :class:`~vae_search.models.Trainer` freshly
  :meth:`~vae_search.models.Trainer.reset` from the trial's seed and configured with its
  settings (:meth:`PopulationTrainer.load`), so the initial model *is* the one-at-a-time model,
  drawn by the same :mod:`~vae_search.models.seeding` code;
* so are its noise streams (sampling, shuffle, binarization): every draw a member makes is the
  draw the one-at-a-time trainer would make, in the same order, with the member's own state;
* its settings are per-slot variables: ``beta``, ``recon_scale`` (reduction), ``free_bits``,
  the fixed Gaussian ``log sigma^2`` or the learned per-dim log-variance;
* its Adam state (moments and step count) is its own, so Adam's bias correction restarts with
  each trial exactly as the one-at-a-time trainer's reset does.

Latent dims differ between members: every slot is padded to the largest searched latent dim
``D`` with a 0/1 mask ``m_p`` of the member's ``d_p`` dims. Masked dims have ``mu = 0``,
``log sigma^2 = 0`` (KL exactly 0) and ``z = 0`` (no decoder input), so they take no gradient
and the padded member is mathematically the same model. The free-bits floor is masked too.

The loss of the population is ``sum_p live_p * loss_p``: members share no weight, so its
gradient with respect to member p's weights is the gradient of ``loss_p`` alone. An empty slot
(``live_p = 0``) computes but learns nothing.

:meth:`PopulationTrainer.unload` writes a member's weights back into a one-at-a-time trainer,
which then runs the usual diagnostics (active units, KL per dim, MI, IWAE) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vae_search._tf import tf
from vae_search.models.build import TrainerSpec
from vae_search.models.likelihoods import LOG_2PI
from vae_search.models.trainer import EVAL_BATCH_SIZE, EpochResult, Trainer, get_trainer

__all__ = ["FAMILIES", "OneSlot", "PopulationTrainer", "Slots", "named_weights"]

FAMILIES = ("dense", "made")  # decoder families a population can stack
_ADAM = (0.9, 0.999, 1e-7)  # Keras Adam's defaults: beta_1, beta_2, epsilon
_SEED_MOD = 2**31 - 2  # Keras casts an int64 seed state to int32 via floormod(tf.int32.max - 1)


def named_weights(trainer: Trainer) -> dict[str, Any]:
    """Every variable a member owns, by ``layer/weight`` name: the encoder's and decoder's
    layers, the likelihood's (log-variance), and the VAE's per-trial settings."""
    vae = trainer.vae
    out: dict[str, Any] = {}
    for layer in (*vae.encoder.layers, *vae.decoder.layers, vae.likelihood):
        for var in layer.weights:
            out[f"{layer.name}/{var.name}"] = var
    out["vae/recon_scale"] = vae.recon_scale
    out["vae/free_bits"] = vae.free_bits
    return out


def _seed_streams(trainer: Trainer) -> tuple[Any, Any, Any]:
    """The trainer's sampling, shuffle and binarization seed states (after its reset)."""
    return (trainer.vae.sampling.seed_generator.state, trainer.shuffle_seed.state,
            trainer.binarize_seed.state)


def _draw_seeds(state: tf.Variable) -> tf.Tensor:
    """Every member's next stateless seed, ``[P, 2]``, as ``keras.random`` draws it from a
    SeedGenerator (the current state, cast to int32; then the state's counter moves on by one)."""
    seeds = tf.cast(tf.math.floormod(state, _SEED_MOD), "int32")
    state.assign_add(tf.broadcast_to(tf.constant([0, 1], dtype="int64"), tf.shape(state)))
    return seeds


class PopulationTrainer:
    """``size`` trials of one architecture family, trained side by side in one compiled epoch.

    Args:
        template: The member trainer at the largest latent dim; it fixes every stacked shape.
        size: Slots P.
    """

    def __init__(self, template: Trainer, size: int) -> None:
        spec = template.spec
        if spec.decoder not in FAMILIES:
            raise ValueError(f"population training covers {FAMILIES}, not {spec.decoder!r}")
        self.spec: TrainerSpec = spec
        self.size = size
        self.latent_dim = spec.latent_dim
        self.made = spec.decoder == "made"
        self.masks: dict[str, tf.Tensor] = {}  # MADE's fixed connectivity, shared by all slots
        if self.made:
            for layer in template.vae.decoder.layers:
                if hasattr(layer, "mask"):
                    self.masks[layer.name] = tf.constant(layer.mask)
        template_vars = named_weights(template)
        trainable = {id(v) for v in template.vae.trainable_weights}
        self.w: dict[str, tf.Variable] = {
            name: tf.Variable(tf.zeros((size, *v.shape), v.dtype), name=name.replace("/", "."))
            for name, v in template_vars.items()
        }
        self.trainable = [n for n, v in template_vars.items() if id(v) in trainable]
        self.m = {n: tf.Variable(tf.zeros_like(self.w[n])) for n in self.trainable}
        self.v = {n: tf.Variable(tf.zeros_like(self.w[n])) for n in self.trainable}
        self.step = tf.Variable(tf.zeros((size,), "float32"))  # Adam steps taken per member
        self.beta = tf.Variable(tf.zeros((size,), "float32"))
        self.live = tf.Variable(tf.zeros((size,), "float32"))
        self.dims = tf.Variable(tf.fill((size,), tf.constant(1, "int32")))
        self.mask = tf.Variable(tf.zeros((size, self.latent_dim), "float32"))
        self.streams = [tf.Variable(tf.zeros((size, 2), "int64")) for _ in range(3)]
        self.gaussian = spec.likelihood == "gaussian"
        # Adam is ~a dozen elementwise passes over every weight: most of an epoch's time
        # unless XLA fuses them into one loop.
        self._adam_fused = tf.function(self._adam, jit_compile=True)
        self._epoch = tf.function(self._epoch_impl, reduce_retracing=True)
        self._transfers: dict[int, tuple[Any, Any]] = {}  # per member trainer: load, unload

    # -- slots -------------------------------------------------------------------------------

    def load(self, slot: int, member: Trainer) -> None:
        """Put a freshly reset and configured one-at-a-time trainer into ``slot``: its weights
        (zero-padded to the largest latent dim), settings and seed states; Adam state zeroed."""
        self._transfer(member)[0](tf.constant(slot, "int32"))

    def unload(self, slot: int, member: Trainer) -> None:
        """Write ``slot``'s weights (and seed states) into ``member``, a one-at-a-time trainer
        of the member's latent dim, for the diagnostics and artifacts."""
        self._transfer(member)[1](tf.constant(slot, "int32"))

    def _transfer(self, member: Trainer) -> tuple[Any, Any]:
        """Compiled ``(load, unload)`` between a slot and ``member``'s variables: one call
        instead of ~90 eager ops per member (traced once per member trainer, i.e. per latent
        dim: :func:`~vae_search.models.get_trainer` caches one per architecture)."""
        key = id(member)
        if key not in self._transfers:
            targets = list(named_weights(member).items())
            streams = _seed_streams(member)
            dim = member.spec.latent_dim

            def load(slot: tf.Tensor) -> None:
                at = tf.reshape(slot, [1, 1])
                for name, var in targets:
                    value = tf.convert_to_tensor(var)
                    full = self.w[name].shape[1:]
                    pad = [[0, int(f) - int(s)] for s, f in zip(value.shape, full)]
                    if any(after for _, after in pad):
                        value = tf.pad(value, pad)
                    self.w[name].scatter_nd_update(at, value[None])
                for name in self.trainable:
                    zeros = tf.zeros((1, *self.w[name].shape[1:]), self.w[name].dtype)
                    self.m[name].scatter_nd_update(at, zeros)
                    self.v[name].scatter_nd_update(at, zeros)
                for mine, theirs in zip(self.streams, streams):
                    mine.scatter_nd_update(at, tf.convert_to_tensor(theirs)[None])
                self.step.scatter_nd_update(at, [0.0])
                self.beta.scatter_nd_update(at, [0.0])
                self.dims.scatter_nd_update(at, [dim])
                self.mask.scatter_nd_update(
                    at, tf.cast(tf.range(self.latent_dim) < dim, "float32")[None])
                self.live.scatter_nd_update(at, [1.0])

            def unload(slot: tf.Tensor) -> None:
                for name, var in targets:
                    part = tf.gather(self.w[name], slot)
                    var.assign(part[tuple(slice(0, int(s)) for s in var.shape)])
                for mine, theirs in zip(self.streams, streams):
                    theirs.assign(tf.gather(mine, slot))

            self._transfers[key] = (tf.function(load), tf.function(unload))
        return self._transfers[key]

    def free(self, slot: int) -> None:
        """The slot's trial ended: it stops learning until :meth:`load` refills it."""
        self.live[slot].assign(0.0)

    def member(self, slot: int, spec: TrainerSpec) -> Trainer:
        """A one-at-a-time trainer of ``spec`` holding ``slot``'s weights (:meth:`unload`)."""
        trainer = get_trainer(spec)
        self.unload(slot, trainer)
        return trainer

    def results(self, x_train: tf.Tensor, x_val: tf.Tensor, betas: Sequence[float], *,
                eval_seed: int, active_threshold: float,
                inner_steps: Sequence[int] | None = None) -> list[EpochResult]:
        """:meth:`run_epoch`, one :class:`EpochResult` per slot (an empty slot's is noise).

        Raises:
            ValueError: a slot asks for an aggressive epoch (``inner_steps``): its encoder and
                decoder step apart, which only a trial's own trainer does (:class:`OneSlot`).
        """
        if inner_steps is not None and any(inner_steps):
            raise ValueError("aggressive encoder training runs one trial at a time (OneSlot), "
                             "not in a population")
        rows = self.run_epoch(x_train, x_val, betas, eval_seed=eval_seed,
                              active_threshold=active_threshold)
        return [EpochResult.of_row(row) for row in rows]

    def run_epoch(self, x_train: tf.Tensor, x_val: tf.Tensor, betas: Sequence[float], *,
                  eval_seed: int, active_threshold: float) -> np.ndarray:
        """One epoch of every slot at its own beta; ``[P, 7]`` rows of (train loss, recon,
        kl, validation -ELBO, recon, kl, active units), as :class:`EpochResult` orders them."""
        return self._epoch(
            x_train, x_val, tf.constant(np.asarray(betas, dtype="float32")),
            tf.constant(eval_seed, dtype="int64"),
            tf.constant(active_threshold, dtype="float32"),
        ).numpy()

    # -- the model, batched over members (x: [P, B, N]) --------------------------------------

    def _dense(self, h: tf.Tensor, layer: str, bias: bool = True) -> tf.Tensor:
        kernel = self.w[f"{layer}/kernel"]
        if layer in self.masks:
            kernel = kernel * self.masks[layer]
        y = tf.linalg.matmul(h, kernel)
        return y + self.w[f"{layer}/bias"][:, None, :] if bias else y

    def posterior(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(mu, log sigma^2)``, ``[P, B, D]``, zero on each member's padded dims."""
        h = x
        for i in range(len(self.spec.hidden)):
            h = tf.nn.relu(self._dense(h, f"enc_{i}"))
        mask = self.mask[:, None, :]
        return self._dense(h, "z_mean") * mask, self._dense(h, "z_log_var") * mask

    def decode(self, z: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """The likelihood's parameters; MADE sees ``x`` through its masks (teacher forcing)."""
        if not self.made:
            h = z
            for i in range(len(self.spec.hidden)):
                h = tf.nn.relu(self._dense(h, f"dec_{i}"))
            return self._dense(h, "x_out")
        h = x
        for k in range(len(self.spec.hidden)):
            h = tf.nn.relu(self._dense(h, f"made_{k}") + self._dense(z, f"made_z_{k}", False))
        return (self._dense(h, "made_out") + self._dense(x, "made_direct", False)
                + self._dense(z, "made_z_out", False))

    def log_px(self, x: tf.Tensor, params: tf.Tensor) -> tf.Tensor:
        """``log p(x|z)`` per member and example, summed over the data dims: ``[P, B]``."""
        if self.gaussian:
            log_var = self.w["likelihood/log_var" if "likelihood/log_var" in self.w
                             else "likelihood/fixed_log_var"]
            log_var = log_var[:, None, :] if log_var.shape.rank == 2 else log_var[:, None, None]
            log_p = -0.5 * (LOG_2PI + log_var + tf.square(x - params) * tf.exp(-log_var))
        else:
            log_p = -(x * tf.nn.softplus(-params) + (1.0 - x) * tf.nn.softplus(params))
        return tf.reduce_sum(log_p, axis=2)

    def _noise(self, rows: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        """``eps ~ N(0, I)``, ``[P, rows, D]``: member p's ``(rows, d_p)`` draw from its seed,
        exactly as its one-at-a-time trainer draws it, zero-padded.

        A stateless draw fills its elements in order, so the ``(rows, d_p)`` draw is the first
        ``rows * d_p`` values of a flat ``rows * D`` draw with the same seed: one op per
        member, then one gather puts every member's values in place.
        """
        flat = tf.stack([tf.random.stateless_normal(tf.reshape(rows * self.latent_dim, [1]),
                                                    seed=seeds[p]) for p in range(self.size)])
        i = tf.range(rows)[None, :, None]
        j = tf.range(self.latent_dim)[None, None, :]
        index = tf.minimum(i * self.dims[:, None, None] + j, rows * self.latent_dim - 1)
        return tf.gather(flat, index, batch_dims=1) * self.mask[:, None, :]

    def terms(self, x: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per member and example: ``-log p(x|z)`` ``[P, B]`` and KL ``[P, B, D]``."""
        mu, log_var = self.posterior(x)
        z = (mu + tf.exp(0.5 * log_var) * self._noise(tf.shape(x)[1], seeds)) * self.mask[:, None]
        kl = 0.5 * (tf.square(mu) + tf.exp(log_var) - log_var - 1.0)
        return -self.log_px(x, self.decode(z, x)), kl

    # -- compiled bodies ---------------------------------------------------------------------

    def _train_batch(self, x: tf.Tensor) -> tf.Tensor:
        """One Adam step of every member on its own loss; ``[P, 3]`` (loss, recon, plain KL):
        ``recon_scale * mean(recon) + beta * sum_j m_j max(free_bits, mean_x KL_j)``."""
        seeds = _draw_seeds(self.streams[0])
        variables = [self.w[n] for n in self.trainable]
        with tf.GradientTape() as tape:
            recon, kl = self.terms(x, seeds)
            recon_term = self.w["vae/recon_scale"] * tf.reduce_mean(recon, axis=1)
            floor = tf.maximum(self.w["vae/free_bits"][:, None], tf.reduce_mean(kl, axis=1))
            loss = recon_term + self.beta * tf.reduce_sum(floor * self.mask, axis=1)
            total = tf.reduce_sum(self.live * loss)
        grads = tape.gradient(total, variables)
        self._adam_fused(grads)
        return tf.stack([loss, recon_term, tf.reduce_mean(tf.reduce_sum(kl, axis=2), axis=1)], 1)

    def _adam(self, grads: list[tf.Tensor]) -> None:
        """Keras' Adam update, with each member's own step count (bias correction)."""
        beta_1, beta_2, epsilon = _ADAM
        self.step.assign_add(self.live)
        t = tf.maximum(self.step, 1.0)
        lr = tf.constant(self.spec.learning_rate, "float32")
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
        for name, grad in zip(self.trainable, grads):
            var, m, v = self.w[name], self.m[name], self.v[name]
            a = tf.reshape(alpha, [-1] + [1] * (var.shape.rank - 1))
            m.assign_add((grad - m) * (1 - beta_1))
            v.assign_add((tf.square(grad) - v) * (1 - beta_2))
            var.assign_sub((m * a) / (tf.sqrt(v) + epsilon))

    def _train_epoch(self, x_train: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x_train)[0]
        batch = self.spec.batch_size
        steps = (n + batch - 1) // batch
        seeds = _draw_seeds(self.streams[1])  # keras.random.shuffle(range(n)), per member
        order = tf.argsort(tf.stack([tf.random.stateless_uniform([n], seed=seeds[p])
                                     for p in range(self.size)]))
        totals = tf.zeros((self.size, 3), "float32")
        for step in tf.range(steps):
            x = tf.gather(x_train, order[:, step * batch : (step + 1) * batch])
            if self.spec.dynamic_binarization:
                seeds = _draw_seeds(self.streams[2])
                noise = tf.stack([tf.random.stateless_uniform(tf.shape(x)[1:], seed=seeds[p])
                                  for p in range(self.size)])
                x = tf.cast(noise < x, x.dtype)
            totals += self._train_batch(x)
        return totals / tf.cast(steps, "float32")

    def _evaluate(self, x: tf.Tensor, eval_seed: tf.Tensor) -> tf.Tensor:
        """Validation at beta = 1, ``sum``: ``[P, 3]`` (-ELBO, recon, KL), nats per example,
        every member with the study's evaluation noise (the draw its own trainer makes)."""
        n = tf.shape(x)[0]
        steps = (n + EVAL_BATCH_SIZE - 1) // EVAL_BATCH_SIZE
        sums = tf.zeros((self.size, 2), "float32")
        for step in tf.range(steps):
            chunk = x[step * EVAL_BATCH_SIZE : (step + 1) * EVAL_BATCH_SIZE]
            chunk = tf.broadcast_to(chunk[None], tf.concat([[self.size], tf.shape(chunk)], 0))
            state = tf.stack([eval_seed, tf.cast(step, "int64") + 1])
            seed = tf.cast(tf.math.floormod(state, _SEED_MOD), "int32")
            recon, kl = self.terms(chunk, tf.tile(seed[None], [self.size, 1]))
            sums += tf.stack([tf.reduce_sum(recon, 1), tf.reduce_sum(kl, [1, 2])], 1)
        means = sums / tf.cast(n, "float32")
        return tf.stack([means[:, 0] + means[:, 1], means[:, 0], means[:, 1]], 1)

    def _epoch_impl(self, x_train: tf.Tensor, x_val: tf.Tensor, betas: tf.Tensor,
                    eval_seed: tf.Tensor, active_threshold: tf.Tensor) -> tf.Tensor:
        self.beta.assign(betas)
        train = self._train_epoch(x_train)
        val = self._evaluate(x_val, eval_seed)
        x = tf.broadcast_to(x_val[None], tf.concat([[self.size], tf.shape(x_val)], 0))
        mu, _ = self.posterior(x)
        active = tf.math.reduce_variance(mu, axis=1) > active_threshold
        n_active = tf.reduce_sum(tf.cast(active, "float32") * self.mask, axis=1)
        return tf.concat([train, val, n_active[:, None]], axis=1)


class OneSlot:
    """One slot holding a trial's own trainer: one trial at a time, for every family (a gru
    decoder, a user's builder), with the interface of :class:`PopulationTrainer`."""

    size = 1

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def load(self, slot: int, member: Trainer) -> None:
        self.trainer = member

    def free(self, slot: int) -> None:
        self.trainer = None

    def member(self, slot: int, spec: TrainerSpec) -> Trainer:
        assert self.trainer is not None
        return self.trainer

    def results(self, x_train: tf.Tensor, x_val: tf.Tensor, betas: Sequence[float], *,
                eval_seed: int, active_threshold: float,
                inner_steps: Sequence[int] | None = None) -> list[EpochResult]:
        assert self.trainer is not None
        return [self.trainer.run_epoch(x_train, x_val, beta=betas[0], eval_seed=eval_seed,
                                       active_threshold=active_threshold,
                                       inner_steps=inner_steps[0] if inner_steps else 0)]


Slots = OneSlot | PopulationTrainer  # what the search's loop trains its trials in
