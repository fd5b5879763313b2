"""The trial engine: one worker (:mod:`~vae_search.engine.worker`), the one trial loop over P
slots (:mod:`~vae_search.engine.loop`), the budget gate, signals, local worker pools,
confirmation runs and model export. (Not named ``search``: that is the Python API's
:func:`vae_search.search`.)"""
