"""Every regime end to end through the runner: the recipe's fixed-variance Gaussian, the MADE
and GRU decoders on flat digits, synthetic sequences and text, and a user's own model. Each
study trains, is diagnosed (IWAE bound included), gets its decoder-only baseline, its figures
and its per-trial artifact."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import REPO
from vae_search import keys
from vae_search.run import main as run_main

COMMON = """
[train]
epochs = 3
batch_size = 64
[search]
klstart = [0, 1]
annealtime = [0, 1]
latent_dim = [2, 4]
reduction = ["sum", "mean"]
[sampler]
name = "random"
[pruner]
patience = 0
n_startup_trials = 1
[collapse]
mi_batch_size = 64
"""

REGIMES = {
    "seed_mse": ('[model]\nlikelihood = "gaussian"\nvariance = "fixed"\nsigma2 = 0.5\n'
                 'hidden = [32]\n', "png"),
    "made": ('[model]\ndecoder = "made"\nhidden = [32]\ncontext = 3\n', "png"),
    "sequences": ('[data]\ndataset = "sequences"\nn_samples = 300\nvocab = 8\nlength = 8\n'
                  '[model]\nlikelihood = "categorical"\ndecoder = "gru"\nhidden = [16]\n'
                  'embedding_dim = 8\n', "txt"),
    "text": ('[data]\ndataset = "text"\npath = "text_corpus.txt"\nlength = 24\n'
             '[model]\nlikelihood = "categorical"\ndecoder = "gru"\nhidden = [16]\n'
             'embedding_dim = 8\n', "txt"),
    "builder": ('[model]\nbuilder = "examples.conv_digits:build"\nhidden = [16]\n', "png"),
}


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_regime_runs_end_to_end(regime, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(REPO)
    model, artifact = REGIMES[regime]
    toml = tmp_path / f"{regime}.toml"
    text = f'name = "{regime}"\n{model}{COMMON}'
    if regime == "sequences":  # and the optional decoder-input dropout dimension
        text = text.replace('reduction = ["sum", "mean"]\n',
                            'reduction = ["sum", "mean"]\nword_dropout = [0.0, 0.5]\n')
    toml.write_text(text)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run_main(["--study", str(toml), "--trials", "3", "--storage", url, "--quiet"]) == 0
    study = optuna.load_study(study_name=regime, storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3, [(t.state, t.user_attrs.get(keys.ATTR_FAIL_REASON))
                                for t in study.trials]
    for t in finished:
        assert len(t.user_attrs[keys.ATTR_KL_PER_DIM]) == t.params["latent_dim"]
        assert isinstance(t.user_attrs[keys.ATTR_COLLAPSED], bool)
        assert t.value is None or t.value < 0  # an ELBO in nats
        elbo = t.user_attrs[keys.ATTR_HISTORY]["val_elbo"][-1]
        if t.state == TrialState.COMPLETE:  # a pruned trial skips the bound
            assert t.user_attrs[keys.ATTR_IWAE] >= elbo - 0.5  # IWAE >= ELBO, up to MC error
        if regime == "sequences":
            assert 0.0 <= t.params["word_dropout"] <= 0.5
    # the decoder alone (no latent code) was trained once, on the same likelihood
    assert study.user_attrs[keys.STUDY_ATTR_DECODER_ONLY_NLL] > 0
    # the figures were refreshed into the study at the end of the run
    from vae_search.report import build_figures

    figures = build_figures(study)
    assert set(figures) == set(keys.FIG_IDS)
    artifacts = list(Path(tmp_path / "r-artifacts").iterdir())
    assert artifacts, "no per-trial artifact was written"
    if artifact == "txt":  # token data: text with the three blocks of eight sequences
        from optuna.artifacts import get_all_artifact_meta
        from optuna.storages import RDBStorage

        metas = [m for t in finished for m in get_all_artifact_meta(t, storage=RDBStorage(url))]
        assert metas and all(m.mimetype == "text/plain" for m in metas)
        body = max(artifacts, key=lambda p: p.stat().st_mtime).read_text(encoding="utf-8")
        assert body.count("# ") == 3 and len(body.splitlines()) == 3 + 3 * 8
