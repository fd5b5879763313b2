"""vae_search: find KL-annealing schedules under which a VAE's posterior does not collapse.

Importing the package is cheap: TensorFlow is only imported by the modules that train
(``data`` for mnist, ``model``, ``objective``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
