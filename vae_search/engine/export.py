"""``vae-search export``: one trial's trained VAE as a Keras file.

The study stores parameters and seeds, not weights, so the trial is trained again: same
parameters, same seed, same epochs (a pruned trial up to the epoch it was pruned at), on the
same data split. Trials are reproducible in one process, so the re-trained model's validation
ELBO matches the stored one up to float noise; the command prints both, and refuses to write a
model that does not match (a different machine or library version can change the arithmetic).

The file holds one Keras model ``x -> [z_mean, z_log_var, params]``, where ``params`` are the
likelihood's parameters decoded at ``z = z_mean`` (Bernoulli logits, Gaussian means, or
categorical logits; an autoregressive decoder is fed ``x``, teacher forcing). Its
``get_layer("encoder")`` and ``get_layer("decoder")`` are the trained encoder and decoder.
Load it with ``keras.saving.load_model`` after ``import vae_search.models`` (which registers the
MADE and GRU layers).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_search import keys

if TYPE_CHECKING:
    import optuna

__all__ = ["ELBO_TOLERANCE", "ExportError", "Exported", "export_trial", "main"]

ELBO_TOLERANCE = 0.05  # nats: a re-trained model further than this from the stored ELBO is refused


class ExportError(RuntimeError):
    """The trial cannot be exported (not found, not finished, or not reproduced)."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export_trial` wrote."""

    number: int
    path: Path
    stored_elbo: float
    retrained_elbo: float


def _pick(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    from optuna.trial import TrialState

    if which == "best":
        if len(study.directions) > 1:
            raise ExportError("a pareto study has no single best trial: pass --trial NUMBER "
                              "(the Pareto front is in optuna-dashboard)")
        try:
            return study.best_trial
        except ValueError:
            raise ExportError(_no_best(study)) from None
    try:
        number = int(which)
    except ValueError:
        raise ExportError(f"--trial: expected 'best' or a trial number, got {which!r}") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ExportError(f"study {study.study_name!r} has no trial {number} "
                          f"(trials 0..{max(trials, default=-1)})")
    trial = trials[number]
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not _elbos(trial):
        raise ExportError(f"trial {number} is {trial.state.name.lower()}: only complete or pruned "
                          "trials can be exported")
    return trial


def _no_best(study: optuna.Study) -> str:
    """Why ``study`` has no best trial, and how to export one anyway."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return f"study {study.study_name!r} has no complete trial yet"
    # Optuna's best trial is a feasible one, and a collapsed trial is infeasible.
    elbo, number = max((float(t.values[0]), t.number) for t in complete)
    every = "the only complete trial" if len(complete) == 1 else (
        f"all {len(complete)} complete trials")
    return (f"study {study.study_name!r} has no best trial: {every} collapsed (a collapsed "
            f"trial is infeasible); export one anyway with --trial NUMBER, e.g. --trial "
            f"{number} (the highest validation ELBO, {elbo:.3f} nats)")


def _elbos(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The trial's validation ELBO per epoch (its history; a pareto trial reports none)."""
    history = trial.user_attrs.get(keys.ATTR_HISTORY) or {}
    if history.get("val_elbo"):
        return [float(v) for v in history["val_elbo"]]
    return [float(trial.intermediate_values[s]) for s in sorted(trial.intermediate_values)]


def inference_model(trainer: Any, name: str) -> Any:
    """``x -> [z_mean, z_log_var, params at z_mean]`` around the trainer's encoder/decoder."""
    from vae_search._tf import keras

    vae = trainer.vae
    x = keras.Input(shape=trainer.spec.data_shape, dtype=trainer.dtype, name="x")
    z_mean, z_log_var = vae.encoder(x)
    params = vae.decoder([z_mean, x]) if vae.autoregressive else vae.decoder(z_mean)
    return keras.Model(x, [z_mean, z_log_var, params], name=name)


def export_trial(study: optuna.Study, which: str, out: str | Path) -> Exported:
    """Re-train trial ``which`` (``"best"`` or a number) and save it to ``out`` (``.keras``).

    Raises:
        ExportError: no such finished trial, or the re-trained ELBO is off by more than
            :data:`ELBO_TOLERANCE`.
    """
    from vae_search.config.schema import ConfigError
    from vae_search.config.stored import stored_config
    from vae_search.data.datasets import load_dataset
    from vae_search.trial.objective import Objective
    from vae_search.trial.space import params_from_mapping

    out = Path(out)
    if out.suffix != ".keras":
        raise ExportError(f"--out: Keras saves to a .keras file, got {out}")
    try:
        config = stored_config(study)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    trial = _pick(study, which)
    params = params_from_mapping(trial.params, config.search, config.train.epochs, config.model)
    seed = int(trial.user_attrs[keys.ATTR_SEED])
    elbos = _elbos(trial)
    epochs, stored_elbo = len(elbos), elbos[-1]
    trainer, elbo = Objective(config, load_dataset(config)).retrain(params, seed, epochs)
    if abs(elbo - stored_elbo) > ELBO_TOLERANCE:
        raise ExportError(f"trial {trial.number} re-trained to ELBO {elbo:.3f}, stored "
                          f"{stored_elbo:.3f}: not the same model (different machine or "
                          "library versions?); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    inference_model(trainer, f"vae_search_trial_{trial.number}").save(out)
    return Exported(trial.number, out, stored_elbo, elbo)


def main(argv: Sequence[str] | None = None, *, prog: str = "vae-search export") -> int:
    from vae_search.cli import EXIT_USAGE, build_export_parser, error_line
    from vae_search.storage.connection import StorageError, load_study

    args = build_export_parser(prog).parse_args(argv)
    try:
        study = load_study(args.storage, args.study_name)
        print(f"re-training trial {args.trial} of study {study.study_name!r}...", file=sys.stderr)
        done = export_trial(study, args.trial, args.out)
    except (StorageError, ExportError) as exc:
        print(error_line("vae_search", exc), file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {done.path}: trial {done.number}, validation ELBO {done.retrained_elbo:.3f} "
          f"(stored {done.stored_elbo:.3f}) nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
