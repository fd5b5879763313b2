"""The VAE families and their compiled trainer.

* :mod:`~vae_search.models.vae`: sampling, KL, the annealed loss (shared by every family);
* :mod:`~vae_search.models.likelihoods`: Bernoulli, Gaussian (learned or fixed variance),
  categorical;
* one module per decoder family: :mod:`~vae_search.models.dense` (factorized),
  :mod:`~vae_search.models.made` (autoregressive over data dims),
  :mod:`~vae_search.models.gru` (recurrent over tokens), :mod:`~vae_search.models.builder`
  (your own);
* :mod:`~vae_search.models.build` (which model a trial trains), :mod:`~vae_search.models.seeding`
  (every random stream from one seed) and :mod:`~vae_search.models.trainer` (compiled epochs).

Importing this package imports TensorFlow.
"""

from __future__ import annotations

from vae_search.models.build import TrainerSpec, build_vae, spec_for
from vae_search.models.trainer import (
    EVAL_BATCH_SIZE,
    EpochResult,
    EvalResult,
    Trainer,
    clear_trainers,
    configure_threads,
    get_trainer,
)
from vae_search.models.vae import VAE, Sampling, kl_divergence

__all__ = [
    "EVAL_BATCH_SIZE",
    "EpochResult",
    "EvalResult",
    "Sampling",
    "Trainer",
    "TrainerSpec",
    "VAE",
    "build_vae",
    "clear_trainers",
    "configure_threads",
    "get_trainer",
    "kl_divergence",
    "spec_for",
]
