"""Aggressive encoder training (He et al. 2019) in the compiled trainer: the encoder and the
decoder step apart, each leaving the other's weights bitwise untouched."""

from __future__ import annotations

import numpy as np
import pytest

from vae_search._tf import tf
from vae_search.models import Trainer, TrainerSpec
from vae_search.models.trainer import INNER_WINDOW

RNG = np.random.default_rng(0)
X = (RNG.random((200, 16)) < 0.3).astype("float32")


@pytest.fixture(scope="module", params=[False, True], ids=["graph", "xla"])
def trainer(request) -> Trainer:
    """The trainer's own steps, as the plain graph runs them and as XLA clusters (train.xla)."""
    return Trainer(TrainerSpec(decoder="dense", data_shape=(16,), hidden=(24,), latent_dim=3,
                               likelihood="gaussian", batch_size=50, learning_rate=1e-2,
                               xla=request.param))


def snapshot(weights) -> list[np.ndarray]:
    return [np.asarray(w.numpy()) for w in weights]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_encoder_steps_leave_the_decoder_bitwise_untouched(trainer):
    trainer.reset(1)
    trainer.set_beta(1.0)
    vae = trainer.vae
    decoder = vae.decoder_weights
    assert vae.likelihood.trainable_weights  # the learned variance is on the decoder's side
    before_dec, before_enc = snapshot(decoder), snapshot(vae.encoder.trainable_weights)
    before_main = snapshot(vae.optimizer.variables)
    for _ in range(3):
        trainer._encoder_step(tf.constant(X[:50]))
    assert same(snapshot(decoder), before_dec)
    assert same(snapshot(vae.optimizer.variables), before_main)  # the decoder's Adam too
    assert not same(snapshot(vae.encoder.trainable_weights), before_enc)


def test_a_decoder_step_leaves_the_encoder_bitwise_untouched(trainer):
    trainer.reset(2)
    vae = trainer.vae
    before_enc, before_dec = snapshot(vae.encoder.trainable_weights), snapshot(vae.decoder_weights)
    trainer._decoder_step(tf.constant(X[:50]))
    assert same(snapshot(vae.encoder.trainable_weights), before_enc)
    assert not same(snapshot(vae.decoder_weights), before_dec)


def test_an_aggressive_epoch_takes_capped_encoder_steps_and_is_reproducible(trainer):
    xt, xv = tf.constant(X[:150]), tf.constant(X[150:])
    steps = 3  # 150 rows, batches of 50
    runs = []
    for _ in range(2):
        trainer.reset(3)
        result = trainer.run_epoch(xt, xv, beta=0.5, inner_steps=12)
        runs.append((result, int(trainer.encoder_steps.numpy())))
    (result, taken), (again, taken_again) = runs
    assert result == again and taken == taken_again  # seeded: the same trial twice
    # At least one window per decoder step, at most the cap.
    assert steps * INNER_WINDOW <= taken <= steps * 12
    trainer.reset(3)
    assert int(trainer.encoder_steps.numpy()) == 0
    normal = trainer.run_epoch(xt, xv, beta=0.5)
    assert int(trainer.encoder_steps.numpy()) == 0 and normal != result
