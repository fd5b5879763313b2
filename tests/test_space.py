from __future__ import annotations

import optuna
import pytest

from vae_search.config.schema import FAMILIES, ModelConfig, SearchConfig
from vae_search.trial.space import TrialParams, params_from_mapping, suggest


def test_fixed_trial_roundtrip():
    space = SearchConfig()
    trial = optuna.trial.FixedTrial(
        {"klstart": 5, "annealtime": 10, "latent_dim": 8, "reduction": "mean"}
    )
    params = suggest(trial, space, epochs=30)
    assert params == TrialParams(klstart=5, annealtime=10, latent_dim=8, reduction="mean")
    assert params_from_mapping(trial.params, space, 30) == params


def test_every_sample_fits_the_epochs():
    space = SearchConfig(klstart=(0, 7), annealtime=(0, 3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(50):
        trial = study.ask()
        p = suggest(trial, space, epochs=10)
        assert 0 <= p.klstart <= 7 and 0 <= p.annealtime <= 3
        assert p.klstart + p.annealtime <= 10
        assert p.make_schedule(10)(9) == 1.0
        study.tell(trial, 0.0)


def test_single_choice_dimensions_are_not_suggested():
    space = SearchConfig(latent_dim=(8,), reduction=("sum",))
    trial = optuna.trial.FixedTrial({"klstart": 1, "annealtime": 2})
    params = suggest(trial, space, epochs=30)
    assert params.latent_dim == 8 and params.reduction == "sum"
    assert set(trial.params) == {"klstart", "annealtime"}


def test_cyclical_schedule_is_conditional():
    space = SearchConfig(schedule=("linear", "cyclical"))
    trial = optuna.trial.FixedTrial(
        {"schedule": "cyclical", "klstart": 2, "cycles": 2, "ratio": 0.5,
         "latent_dim": 4, "reduction": "sum"}
    )
    params = suggest(trial, space, epochs=10)
    assert params.schedule == "cyclical" and "annealtime" not in trial.params
    assert params.annealtime == 2  # the ramp length of each 4-epoch cycle
    assert params_from_mapping(trial.params, space, 10) == params


GRU = ModelConfig(likelihood="categorical", decoder="gru", hidden=(16,))
FAMILY_PARAMS = {  # each family's own parameters, nothing else's
    "warmup": set(),
    "cyclical": {"cycles", "ratio"},
    "free_bits": {"free_bits"},
    "word_dropout": {"word_dropout"},
    "aggressive": {"aggressive_epochs", "inner_steps"},
    "setpoint": {"kl_target"},
}


def test_each_family_suggests_its_own_parameters_only_and_reads_back():
    space = SearchConfig(families=FAMILIES, latent_dim=(4,), reduction=("sum",))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        p = suggest(trial, space, epochs=30, model=GRU)
        seen.add(p.family)
        ramp = set() if p.family == "cyclical" else {"annealtime"}
        assert set(trial.params) == {"family", "klstart"} | ramp | FAMILY_PARAMS[p.family]
        assert p.schedule == ("cyclical" if p.family == "cyclical" else "linear")
        assert (p.free_bits > 0) == (p.family == "free_bits")
        assert (p.word_dropout > 0) == (p.family == "word_dropout")
        assert (p.kl_target > 0) == (p.family == "setpoint")
        assert (p.inner_steps > 0) == (p.family == "aggressive")
        assert params_from_mapping(trial.params, space, 30) == p
        study.tell(trial, 0.0)
    assert seen == set(FAMILIES)


def test_one_family_is_not_suggested_and_takes_its_default_range():
    space = SearchConfig(families=("free_bits",), latent_dim=(4,), reduction=("sum",))
    trial = optuna.trial.FixedTrial({"klstart": 1, "annealtime": 2, "free_bits": 0.5})
    p = suggest(trial, space, epochs=30)
    assert p.family == "free_bits" and p.free_bits == 0.5 and "family" not in trial.params
    assert params_from_mapping(trial.params, space, 30) == p


@pytest.mark.parametrize("legacy", [{"schedule": ("linear", "cyclical")},
                                    {"free_bits": (0.0, 0.5)}])
def test_the_older_keys_still_add_their_dimension_to_every_trial(legacy):
    """With the default families (warmup alone) a study samples what it always did."""
    space = SearchConfig(**legacy)
    assert space.families == ("warmup",)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        p = suggest(trial, space, epochs=30)
        assert "family" not in trial.params
        assert set(legacy) <= set(trial.params)
        assert p.family == ("cyclical" if p.schedule == "cyclical" else "warmup")
        study.tell(trial, 0.0)
