"""What each epoch of one trial trains with, by remedy family: its beta, and whether its
encoder is trained aggressively. Pure Python (no TensorFlow).

Every family starts with the trial's warm-up: ``beta = 0`` for ``klstart`` epochs. Then:

* ``warmup``, ``free_bits``, ``word_dropout``: the linear ramp over ``annealtime`` epochs (free
  bits and word dropout are settings of the model, not of beta);
* ``cyclical``: the cyclical schedule's cycles (Fu et al. 2019);
* ``setpoint``: a PI controller (:class:`~vae_search.trial.control.PIController`) reads each
  epoch's validation KL and sets the next beta toward the KL target, never above the ramp:
  ``beta(e) = min(ramp(e), PI)``. While the KL exceeds the target the trial is exactly a
  warm-up trial; the controller only ever holds beta lower. Its beta is not planned, so such a
  trial is never pruned (the pruner may only judge a trial at beta = 1);
* ``aggressive``: the ramp, and from epoch 0 aggressive encoder training (He et al. 2019)
  while the mutual information I(x;z) still rises epoch over epoch, for at most
  ``aggressive_epochs`` epochs; then normal training.

The measured KL is the validation split's closed-form KL (nats per example): a deterministic
function of the weights, so the controller reads no sampling noise and a retrained trial
(``vae-search export``) takes the same betas.
"""

from __future__ import annotations

from dataclasses import dataclass

from vae_search.trial.control import PIController
from vae_search.trial.schedule import Schedule, full_beta_epoch
from vae_search.trial.space import TrialParams

__all__ = ["Steering"]


@dataclass
class Steering:
    """One trial's per-epoch settings; :meth:`observe` after each epoch moves it on.

    Args:
        schedule: The scheduled beta (``setpoint``: the cap on the controller's beta).
        epochs: The trial's epochs.
        klstart: The last warm-up epoch + 1 (the controller takes over there).
        controller: ``setpoint``: the PI controller; else ``None``.
        aggressive_epochs: Epochs of aggressive training still allowed (0: none).
        inner_steps: Aggressive: the cap on encoder steps per decoder step.
    """

    schedule: Schedule
    epochs: int
    klstart: int = 0
    controller: PIController | None = None
    aggressive_epochs: int = 0
    inner_steps: int = 0
    epoch: int = 0  # epochs observed
    last_information: float = float("-inf")  # I(x;z) after the last aggressive epoch

    @classmethod
    def of(cls, params: TrialParams, epochs: int) -> Steering:
        """The steering of a trial with ``params`` trained for ``epochs`` epochs."""
        controller = (PIController(params.kl_target) if params.family == "setpoint" else None)
        aggressive = params.family == "aggressive" and params.inner_steps > 0
        return cls(schedule=params.make_schedule(epochs), epochs=epochs, klstart=params.klstart,
                   controller=controller,
                   aggressive_epochs=params.aggressive_epochs if aggressive else 0,
                   inner_steps=params.inner_steps if aggressive else 0)

    @property
    def beta(self) -> float:
        """The KL weight of the next epoch."""
        scheduled = self.schedule(self.epoch)
        if self.controller is None or self.epoch < self.klstart:
            return scheduled
        return min(scheduled, self.controller.beta)

    @property
    def inner(self) -> int:
        """The next epoch's cap on encoder steps per decoder step (0: normal training)."""
        return self.inner_steps if self.aggressive_epochs > 0 else 0

    @property
    def prune_ready(self) -> int:
        """The first epoch from which beta is planned to stay at 1 (``epochs``: never, as for
        a set-point trial, whose beta the controller sets as it goes)."""
        if self.controller is not None:
            return self.epochs
        return full_beta_epoch(self.schedule, self.epochs)

    def observe(self, kl: float, information: float | None = None) -> None:
        """Record the epoch just trained.

        Args:
            kl: Its validation KL, nats per example (read by the set-point controller).
            information: I(x;z) after an aggressive epoch (required then, else ignored).
        """
        epoch, aggressive = self.epoch, self.inner > 0
        self.epoch += 1
        if self.controller is not None and epoch >= self.klstart:
            self.controller.update(kl, high=self.schedule(self.epoch))
        if aggressive:
            if information is None:
                raise ValueError("an aggressive epoch needs its I(x;z)")
            # He et al.'s rule: aggressive training ends once I(x;z) stops rising.
            rising = information > self.last_information
            self.last_information = information
            self.aggressive_epochs = self.aggressive_epochs - 1 if rising else 0
