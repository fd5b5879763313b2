"""A KL set-point held by a PI controller on beta (ControlVAE, Shao et al. 2020), pure Python.

After each epoch the controller reads the measured KL and sets the next epoch's beta::

    e_k    = clip((KL_k - target) / target, -1, 1)     relative error: > 0 when KL is too high
    I_k+1  = clip(I_k + ki * e_k, low, high_k)          the integral, in units of beta
    beta   = clip(kp * e_k + I_k+1, low, high_k)

A KL above its target raises beta (more pressure on the code), one below lowers it. ``high_k``
may change per epoch (the warm-up ramp caps beta, see :mod:`~vae_search.trial.steering`).

**Anti-windup.** While the output is pinned at a bound, an integrator that kept summing the
error would have to unwind for as many epochs before beta moved again. Here the integrator is
clamped to the output's own range ``[low, high_k]`` at every update (ControlVAE's published
check compares a beta that is already clipped, so it never fires), so the first epoch whose
error changes sign moves beta off its bound. An integrator pinned at its upper bound follows
that bound when it rises while the error still asks for more beta: under a rising cap (the
warm-up ramp), beta is exactly the cap for as long as the KL stays above the target.

**Gains are fixed, not searched.** The target is the remedy's one knob; the gains only say how
fast it is reached. The error is relative to the target, so one pair works from a 1-nat to a
50-nat set-point; they were chosen on a lagged toy plant and checked on a small VAE
(tests/test_control.py) to settle within about 12 epochs, overshooting by at most a few per cent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_KI", "DEFAULT_KP", "PIController"]

DEFAULT_KP = 0.1  # beta per unit relative error: a small proportional kick
DEFAULT_KI = 0.2  # beta per epoch per unit relative error: the integral does the holding


@dataclass
class PIController:
    """beta from the measured KL, toward ``target`` nats.

    Args:
        target: The KL set-point, nats per example (> 0).
        kp: Proportional gain.
        ki: Integral gain (per update).
        low: The smallest beta.
        high: The largest beta (each :meth:`update` may lower it for that update).
        beta: The output before any measurement (the integrator starts here: no bump when the
            controller takes over from a schedule at this value).
    """

    target: float
    kp: float = DEFAULT_KP
    ki: float = DEFAULT_KI
    low: float = 0.0
    high: float = 1.0
    beta: float = 1.0
    integral: float = float("nan")  # in units of beta; starts at ``beta``
    top: float = float("nan")  # the last update's upper bound; starts at ``high``

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"the KL target must be > 0, got {self.target}")
        if not self.low <= self.high:
            raise ValueError(f"need low <= high, got [{self.low}, {self.high}]")
        self.beta = min(max(self.beta, self.low), self.high)
        if self.integral != self.integral:  # NaN: not given
            self.integral = self.beta
        if self.top != self.top:
            self.top = self.high

    def error(self, kl: float) -> float:
        """The relative error ``(KL - target) / target``, clipped to [-1, 1]."""
        return min(1.0, max(-1.0, (kl - self.target) / self.target))

    def update(self, kl: float, *, high: float | None = None) -> float:
        """Read one measured KL (nats per example); returns the next beta.

        Args:
            kl: The KL measured under the current beta.
            high: This update's upper bound on beta (default: the controller's ``high``).
        """
        top = self.high if high is None else max(self.low, min(high, self.high))
        e = self.error(kl)
        pinned = self.integral >= self.top and e > 0  # at the old bound, asking for more
        integral = top if pinned else self.integral + self.ki * e
        self.integral = min(max(integral, self.low), top)  # anti-windup: never past a bound
        self.beta = min(max(self.kp * e + self.integral, self.low), top)
        self.top = top
        return self.beta
