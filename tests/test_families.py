"""Every remedy family end to end through the runner, on every regime where it applies:
``vae-search run --set 'search.families=[...]'`` trains, reports, diagnoses and records one
trial of each family (word dropout only on the gru regimes), on small data (300 rows, 2
epochs)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.test_regimes import COMMON, REGIMES
from vae_search import keys
from vae_search.config.schema import FAMILIES
from vae_search.report.rows import trial_rows
from vae_search.run import main as run_main

GRU = ("sequences", "text")
# (regime, --population): aggressive trains one trial at a time; "made" runs the others stacked
CASES = [("seed_mse", None), ("sequences", None), ("text", None), ("made", "3")]
CHEAP = ["--set", "search.inner_steps=[5, 5]", "--set", "search.aggressive_epochs=[2, 2]",
         "--set", "data.max_examples=300", "--set", 'pruner.name="none"']


@pytest.mark.slow
@pytest.mark.parametrize(("regime", "population"), CASES)
def test_every_family_runs_end_to_end(regime, population, tmp_path):
    families = [f for f in FAMILIES if (f != "word_dropout" or regime in GRU)
                and (f != "aggressive" or population is None)]
    model, _ = REGIMES[regime]
    toml = tmp_path / f"{regime}.toml"
    toml.write_text(f'name = "{regime}"\n{model}{COMMON}'.replace(
        'latent_dim = [2, 4]\nreduction = ["sum", "mean"]',
        'latent_dim = [2]\nreduction = ["sum"]'))
    url = f"sqlite:///{tmp_path / 'f.db'}"
    args = ["--study", str(toml), "--storage", url, "--quiet", "--epochs", "2", *CHEAP,
            "--set", f"search.families={families}".replace("'", '"'),
            "--population", population or "1"]
    # The first run creates the study; each family is then queued once, so every one runs.
    assert run_main([*args, "--trials", "1"]) == 0
    study = optuna.load_study(study_name=regime, storage=url)
    ran = {study.trials[0].params["family"]}
    for family in families:
        if family not in ran:
            study.enqueue_trial({"family": family})
    assert run_main([*args, "--trials", str(len(families))]) == 0
    trials = optuna.load_study(study_name=regime, storage=url).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(t.params["family"] for t in finished) == sorted(families), [
        (t.params, t.state, t.user_attrs.get(keys.ATTR_FAIL_REASON)) for t in trials]
    for t in finished:
        history = t.user_attrs[keys.ATTR_HISTORY]
        assert len(history["beta"]) == 2 and all(0.0 <= b <= 1.0 for b in history["beta"])
        assert isinstance(t.user_attrs[keys.ATTR_COLLAPSED], bool)
    by_family = {r.family: r for r in trial_rows(study)}
    assert set(by_family) == set(families)  # the report's rows carry the family
    assert by_family["setpoint"].p.kl_target > 0 and by_family["cyclical"].p.cycles >= 1
