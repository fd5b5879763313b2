"""``search.objective = "pareto"``: a two-objective study (ELBO, I(x;z)) end to end."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import stored_figures, tiny_config
from vae_search import keys
from vae_search.engine.study import StudyMismatch, open_study
from vae_search.report import findings_text, report_html, trial_rows
from vae_search.run import main


def test_pareto_study_runs_end_to_end(tmp_path, tiny_toml, capsys):
    toml = tiny_toml(train={"epochs": 4}, search={"klstart": [0, 2], "annealtime": [0, 2],
                                                  "objective": "pareto"})
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert main(["--study", str(toml), "--storage", url, "--trials", "3", "--quiet"]) == 0
    assert "best" in capsys.readouterr().out  # the run summary
    study = optuna.load_study(study_name="tiny", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert study.metric_names == [keys.OBJECTIVE_NAME, keys.OBJECTIVE_MI_NAME]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3  # nothing is pruned in a multi-objective study
    for t in trials:
        assert not t.intermediate_values  # trial.report is single-objective only
        elbo, mi = t.values
        assert elbo == pytest.approx(t.user_attrs[keys.ATTR_HISTORY]["val_elbo"][-1])
        assert mi == pytest.approx(t.user_attrs[keys.ATTR_MUTUAL_INFO])
        assert t.user_attrs[keys.ATTR_IWAE] >= elbo - 0.3
    assert study.best_trials  # the Pareto front optuna-dashboard plots
    assert keys.STUDY_ATTR_DECODER_ONLY_NLL in study.user_attrs

    # the report and the figures read the ELBO from values[0]
    rows = trial_rows(study)
    assert [r.value for r in rows] == [t.values[0] for t in trials]
    assert set(stored_figures(study)) == set(keys.FIG_IDS)
    assert "gap to decoder-only" in findings_text(study)
    assert "vae-training-curves" in report_html(study)

    # resuming with the single-objective config is refused: the directions differ
    with pytest.raises(StudyMismatch):
        open_study(tiny_config(train={"epochs": 4},
                               search={"klstart": [0, 2], "annealtime": [0, 2]}), url)


def test_pareto_iwae_baseline_and_confirm_on_postgresql(pg_url, tiny_toml, capsys):
    """The findings' attrs on a real PostgreSQL server: a two-objective study stores the IWAE
    bound per trial and the decoder-only NLL per study, and confirm runs on it."""
    import uuid

    from vae_search.engine.confirm import main as confirm_main

    name = f"pareto-{uuid.uuid4().hex[:8]}"
    toml = tiny_toml(train={"epochs": 3}, search={"klstart": [0, 1], "annealtime": [0, 1],
                                                  "objective": "pareto"})
    assert main(["--study", str(toml), "--storage", pg_url, "--study-name", name,
                 "--trials", "2", "--quiet"]) == 0
    assert confirm_main(["--storage", pg_url, "--study-name", name, "--top", "1",
                         "--seeds", "1", "--no-references", "--quiet"]) == 0
    study = optuna.load_study(study_name=name, storage=pg_url)
    try:
        assert len(study.directions) == 2
        assert study.user_attrs[keys.STUDY_ATTR_DECODER_ONLY_NLL] > 0
        done = study.get_trials(states=(TrialState.COMPLETE,))
        for t in done:
            assert t.user_attrs[keys.ATTR_IWAE] >= t.values[0] - 0.3
        runs = [t for t in done if keys.ATTR_CONFIRMS in t.user_attrs]
        healthy = [t for t in done if keys.ATTR_CONFIRMS not in t.user_attrs
                   and t.user_attrs[keys.ATTR_COLLAPSED] is False]
        assert len(runs) == min(1, len(healthy))
        assert len(study.user_attrs[keys.STUDY_ATTR_CONFIRMATION]) == len(runs)
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)
