"""The compiled trainer: a whole annealed epoch, and the validation ELBO, as single calls.

Small VAEs are bound by TensorFlow's per-op dispatch, not by arithmetic, so the epoch loop runs
inside one ``tf.function`` over data held as tensors. Trainers are cached per architecture
(:class:`TrainerSpec`) and re-initialised per trial (:class:`~vae_search.models.seeding.Reseeder`),
so a worker running hundreds of trials traces each architecture once. Everything a trial or an
epoch changes (beta, reduction, free bits, sigma^2, word dropout) is a variable, not a retrace.

An aggressive epoch (He et al. 2019) is a second compiled epoch, traced only by the trials that
use it: before each decoder step, encoder-only steps on random batches until the encoder's loss
stops falling (its mean over a window of :data:`INNER_WINDOW` steps is not below the previous
window's) or the cap of inner steps. The encoder steps with its own Adam (He et al. keep one
optimizer each), the decoder with the model's; neither touches the other's weights.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_search._tf import keras, tf
from vae_search.models.adam import FusedAdam
from vae_search.models.build import TrainerSpec, build_vae
from vae_search.models.seeding import Reseeder

ops = keras.ops

__all__ = [
    "EVAL_BATCH_SIZE",
    "EpochResult",
    "EvalResult",
    "Trainer",
    "clear_trainers",
    "configure_threads",
    "get_trainer",
]

EVAL_BATCH_SIZE = 2048  # rows per compiled evaluation step (bounds memory on large data)
IWAE_ROWS = 4096  # decoder rows (k draws x examples) per compiled IWAE step
MAX_CACHED_TRAINERS = 16  # distinct architectures kept per process
# Encoder steps per loss check in aggressive training. He et al. check every 15 steps of at
# most 100; our caps are smaller (search.inner_steps), so the window is too.
INNER_WINDOW = 5


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


@dataclass(frozen=True)
class EpochResult:
    """One fused epoch: training means at the epoch's beta, validation at beta = 1 (``sum``)."""

    train_loss: float  # mean over steps of the training loss
    train_recon: float
    train_kl: float
    neg_elbo: float  # validation -ELBO, nats per example
    recon: float
    kl: float
    active_units: int  # validation units with Var_x(E_q[z_u|x]) > the threshold

    @classmethod
    def of_row(cls, row: Any) -> EpochResult:
        """From the 7 numbers a compiled epoch returns, in field order."""
        loss, recon, kl, neg_elbo, val_recon, val_kl = (float(v) for v in row[:6])
        return cls(loss, recon, kl, neg_elbo, val_recon, val_kl, int(row[6]))


@dataclass(frozen=True)
class EvalResult:
    """Validation metrics at beta = 1, ``sum`` reduction, nats per example."""

    neg_elbo: float
    recon: float
    kl: float


class Trainer:
    """Compiled training and evaluation of one VAE architecture.

    Per trial: :meth:`reset` with the trial's seed and settings, then :meth:`run_epoch` (or
    :meth:`set_beta` + :meth:`train_epoch` + :meth:`evaluate`) per epoch.
    """

    def __init__(self, spec: TrainerSpec) -> None:
        self.spec = spec
        self.vae = build_vae(spec)
        self.vae.compile(optimizer=FusedAdam(spec.learning_rate))
        self.vae.optimizer.build(self.vae.trainable_weights)
        self.shuffle_seed = keras.random.SeedGenerator(0)
        self.binarize_seed = keras.random.SeedGenerator(0)
        self.eval_seed = keras.random.SeedGenerator(0)  # set per evaluation, not per trial
        self.reseeder = Reseeder(
            self.vae, self.vae.optimizer, learning_rate=spec.learning_rate,
            generators=(self.shuffle_seed, self.binarize_seed),
        )
        # Aggressive training's encoder-only steps (built here: its state is reset per trial).
        self.encoder_optimizer = FusedAdam(spec.learning_rate)
        self.encoder_optimizer.build(self.vae.encoder.trainable_weights)
        self.encoder_steps = tf.Variable(0, dtype="int64", trainable=False)  # inner steps taken
        # The Adam steps: all weights, the decoder's alone, the encoder's alone (aggressive).
        # With spec.xla each is an XLA cluster inside the compiled epoch (not the whole epoch:
        # that was 13x slower on this CPU); the weights are bound here, as arguments they would
        # be part of the trace key.
        vae, encoder = self.vae, self.vae.encoder.trainable_weights
        self._step = self._compiled(lambda x: vae.train_batch(x))
        self._decoder_step = self._compiled(lambda x: vae.train_batch(x, vae.decoder_weights))
        self._encoder_step = self._compiled(
            lambda x: vae.train_batch(x, encoder, self.encoder_optimizer))
        self._reset = tf.function(self._reset_impl)
        self._train_epoch = tf.function(self._train_epoch_impl, reduce_retracing=True)
        # Any number of rows, one graph: artifacts encode 8 rows, the diagnostics the whole split.
        self.dtype = "int32" if spec.vocab_size else "float32"  # token ids, or flat data
        rows = tf.TensorSpec([None, *spec.data_shape], self.dtype)
        self._evaluate = tf.function(self._evaluate_impl, input_signature=[rows])
        self._encode = tf.function(self._encode_impl, input_signature=[rows])
        self._iwae = tf.function(self._iwae_impl,
                                 input_signature=[rows, tf.TensorSpec([], "int32")])
        self._epoch = tf.function(self._epoch_impl, reduce_retracing=True)
        self._aggressive_epoch = tf.function(self._aggressive_epoch_impl, reduce_retracing=True)
        # Greedy autoregressive decoding calls the decoder once per position: eager, each call
        # re-dispatched every layer (a GRU sequence's artifact took ~1 s); compiled, ~ms.
        codes = tf.TensorSpec([None, spec.latent_dim], "float32")
        self._decoder_ar = tf.function(self._decoder_ar_impl, input_signature=[codes, rows])

    def _compiled(self, step: Any) -> Any:
        return tf.function(step, jit_compile=True) if self.spec.xla else step

    # -- per trial -------------------------------------------------------------------------

    def reset(self, seed: int, **settings: Any) -> None:
        """Fresh weights, optimizer state and noise streams, all derived from ``seed``, and the
        trial's training settings: one :meth:`configure`, with ``settings`` (its keywords; its
        defaults for those not given, so nothing is left from the trainer's previous trial)."""
        self._reset(tf.constant(seed, dtype="int64"))
        self.configure(**settings)

    def configure(self, *, reduction: str = "sum", free_bits: float = 0.0,
                  sigma2: float | None = None, word_dropout: float = 0.0,
                  use_code: bool = True) -> None:
        """A trial's training settings (variables: no retrace); ``use_code=False`` replaces
        q(z|x) by the prior, so z carries nothing about x (the decoder-only baseline)."""
        self.vae.set_reduction(reduction)
        self.vae.code_gate.assign(1.0 if use_code else 0.0)
        self.vae.free_bits.assign(float(free_bits))
        if sigma2 is not None:
            self.vae.likelihood.set_sigma2(sigma2)
        from vae_search.models.gru import set_word_dropout

        # Every WordDropout layer the decoder has (the gru decoder's, or one in your own model).
        if set_word_dropout(self.vae.decoder, word_dropout) == 0 and word_dropout:
            raise ValueError("word dropout needs a decoder with a WordDropout layer (gru)")
        self.vae.beta.assign(0.0)

    def set_beta(self, beta: float) -> None:
        self.vae.beta.assign(float(beta))

    def train_epoch(self, x_train: tf.Tensor) -> tuple[float, float, float]:
        """One shuffled pass over ``x_train``; returns mean (loss, recon, kl)."""
        loss, recon, kl = self._train_epoch(x_train)
        return float(loss), float(recon), float(kl)

    def evaluate(self, x: tf.Tensor, seed: int = 0) -> EvalResult:
        """-ELBO at beta = 1, ``sum`` reduction, with a fixed noise draw for comparability."""
        self.eval_seed.state.assign(np.array([seed, 1], dtype="int64"))
        neg_elbo, recon, kl = self._evaluate(x)
        return EvalResult(float(neg_elbo), float(recon), float(kl))

    def iwae(self, x: Any, k: int, seed: int = 0) -> np.ndarray:
        """The IWAE bound ``log (1/k) sum_s p(x, z_s) / q(z_s|x)`` per row of ``x``, nats.

        Its mean over rows estimates ``IWAE_k``: ``log p(x) >= IWAE_k >= IWAE_1 = ELBO`` in
        expectation (Burda et al. 2016). The draws come from ``seed`` (fixed for comparability);
        rows are taken ``max(1, IWAE_ROWS // k)`` at a time so ``k x rows`` fits in memory.
        """
        return self.bounds(x, k, seed)[0]

    def bounds(self, x: Any, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`iwae` and the ELBO on the same ``k`` draws (``mean_s log w_s``) per row.

        On the same draws ``IWAE_k >= ELBO_k`` holds exactly, row by row (Jensen), so the two
        can be shown side by side without the one-draw ELBO's noise putting it above the bound.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.eval_seed.state.assign(np.array([seed, 2], dtype="int64"))
        x = tf.convert_to_tensor(x, dtype=self.dtype)
        both = np.asarray(self._iwae(x, tf.constant(k, dtype="int32")))
        return both[:, 0], both[:, 1]

    def encode(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's ``(mu, logvar)`` for every row of ``x`` (for the diagnostics)."""
        mu, logvar = self._encode(tf.convert_to_tensor(x, dtype=self.dtype))
        return np.asarray(mu), np.asarray(logvar)

    def run_epoch(self, x_train: tf.Tensor, x_val: tf.Tensor, *, beta: float,
                  eval_seed: int = 0, active_threshold: float = 0.01,
                  inner_steps: int = 0) -> EpochResult:
        """:meth:`set_beta`, :meth:`train_epoch`, :meth:`evaluate` and the active-unit count,
        fused into one compiled call (the same numbers, one round-trip); ``inner_steps > 0``
        trains the epoch aggressively with at most that many encoder steps per decoder step."""
        args = (x_train, x_val, tf.constant(beta, dtype="float32"),
                tf.constant(eval_seed, dtype="int64"),
                tf.constant(active_threshold, dtype="float32"))
        if inner_steps > 0:
            out = self._aggressive_epoch(*args, tf.constant(inner_steps, dtype="int32"))
        else:
            out = self._epoch(*args)
        return EpochResult.of_row(out.numpy())

    def decode(self, z: np.ndarray) -> np.ndarray:
        """``p(x|z)``'s mean (factorized) or its greedy mode, position by position
        (autoregressive: each position fed the previous ones' modes)."""
        z = ops.convert_to_tensor(np.asarray(z, dtype="float32"))
        like = self.vae.likelihood
        if not self.vae.autoregressive:
            return np.asarray(like.mean(self.vae.decoder(z, training=False)))
        x = np.zeros((int(z.shape[0]), *self.spec.data_shape), dtype=self.dtype)
        for i in range(self.spec.data_shape[0]):
            params = self._decoder_ar(z, tf.convert_to_tensor(x))
            x[:, i] = np.asarray(like.mode(params))[:, i]
        return x

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """:meth:`decode` at ``E[z|x]``."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    # -- compiled bodies -------------------------------------------------------------------

    def _reset_impl(self, seed: tf.Tensor) -> None:
        self.reseeder.reset(seed)
        for var in self.encoder_optimizer.variables:
            var.assign(tf.zeros(var.shape, dtype=var.dtype))
        self.encoder_optimizer.learning_rate.assign(self.spec.learning_rate)
        self.encoder_steps.assign(0)

    def _rows(self, x_train: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """The training rows ``index``, binarized afresh under dynamic binarization."""
        x = tf.gather(x_train, index)
        if self.spec.dynamic_binarization:
            noise = keras.random.uniform(tf.shape(x), seed=self.binarize_seed)
            x = tf.cast(noise < x, x.dtype)
        return x

    def _train_epoch_impl(self, x_train: tf.Tensor, inner_steps: tf.Tensor | None = None
                          ) -> list[tf.Tensor]:
        n = tf.shape(x_train)[0]
        batch = self.spec.batch_size
        steps = (n + batch - 1) // batch  # the last, partial batch too, as Model.fit does
        order = keras.random.shuffle(tf.range(n), seed=self.shuffle_seed)
        totals = tf.zeros((3,), dtype="float32")
        for step in tf.range(steps):
            x = self._rows(x_train, order[step * batch : (step + 1) * batch])
            if inner_steps is None:
                totals += tf.stack(self._step(x))
            else:  # aggressive: the encoder first, then one step of the decoder alone
                self._encoder_steps(x_train, x, inner_steps)
                totals += tf.stack(self._decoder_step(x))
        return tf.unstack(totals / tf.cast(steps, "float32"))

    def _encoder_steps(self, x_train: tf.Tensor, x: tf.Tensor, cap: tf.Tensor) -> None:
        """Encoder-only steps, the first on ``x``, then on random batches of its size, until
        a window's mean loss is not below the previous window's, or ``cap`` steps."""
        n, rows = tf.shape(x_train)[0], tf.shape(x)[0]
        previous = tf.constant(float("inf"))
        window = tf.constant(0.0)
        taken = tf.constant(0)
        while taken < cap:
            loss, _, _ = self._encoder_step(x)
            window += loss
            taken += 1
            x = self._rows(x_train, keras.random.randint((rows,), 0, n, seed=self.shuffle_seed))
            if taken % INNER_WINDOW == 0:
                if window / INNER_WINDOW >= previous:
                    break
                previous = window / INNER_WINDOW
                window = tf.constant(0.0)
        self.encoder_steps.assign_add(tf.cast(taken, "int64"))

    def _evaluate_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        n = tf.shape(x)[0]
        steps = (n + EVAL_BATCH_SIZE - 1) // EVAL_BATCH_SIZE
        sums = tf.zeros((2,), dtype="float32")
        for step in tf.range(steps):
            chunk = x[step * EVAL_BATCH_SIZE : (step + 1) * EVAL_BATCH_SIZE]
            recon, kl = self.vae.terms(chunk, training=False, seed=self.eval_seed)
            sums += tf.stack([ops.sum(recon), ops.sum(kl)])
        means = sums / tf.cast(n, "float32")
        return means[0] + means[1], means[0], means[1]

    def _iwae_impl(self, x: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[0]
        per_step = tf.maximum(1, IWAE_ROWS // k)
        steps = (n + per_step - 1) // per_step
        out = tf.TensorArray("float32", size=steps, infer_shape=False)
        log_k = tf.math.log(tf.cast(k, "float32"))
        for step in tf.range(steps):
            log_w = self.vae.log_weights(x[step * per_step : (step + 1) * per_step], k,
                                         self.eval_seed)
            out = out.write(step, tf.stack(
                [tf.reduce_logsumexp(log_w, axis=0) - log_k, tf.reduce_mean(log_w, axis=0)],
                axis=1))
        return out.concat()  # (rows, 2): IWAE_k, ELBO_k

    def _decoder_ar_impl(self, z: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return self.vae.decoder([z, x], training=False)

    def _encode_impl(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.vae.encoder(x, training=False)

    def _aggressive_epoch_impl(self, x_train: tf.Tensor, x_val: tf.Tensor, beta: tf.Tensor,
                               eval_seed: tf.Tensor, active_threshold: tf.Tensor,
                               inner_steps: tf.Tensor) -> tf.Tensor:
        return self._epoch_impl(x_train, x_val, beta, eval_seed, active_threshold, inner_steps)

    def _epoch_impl(self, x_train: tf.Tensor, x_val: tf.Tensor, beta: tf.Tensor,
                    eval_seed: tf.Tensor, active_threshold: tf.Tensor,
                    inner_steps: tf.Tensor | None = None) -> tf.Tensor:
        self.vae.beta.assign(beta)
        loss, recon, kl = self._train_epoch_impl(x_train, inner_steps)
        self.eval_seed.state.assign(tf.stack([eval_seed, tf.constant(1, dtype="int64")]))
        neg_elbo, val_recon, val_kl = self._evaluate_impl(x_val)
        mu, _ = self._encode_impl(x_val)
        variances = tf.math.reduce_variance(mu, axis=0)
        n_active = tf.reduce_sum(tf.cast(variances > active_threshold, "float32"))
        return tf.stack([loss, recon, kl, neg_elbo, val_recon, val_kl, n_active])


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
