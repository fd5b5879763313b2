"""vae_search: find KL-annealing schedules under which a VAE's posterior does not collapse.

Importing the package is cheap: TensorFlow is only imported by the modules that train
(``models``, ``objective``), and :func:`search` imports them when called.

    import vae_search
    config = vae_search.load_config("seed_mse")
    study = vae_search.search("seed_mse", trials=20, epochs=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_search.api import search
    from vae_search.config.schema import StudyConfig, load_config

__version__ = "0.1.0"

__all__ = ["StudyConfig", "__version__", "load_config", "search"]


def __getattr__(name: str) -> Any:  # lazy: `import vae_search` stays instant
    if name == "search":
        from vae_search.api import search

        return search
    if name in ("StudyConfig", "load_config"):
        from vae_search.config import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'vae_search' has no attribute {name!r}")
