"""The search: the worker (:mod:`~vae_search.search.worker`), the trial loop, the budget gate,
signals, local worker pools, confirmation runs and model export."""
