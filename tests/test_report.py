"""Figures, findings, the standalone report and the runner hooks, on real SQLite studies."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from tests.conftest import stored_figures, tiny_config
from vae_search import keys, report
from vae_search.report.confirmation import collapse_probability_figure
from vae_search.storage.artifacts import (
    ARTIFACT_DIR_SUFFIX,
    DEFAULT_ARTIFACT_DIR,
    artifact_hook,
    default_artifact_dir,
    sample_grid,
)
from vae_search.trial.reference import PpcaReference, to_attr
from vae_search.trial.schedule import LinearSchedule, full_beta_epoch

EPOCHS = 6  # tiny_config's train.epochs
DISTRIBUTIONS = {
    "klstart": IntDistribution(0, 3),
    "annealtime": IntDistribution(0, 3),
    "latent_dim": CategoricalDistribution([2, 4]),
    "reduction": CategoricalDistribution(["sum", "mean"]),
}


def _history(n_epochs: int, schedule: LinearSchedule, *, active: int, elbo_end: float) -> dict:
    return {
        "epoch": list(range(n_epochs)),
        "beta": [schedule(e) for e in range(n_epochs)],
        "train_loss": [30.0 - e for e in range(n_epochs)],
        "val_elbo": [elbo_end - 40.0 / (e + 1) for e in range(n_epochs)],
        "val_kl": [5.0 / (e + 1) for e in range(n_epochs)],
        "active_units": [active] * n_epochs,
    }


def make_trial(number: int, *, state: TrialState, klstart: int, annealtime: int,
               latent_dim: int, reduction: str, active: int | None = None,
               elbo: float = -30.0, stop: int = EPOCHS) -> optuna.trial.FrozenTrial:
    """A finished trial with the user attrs the Objective records (``active=None``: failed
    before any diagnostics)."""
    schedule = LinearSchedule(klstart, annealtime)
    attrs: dict = {keys.ATTR_FULL_BETA_EPOCH: full_beta_epoch(schedule, EPOCHS)}
    if active is not None:
        kl = [0.8 * (i + 1) if i < active else 0.001 for i in range(latent_dim)]
        attrs.update({
            keys.ATTR_ACTIVE_UNITS: active,
            keys.ATTR_UNIT_VARIANCES: [0.5 if i < active else 0.0 for i in range(latent_dim)],
            keys.ATTR_KL_PER_DIM: kl,
            keys.ATTR_KL_TOTAL: sum(kl),
            keys.ATTR_COLLAPSED_DIMS: latent_dim - active,
            keys.ATTR_MUTUAL_INFO: 0.6 * active if active else -0.01,
            keys.ATTR_RECON: -elbo - sum(kl),
            keys.ATTR_COLLAPSED: active == 0,
            keys.ATTR_HISTORY: _history(stop, schedule, active=active, elbo_end=elbo),
        })
    else:
        attrs[keys.ATTR_FAIL_REASON] = "training diverged at epoch 2 (beta=0.5): train loss nan"
        attrs[keys.ATTR_HISTORY] = _history(2, schedule, active=0, elbo_end=elbo)
    steps = attrs.get(keys.ATTR_HISTORY, {}).get("val_elbo", [])
    return create_trial(
        state=state,
        value=elbo if state == TrialState.COMPLETE else None,
        params={"klstart": klstart, "annealtime": annealtime, "latent_dim": latent_dim,
                "reduction": reduction},
        distributions=DISTRIBUTIONS,
        user_attrs=attrs,
        intermediate_values=dict(enumerate(steps)) if state != TrialState.FAIL else {},
    )


# (state, klstart, annealtime, latent_dim, reduction, active units, ELBO, epochs run)
MIXED = [
    (TrialState.COMPLETE, 2, 3, 4, "sum", 4, -25.0, EPOCHS),
    (TrialState.COMPLETE, 0, 0, 2, "sum", 2, -27.0, EPOCHS),
    (TrialState.COMPLETE, 1, 2, 4, "mean", 0, -29.0, EPOCHS),
    (TrialState.COMPLETE, 3, 3, 2, "mean", 1, -28.0, EPOCHS),
    (TrialState.PRUNED, 0, 1, 4, "mean", 0, -33.0, 4),
    (TrialState.FAIL, 1, 1, 2, "sum", None, -40.0, 2),
]


def new_study(tmp_path, name: str = "mixed") -> optuna.Study:
    """A study on a real SQLite file carrying the stored config, like the runner makes."""
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 's.db'}",
                                direction="maximize")
    study.set_user_attr(keys.STUDY_ATTR_CONFIG, tiny_config().comparable())
    return study


@pytest.fixture
def mixed(tmp_path) -> optuna.Study:
    study = new_study(tmp_path)
    for i, (state, ks, at, d, red, active, elbo, stop) in enumerate(MIXED):
        study.add_trial(make_trial(i, state=state, klstart=ks, annealtime=at, latent_dim=d,
                                   reduction=red, active=active, elbo=elbo, stop=stop))
    return study


def _annotations(fig) -> str:
    return " ".join(a.text or "" for a in fig.layout.annotations)


def test_collapse_map_shows_every_finished_trial_by_state_and_reduction(mixed):
    fig = report.collapse_map(mixed)
    # one panel per reduction mode, in the configured order
    assert "reduction = sum" in _annotations(fig) and "reduction = mean" in _annotations(fig)
    points = {}
    for trace in fig.data:
        for text in trace.text:
            number = int(re.search(r"trial #(\d+)", text).group(1))
            points[number] = (trace.name, trace.marker.symbol, trace.xaxis)
    assert sorted(points) == list(range(len(MIXED)))  # complete, pruned and failed all shown
    assert points[4][:2] == ("pruned", "x")
    assert points[5][:2] == ("fail", "diamond-open")
    assert points[0][2] != points[2][2]  # sum and mean trials sit in different panels
    complete_sum = next(t for t in fig.data if t.name == "complete" and t.xaxis == "x")
    assert list(complete_sum.marker.color) == [4, 2]  # colour = active units
    assert "klstart" in fig.layout.xaxis.title.text
    assert "annealtime" in fig.layout.yaxis.title.text
    hover = " ".join(t for trace in fig.data for t in trace.text)
    assert "klstart=2, annealtime=3, latent_dim=4, reduction=sum" in hover
    assert "COLLAPSED" in hover and "training diverged" in hover


def test_schedules_follow_each_trials_beta_and_colour_by_active_units(mixed):
    fig = report.schedules_figure(mixed)
    lines = [t for t in fig.data if t.mode == "lines"]
    by_trial = {}
    for t in lines:
        for n in {n for n in t.customdata if n is not None}:
            ys = [y for y, c in zip(t.y, t.customdata) if c == n]
            by_trial[n] = (t, ys)
    assert sorted(by_trial) == [0, 1, 2, 3, 4]  # the failed trial has no final active units
    assert by_trial[0][1] == pytest.approx([LinearSchedule(2, 3)(e) for e in range(EPOCHS)],
                                           abs=1e-3)
    assert by_trial[4][0].line.dash == "dot"  # pruned
    assert by_trial[0][0].line.color != by_trial[2][0].line.color  # 4 active vs 0 active
    assert by_trial[2][0] is not by_trial[4][0]  # same active units, different state
    assert fig.layout.yaxis.title.text.startswith("beta")


def test_training_curves_mark_pruned_and_failed_and_shade_the_best_window(mixed):
    fig = report.training_curves_figure(mixed)
    elbo = {t.name: t for t in fig.data if t.mode == "lines" and t.yaxis == "y"}
    assert set(elbo) == {"sum, complete", "mean, complete", "mean, pruned", "sum, fail"}
    trials = {name: sorted({n for n in t.customdata if n is not None})
              for name, t in elbo.items()}
    assert trials == {"sum, complete": [0, 1], "mean, complete": [2, 3], "mean, pruned": [4],
                      "sum, fail": [5]}
    assert elbo["mean, pruned"].line.dash == "dash" and elbo["sum, fail"].line.dash == "dot"
    assert elbo["sum, complete"].line.dash == "solid"
    assert len([v for v in elbo["mean, pruned"].y if v is not None]) == 4  # stopped at epoch 3
    (end,) = [t for t in fig.data if t.mode == "markers"]
    assert "pruned here" in end.hovertemplate and "trial #4" in end.text[0]
    # the shaded annealing window is the best trial's (#0: klstart 2, full beta from epoch 4)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert rects and (rects[0].x0, rects[0].x1) == (1.5, 3.5)
    assert "best trial #0" in _annotations(fig)
    assert "nats" in fig.layout.yaxis.title.text and "nats" in fig.layout.yaxis2.title.text


def test_active_units_per_reduction_with_the_collapse_threshold(mixed):
    fig = report.active_units_figure(mixed)
    boxes = {t.name: t for t in fig.data if t.type == "box"}
    assert set(boxes) == {"reduction = sum", "reduction = mean"}
    assert sorted(boxes["reduction = mean"].y) == [0, 0, 1]
    threshold = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(threshold) == 1 and threshold[0].y0 == pytest.approx(0.5)
    assert "collapse" in _annotations(fig)


def test_kl_heat_strip_ranks_the_best_complete_trials(mixed):
    fig = report.kl_per_dim_figure(mixed, n=2)
    (heat,) = fig.data
    assert [label.split()[0] for label in heat.y] == ["#0", "#1"]  # by ELBO
    assert list(heat.z[0]) == sorted(heat.z[0], reverse=True)
    assert list(heat.z[1][2:]) == [None, None]  # a 2-dim trial padded to the 4-dim width


def test_empty_study_gives_a_message_not_a_crash(tmp_path):
    study = new_study(tmp_path, "empty")
    figs = report.build_figures(study)
    assert list(figs) == list(keys.FIG_IDS)
    for fig in figs.values():
        assert not fig.data
        assert "No " in _annotations(fig) and "'empty'" in _annotations(fig)
    f = report.findings(study)
    assert f.counts["diagnosed"] == 0 and f.best[1] == [] and f.by_reduction[1] == []
    html = report.report_html(study)
    assert "none yet" in html


def test_only_failed_trials_and_no_stored_config(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'f.db'}", study_name="raw")
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={}))  # failed before params
    study.add_trial(make_trial(1, state=TrialState.FAIL, klstart=1, annealtime=1,
                               latent_dim=2, reduction="sum"))
    figs = report.build_figures(study)
    assert len(figs[keys.FIG_COLLAPSE_MAP].data) == 1  # the failed trial with params
    assert not figs[keys.FIG_ACTIVE_UNITS].data  # nothing diagnosed: message figure
    assert report.findings(study).counts["fail"] == 2


def test_findings_count_collapse_by_reduction_and_region(mixed):
    f = report.findings(mixed)
    assert f.counts == {"complete": 4, "pruned": 1, "fail": 1, "diagnosed": 5, "collapsed": 2}
    by_red = {row[0]: row for row in f.by_reduction[1]}
    assert by_red["sum"][1:4] == ("2", "0", "0% [0%, 66%]")  # 95% Wilson interval
    assert by_red["mean"][1:4] == ("3", "2", "67% [21%, 94%]")
    regions = {(r[0], r[1]): r[2:5] for r in f.by_region[1]}
    none, short = report.WARMUP_BINS[0][2], report.WARMUP_BINS[1][2]
    assert regions[("sum", none)] == ("1", "0", "0% [0%, 79%]")  # klstart=0, step
    assert regions[("mean", none)] == ("1", "1", "100% [21%, 100%]")  # pruned #4
    assert regions[("mean", short)] == ("2", "1", "50% [9%, 91%]")  # full beta 2, 5
    assert [row[0] for row in f.best[1]] == ["0", "1", "3", "2"]
    text = report.findings_text(mixed)
    assert "collapse rate by reduction mode" in text and "67%" in text


# A fixed-variance Gaussian study's stored pPCA references (sigma2 = 0.5; latent 2 caps at 2).
PPCA = [PpcaReference(sigma2=0.5, latent_dim=2, active=2, log_likelihood=-41.5, collapsed=-41.6),
        PpcaReference(sigma2=0.5, latent_dim=4, active=3, log_likelihood=-41.2, collapsed=-41.6)]


@pytest.fixture
def gaussian(tmp_path) -> optuna.Study:
    """:data:`MIXED`'s trials in a fixed-variance Gaussian study with its pPCA references."""
    study = optuna.create_study(study_name="gaussian", storage=f"sqlite:///{tmp_path / 'g.db'}",
                                direction="maximize")
    config = tiny_config(model={"likelihood": "gaussian", "variance": "fixed", "sigma2": 0.5})
    study.set_user_attr(keys.STUDY_ATTR_CONFIG, config.comparable())
    study.set_user_attr(keys.STUDY_ATTR_DECODER_ONLY_NLL, 41.3)
    study.set_user_attr(keys.STUDY_ATTR_PPCA_REFERENCE, to_attr(PPCA))
    for i, (state, ks, at, d, red, active, elbo, stop) in enumerate(MIXED):
        study.add_trial(make_trial(i, state=state, klstart=ks, annealtime=at, latent_dim=d,
                                   reduction=red, active=active, elbo=elbo - 15.0, stop=stop))
    return study


def test_a_fixed_gaussian_studys_figures_show_the_ppca_reference(gaussian):
    curves = report.training_curves_figure(gaussian)
    lines = {round(s.y0, 3) for s in curves.layout.shapes if s.type == "line"}
    assert lines == {-41.3, -41.2}  # the decoder alone, and pPCA at the widest latent dim
    assert "pPCA (linear optimum), sigma2 = 0.5: -41.20 nats, 3 active" in _annotations(curves)
    assert curves.layout.yaxis.range[0] < -41.3  # both lines in view
    units = report.active_units_figure(gaussian)
    (predicted,) = [t for t in units.data if t.name == "pPCA predicts (sigma2 = 0.5)"]
    assert list(predicted.x) == ["2", "4"] and list(predicted.y) == [2, 3]


def test_a_fixed_gaussian_studys_findings_put_ppca_beside_the_baseline(gaussian):
    f = report.findings(gaussian)
    header, rows = f.best
    assert header.index("gap to pPCA") == header.index("gap to decoder-only") + 1
    gaps = {r[0]: (r[header.index("val ELBO")], r[header.index("gap to pPCA")]) for r in rows}
    assert gaps["0"] == ("-40.00", "1.20")  # latent 4: -40 - (-41.2)
    assert gaps["1"] == ("-42.00", "-0.50")  # latent 2: -42 - (-41.5)
    header, rows = f.reference
    assert [dict(zip(header, r, strict=True)) for r in rows] == [
        {"sigma2": "0.5", "latent": "2", "pPCA active": "2", "pPCA log p(x)": "-41.50",
         "all collapsed": "-41.60", "decoder alone": "-41.30", "trials": "2",
         "best ELBO": "-42.00", "median active": "1.5"},  # trials 1 and 3 (5 failed)
        {"sigma2": "0.5", "latent": "4", "pPCA active": "3", "pPCA log p(x)": "-41.20",
         "all collapsed": "-41.60", "decoder alone": "-41.30", "trials": "3",
         "best ELBO": "-40.00", "median active": "0"},  # trials 0, 2 and 4 (pruned)
    ]
    text = report.findings_text(gaussian)
    assert "theory's reference: probabilistic PCA" in text and "-41.20" in text
    assert "gap to pPCA" in report.summary_table(gaussian)
    assert "probabilistic PCA" in report.report_html(gaussian)


def test_other_studies_show_no_ppca_reference(mixed):
    """A Bernoulli study has no reference: no line, no marker, no column, no table."""
    assert not [s for s in report.training_curves_figure(mixed).layout.shapes
                if s.type == "line"]
    assert not [t for t in report.active_units_figure(mixed).data if "pPCA" in (t.name or "")]
    f = report.findings(mixed)
    assert "gap to pPCA" not in f.best[0] and f.reference == ((), [])
    assert "probabilistic PCA" not in report.findings_text(mixed)
    assert "probabilistic PCA" not in report.report_html(mixed)


def test_save_figures_uses_stable_ids_and_a_second_save_replaces(mixed):
    assert report.save_figures(mixed) == list(keys.FIG_IDS)
    first = stored_figures(mixed)
    assert set(first) == set(keys.FIG_IDS)
    mixed.add_trial(make_trial(6, state=TrialState.COMPLETE, klstart=3, annealtime=2,
                               latent_dim=4, reduction="sum", active=3, elbo=-24.0))
    report.save_figures(mixed)
    second = stored_figures(mixed)
    assert set(second) == set(keys.FIG_IDS)  # replaced, not duplicated
    assert "trial #6" in second[keys.FIG_COLLAPSE_MAP]
    assert "trial #6" not in first[keys.FIG_COLLAPSE_MAP]


def test_report_html_is_self_contained(mixed, tmp_path):
    out = report.write_report(mixed, tmp_path / "report.html")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc=", html, flags=re.I)  # no external scripts
    assert not re.search(r"<link[^>]*\bhref=", html, flags=re.I)  # no external styles
    assert "plotly.js v" in html or "Plotly" in html[:5_000_000]  # the library is inlined
    for fid in keys.FIG_IDS:
        assert f'id="{fid}"' in html
    assert "Collapse rate by reduction mode" in html and "67%" in html


def test_cli_writes_report_and_bad_input_is_one_line_exit_2(mixed, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    ok = subprocess.run([sys.executable, "-m", "vae_search.report", "--storage", url,
                         "--out", str(tmp_path / "r.html"), "--figures-dir",
                         str(tmp_path / "figs")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "collapse rate by reduction mode" in ok.stdout and (tmp_path / "r.html").is_file()
    pages = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert pages == sorted(f"{fid}.html" for fid in keys.FIG_IDS)
    page = (tmp_path / "figs" / f"{keys.FIG_COLLAPSE_MAP}.html").read_text(encoding="utf-8")
    assert "trial #5" in page and not re.search(r"<script[^>]*\bsrc=", page, flags=re.I)
    for argv, message in (  # in-process: the same main(), without four interpreter starts
        (["--storage", url, "--study-name", "nope"], "no study 'nope'"),
        (["--storage", f"sqlite:///{tmp_path / 'missing.db'}"], "does not exist"),
        (["--storage", "postgresql://u:hunter2@127.0.0.1:1/db"], "u:***@"),
    ):
        assert report.main([*argv, "--out", str(tmp_path / "x.html")]) == 2
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], err
        assert "hunter2" not in err + out and not (tmp_path / "x.html").exists()
    with pytest.raises(SystemExit) as info:  # parsed with the arguments: a usage error
        report.main(["--storage", "not a url", "--out", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "malformed storage URL 'not a url'" in err


def test_report_and_dashboard_do_not_import_tensorflow(mixed, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = (
        "import sys\n"
        "from vae_search import report\n"
        "from vae_search.report import dashboard\n"
        "from vae_search.storage import artifacts  # noqa: F401\n"
        "from vae_search.storage.connection import load_study\n"
        "for parser in (report.build_parser(), dashboard.build_parser()):\n"
        "    try: parser.parse_args(['--help'])\n"
        "    except SystemExit: pass\n"
        f"study = load_study({url!r}, 'mixed')\n"
        "report.save_figures(study); report.report_html(study)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Artifacts.


def test_default_artifact_dir_sits_beside_the_sqlite_file(tmp_path):
    assert default_artifact_dir(f"sqlite:///{tmp_path / 'vae_search.db'}") == (
        tmp_path / f"vae_search{ARTIFACT_DIR_SUFFIX}")
    assert default_artifact_dir("postgresql://u:p@db:5432/x") == DEFAULT_ARTIFACT_DIR


def test_grid_is_square_images_for_square_feature_counts_and_strips_otherwise():
    rng = np.random.default_rng(0)
    digits = sample_grid([rng.random((8, 64)) for _ in range(3)])
    assert digits.mode == "L" and digits.width > 4 * digits.height // 3  # 3 rows x 8 images
    arr = np.asarray(digits)
    assert arr.std() > 10  # random pixels, not a flat image
    strips = sample_grid([rng.random((8, 10)) for _ in range(3)])
    assert strips.height > strips.width // 4  # 24 strips stacked
    flat = sample_grid([np.zeros((2, 9)), np.full((2, 9), np.nan)])  # no range, NaN: no crash
    assert flat.size[0] > 0


def _tiny_study(tmp_path, config):
    from vae_search.engine.study import open_study

    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    return url, open_study(config, optuna.storages.RDBStorage(url))


def test_real_objective_trials_give_figures_and_png_artifacts(tmp_path):
    """Through the real Objective: figures refreshed by the callback, one PNG per trial."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    from vae_search.storage._optuna import study_storage
    from vae_search.trial.objective import Objective

    config = tiny_config(search={"latent_dim": [4]})  # one architecture: one compilation
    url, study = _tiny_study(tmp_path, config)
    hook = artifact_hook(url)
    refresher = report.FigureRefresher(every=2)
    study.optimize(Objective(config, on_finish=hook), n_trials=3, callbacks=[refresher])
    assert refresher.finished == 3 and not refresher.warned
    assert refresher.refreshes == 1  # the first refresh is not held back by refresh_seconds
    stored = stored_figures(study)
    assert set(stored) == set(keys.FIG_IDS)  # saved at the 2nd trial
    figs = report.build_figures(study)
    assert len({int(n) for n in re.findall(r"trial #(\d+)",
                                            figs[keys.FIG_COLLAPSE_MAP].to_json())}) == 3
    assert (tmp_path / f"tiny{ARTIFACT_DIR_SUFFIX}").is_dir()
    for trial in study.trials:
        (meta,) = get_all_artifact_meta(trial, storage=study_storage(study))
        assert meta.mimetype == "image/png"
        path = tmp_path / f"{trial.number}.png"
        download_artifact(artifact_store=hook.artifact_store, artifact_id=meta.artifact_id,
                          file_path=str(path))
        with Image.open(path) as img:
            # 3 rows (validation, reconstructions, prior samples) of 8 images, 8x8 upscaled
            assert img.size == (2 + 8 * (64 + 2), 2 + 3 * (64 + 2))


def test_progress_counts_its_own_trials_and_reads_other_workers_every_read_seconds():
    """After a trial the bar counts it at once; other workers' trials appear at the next read."""
    now = [0.0]
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=-40.0,
                                 user_attrs={keys.ATTR_COLLAPSED: True}))
    progress = report.Progress(study, 10, enabled=False, read_seconds=5.0,
                               clock=lambda: now[0])

    def shown(done: int, best: str, pruned: int, failed: int) -> tuple[int, dict]:
        return done, {"best": best, "collapsed": 1, "pruned": pruned, "failed": failed}

    def finished(value: float | None, state: TrialState = TrialState.COMPLETE):
        study.add_trial(create_trial(state=state, value=value))  # any worker's
        return study.trials[-1]

    assert progress.state() == shown(1, "-40.00", 0, 0)
    now[0] = 1.0
    progress(study, finished(-30.0))  # this worker's: counted without a read
    finished(None, TrialState.PRUNED)  # another worker's
    assert progress.state() == shown(2, "-30.00", 0, 0) and progress.bar.n == 2
    now[0] = 2.0
    progress(study, finished(None, TrialState.FAIL))
    assert progress.state() == shown(2, "-30.00", 0, 1)
    now[0] = 6.0  # read_seconds since the last read: the other worker's trial shows
    progress(study, finished(-35.0))
    assert progress.state() == shown(4, "-30.00", 1, 1) and progress.bar.n == 4
    finished(-20.0)
    progress.refresh(study)  # the --workers parent: always reads
    assert progress.state() == shown(5, "-20.00", 1, 1)
    progress.close()


def test_figure_refresher_waits_refresh_seconds_between_refreshes(monkeypatch):
    """The first refresh is at once; later ones need ``every`` trials *and* ``seconds``."""
    from types import SimpleNamespace

    from vae_search.report import callbacks

    now = [0.0]
    saved: list[float] = []
    monkeypatch.setattr(callbacks, "save_figures", lambda study: saved.append(now[0]))
    refresher = report.FigureRefresher(2, seconds=30.0, clock=lambda: now[0])

    def finish(at: float, state: TrialState = TrialState.COMPLETE) -> None:
        now[0] = at
        refresher(None, SimpleNamespace(state=state))  # type: ignore[arg-type]

    finish(0.0)
    finish(1.0)  # 2 trials, no refresh yet: at once
    assert saved == [1.0]
    for at in (2.0, 3.0, 4.0):  # trials enough, but too soon
        finish(at)
    finish(40.0, TrialState.FAIL)  # a failed trial is no finished trial
    assert saved == [1.0]
    finish(31.0, TrialState.PRUNED)  # the interval has passed: the next finished trial
    finish(62.0)  # 31 s later but 1 trial since: wait for the second
    assert saved == [1.0, 31.0]
    finish(63.0)
    assert saved == [1.0, 31.0, 63.0] and refresher.finished == 8 and refresher.refreshes == 3

    every_trial = report.FigureRefresher(1, seconds=0.0, clock=lambda: 0.0)  # no minimum
    never = report.FigureRefresher(0, seconds=0.0)  # end only (the worker's own refresh)
    saved.clear()
    for _ in range(3):
        every_trial(None, SimpleNamespace(state=TrialState.COMPLETE))  # type: ignore[arg-type]
        never(None, SimpleNamespace(state=TrialState.COMPLETE))  # type: ignore[arg-type]
    assert len(saved) == 3 and never.refreshes == 0


def test_figure_refresher_observes_a_workers_study_for_the_parent(monkeypatch):
    """The --workers parent counts every worker's finished trials from the study (its
    children draw no figures): the same rule, from the trials finished when it started."""
    from vae_search.report import callbacks

    now = [0.0]
    saved: list[float] = []
    monkeypatch.setattr(callbacks, "save_figures", lambda study: saved.append(now[0]))
    refresher = report.FigureRefresher(5, seconds=30.0, finished=10, clock=lambda: now[0])
    refresher.observe(None, 12)  # type: ignore[arg-type]
    refresher.observe(None, 12)  # type: ignore[arg-type]
    assert saved == []  # 2 new trials of the 5 wanted
    now[0] = 1.0
    refresher.observe(None, 15)  # type: ignore[arg-type]
    assert saved == [1.0]  # the first refresh is not held back
    now[0] = 20.0
    refresher.observe(None, 30)  # type: ignore[arg-type]
    assert saved == [1.0]  # too soon
    now[0] = 31.0
    refresher.observe(None, 30)  # type: ignore[arg-type]
    assert saved == [1.0, 31.0] and refresher.finished == 30
    report.FigureRefresher(0).observe(None, 100)  # type: ignore[arg-type]
    assert saved == [1.0, 31.0]


def test_runner_refreshes_figures_and_writes_artifacts(tmp_path, tiny_toml, capsys):
    from vae_search.run import main

    toml = tiny_toml(train={"epochs": 4},
                     search={"klstart": [0, 2], "annealtime": [0, 2], "latent_dim": [2]},
                     pruner={"name": "none"}, run={"refresh_every": 1})
    db = tmp_path / "run.db"
    assert main(["--study", str(toml), "--storage", f"sqlite:///{db}", "--trials", "2",
                 "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    stored = stored_figures(study)
    assert set(stored) == set(keys.FIG_IDS)
    assert len(list((tmp_path / f"run{ARTIFACT_DIR_SUFFIX}").iterdir())) == 2


@pytest.mark.parametrize(("script", "args", "expect"), [
    ("collapse_onset.py", ["--study-name", "mixed"], "mean: 2 complete trials"),
    ("constraint_effect.py", ["--with", "mixed", "--without", "mixed"],
     "best non-collapsed ELBO -25.000"),
])
def test_findings_scripts_read_a_study(mixed, tmp_path, script, args, expect):
    """The scripts behind docs/findings.md still run against the current package."""
    from tests.conftest import REPO, subprocess_env

    proc = subprocess.run(
        [sys.executable, f"{REPO}/docs/findings/{script}", "--storage",
         f"sqlite:///{tmp_path / 's.db'}", *args],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout


def families_study(tmp_path, name: str = "families") -> optuna.Study:
    """A study searching two remedy families (warm-up collapses 2/2, free bits 1/3)."""
    study = new_study(tmp_path, name)
    config = tiny_config(search={"families": ["warmup", "free_bits"]})
    study.set_user_attr(keys.STUDY_ATTR_CONFIG, config.comparable())
    family = CategoricalDistribution(["warmup", "free_bits"])
    # (family, state, active units, IWAE): warm-up collapses 2/2, free bits 1/3
    cases = [("warmup", TrialState.COMPLETE, 0, -30.0), ("warmup", TrialState.PRUNED, 0, None),
             ("free_bits", TrialState.COMPLETE, 3, -26.0),
             ("free_bits", TrialState.COMPLETE, 2, -28.0),
             ("free_bits", TrialState.PRUNED, 0, None)]
    for i, (name, state, active, iwae) in enumerate(cases):
        t = make_trial(i, state=state, klstart=1, annealtime=2, latent_dim=4, reduction="sum",
                       active=active, elbo=-31.0 + i, stop=EPOCHS if iwae else 4)
        attrs = {**t.user_attrs, **({keys.ATTR_IWAE: iwae} if iwae is not None else {})}
        study.add_trial(create_trial(
            state=state, value=t.value, params={**t.params, "family": name},
            distributions={**t.distributions, "family": family}, user_attrs=attrs,
            intermediate_values=t.intermediate_values))
    return study


def test_findings_and_the_probability_figure_compare_remedy_families(tmp_path):
    """A study searching two families gets a by-family table (rate with its Wilson interval,
    I(x;z), IWAE over complete trials) and a by-family trace in the collapse-probability
    figure; a one-family study gets neither."""
    study = families_study(tmp_path)
    f = report.findings(study)
    header, rows = f.by_family
    assert header[0] == "family" and header[-1] == "median IWAE"
    by_name = {row[0]: row for row in rows}
    assert by_name["warmup"][1:4] == ("2", "2", "100% [34%, 100%]")
    assert by_name["free_bits"][1:4] == ("3", "1", "33% [6%, 79%]")
    assert by_name["warmup"][-1] == "-30.00" and by_name["free_bits"][-1] == "-27.00"
    assert "collapse rate by remedy family" in report.findings_text(study)
    best_header, best = f.best
    assert best_header[:2] == ("trial", "family")
    assert {row[1] for row in best} == {"warmup", "free_bits"}
    summary = report.summary_table(study)  # what run prints at its end
    assert "family" in summary.splitlines()[2] and "collapse rate by remedy family" in summary
    fig = collapse_probability_figure(study)
    (trace,) = [t for t in fig.data if t.name == "search trials by remedy family"]
    assert list(trace.x) == ["family: warmup", "family: free_bits"]
    assert list(trace.y) == pytest.approx([1.0, 1 / 3])


def test_a_one_family_study_has_no_family_table_or_trace(mixed):
    assert report.findings(mixed).by_family == ((), [])
    assert "family" not in report.findings(mixed).best[0]
    assert "by remedy family" not in report.findings_text(mixed)
    fig = collapse_probability_figure(mixed)
    assert all(t.name != "search trials by remedy family" for t in fig.data)
