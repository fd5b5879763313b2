"""``vae-search export``: the saved model loads with keras.saving.load_model, encodes and
decodes, and its validation ELBO, recomputed from the file, is the stored one."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import optuna
import pytest

from tests.conftest import tiny_config
from vae_search import keys
from vae_search.engine.export import ExportError, export_trial
from vae_search.engine.study import open_study
from vae_search.trial.metrics import bernoulli_log_likelihood, gaussian_kl
from vae_search.trial.objective import Objective


def _study(tmp_path, **sections):
    config = tiny_config(**sections)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    study = open_study(config, url, study_name="x")
    study.optimize(Objective(config), n_trials=2)
    return study, config


@pytest.mark.parametrize("decoder", ["dense", "made"])
def test_exported_model_reproduces_the_stored_validation_elbo(tmp_path, decoder):
    from vae_search._tf import keras
    from vae_search.data.datasets import load_dataset

    study, config = _study(tmp_path, model={"decoder": decoder, "hidden": [32]})
    done = export_trial(study, "best", tmp_path / "m.keras")
    assert done.number == study.best_trial.number
    model = keras.saving.load_model(done.path)  # a fresh object from the file alone
    x = load_dataset(config).x_val
    z_mean, z_log_var = (np.asarray(t, dtype=np.float64) for t in model(x)[:2])
    # the trainer's validation noise: the study seed's stream, drawn once for the split
    gen = keras.random.SeedGenerator(0)
    gen.state.assign(np.array([config.seed, 1], dtype="int64"))
    eps = np.asarray(keras.random.normal(z_mean.shape, seed=gen), dtype=np.float64)
    z = (z_mean + np.exp(0.5 * z_log_var) * eps).astype("float32")
    decoder_model = model.get_layer("decoder")
    logits = decoder_model([z, x]) if decoder == "made" else decoder_model(z)
    recon = -bernoulli_log_likelihood(x, np.asarray(logits, dtype=np.float64)).sum(1)
    elbo = float(np.mean(-recon - gaussian_kl(z_mean, z_log_var).sum(1)))
    assert elbo == pytest.approx(done.stored_elbo, abs=0.05)
    assert elbo == pytest.approx(study.best_trial.value, abs=0.05)
    # and it decodes: the reconstruction output has the data's shape
    assert np.asarray(model(x[:3])[2]).shape == (3, x.shape[1])


def test_export_of_a_sequence_trial_round_trips_the_gru_layers(tmp_path):
    from vae_search._tf import keras

    study, config = _study(
        tmp_path,
        data={"dataset": "sequences", "n_samples": 200, "vocab": 6, "length": 6},
        model={"likelihood": "categorical", "decoder": "gru", "hidden": [8], "embedding_dim": 4},
        search={"latent_dim": [2], "reduction": ["sum"], "klstart": [0, 1],
                "annealtime": [0, 1], "word_dropout": [0.0, 0.3]},
        train={"epochs": 2, "batch_size": 32},
    )
    done = export_trial(study, "0", tmp_path / "g.keras")
    model = keras.saving.load_model(done.path)
    tokens = np.zeros((2, 6), dtype="int32")
    assert np.asarray(model(tokens)[2]).shape == (2, 6, 6)  # logits over the vocabulary


def test_export_refuses_what_it_cannot_reproduce(tmp_path):
    study, _ = _study(tmp_path, model={"hidden": [16]})
    with pytest.raises(ExportError, match="no trial 99"):
        export_trial(study, "99", tmp_path / "m.keras")
    with pytest.raises(ExportError, match="'best' or a trial number"):
        export_trial(study, "first", tmp_path / "m.keras")
    with pytest.raises(ExportError, match=r"\.keras file"):
        export_trial(study, "best", tmp_path / "m.h5")
    # a tampered stored seed trains a different model: refused, nothing written
    number = study.best_trial.number
    with sqlite3.connect(tmp_path / "x.db") as conn:
        changed = conn.execute(
            "update trial_user_attributes set value_json = '12345' where key = ? and trial_id = "
            "(select trial_id from trials where number = ?)", (keys.ATTR_SEED, number)).rowcount
    assert changed == 1
    reloaded = optuna.load_study(study_name="x", storage=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ExportError, match="not the same model"):
        export_trial(reloaded, str(number), tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_export_command_line(tmp_path, capsys):
    from vae_search.engine.export import main

    study, _ = _study(tmp_path, model={"hidden": [16]})
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["--storage", url, "--out", str(tmp_path / "cli.keras")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "cli.keras").is_file()
    assert main(["--storage", url, "--trial", "7", "--out", str(tmp_path / "n.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vae_search: error: ") and "no trial 7" in err[-1]


def test_export_of_a_pareto_study_needs_a_trial_number(tmp_path):
    study, _ = _study(tmp_path, model={"hidden": [16]}, search={"objective": "pareto"})
    assert len(study.directions) == 2
    with pytest.raises(ExportError, match="pass --trial NUMBER"):
        export_trial(study, "best", tmp_path / "p.keras")
    done = export_trial(study, "1", tmp_path / "p.keras")
    history = study.trials[1].user_attrs[keys.ATTR_HISTORY]["val_elbo"]
    assert done.stored_elbo == pytest.approx(history[-1]) and done.path.is_file()


def test_best_of_a_study_whose_trials_all_collapsed_says_so_and_how_to_export_one(tmp_path):
    empty = open_study(tiny_config(), f"sqlite:///{tmp_path / 'e.db'}", study_name="e")
    with pytest.raises(ExportError, match="has no complete trial yet"):
        export_trial(empty, "best", tmp_path / "m.keras")
    # no trial can reach 1000 nats of information: every one collapses, so none is feasible
    study, _ = _study(tmp_path, model={"hidden": [16]}, collapse={"min_mutual_info": 1000.0})
    assert all(t.user_attrs[keys.ATTR_COLLAPSED] for t in study.trials)
    with pytest.raises(ExportError, match=r"all 2 complete trials collapsed") as info:
        export_trial(study, "best", tmp_path / "m.keras")
    suggested = int(re.search(r"--trial (\d+) \(the highest", str(info.value)).group(1))
    assert suggested == max(study.trials, key=lambda t: t.value).number
    assert export_trial(study, str(suggested), tmp_path / "m.keras").path.is_file()
