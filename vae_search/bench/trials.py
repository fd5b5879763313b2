"""The bench's study throughput: trials per minute of whole studies, side by side.

Each variant runs a fresh study on its own temporary SQLite file in a fresh process, and is
timed from process start to exit (TensorFlow's import included, the same for every variant):

* ``vae-search run --population P`` (``auto``: the chosen P, or ``--population``);
* ``vae-search run --population 1`` (one trial at a time, the trainer of :mod:`.models`);
* ``vae-search run --workers 2 --population 1`` and ``--workers 2 --population auto`` (two
  processes, one trial at a time or a population each) when asked for;
* the plain Optuna + Keras loop users write instead (:func:`fit_loop`): ``study.optimize`` over
  an objective that builds the same VAE, trains it with ``Model.fit`` one epoch at a time with an
  annealing callback, reports the validation ELBO every epoch and asks the same pruner (the
  annealing-aware median pruner with the study's settings). It records no diagnostics.

The variants run one after another, so a change in machine load between them shows in the
ratios: the load average is printed before and after each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["fit_loop", "measure", "throughput_lines"]

DEFAULT_TRIALS = 40  # the default study's size here; --trials-200 for the second size


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def measure(argv: Sequence[str], trials: int) -> dict[str, Any]:
    """Run ``python <argv>`` to the end: wall time, trials per minute, load before/after."""
    load = _load()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr[-800:]}")
    return {"wall": wall, "per_min": 60.0 * trials / wall, "load": f"{load} -> {_load()}"}


def fit_loop(study: str, trials: int, storage: str, epochs: int | None = None) -> None:
    """The plain Optuna + Keras ``Model.fit`` loop on ``study``'s model, data and pruner."""
    import optuna

    from vae_search._tf import keras
    from vae_search.config.schema import load_config
    from vae_search.data.datasets import load_dataset
    from vae_search.keys import ATTR_PRUNE_FROM_EPOCH
    from vae_search.models import build_vae, spec_for
    from vae_search.trial.pruning import make_pruner
    from vae_search.trial.schedule import full_beta_epoch
    from vae_search.trial.space import suggest

    config = load_config(study)
    if epochs is not None:
        config, _ = config.with_epochs(epochs)
    data = load_dataset(config)
    n_epochs, batch = config.train.epochs, config.train.batch_size
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, config.search, n_epochs, config.model)
        schedule = params.make_schedule(n_epochs)
        trial.set_user_attr(ATTR_PRUNE_FROM_EPOCH,
                            full_beta_epoch(schedule, n_epochs) + config.pruner.patience)
        keras.utils.set_random_seed(trial.number)
        vae = build_vae(spec_for(config, data, params.latent_dim), seed=trial.number)
        vae.set_reduction(params.reduction)
        if params.sigma2 is not None:
            vae.likelihood.set_sigma2(params.sigma2)
        vae.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate))

        class Anneal(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                vae.beta.assign(schedule(epoch))

        elbo = float("nan")
        for epoch in range(n_epochs):
            vae.fit(data.x_train, batch_size=batch, epochs=epoch + 1, initial_epoch=epoch,
                    shuffle=True, verbose=0, callbacks=[Anneal()])
            elbo = -float(vae.evaluate(data.x_val, batch_size=2048, verbose=0,
                                       return_dict=True)["loss"])
            trial.report(elbo, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return elbo

    sampler = optuna.samplers.TPESampler(seed=config.seed,
                                         n_startup_trials=config.sampler.n_startup_trials)
    optuna_study = optuna.create_study(
        storage=storage, direction="maximize", sampler=sampler,
        pruner=make_pruner(config.pruner, n_epochs))
    optuna_study.optimize(objective, n_trials=trials)


def throughput_lines(line: Any, *, quick: bool, trials_200: bool, workers: bool,
                     population: int | None) -> None:
    """Print trials per minute of each variant on ``seed_mse`` and ``digits_made``."""
    trials = 6 if quick else DEFAULT_TRIALS
    sizes = [trials] + ([200] if trials_200 and not quick else [])
    extra = ["--epochs", "4"] if quick else []
    pop_flag = ["--population", "auto" if population is None else str(population)]
    with tempfile.TemporaryDirectory() as tmp:
        for study in ("seed_mse", "digits_made"):
            for n in sizes if study == "seed_mse" else sizes[:1]:
                def run(name: str, *flags: str, n: int = n, study: str = study) -> dict[str, Any]:
                    url = f"sqlite:///{tmp}/{study}-{n}-{name}.db"
                    return measure(["-m", "vae_search.run", "--study", study, "--trials", str(n),
                                    "--storage", url, "--quiet", *extra, *flags], n)

                pop = run("pop", "--workers", "1", *pop_flag)
                one = run("one", "--workers", "1", "--population", "1")
                rows = [("population auto" if population is None
                         else f"population {population}", pop), ("population 1", one)]
                if workers:  # today's other use of 2 cores, and both combined
                    rows.append(("workers 2 x population 1",
                                 run("w2", "--workers", "2", "--population", "1")))
                    rows.append(("workers 2 x population auto",
                                 run("w2p", "--workers", "2", "--population", "auto")))
                if study == "seed_mse":
                    url = f"sqlite:///{tmp}/{study}-{n}-fit.db"
                    argv = ["-m", "vae_search.bench.trials", study, str(n), url,
                            *(extra[1:] if extra else [])]
                    rows.append(("Optuna + Model.fit loop", measure(argv, n)))
                for name, r in rows:
                    line(f"trials/min {study} {n}: {name}",
                         f"{r['per_min']:7.1f} ({r['wall']:.1f} s; load {r['load']})")
                ratios = [f"{pop['per_min'] / r['per_min']:.2f}x {name}" for name, r in rows[1:]]
                line(f"trials/min {study} {n}: ratios", "population vs " + ", ".join(ratios))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vae_search.bench.trials STUDY TRIALS STORAGE [EPOCHS]``: the fit loop."""
    args = list(sys.argv[1:] if argv is None else argv)
    fit_loop(args[0], int(args[1]), args[2], int(args[3]) if len(args) > 3 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
