"""``vae-search confirm``: repeated seeds per schedule, Wilson intervals, outside the budget."""

from __future__ import annotations

import uuid

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import stored_figures, tiny_config
from vae_search import keys
from vae_search.cli import ConfirmOptions
from vae_search.engine.budget import BudgetReached
from vae_search.engine.confirm import (
    MAX_RUNS,
    REFERENCES,
    ConfirmError,
    ConfirmGate,
    enqueue,
    lacking,
    main,
    plan,
    reference_params,
    runs_left,
)
from vae_search.engine.study import open_study
from vae_search.engine.worker import finished_count
from vae_search.report import findings_text, report_html, trial_rows
from vae_search.report.confirmation import (
    collapse_probability_figure,
    confirmation_rows,
    wilson_interval,
)
from vae_search.run import main as run_main


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 5, 0.0, 0.4345), (5, 5, 0.5655, 1.0), (3, 10, 0.1078, 0.6032), (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_matches_the_formula_tables(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)
    assert lo <= k / n <= hi


def test_wilson_interval_is_symmetric_narrows_with_n_and_rejects_bad_counts():
    for n in (1, 7, 40):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            lo2, hi2 = wilson_interval(n - k, n)
            assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2))
    widths = [hi - lo for lo, hi in (wilson_interval(n // 2, n) for n in (4, 16, 64, 256))]
    assert widths == sorted(widths, reverse=True)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_reference_schedules_span_the_box_on_the_best_trials_other_parameters():
    config = tiny_config(train={"epochs": 10},
                         search={"klstart": [2, 6], "annealtime": [1, 4]})
    refs = reference_params({"klstart": 5, "annealtime": 2, "latent_dim": 4,
                             "schedule": "cyclical", "cycles": 2, "ratio": 0.5}, config.search)
    assert list(refs) == list(REFERENCES)
    assert [(r["klstart"], r["annealtime"]) for r in refs.values()] == [(0, 0), (4, 2), (6, 4)]
    for r in refs.values():
        assert r["latent_dim"] == 4 and r["schedule"] == "linear"
        assert "cycles" not in r and "ratio" not in r


def confirmation_runs(study):
    """The confirmation runs, and apart the surplus ones: a run two workers queued at the
    same instant is failed before training (see the next test)."""
    every = [t for t in study.get_trials() if keys.ATTR_CONFIRMS in t.user_attrs]
    surplus = [t for t in every
               if str(t.user_attrs.get(keys.ATTR_FAIL_REASON, "")).startswith("surplus")]
    return [t for t in every if t not in surplus], surplus


def test_confirm_runs_seeds_outside_the_budget_and_stores_the_table(tmp_path, tiny_toml, capsys):
    toml = tiny_toml(train={"epochs": 4}, search={"klstart": [0, 2], "annealtime": [0, 2]})
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run_main(["--study", str(toml), "--storage", url, "--trials", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--storage", url, "--top", "1", "--seeds", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rate [95% CI]" in out and "no-warmup" in out

    study = optuna.load_study(study_name="tiny", storage=url)
    runs, surplus = confirmation_runs(study)
    assert all(t.state == TrialState.FAIL and not t.intermediate_values for t in surplus)
    healthy = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
               if keys.ATTR_CONFIRMS not in t.user_attrs
               and t.user_attrs[keys.ATTR_COLLAPSED] is False]
    schedules = (1 if healthy else 0) + len(REFERENCES)
    assert len(runs) == 2 * schedules
    assert all(t.state == TrialState.COMPLETE for t in runs)
    assert all(not t.intermediate_values for t in runs)  # never reported, never pruned
    # SQLite: one confirm worker (two could take the same queued run), whatever the cores
    assert len({t.user_attrs[keys.ATTR_WORKER] for t in runs}) == 1
    assert len({t.user_attrs[keys.ATTR_SEED] for t in runs}) == len(runs)  # new seeds
    for t in runs:
        assert t.user_attrs[keys.ATTR_IWAE] >= t.value - 0.3  # IWAE_1000 >= ELBO up to MC noise
    table = study.user_attrs[keys.STUDY_ATTR_CONFIRMATION]
    assert len(table) == schedules and all(row["runs"] == 2 for row in table)
    for row in table:
        assert 0 <= row["rate_low"] <= row["rate"] <= row["rate_high"] <= 1
        same = [t for t in runs if str(t.user_attrs[keys.ATTR_CONFIRMS]).lstrip("#")
                == row["schedule"].lstrip("#")]
        assert row["collapsed"] == sum(t.user_attrs[keys.ATTR_COLLAPSED] for t in same)

    # outside the search: its budget, its figures and its findings ignore the runs
    assert finished_count(study) == 4
    assert len(trial_rows(study)) == 4
    assert run_main(["--study", str(toml), "--storage", url, "--trials", "4", "--quiet"]) == 0
    assert "already has 4 finished trials" in capsys.readouterr().out
    # a re-run adds nothing: every schedule has its runs
    assert main(["--storage", url, "--top", "1", "--seeds", "2", "--quiet"]) == 0
    assert len(confirmation_runs(optuna.load_study(study_name="tiny", storage=url))[0]) \
        == 2 * schedules
    # the new figure, in the study for optuna-dashboard and in the report
    assert keys.FIG_COLLAPSE_PROBABILITY in stored_figures(study)
    assert keys.FIG_COLLAPSE_PROBABILITY in report_html(study)
    assert "confirmation" in findings_text(study)


def test_collapse_probability_figure_draws_wilson_error_bars(tmp_path, tiny_toml):
    toml = tiny_toml(train={"epochs": 3}, search={"klstart": [0, 1], "annealtime": [0, 1]})
    url = f"sqlite:///{tmp_path / 'f.db'}"
    assert run_main(["--study", str(toml), "--storage", url, "--trials", "3", "--quiet"]) == 0
    assert main(["--storage", url, "--top", "0", "--seeds", "3", "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny", storage=url)
    fig = collapse_probability_figure(study)
    confirm = [t for t in fig.data if t.name.startswith("confirmation")]
    assert len(confirm) == 1 and len(confirm[0].x) == len(REFERENCES)
    for row, y, up, down in zip(confirmation_rows(trial_rows(study, confirms=True)),
                                confirm[0].y, confirm[0].error_y.array,
                                confirm[0].error_y.arrayminus, strict=True):
        assert y == pytest.approx(row.rate)
        assert (y - down, y + up) == pytest.approx((row.rate_low, row.rate_high))
    search = [t for t in fig.data if t.name.startswith("search")]
    assert sum(1 for t in search for _ in t.x) >= 1


def test_confirm_gate_runs_only_confirmation_runs(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}", direction="maximize")
    gate = ConfirmGate()
    assert not gate.slot_free(study)
    assert enqueue(study, [("middle", {"x": 1})], seeds=1) == 1
    assert gate.slot_free(study)
    assert study.ask().number == 0 and not study.trials[0].user_attrs  # run asks the sampler
    queued = gate.ask(study)
    gate.admit(queued)  # a confirmation run passes
    assert queued.user_attrs[keys.ATTR_CONFIRMS] == "middle" and not gate.slot_free(study)
    sampled = study.ask()  # nothing planned is left: a sampled trial
    with pytest.raises(BudgetReached):
        gate.admit(sampled)
    assert sampled.user_attrs[keys.ATTR_FAIL_REASON].startswith("surplus")


def test_confirm_gate_fails_a_run_two_workers_queued_at_once(tmp_path):
    """Two workers that read the plan at the same instant queue the same missing run twice:
    the later-numbered one is failed before training, whichever worker pops it."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    gate = ConfirmGate()
    assert enqueue(study, [("middle", {"x": 1}), ("longest", {"x": 2})], seeds=1) == 2
    (label, params, _), _ = lacking(study)
    for _ in range(2):  # both workers saw "middle" lacking one run
        study.enqueue_trial(params, user_attrs={keys.ATTR_CONFIRMS: label})
    first, second = study.ask(), study.ask()
    assert first.number < second.number
    gate.admit(first)
    with pytest.raises(BudgetReached):
        gate.admit(second)
    assert "same confirmation run" in second.user_attrs[keys.ATTR_FAIL_REASON]
    study.tell(second, state=TrialState.FAIL)
    assert [label for label, _, _ in lacking(study)] == ["longest"]  # the worker asks again
    third = gate.ask(study)
    gate.admit(third)
    assert third.user_attrs[keys.ATTR_CONFIRMS] == "longest" and not gate.slot_free(study)


def test_confirm_is_bounded_listed_and_cancelled(tmp_path, tiny_toml, capsys):
    """A mistaken --seeds 1000000 queues nothing without --yes; --list shows the plan,
    --cancel drops what has not started; a run on the study is never stuck behind it."""
    toml = tiny_toml(train={"epochs": 3}, search={"klstart": [0, 1], "annealtime": [0, 1]})
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert run_main(["--study", str(toml), "--storage", url, "--trials", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--storage", url, "--top", "1", "--seeds", "1000000", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"more than {MAX_RUNS}: pass --yes" in err and len(err.strip().splitlines()) == 1
    study = optuna.load_study(study_name="tiny", storage=url)
    assert runs_left(study) == 0 and len(study.trials) == 3

    assert enqueue(study, [("no-warmup", dict(study.trials[0].params))], seeds=500,
                   limit=None) == 500
    assert main(["--storage", url, "--list"]) == 0
    assert "no-warmup" in capsys.readouterr().out and runs_left(study) == 500
    # a search run asks the sampler: it is not held up by the 500 planned runs
    assert run_main(["--study", str(toml), "--storage", url, "--trials", "5", "--quiet"]) == 0
    assert finished_count(study) == 5
    assert not [t for t in study.get_trials() if keys.ATTR_CONFIRMS in t.user_attrs]
    assert main(["--storage", url, "--cancel"]) == 0
    assert "cancelled 500" in capsys.readouterr().out
    assert runs_left(study) == 0
    assert main(["--storage", url, "--join", "--quiet"]) == 0  # nothing left to run


def test_confirm_refuses_a_study_with_nothing_to_confirm(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    open_study(tiny_config(), url)
    assert main(["--storage", url]) == 2
    err = capsys.readouterr().err
    assert "no complete trials to confirm" in err and "Traceback" not in err
    optuna.create_study(storage=url, study_name="foreign")  # not made by vae_search
    assert main(["--storage", url, "--study-name", "foreign"]) == 2
    assert "was not made by vae_search" in capsys.readouterr().err
    assert main(["--storage", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--storage", url, "--seeds", "0"])
    assert exc.value.code == 2


def test_plan_takes_the_best_non_collapsed_trials(tmp_path):
    config = tiny_config()
    study = open_study(config, f"sqlite:///{tmp_path / 'p.db'}")
    dists = {"klstart": optuna.distributions.IntDistribution(0, 3),
             "annealtime": optuna.distributions.IntDistribution(0, 3),
             "latent_dim": optuna.distributions.CategoricalDistribution([2, 4])}
    for value, collapsed, latent in ((-50.0, False, 2), (-40.0, True, 4), (-45.0, False, 2)):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"klstart": 1, "annealtime": 1, "latent_dim": latent},
            distributions=dists, user_attrs={keys.ATTR_COLLAPSED: collapsed}))
    planned = plan(study, config, top=5)
    assert [label for label, _ in planned] == [2, 0, *REFERENCES]  # -45 then -50; collapsed out
    assert all(p["latent_dim"] == study.trials[2].params["latent_dim"]
               for label, p in planned if label in REFERENCES)
    # --like N: the references on trial N's parameters, named apart from the best's
    liked = plan(study, config, top=0, like=1)
    assert [label for label, _ in liked] == [f"{r} like #1" for r in REFERENCES]
    assert all(p["latent_dim"] == 4 for _, p in liked)
    with pytest.raises(ConfirmError):
        plan(study, config, top=0, like=99)
    study.add_trial(optuna.trial.create_trial(  # a failed trial has parameters, but no verdict
        state=TrialState.FAIL, params={"klstart": 0, "annealtime": 0, "latent_dim": 2},
        distributions=dists))
    with pytest.raises(ConfirmError, match="--like 3: .* no complete or pruned search trial"):
        plan(study, config, top=0, like=3)
    # --trial N: trial N too, whatever its rank (collapsed here), once, before the references
    named = plan(study, config, top=1, trials=[1, 2])
    assert [label for label, _ in named] == [2, 1, *REFERENCES]
    with pytest.raises(ConfirmError, match="--trial 3: "):
        plan(study, config, top=1, trials=[3])


def test_confirm_help_and_nothing_to_confirm(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "95% Wilson" in " ".join(out.split()) and "%%" not in out
    with pytest.raises(SystemExit) as exc:  # used to exit 0 having done nothing
        main(["--top", "0", "--no-references", "--storage", "sqlite:///nowhere/x.db"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nothing to confirm" in err
    options = ConfirmOptions.parse(["--top", "0", "--no-references", "--trial", "4", "--trial",
                                    "2", "--trial", "4"])
    assert options.trials == (4, 2)  # something to confirm: the trials named, once each


@pytest.mark.slow
def test_confirm_with_workers_on_postgresql(pg_url, tiny_toml, capsys):
    name = f"confirm-{uuid.uuid4().hex[:8]}"
    toml = tiny_toml(train={"epochs": 3}, search={"klstart": [0, 1], "annealtime": [0, 1]})
    assert run_main(["--study", str(toml), "--storage", pg_url, "--study-name", name,
                     "--trials", "3", "--quiet"]) == 0
    assert main(["--storage", pg_url, "--study-name", name, "--top", "1", "--seeds", "2",
                 "--workers", "2", "--quiet"]) == 0
    study = optuna.load_study(study_name=name, storage=pg_url)
    runs, _ = confirmation_runs(study)
    assert runs and all(t.state == TrialState.COMPLETE for t in runs)
    assert {t.user_attrs[keys.ATTR_WORKER] for t in runs}  # run by the children
    table = study.user_attrs[keys.STUDY_ATTR_CONFIRMATION]
    assert sum(row["runs"] for row in table) == len(runs) == 2 * len(table)
    # no sampled trial trained (two workers asking at once fail one before training), and
    # the search's budget is untouched
    others = [t for t in study.get_trials() if t not in runs][3:]
    assert all(t.state == TrialState.FAIL and not t.intermediate_values
               and t.user_attrs[keys.ATTR_FAIL_REASON].startswith("surplus") for t in others)
    assert finished_count(study) == 3
    optuna.delete_study(study_name=name, storage=pg_url)


def test_plan_takes_the_best_of_each_remedy_family(tmp_path):
    """With several families, --top counts per family; a family whose trials all collapsed is
    confirmed on its best trial (so the families compare on new seeds)."""
    config = tiny_config(search={"families": ["warmup", "free_bits"]})
    study = open_study(config, f"sqlite:///{tmp_path / 'f.db'}")
    dists = {"klstart": optuna.distributions.IntDistribution(0, 3),
             "annealtime": optuna.distributions.IntDistribution(0, 3),
             "family": optuna.distributions.CategoricalDistribution(["warmup", "free_bits"])}
    for value, collapsed, family in ((-40.0, True, "warmup"), (-41.0, True, "warmup"),
                                     (-45.0, False, "free_bits"), (-44.0, False, "free_bits"),
                                     (-43.0, False, "free_bits")):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"klstart": 1, "annealtime": 1, "family": family},
            distributions=dists, user_attrs={keys.ATTR_COLLAPSED: collapsed}))
    labels = [label for label, _ in plan(study, config, top=2)]
    assert labels[:3] == [0, 4, 3], labels  # warm-up's best (all collapsed), then free bits' 2


def test_the_confirmation_table_names_families_and_the_code_they_keep():
    """I(x;z) is a column (the remedies are compared on it); the family column appears once
    the confirmed schedules span several families."""
    from vae_search.report.confirmation import ConfirmationRow, confirmation_table

    def row(label, family, mi):
        return ConfirmationRow(schedule=label, klstart=1, annealtime=2, latent_dim=4,
                               reduction="sum", runs=5, collapsed=0, rate_low=0.0,
                               rate_high=0.43, active_median=3, active_min=2, active_max=4,
                               elbo_mean=-60.0, elbo_sd=0.1, iwae_mean=-59.9, mi_median=mi,
                               family=family)

    header, rows = confirmation_table([row("#1", "warmup", 0.004), row("#2", "free_bits", 1.5)])
    assert header[:2] == ("schedule", "family")
    assert [r[1] for r in rows] == ["warmup", "free_bits"]
    assert [r[header.index("I(x;z) median")] for r in rows] == ["0.00", "1.50"]
    header, rows = confirmation_table([row("#1", "warmup", None)])
    assert "family" not in header and rows[0][header.index("I(x;z) median")] == "-"
