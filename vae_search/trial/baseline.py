"""What collapse costs: the study's decoder trained with no latent code.

A collapsed VAE's decoder ignores z, so its ELBO is what the same decoder achieves alone.
:func:`decoder_only_nll` trains the study's architecture with q(z|x) replaced by the prior
(the VAE's ``code_gate``): the KL is exactly 0 and the decoder sees draws ``z ~ N(0, I)`` that
carry nothing about x, so it learns the best z-independent model it can: for ``made`` and
``gru`` the decoder-only autoregressive model, for ``dense`` the per-dim marginals, for a user
builder whatever its decoder does without information in z. At the optimum this equals the
decoder fed ``z = 0``, and it trains the same way as a collapsed trial; ``z = 0`` itself was
tried and rejected: on the dense family a zero input with zero-initialised biases leaves every
ReLU unit dead, only the output bias learns, and that baseline scored 5 to 7 nats *below*
collapsed trials of a tiny digits study (a user's decoder can have the same trap).

Its validation NLL (same likelihood, split, fixed noise draw, epochs, batch size and learning
rate; ``sum`` reduction; the last epoch, as a trial's value) is stored once per study as the
user attr ``decoder_only_nll``. A trial's distance from it, ``ELBO - (-decoder_only_nll)``, is
what its latent code buys; a collapsed trial sits near 0.

When it runs (:func:`owes_baseline`): at the start of trial 0, which exactly one worker runs
(the storage numbers trials atomically), so there is no race in the normal case. If trial 0
ended without storing it (interrupted or failed as stale), the next trial to start computes
it; several workers starting at that instant may then each compute it, which only costs
time: the value is a deterministic function of the configuration and the study seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vae_search import keys

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from vae_search._tf import tf
    from vae_search.config.schema import StudyConfig
    from vae_search.data.datasets import Dataset

__all__ = ["decoder_only_nll", "owes_baseline", "stored_baseline"]


def stored_baseline(study: optuna.Study) -> float | None:
    """The study's ``decoder_only_nll`` (``None`` until it is computed)."""
    value = study.user_attrs.get(keys.STUDY_ATTR_DECODER_ONLY_NLL)
    return float(value) if isinstance(value, (int, float)) else None


def owes_baseline(trial: optuna.Trial) -> bool:
    """Whether ``trial`` should compute the baseline: it is missing and no one is on it.

    Trial 0 owes it; a later trial owes it only if trial 0 is no longer running (it ended
    without storing it).
    """
    from optuna.trial import TrialState

    if stored_baseline(trial.study) is not None:
        return False
    if trial.number == 0:
        return True
    running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return all(t.number != 0 for t in running)


def decoder_only_nll(config: StudyConfig, dataset: Dataset, x_train: tf.Tensor,
                     x_val: tf.Tensor, *,
                     between_epochs: Callable[[], None] | None = None) -> float:
    """Train the study's decoder without a latent code; its validation NLL, nats/example.

    The architecture is the smallest searched latent dim's (z carries nothing, so the size
    hardly matters, and that trainer is usually cached); a fixed Gaussian variance is
    ``model.sigma2``. ``between_epochs`` is called after every epoch: it is as long as a trial,
    and a stop signal must not wait for all of it.
    """
    from vae_search.models import get_trainer, spec_for
    from vae_search.trial.space import sigma2_of

    trainer = get_trainer(spec_for(config, dataset, min(config.search.latent_dim)))
    trainer.reset(config.seed, sigma2=sigma2_of(config.model), use_code=False)
    nll = float("nan")
    for _ in range(config.train.epochs):
        nll = trainer.run_epoch(x_train, x_val, beta=0.0, eval_seed=config.seed).recon
        if between_epochs is not None:
            between_epochs()
    trainer.configure()  # the code back on for the next user of this cached trainer
    return nll
