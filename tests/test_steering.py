"""Each family's beta and aggressive mode, epoch by epoch, and how it combines with the
klstart/annealtime warm-up."""

from __future__ import annotations

import pytest

from vae_search.trial.schedule import LinearSchedule, betas, full_beta_epoch
from vae_search.trial.space import TrialParams
from vae_search.trial.steering import Steering


def params(family: str, **kw) -> TrialParams:
    return TrialParams(klstart=2, annealtime=4, latent_dim=4, reduction="sum", family=family,
                       **kw)


def drive(steering: Steering, kls, information=None) -> list[float]:
    out = []
    for epoch, kl in enumerate(kls):
        out.append(steering.beta)
        steering.observe(kl, None if information is None else information[epoch])
    return out


@pytest.mark.parametrize("family", ["warmup", "free_bits", "word_dropout", "aggressive"])
def test_the_model_side_families_keep_the_warm_up_beta(family):
    steering = Steering.of(params(family, aggressive_epochs=2, inner_steps=5), 10)
    mi = [float(e) for e in range(10)]
    assert drive(steering, [5.0] * 10, mi) == betas(LinearSchedule(2, 4), 10)
    assert steering.prune_ready == full_beta_epoch(LinearSchedule(2, 4), 10) == 5


def test_setpoint_is_the_warm_up_while_the_kl_is_above_target_then_holds_beta_lower():
    steering = Steering.of(params("setpoint", kl_target=10.0), 12)
    got = drive(steering, [30.0] * 6 + [2.0] * 6)
    assert got[:6] == betas(LinearSchedule(2, 4), 12)[:6]  # 0, 0, the ramp to 1
    assert got[6] == 1.0 and got[7] < 1.0 and got[8] < got[7]  # KL under target: backs off
    assert steering.prune_ready == 12  # controlled beta: never pruned


def test_setpoint_ignores_the_warm_up_epochs_kl():
    steering = Steering.of(params("setpoint", kl_target=10.0), 6)
    drive(steering, [0.0, 0.0])  # beta = 0 epochs: the controller is not yet on
    assert steering.controller is not None and steering.controller.integral == 1.0


def test_aggressive_mode_ends_when_information_stops_rising_or_at_its_cap():
    rising_then_flat = Steering.of(params("aggressive", aggressive_epochs=5, inner_steps=7), 10)
    inner = []
    for mi in [0.1, 0.5, 0.9, 0.8, 1.2, 1.3]:
        inner.append(rising_then_flat.inner)
        rising_then_flat.observe(1.0, mi if inner[-1] else None)
    assert inner == [7, 7, 7, 7, 0, 0]  # the fourth epoch's I(x;z) fell: normal from then on
    capped = Steering.of(params("aggressive", aggressive_epochs=2, inner_steps=7), 10)
    assert capped.inner == 7
    capped.observe(1.0, 0.1)
    capped.observe(1.0, 0.2)
    assert capped.inner == 0
    with pytest.raises(ValueError, match="I\\(x;z\\)"):
        Steering.of(params("aggressive", aggressive_epochs=2, inner_steps=7), 10).observe(1.0)
