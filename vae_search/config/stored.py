"""A study's stored configuration: upgraded with new defaults, compared, and read back.

A study stores its resolved configuration (``StudyConfig.comparable()``) as a study user attr
when it is created. Joining workers compare theirs with it
(:mod:`~vae_search.engine.study`), and the
commands that work on an existing study (``confirm``, ``export``) read it back. Importing this
module does not import TensorFlow or Optuna.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from vae_search import keys
from vae_search.config.schema import ConfigError, StudyConfig, parse_config

__all__ = ["config_diff", "stored_config", "with_new_defaults"]


class _HasAttrs(Protocol):
    study_name: str

    @property
    def user_attrs(self) -> dict[str, Any]: ...


def stored_config(study: _HasAttrs) -> StudyConfig:
    """The configuration ``study`` was created with (keys added since take their defaults).

    Raises:
        ConfigError: the study was not made by vae_search, or its configuration is not valid
            in this version.
    """
    raw = study.user_attrs.get(keys.STUDY_ATTR_CONFIG)
    if not isinstance(raw, dict):
        raise ConfigError(f"study {study.study_name!r} was not made by vae_search (no stored "
                          "configuration)")
    try:
        return parse_config(with_new_defaults(raw))
    except ConfigError as exc:
        raise ConfigError(f"study {study.study_name!r}: its stored configuration is not valid "
                          f"in this version: {exc}") from None


def with_new_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored ``comparable()`` dict with keys added since it was written set to their defaults.

    A study created by an older version then resumes as long as the new keys keep their
    defaults (which reproduce the old behaviour); a changed value is still a difference.
    """

    def fill(old: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        out = dict(old)
        for key, value in defaults.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = fill(out[key], value)
        return out

    return fill(stored, StudyConfig().comparable())


def config_diff(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two ``comparable()`` dicts (``key: old -> new``)."""
    diffs: list[str] = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<missing>"), current.get(key, "<missing>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(config_diff(a, b, f"{name}."))
        elif a != b:
            diffs.append(f"{name}: {json.dumps(a)} -> {json.dumps(b)}")
    return diffs

