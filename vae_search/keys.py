"""Names shared across modules: user-attr keys, metric names, figure ids (defined once).

Pure constants: importing this module is free (no TensorFlow, no Optuna).
"""

from __future__ import annotations

__all__ = [
    "ATTR_ACTIVE_UNITS",
    "ATTR_COLLAPSED",
    "ATTR_COLLAPSED_DIMS",
    "ATTR_CONFIRMS",
    "ATTR_FAIL_REASON",
    "ATTR_FULL_BETA_EPOCH",
    "ATTR_HISTORY",
    "ATTR_ELBO_K",
    "ATTR_IWAE",
    "ATTR_KL_PER_DIM",
    "ATTR_KL_TOTAL",
    "ATTR_MUTUAL_INFO",
    "ATTR_MUTUAL_INFO_SD",
    "ATTR_PRUNE_FROM_EPOCH",
    "ATTR_RECON",
    "ATTR_SEED",
    "ATTR_UNIT_VARIANCES",
    "ATTR_WORKER",
    "CONSTRAINT_ACTIVE_UNITS",
    "CONSTRAINT_MUTUAL_INFO",
    "FIG_ACTIVE_UNITS",
    "FIG_COLLAPSE_MAP",
    "FIG_COLLAPSE_PROBABILITY",
    "FIG_IDS",
    "FIG_KL_PER_DIM",
    "FIG_SCHEDULES",
    "FIG_TRAINING_CURVES",
    "HISTORY_FIELDS",
    "OBJECTIVE_MI_NAME",
    "OBJECTIVE_NAME",
    "STUDY_ATTR_CONFIG",
    "STUDY_ATTR_CONFIRMATION",
    "STUDY_ATTR_CONFIRM_PLAN",
    "STUDY_ATTR_DECODER_ONLY_NLL",
    "STUDY_ATTR_PPCA_REFERENCE",
    "STUDY_ATTR_VERSION",
]

OBJECTIVE_NAME = "val_elbo"  # the study's (first) value: validation ELBO, nats/example (maximize)
OBJECTIVE_MI_NAME = "val_mutual_info"  # search.objective = "pareto": the second value, I(x;z)

# Trial user attrs (diagnostics on the validation split, at the end or at the point of pruning).
ATTR_ACTIVE_UNITS = "active_units"
ATTR_UNIT_VARIANCES = "unit_variances"
ATTR_KL_PER_DIM = "kl_per_dim"
ATTR_KL_TOTAL = "kl_total"
ATTR_COLLAPSED_DIMS = "collapsed_dims"
ATTR_MUTUAL_INFO = "mutual_info"
ATTR_MUTUAL_INFO_SD = "mutual_info_sd"  # standard error of mutual_info over its replicates
ATTR_RECON = "recon"
ATTR_IWAE = "iwae"  # IWAE bound with collapse.iwae_samples samples, nats/example (>= the ELBO)
# The ELBO on the IWAE bound's own k draws per example: never above ATTR_IWAE (the one-draw
# validation ELBO, the trial's value, can be: its Monte Carlo noise exceeds the gap).
ATTR_ELBO_K = "elbo_k"
ATTR_COLLAPSED = "collapsed"
ATTR_HISTORY = "history"
ATTR_FAIL_REASON = "fail_reason"
ATTR_FULL_BETA_EPOCH = "full_beta_epoch"  # first epoch from which beta stays at 1
ATTR_PRUNE_FROM_EPOCH = "prune_from_epoch"  # first epoch at which the pruner may act
ATTR_SEED = "seed"
ATTR_WORKER = "worker"
# A confirmation run (``vae-search confirm``): the source trial's number, or a reference
# schedule's name. Such trials are never pruned and do not count toward ``--trials``.
ATTR_CONFIRMS = "confirms"

# Per-epoch history: a dict of equally long lists under ATTR_HISTORY.
HISTORY_FIELDS = ("epoch", "beta", "train_loss", "val_elbo", "val_kl", "active_units")

# Optuna 5 constraints (feasible when <= 0): a collapsed trial is infeasible.
CONSTRAINT_ACTIVE_UNITS = "min_active_units"  # min_active_units - active_units
# min_mutual_info - the information the verdict trusts (total KL, or min(KL, I(x; z)) when the
# MI estimate's standard error is below collapse.mi_max_sd; see metrics.verdict_information)
CONSTRAINT_MUTUAL_INFO = "min_mutual_info"

# Study user attrs.
STUDY_ATTR_CONFIG = "vae_search_config"  # the resolved configuration (comparable part)
STUDY_ATTR_VERSION = "vae_search_version"
# Validation NLL (nats/example) of the same decoder trained without a latent code (see
# vae_search.trial.baseline): the ELBO of a collapsed trial, what collapse costs.
STUDY_ATTR_DECODER_ONLY_NLL = "decoder_only_nll"
# Gaussian, fixed variance: theory's reference, probabilistic PCA (vae_search.trial.reference),
# one dict per (sigma2, latent_dim): predicted active directions, validation log p(x) in nats/
# example, and the all-collapsed value. Absent for other likelihoods.
STUDY_ATTR_PPCA_REFERENCE = "ppca_reference"
# The confirmation table (one dict per schedule: collapse rate with its Wilson interval, ...).
STUDY_ATTR_CONFIRMATION = "confirmation"
# vae-search confirm's plan: [{"confirms": label, "params": {...}, "seeds": n}, ...]
STUDY_ATTR_CONFIRM_PLAN = "confirm_plan"

# Plotly figure ids saved into the study (optuna-dashboard graph object ids: a refresh with the
# same id replaces the figure). Also the element ids of the standalone report.
FIG_COLLAPSE_MAP = "vae-collapse-map"
FIG_SCHEDULES = "vae-schedules-by-outcome"
FIG_TRAINING_CURVES = "vae-training-curves"
FIG_ACTIVE_UNITS = "vae-active-units"
FIG_KL_PER_DIM = "vae-kl-per-dim"
FIG_COLLAPSE_PROBABILITY = "vae-collapse-probability"
FIG_IDS = (FIG_COLLAPSE_MAP, FIG_COLLAPSE_PROBABILITY, FIG_SCHEDULES, FIG_TRAINING_CURVES,
           FIG_ACTIVE_UNITS, FIG_KL_PER_DIM)
