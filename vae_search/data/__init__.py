"""Datasets: flat arrays and built-ins (:mod:`~vae_search.data.datasets`), token sequences and
text (:mod:`~vae_search.data.tokens`), and the one seeded train/validation split they share
(:mod:`~vae_search.data.split`)."""
