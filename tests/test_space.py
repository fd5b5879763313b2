from __future__ import annotations

import optuna

from vae_search.config.schema import SearchConfig
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
