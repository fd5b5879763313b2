"""Study configuration: the frozen, typed, validated sections of a study
(:mod:`~vae_search.config.schema`), their type checks (:mod:`~vae_search.config._typed`), and
the configuration a study stores (:mod:`~vae_search.config.stored`)."""
