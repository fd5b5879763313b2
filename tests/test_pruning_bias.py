"""The naive-pruning comparison: Optuna's MedianPruner replayed on stored curves."""

from __future__ import annotations

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from vae_search.engine.confirm import main as confirm_main
from vae_search.report.pruning_bias import compare, main, replay_naive
from vae_search.run import main as run_main

DIST = {"klstart": IntDistribution(0, 9)}


def _trial(klstart: int, curve: list[float], state: TrialState = TrialState.COMPLETE):
    return create_trial(
        state=state, value=curve[-1] if state == TrialState.COMPLETE else None,
        params={"klstart": klstart}, distributions=DIST,
        intermediate_values=dict(enumerate(curve)),
        user_attrs={"full_beta_epoch": klstart},
    )


def test_replay_kills_a_late_warm_up_curve_that_ends_best():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(0, [-50.0, -45.0, -44.0, -43.0]))
    study.add_trial(_trial(0, [-52.0, -46.0, -45.0, -44.0]))
    # warms up until epoch 3: terrible early (an unconstrained KL), best at the end
    study.add_trial(_trial(3, [-90.0, -80.0, -70.0, -40.0]))
    study.add_trial(_trial(0, [-49.0, -44.5, -44.2, -41.0]))
    replay = replay_naive(study, n_startup_trials=1)
    assert replay[0].pruned_at is None  # nothing completed before it
    assert replay[2].pruned_at == 0 and replay[2].killed_in_warm_up
    assert replay[3].pruned_at is None  # above the median all along
    # with more startup trials than completed ones, nothing is pruned
    assert all(r.pruned_at is None for r in replay_naive(study, 10).values())


def test_compare_prints_the_three_answers(tmp_path, tiny_toml, capsys):
    toml = tiny_toml(train={"epochs": 6}, search={"klstart": [0, 3], "annealtime": [0, 3]},
                     sampler={"name": "tpe", "n_startup_trials": 2})
    url = f"sqlite:///{tmp_path / 'b.db'}"
    for name, extra in (("aware", []), ("naive", ["--set", "pruner.aware=false"])):
        assert run_main(["--study", str(toml), "--storage", url, "--study-name", name,
                         "--trials", "6", "--quiet", *extra]) == 0
    assert confirm_main(["--storage", url, "--study-name", "aware", "--top", "2", "--seeds",
                         "1", "--no-references", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--storage", url, "--aware", "aware", "--naive", "naive"]) == 0
    out = capsys.readouterr().out
    assert "annealing-aware" in out and "naive" in out
    assert "same schedule:" in out
    assert "a plain MedianPruner replayed on their curves would have killed" in out
    aware = optuna.load_study(study_name="aware", storage=url)
    naive = optuna.load_study(study_name="naive", storage=url)
    assert compare(aware, naive) in out
    assert main(["--storage", url, "--aware", "nope", "--naive", "naive"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
