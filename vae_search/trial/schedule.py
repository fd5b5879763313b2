"""KL weight schedules, beta(epoch), in pure Python (no TensorFlow).

Epochs are 0-based. The linear schedule has exact, tested semantics::

    beta(e) = 0                                     for e < klstart
    beta(e) = min(1, (e - klstart + 1) / annealtime)  for e >= klstart, annealtime > 0
    beta(e) = 1                                     for e >= klstart, annealtime == 0

so the first KL epoch already has a non-zero weight and beta reaches exactly 1 at epoch
``klstart + annealtime - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CyclicalSchedule",
    "LinearSchedule",
    "Schedule",
    "betas",
    "full_beta_epoch",
    "linear_beta",
]


def linear_beta(epoch: int, klstart: int, annealtime: int) -> float:
    """The KL weight of the linear warm-up schedule at a 0-based epoch."""
    if epoch < 0 or klstart < 0 or annealtime < 0:
        raise ValueError("epoch, klstart and annealtime must be >= 0")
    if epoch < klstart:
        return 0.0
    if annealtime == 0:
        return 1.0
    return min(1.0, (epoch - klstart + 1) / annealtime)


class Schedule(Protocol):
    """Anything that maps a 0-based epoch to a KL weight in [0, 1]."""

    def __call__(self, epoch: int) -> float: ...


@dataclass(frozen=True)
class LinearSchedule:
    """Reconstruction only for ``klstart`` epochs, then a linear ramp over ``annealtime``."""

    klstart: int
    annealtime: int

    def __call__(self, epoch: int) -> float:
        return linear_beta(epoch, self.klstart, self.annealtime)


@dataclass(frozen=True)
class CyclicalSchedule:
    """Cyclical annealing (Fu et al. 2019) after ``klstart`` epochs of warm-up.

    The ``epochs - klstart`` epochs after warm-up are split into ``cycles`` cycles of
    ``L = (epochs - klstart) // cycles`` epochs (the remainder joins the last one). In each cycle
    beta ramps linearly over ``ramp = max(1, round(ratio * L))`` epochs, then holds at 1, so
    every cycle, the last included, ends at beta = 1.
    """

    klstart: int
    cycles: int
    ratio: float
    epochs: int

    def __post_init__(self) -> None:
        if not 0 <= self.klstart < self.epochs:
            raise ValueError("need 0 <= klstart < epochs")
        if self.cycles < 1 or not 0 < self.ratio <= 1:
            raise ValueError("need cycles >= 1 and 0 < ratio <= 1")

    @property
    def cycle_length(self) -> int:
        span = self.epochs - self.klstart
        return span // min(self.cycles, span)

    @property
    def ramp(self) -> int:
        return max(1, round(self.ratio * self.cycle_length))

    def __call__(self, epoch: int) -> float:
        if epoch < self.klstart:
            return 0.0
        span = self.epochs - self.klstart
        n_cycles = min(self.cycles, span)
        length = self.cycle_length
        offset = epoch - self.klstart
        cycle = min(offset // length, n_cycles - 1)
        position = offset - cycle * length
        return min(1.0, (position + 1) / self.ramp)


def betas(schedule: Schedule, epochs: int) -> list[float]:
    """The schedule's KL weight for each of ``epochs`` epochs."""
    return [schedule(e) for e in range(epochs)]


def full_beta_epoch(schedule: Schedule, epochs: int) -> int:
    """The first epoch from which beta stays at 1 until the end of training.

    Pruning is only fair from here on: before it the KL is (partly) unconstrained and the
    beta = 1 ELBO looks worse than it will be. Returns ``epochs`` if the schedule never settles.
    """
    first = epochs
    for epoch in range(epochs - 1, -1, -1):
        if schedule(epoch) < 1.0:
            break
        first = epoch
    return first
