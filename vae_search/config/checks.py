"""Checks of the study configuration that concern one group of keys each: the study's name and
the search's optional dimensions and remedy families.

:func:`~vae_search.config.schema.parse_config` calls them after the generic type checks of
:mod:`~vae_search.config._typed`; every failure is a :class:`ConfigError` naming its key. No
TensorFlow, no Optuna.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vae_search.config._typed import ConfigError

if TYPE_CHECKING:
    from vae_search.config.schema import SearchConfig, StudyConfig

__all__ = ["DEFAULT_FREE_BITS", "DEFAULT_WORD_DROPOUT", "LEGACY_FAMILIES", "MAX_STUDY_NAME",
           "check_range", "free_bits_range", "study_name_problem", "validate_search_dims",
           "word_dropout_range"]

# Optuna's studies.study_name column is VARCHAR(512) (optuna/storages/_rdb/models.py,
# MAX_INDEXED_STRING_LENGTH): a longer name fails on PostgreSQL; refused for every storage.
MAX_STUDY_NAME = 512
# What search.families is unless a study says otherwise: the monotone warm-up alone, with the
# older keys search.schedule, search.free_bits and search.word_dropout meaning what they always
# did (extra dimensions of every trial).
LEGACY_FAMILIES = ("warmup",)
# The family's lambda (nats per latent dim) or dropout range when its key is absent.
DEFAULT_FREE_BITS = (0.1, 1.0)
DEFAULT_WORD_DROPOUT = (0.2, 0.8)


def check_range(lo_hi: tuple[float, float], key: str, *, minimum: float) -> None:
    """``[low, high]`` with ``minimum <= low <= high``, else a :class:`ConfigError`."""
    lo, hi = lo_hi
    if lo > hi:
        raise ConfigError(f"{key}: inverted range [{lo}, {hi}] (low must be <= high)")
    if lo < minimum:
        raise ConfigError(f"{key}: low end {lo} is below the minimum {minimum}")


def study_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a study name on every storage: blank, or longer than
    :data:`MAX_STUDY_NAME` characters (``None``: it can)."""
    if not name.strip():
        return f"must not be empty, got {name!r}"
    if len(name) > MAX_STUDY_NAME:
        return (f"at most {MAX_STUDY_NAME} characters (Optuna's study_name column), got "
                f"{len(name)}")
    return None


def free_bits_range(s: SearchConfig) -> tuple[float, float] | None:
    """The searched free-bits lambda range of a trial that has free bits (``None``: none do)."""
    if s.families == LEGACY_FAMILIES:
        return s.free_bits
    return (s.free_bits or DEFAULT_FREE_BITS) if "free_bits" in s.families else None


def word_dropout_range(s: SearchConfig) -> tuple[float, float] | None:
    """The searched word-dropout range of a trial that has word dropout (``None``: none do)."""
    if s.families == LEGACY_FAMILIES:
        return s.word_dropout
    return (s.word_dropout or DEFAULT_WORD_DROPOUT) if "word_dropout" in s.families else None


def validate_search_dims(c: StudyConfig) -> None:
    """The optional dimensions (sigma^2, free bits, word dropout) and the remedy families."""
    s, m = c.search, c.model
    if s.sigma2 is not None:
        if m.likelihood != "gaussian" or m.variance != "fixed":
            raise ConfigError("search.sigma2: needs model.likelihood = 'gaussian' and "
                              "model.variance = 'fixed'")
        if not s.sigma2 or any(not v > 0 for v in s.sigma2):
            raise ConfigError(f"search.sigma2: every choice must be > 0, got {list(s.sigma2)}")
        if len(set(s.sigma2)) != len(s.sigma2):
            raise ConfigError(f"search.sigma2: duplicate choices in {list(s.sigma2)}")
    _validate_families(c)
    if (free_bits := free_bits_range(s)) is not None:
        check_range(free_bits, "search.free_bits", minimum=0)
    if (dropout := word_dropout_range(s)) is not None:
        key = "search.word_dropout" if s.word_dropout is not None else "search.families"
        if m.decoder != "gru" or m.builder:
            raise ConfigError(f"{key}: word dropout needs model.decoder = 'gru' (a decoder "
                              "that reads the previous tokens)")
        check_range(dropout, "search.word_dropout", minimum=0)
        if dropout[1] >= 1:
            raise ConfigError(f"search.word_dropout: must lie in [0, 1), got {list(dropout)}")


def _validate_families(c: StudyConfig) -> None:
    s = c.search
    if len(set(s.families)) != len(s.families):
        raise ConfigError(f"search.families: duplicate choices in {list(s.families)}")
    check_range(s.kl_target, "search.kl_target", minimum=0)
    if s.kl_target[0] <= 0:
        raise ConfigError(f"search.kl_target: the KL set-point must be > 0 nats, got "
                          f"{list(s.kl_target)}")
    check_range(s.aggressive_epochs, "search.aggressive_epochs", minimum=1)
    check_range(s.inner_steps, "search.inner_steps", minimum=1)
    if s.families == LEGACY_FAMILIES:
        return
    # With families, each remedy is one family: the older keys that added it to every trial
    # either name their family's range or would mean two things at once.
    if "cyclical" in s.schedule:
        raise ConfigError("search.schedule: 'cyclical' is a family when search.families is "
                          "set: list it in search.families and keep search.schedule = "
                          "['linear']")
    for key, value in (("free_bits", s.free_bits), ("word_dropout", s.word_dropout)):
        if value is not None and key not in s.families:
            raise ConfigError(f"search.{key}: with search.families it is the range of the "
                              f"{key!r} family; add {key!r} to search.families or drop the key")
