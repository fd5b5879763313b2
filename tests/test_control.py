"""The KL set-point's PI controller: tracking on a toy plant with a known KL response, a working
anti-windup, and tracking on a small real VAE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_search.trial.control import PIController


def plant(beta_to_kl, target: float, *, epochs: int = 30, lag: float = 0.5,
          beta: float = 1.0, kl: float = 40.0) -> tuple[list[float], list[float]]:
    """A first-order lagged plant: each epoch the KL moves ``lag`` of the way to its
    equilibrium ``beta_to_kl(beta)``; returns the KLs and betas, epoch by epoch."""
    pi = PIController(target, beta=beta)
    kls, betas = [], []
    for _ in range(epochs):
        kl += lag * (beta_to_kl(beta) - kl)
        beta = pi.update(kl)
        kls.append(kl)
        betas.append(beta)
    return kls, betas


@pytest.mark.parametrize("target", [3.0, 10.0, 20.0, 35.0])
def test_the_controller_holds_its_set_point_on_a_lagged_toy_plant(target):
    # KL(beta) = 40 exp(-3 beta): 40 nats at beta = 0, 2 at beta = 1; the beta that holds the
    # target is log(40 / target) / 3.
    kls, betas = plant(lambda b: 40 * math.exp(-3 * b), target)
    assert abs(kls[-1] - target) < 0.01 * target
    assert max(abs(k - target) for k in kls[15:]) < 0.05 * target  # settled by epoch 15
    assert betas[-1] == pytest.approx(math.log(40 / target) / 3, rel=0.01)


def test_an_unreachable_set_point_pins_beta_at_its_bound():
    # Every KL the plant can reach (2..40 nats) is above 1 nat: beta stays at 1.
    kls, betas = plant(lambda b: 40 * math.exp(-3 * b), 1.0)
    assert betas[-5:] == [1.0] * 5 and kls[-1] == pytest.approx(2.0, rel=0.01)


def test_anti_windup_leaves_saturation_at_the_first_sign_change():
    pi = PIController(10.0, beta=1.0)
    for _ in range(200):  # far too much KL for 200 epochs: beta pinned at 1
        assert pi.update(30.0) == 1.0
    assert pi.integral <= 1.0  # nothing wound up
    # The KL drops below the target once: beta leaves its bound at once (a wound-up
    # integrator would hold it at 1 for ~200 more epochs).
    assert pi.update(5.0) < 1.0
    low = PIController(10.0, beta=0.0)
    for _ in range(200):
        assert low.update(0.0) == 0.0
    assert low.update(20.0) > 0.0


def test_a_lower_cap_bounds_beta_and_the_integrator():
    pi = PIController(10.0, beta=1.0)
    assert pi.update(30.0, high=0.2) == 0.2  # the warm-up ramp caps it
    assert pi.integral <= 0.2
    assert pi.update(30.0, high=0.45) == 0.45  # the output follows the ramp up, exactly
    assert pi.update(30.0, high=0.7) == 0.7  # (faster than the integral gain alone would)
    assert pi.update(10.0, high=0.95) == 0.7  # on target: held
    assert pi.update(5.0, high=1.0) < 0.7  # below it: backs off at once


def test_the_error_is_relative_and_clipped():
    pi = PIController(4.0)
    assert pi.error(6.0) == pytest.approx(0.5)
    assert pi.error(400.0) == 1.0 and pi.error(0.0) == -1.0
    with pytest.raises(ValueError):
        PIController(0.0)


def test_the_controller_holds_a_small_vaes_kl_at_its_set_point():
    """Integration: a Gaussian VAE on 4-factor data; its KL at beta = 1 is ~7 nats, and the
    controller holds 15 (a set-point above what beta = 1 keeps: the remedy's purpose)."""
    from vae_search._tf import tf
    from vae_search.models import Trainer, TrainerSpec

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4)) @ rng.standard_normal((4, 16))
    x = (x + 0.3 * rng.standard_normal((600, 16))).astype("float32")
    trainer = Trainer(TrainerSpec(decoder="dense", data_shape=(16,), hidden=(32,), latent_dim=4,
                                  likelihood="gaussian", batch_size=50, learning_rate=1e-2))
    trainer.reset(0)
    xt, xv = tf.constant(x[:500]), tf.constant(x[500:])
    pi, beta, kls = PIController(15.0), 1.0, []
    for _ in range(30):
        kl = trainer.run_epoch(xt, xv, beta=beta).kl
        beta = pi.update(kl)
        kls.append(kl)
    assert kls[0] < 10  # it starts far below the set-point
    assert abs(np.mean(kls[-10:]) - 15.0) < 1.0  # and holds it within a nat
    assert 0.0 < beta < 1.0
