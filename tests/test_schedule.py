from __future__ import annotations

import pytest

from vae_search.trial.schedule import (
    CyclicalSchedule,
    LinearSchedule,
    betas,
    full_beta_epoch,
    linear_beta,
)


def test_linear_warmup_then_ramp_exact_values():
    # klstart=3, annealtime=4: 0,0,0 then 1/4, 2/4, 3/4, 1, 1
    assert betas(LinearSchedule(3, 4), 9) == [0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_klstart_zero_starts_with_nonzero_weight():
    assert linear_beta(0, 0, 5) == pytest.approx(0.2)
    assert linear_beta(4, 0, 5) == 1.0


def test_annealtime_zero_is_a_step_at_klstart():
    assert betas(LinearSchedule(2, 0), 4) == [0.0, 0.0, 1.0, 1.0]
    assert betas(LinearSchedule(0, 0), 3) == [1.0, 1.0, 1.0]


def test_annealtime_one_is_also_a_step():
    assert betas(LinearSchedule(2, 1), 4) == [0.0, 0.0, 1.0, 1.0]


def test_last_epoch_reaches_one_when_klstart_plus_annealtime_equals_epochs():
    epochs = 10
    schedule = LinearSchedule(4, 6)
    assert schedule(epochs - 1) == 1.0
    assert schedule(epochs - 2) < 1.0
    assert full_beta_epoch(schedule, epochs) == epochs - 1


def test_full_beta_epoch():
    assert full_beta_epoch(LinearSchedule(3, 4), 10) == 6
    assert full_beta_epoch(LinearSchedule(0, 0), 10) == 0
    assert full_beta_epoch(LinearSchedule(5, 0), 10) == 5
    # never settles within the run
    assert full_beta_epoch(LinearSchedule(8, 5), 10) == 10


def test_negative_arguments_rejected():
    with pytest.raises(ValueError):
        linear_beta(-1, 0, 1)


def test_cyclical_cycles_ramp_and_end_at_one():
    s = CyclicalSchedule(klstart=2, cycles=2, ratio=0.5, epochs=10)
    # 8 epochs after warm-up, 2 cycles of 4, ramp 2
    assert s.cycle_length == 4 and s.ramp == 2
    assert betas(s, 10) == [0, 0, 0.5, 1, 1, 1, 0.5, 1, 1, 1]
    assert full_beta_epoch(s, 10) == 7


def test_cyclical_remainder_joins_last_cycle_and_ends_at_one():
    s = CyclicalSchedule(klstart=0, cycles=3, ratio=0.9, epochs=11)
    values = betas(s, 11)
    assert values[-1] == 1.0
    assert s.cycle_length == 3
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_cyclical_more_cycles_than_epochs_is_clamped():
    s = CyclicalSchedule(klstart=8, cycles=5, ratio=1.0, epochs=10)
    assert betas(s, 10)[8:] == [1.0, 1.0]
