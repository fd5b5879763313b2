"""The cost of collapse: the decoder-only baseline, computed once per study and shown."""

from __future__ import annotations

import json

import optuna
import pytest

from tests.conftest import tiny_config
from vae_search import keys
from vae_search.data.datasets import load_dataset
from vae_search.engine.study import open_study
from vae_search.report import findings, training_curves_figure
from vae_search.trial.baseline import owes_baseline, stored_baseline
from vae_search.trial.objective import Objective
from vae_search.trial.reference import ppca_reference, stored_references

COLLAPSING = dict(klstart=0, annealtime=0, latent_dim=2, reduction="mean")
HEALTHY = dict(klstart=0, annealtime=0, latent_dim=4, reduction="sum")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'b.db'}"
    config = tiny_config(train={"epochs": 8}, pruner={"name": "none"})
    study = open_study(config, url, study_name="baseline")
    for params in (COLLAPSING, HEALTHY):
        study.enqueue_trial(params)
    study.optimize(Objective(config), n_trials=2)
    return optuna.load_study(study_name="baseline", storage=url)


def gap(trial: optuna.trial.FrozenTrial, nll: float) -> float:
    return trial.value + nll


def test_a_collapsed_trial_sits_on_the_decoder_only_baseline(study):
    nll = stored_baseline(study)
    assert nll is not None and 0 < nll < 100  # nats per example on 64 binary pixels
    collapsed, healthy = study.trials
    assert collapsed.params == COLLAPSING and collapsed.user_attrs[keys.ATTR_COLLAPSED]
    assert abs(gap(collapsed, nll)) < 0.75  # measured: -0.26
    assert healthy.params == HEALTHY and not healthy.user_attrs[keys.ATTR_COLLAPSED]
    assert gap(healthy, nll) > 0.5  # measured: +1.3; what the latent code buys


def test_baseline_is_computed_once_and_is_deterministic(study, tmp_path):
    # trial 0 computed it; trial 1 did not owe it
    assert study.user_attrs[keys.STUDY_ATTR_DECODER_ONLY_NLL] == stored_baseline(study)
    config = tiny_config(train={"epochs": 8}, pruner={"name": "none"})
    assert Objective(config).decoder_only_nll() == pytest.approx(stored_baseline(study),
                                                                 abs=1e-4)


def test_only_trial_zero_owes_it_while_it_runs(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    first, second = study.ask(), study.ask()
    assert owes_baseline(first) and not owes_baseline(second)
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # ended without storing it
    assert owes_baseline(second)
    study.set_user_attr(keys.STUDY_ATTR_DECODER_ONLY_NLL, 40.0)
    assert not owes_baseline(second) and not owes_baseline(study.ask())


def test_figures_and_findings_show_the_gap(study):
    nll = stored_baseline(study)
    fig = json.loads(training_curves_figure(study).to_json())
    lines = [s for s in fig["layout"].get("shapes", []) if s.get("y0") == s.get("y1")]
    assert any(s["y0"] == pytest.approx(-nll, abs=1e-3) for s in lines)
    f = findings(study)
    assert f.decoder_only_nll == nll
    header, rows = f.best
    col = header.index("gap to decoder-only")
    by_trial = {int(r[0]): float(r[col]) for r in rows}
    assert by_trial == {t.number: pytest.approx(gap(t, nll), abs=0.006) for t in study.trials}


def test_the_ppca_reference_is_stored_beside_the_baseline_for_a_fixed_gaussian(study, tmp_path):
    assert keys.STUDY_ATTR_PPCA_REFERENCE not in study.user_attrs  # bernoulli: none applies
    config = tiny_config(model={"likelihood": "gaussian", "variance": "fixed", "sigma2": 0.1},
                         train={"epochs": 2}, pruner={"name": "none"},
                         search={"klstart": [0, 1], "annealtime": [0, 1]})
    gaussian = optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}",
                                   direction="maximize")
    gaussian.optimize(Objective(config), n_trials=1)
    refs = stored_references(gaussian)
    assert [(r.sigma2, r.latent_dim, r.active) for r in refs] == [(0.1, 2, 2), (0.1, 4, 4)]
    data = load_dataset(config)  # the split the objective used
    assert refs[1] == ppca_reference(data.x_train, data.x_val, 0.1, latent_dim=4)
