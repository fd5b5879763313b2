"""One trial: its search space (the only ``suggest_*`` caller), the KL schedule, the
annealing-aware pruner, the collapse metrics, the decoder-only baseline, and the objective that
trains and judges it (:mod:`~vae_search.trial.objective`)."""
