"""The bench's study throughput: trials per minute of whole studies, side by side.

Each variant runs a fresh study on its own temporary SQLite file in a fresh process, and is
timed from process start to exit (TensorFlow's import included, the same for every variant):

* ``vae-search run`` as a user types it (the default: ``--workers auto``, see
  :func:`~vae_search.engine.sizing.default_workers`);
* ``vae-search run --workers 1 --population 1`` (one trial at a time in one process);
* ``--workers 1 --population P`` (one process, a population; ``auto`` or ``--population``)
  on the dense and made regimes;
* ``--workers 2 --population auto`` when asked for (``--workers-2``);
* the plain Optuna + Keras loop users write instead (:func:`fit_loop`): ``study.optimize`` over
  an objective that builds the same VAE, trains it with ``Model.fit`` one epoch at a time with an
  annealing callback, reports the validation ELBO every epoch and asks the same pruner (the
  annealing-aware median pruner with the study's settings). It records no diagnostics.

Every regime is measured: ``seed_mse`` (the default study), ``digits_made``, ``sequences`` and
``text`` (the recurrent ones with fewer trials: each is seconds long). The variants run one
after another, so a change in machine load between them shows in the ratios: the load average
is printed before and after each.
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
RECURRENT_TRIALS = 10  # sequences and text: a trial takes seconds
REGIMES = ("seed_mse", "digits_made", "sequences", "text")
STACKABLE = ("seed_mse", "digits_made")  # dense and made: a population applies


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
                     population: int | None, studies: Sequence[str] | None = None) -> None:
    """Print trials per minute of each variant on every regime (or ``studies``), and the
    default's ratios."""
    trials = 6 if quick else DEFAULT_TRIALS
    extra = ["--epochs", "4"] if quick else []
    pop = "auto" if population is None else str(population)
    with tempfile.TemporaryDirectory() as tmp:
        # --quick: the default study and one recurrent regime of two trials (the check that
        # every line prints; each variant is a process of its own)
        for study in studies or (("seed_mse", "sequences") if quick else REGIMES):
            sizes = [trials] + ([200] if trials_200 and not quick and study == "seed_mse"
                                else [])
            if study not in STACKABLE:
                sizes = [2 if quick else RECURRENT_TRIALS]
            for n in sizes:
                def run(name: str, *flags: str, n: int = n, study: str = study) -> dict[str, Any]:
                    url = f"sqlite:///{tmp}/{study}-{n}-{name}.db"
                    return measure(["-m", "vae_search.run", "--study", study, "--trials", str(n),
                                    "--storage", url, "--quiet", *extra, *flags], n)

                default = run("default")
                rows = [("default", default),
                        ("one at a time (--workers 1 --population 1)",
                         run("one", "--workers", "1", "--population", "1"))]
                if study in STACKABLE:
                    rows.append((f"--workers 1 --population {pop}",
                                 run("pop", "--workers", "1", "--population", pop)))
                    if workers:
                        rows.append(("--workers 2 --population auto",
                                     run("w2p", "--workers", "2", "--population", "auto")))
                if study == "seed_mse":
                    url = f"sqlite:///{tmp}/{study}-{n}-fit.db"
                    argv = ["-m", "vae_search.bench.trials", study, str(n), url,
                            *(extra[1:] if extra else [])]
                    rows.append(("Optuna + Model.fit loop", measure(argv, n)))
                for name, r in rows:
                    line(f"trials/min {study} {n}: {name}",
                         f"{r['per_min']:7.1f} ({r['wall']:.1f} s; load {r['load']})")
                ratios = [f"{default['per_min'] / r['per_min']:.2f}x {name}"
                          for name, r in rows[1:]]
                line(f"trials/min {study} {n}: ratios", "default vs " + ", ".join(ratios))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vae_search.bench.trials STUDY TRIALS STORAGE [EPOCHS]``: the fit loop."""
    args = list(sys.argv[1:] if argv is None else argv)
    fit_loop(args[0], int(args[1]), args[2], int(args[3]) if len(args) > 3 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
