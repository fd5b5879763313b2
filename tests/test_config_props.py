"""Property tests: any input to the config loader gives a valid config or a ConfigError."""

from __future__ import annotations

import dataclasses
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vae_search.config.schema import ConfigError, StudyConfig, load_config, parse_config

SECTIONS = {
    f.name: typing.get_type_hints(StudyConfig)[f.name]
    for f in dataclasses.fields(StudyConfig)
}

scalars = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _near_valid_section(name: str) -> st.SearchStrategy:
    tp = SECTIONS[name]
    if not dataclasses.is_dataclass(tp):
        return values
    keys = [f.name for f in dataclasses.fields(tp)]
    plausible = st.one_of(
        st.integers(min_value=-3, max_value=40),
        st.floats(min_value=-1, max_value=2, allow_nan=False),
        st.sampled_from(["sum", "mean", "linear", "cyclical", "digits", "synthetic", "tpe",
                         "median", "hyperband", "none", "bernoulli", "gaussian", "fixed", ""]),
        st.lists(st.integers(min_value=-2, max_value=40), max_size=3),
        st.lists(st.sampled_from(["sum", "mean", "linear", "x"]), max_size=3),
        values,
    )
    return st.dictionaries(st.sampled_from(keys + ["extra"]), plausible, max_size=4)


near_valid = st.fixed_dictionaries(
    {},
    optional={name: _near_valid_section(name) for name in SECTIONS},
)


def _check(raw: object) -> None:
    try:
        config = parse_config(raw)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(config, StudyConfig)
        s = config.search
        assert s.klstart[1] + s.annealtime[1] <= config.train.epochs


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_arbitrary_tables(raw):
    _check(raw)


@settings(max_examples=500, deadline=None)
@given(near_valid)
def test_near_valid_tables(raw):
    _check(raw)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_toml_text(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:
        return
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc)
