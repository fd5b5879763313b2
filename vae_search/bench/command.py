"""``python -m vae_search.bench.command``: our trainer against the plain Keras recipe, side by side.

Baseline (the common recipe): the same :class:`~vae_search.models.VAE` trained with
``Model.fit`` one epoch at a time, an annealing callback setting the ``beta`` backend variable
at the start of each epoch. Ours: :class:`~vae_search.models.Trainer` (whole epochs as compiled
calls over data held as tensors). Same architecture, data, batch size, epochs and schedule; the
two alternate in one process so machine load hits both alike. Also printed: a large float32
matrix-product GFLOP/s reference, the trainer's achieved GFLOP/s on the large case, the
``--help`` start-up time of ``python -m vae_search.run``, a worker's peak RSS after N1 and N2
consecutive trials, and the share of trial wall time spent in Optuna storage calls (SQLite,
and PostgreSQL when reachable).

Timings on a shared machine are noisy: the load average is printed next to them, wall and
process CPU time are both given, and each case is repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vae_search.bench.trials import REGIMES
from vae_search.bench.worker import help_startup, postgres_reachable, spawn_worker, worker_run
from vae_search.cli import AUTO_POPULATION, OneLineParser, population_arg

__all__ = ["dense_train_flops", "device_summary", "main"]

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MATMUL_SIZE = 4096  # the GFLOP/s reference: an n x n by n x n float32 product
MATMUL_SIZE_QUICK = 1024
LARGE_SAMPLES = 60_000  # the large case: synthetic 60,000 x 784 (80/20 train/validation)
LARGE_FEATURES = 784
LARGE_SAMPLES_QUICK = 3_000
RSS_TRIALS = (10, 100)  # peak RSS of one worker after this many trials
RSS_TRIALS_QUICK = (2, 4)
RSS_EPOCHS = 0  # epochs per trial in the RSS / storage run (0 = the study's own)
RSS_EPOCHS_QUICK = 2
POSTGRES_TRIALS = 30
POSTGRES_TRIALS_QUICK = 2


@dataclass(frozen=True)
class Case:
    """One side-by-side comparison: one architecture (a trainer spec), both recipes."""

    name: str
    spec: Any  # vae_search.models.TrainerSpec (imported lazily: it imports TensorFlow)
    epochs: int
    repeats: int

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.spec.hidden)

    @property
    def latent_dim(self) -> int:
        return int(self.spec.latent_dim)

    @property
    def batch_size(self) -> int:
        return int(self.spec.batch_size)


# -- arithmetic ---------------------------------------------------------------------------


def dense_train_flops(
    n_features: int, hidden: tuple[int, ...], latent_dim: int, n_examples: int
) -> int:
    """Matrix-product FLOPs of one training pass (forward + backward) of the dense VAE.

    A Dense layer ``m -> n`` costs ``2 m n`` FLOPs per example forward, and twice that backward
    (the weight gradient and the input gradient), except that the first encoder layer needs no
    input gradient. Bias adds, activations, the loss and the optimizer are not counted (they
    are O(m + n) per layer, under 1% here), so the achieved GFLOP/s is a slight underestimate.
    """
    enc = [n_features, *hidden]
    layers = list(zip(enc[:-1], enc[1:]))
    layers.append((hidden[-1], 2 * latent_dim))  # z_mean and z_log_var heads
    dec = [latent_dim, *reversed(hidden), n_features]
    layers += list(zip(dec[:-1], dec[1:]))
    per_example = sum(6 * m * n for m, n in layers) - 2 * n_features * hidden[0]
    return per_example * n_examples


def matmul_gflops(size: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a ``size x size`` float32 matrix product in TensorFlow."""
    from vae_search._tf import tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def device_summary() -> str:
    """Where TensorFlow runs here: the GPUs it sees (the ``[gpu]`` extra), else the CPU."""
    from vae_search._tf import tf

    gpus = tf.config.list_physical_devices("GPU")
    cuda = "CUDA build" if tf.test.is_built_with_cuda() else "CPU-only build"
    if gpus:
        names = ", ".join(d.name for d in gpus)
        return f"GPU ({names}; TensorFlow {tf.__version__}, {cuda})"
    cpus = ", ".join(d.name for d in tf.config.list_physical_devices("CPU"))
    return f"CPU ({cpus}; no GPU visible; TensorFlow {tf.__version__}, {cuda})"


# -- the two recipes ----------------------------------------------------------------------


def _schedule(epochs: int) -> Any:
    from vae_search.trial.schedule import LinearSchedule

    return LinearSchedule(klstart=0, annealtime=max(1, epochs // 2))


def run_baseline(case: Case, x_train: Any, x_val: Any, seed: int) -> dict[str, float]:
    """The plain recipe: ``Model.fit`` one epoch at a time, a callback setting beta."""
    from vae_search._tf import keras
    from vae_search.models import build_vae

    schedule = _schedule(case.epochs)
    keras.utils.set_random_seed(seed)
    vae = build_vae(case.spec, seed=seed)
    vae.compile(optimizer=keras.optimizers.Adam(case.spec.learning_rate))

    class Anneal(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            vae.beta.assign(schedule(epoch))

    times, cpus = [], []
    for epoch in range(case.epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        vae.fit(
            x_train, batch_size=case.batch_size, epochs=epoch + 1, initial_epoch=epoch,
            shuffle=True, verbose=0, callbacks=[Anneal()],
        )
        times.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    logs = vae.evaluate(x_val, batch_size=2048, verbose=0, return_dict=True)
    return _summary(times, cpus, elbo=-float(logs["loss"]))


def run_trainer(case: Case, x_train: Any, x_val: Any, seed: int) -> dict[str, float]:
    """Ours: :class:`Trainer` epochs (compiled), then the compiled validation ELBO."""
    from vae_search.models import get_trainer

    schedule = _schedule(case.epochs)
    trainer = get_trainer(case.spec)
    trainer.reset(seed)
    times, cpus = [], []
    for epoch in range(case.epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.set_beta(schedule(epoch))
        trainer.train_epoch(x_train)
        times.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    trainer.run_epoch(x_train, x_val, beta=1.0)  # its first call traces
    fused = []
    for _ in range(min(5, case.epochs)):  # what a trial runs per epoch: train + validation
        wall = time.perf_counter()
        trainer.run_epoch(x_train, x_val, beta=1.0)
        fused.append(time.perf_counter() - wall)
    trainer.reset(seed)  # the ELBO is the one of the schedule's run: redo it untimed
    for epoch in range(case.epochs):
        trainer.set_beta(schedule(epoch))
        trainer.train_epoch(x_train)
    out = _summary(times, cpus, elbo=-trainer.evaluate(x_val).neg_elbo)
    out["fused"] = statistics.median(fused)
    return out


def _summary(times: list[float], cpus: list[float], *, elbo: float) -> dict[str, float]:
    steady = times[1:] or times  # the first epoch traces / compiles
    steady_cpu = cpus[1:] or cpus
    return {
        "first": times[0],
        "epoch": statistics.median(steady),
        "cpu": statistics.median(steady_cpu),
        "elbo": elbo,
    }


def compare(case: Case, x_train: Any, x_val: Any) -> tuple[dict, dict]:
    """Alternate baseline and ours ``case.repeats`` times; the medians across repeats."""
    from vae_search._tf import tf

    xt, xv = tf.constant(x_train), tf.constant(x_val)
    base, ours = [], []
    for rep in range(case.repeats):
        base.append(run_baseline(case, x_train, x_val, seed=rep))
        ours.append(run_trainer(case, xt, xv, seed=rep))

    def med(runs: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    return med(base), med(ours)


# -- the command --------------------------------------------------------------------------


def build_parser(prog: str = "vae-search bench") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Benchmark the fast VAE trainer against the plain Keras Model.fit recipe "
        "(digits; synthetic 60,000 x 784), plus matmul GFLOP/s, --help start-up, worker RSS "
        "growth and the Optuna storage share of trial time.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a tiny version of everything (well under a minute)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help=f"PostgreSQL URL for the storage share (default {DEFAULT_POSTGRES}; "
                        "skipped when unreachable)")
    parser.add_argument("--storage-load", action="store_true",
                        help="instead: the storage load test, N simulated workers on "
                        "--postgres directly and through the gRPC proxy (all its knobs: "
                        "python -m vae_search.bench.loadtest --help)")
    parser.add_argument("--trials-200", action="store_true",
                        help="also time 200-trial seed_mse studies (trials/min section)")
    parser.add_argument("--workers-2", action="store_true",
                        help="also time --workers 2 with --population 1 and auto "
                             "(trials/min section)")
    parser.add_argument("--trials-only", action="store_true",
                        help="only the trials/min section (whole studies side by side)")
    parser.add_argument("--study", action="append", choices=REGIMES, metavar="NAME",
                        help="trials/min section: only this regime (repeatable; default all: "
                        f"{', '.join(REGIMES)})")
    parser.add_argument("--population", type=population_arg, default=AUTO_POPULATION,
                        metavar="P|auto",
                        help="the population size to time (default: auto, as run's "
                        "--population auto)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-trials", help=argparse.SUPPRESS)
    parser.add_argument("--worker-epochs", type=int, help=argparse.SUPPRESS)
    return parser


def _line(label: str, text: str) -> None:
    print(f"{label:<34} {text}", flush=True)


def _case_lines(case: Case, base: dict, ours: dict) -> None:
    ratio = base["epoch"] / ours["epoch"]
    _line(f"{case.name}: baseline Model.fit", f"{base['epoch'] * 1e3:9.1f} ms/epoch "
          f"(cpu {base['cpu'] * 1e3:.1f} ms, first epoch {base['first']:.2f} s)  "
          f"ELBO {base['elbo']:.2f}")
    _line(f"{case.name}: trainer", f"{ours['epoch'] * 1e3:9.1f} ms/epoch "
          f"(cpu {ours['cpu'] * 1e3:.1f} ms, first epoch {ours['first']:.2f} s)  "
          f"ELBO {ours['elbo']:.2f}")
    cpu_ratio = base["cpu"] / ours["cpu"]
    _line(f"{case.name}: speed-up", f"{ratio:.2f}x per epoch (cpu {cpu_ratio:.2f}x); "
          f"trial epoch incl. validation + active units {ours['fused'] * 1e3:.1f} ms; "
          f"ELBO difference {ours['elbo'] - base['elbo']:+.2f} nats")


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    parser = build_parser(prog or "python -m vae_search.bench.command")
    args = parser.parse_args(argv)
    if args.storage_load:
        from vae_search.bench import loadtest

        return loadtest.main(["--postgres", args.postgres, *(["--quick"] if args.quick else [])])
    if args.worker:
        try:
            trials = [int(t) for t in (args.worker_trials or "").split(",")]
        except ValueError:
            parser.error(f"--worker-trials: expected N1,N2,..., got {args.worker_trials!r}")
        print(json.dumps(worker_run(args.worker, trials, args.worker_epochs)))
        return 0

    quick = args.quick
    started = time.perf_counter()
    _line("load average (1/5/15 min)", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    _line("mode", "quick (tiny sizes; numbers are indicative only)" if quick else "full")
    if args.trials_only:
        return _trials_section(args)
    _line("run --help start-up", f"{help_startup(1 if quick else 3):.2f} s (best of "
          f"{1 if quick else 3})")

    from vae_search._tf import tf  # after --help timing: this process's own start-up

    _line("device", device_summary())
    from vae_search.config.schema import load_config
    from vae_search.data.datasets import load_dataset, make_synthetic

    size = MATMUL_SIZE_QUICK if quick else MATMUL_SIZE
    reference = matmul_gflops(size)
    _line("matmul reference", f"{reference:.1f} GFLOP/s (float32 {size}x{size} @ {size}x{size}, "
          f"TF, best of 5; {os.cpu_count()} cores)")

    from vae_search.models import TrainerSpec, spec_for

    digits_config = load_config("digits")
    digits = load_dataset(digits_config)
    case = Case("digits", spec_for(digits_config, digits, 8),
                epochs=3 if quick else 30, repeats=1 if quick else 2)
    _line("digits case", f"{digits.x_train.shape[0]} x {digits.n_features} train, "
          f"{digits.x_val.shape[0]} val; hidden {case.hidden}, latent {case.latent_dim}, batch "
          f"{case.batch_size}, {case.epochs} epochs x {case.repeats} seeds, beta linear 0 -> 1")
    _case_lines(case, *compare(case, digits.x_train, digits.x_val))
    family_lines(quick)

    import numpy as np

    n = LARGE_SAMPLES_QUICK if quick else LARGE_SAMPLES
    probs, _ = make_synthetic(n, LARGE_FEATURES, 4, seed=0)
    rng = np.random.default_rng(0)
    x = (rng.random(probs.shape) < probs).astype("float32")
    split = int(0.8 * n)
    large_spec = TrainerSpec(decoder="dense", data_shape=(LARGE_FEATURES,), latent_dim=16,
                             likelihood="bernoulli", hidden=(512, 256), batch_size=128)
    large = Case("synthetic", large_spec, epochs=2 if quick else 3, repeats=1)
    _line("synthetic case", f"{split} x {LARGE_FEATURES} train, {n - split} val (of {n} "
          f"x {LARGE_FEATURES}); hidden {large.hidden}, latent {large.latent_dim}, batch "
          f"{large.batch_size}, {large.epochs} epochs x {large.repeats} seeds")
    base, ours = compare(large, x[:split], x[split:])
    _case_lines(large, base, ours)
    flops = dense_train_flops(LARGE_FEATURES, large.hidden, large.latent_dim, split)
    _line("synthetic: achieved", f"trainer {flops / ours['epoch'] / 1e9:.1f} GFLOP/s "
          f"({flops / ours['epoch'] / 1e9 / reference:.0%} of the matmul reference), "
          f"baseline {flops / base['epoch'] / 1e9:.1f} GFLOP/s; {flops / 1e9:.1f} GFLOP/epoch "
          "= dense-layer matmuls, forward + backward")
    del tf

    rss_trials = RSS_TRIALS_QUICK if quick else RSS_TRIALS
    epochs = RSS_EPOCHS_QUICK if quick else RSS_EPOCHS
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = spawn_worker(f"sqlite:///{tmp}/bench.db", rss_trials, epochs)
    (a, b) = (sqlite["rss"][str(t)] for t in rss_trials)
    _line("worker RSS", f"after {rss_trials[0]} trials {a[0]:.0f} MiB (peak {a[1]:.0f}), after "
          f"{rss_trials[1]} trials {b[0]:.0f} MiB (peak {b[1]:.0f}); peak growth "
          f"{(b[1] - a[1]) / a[1]:+.1%} ({sqlite['study']}, "
          f"{epochs or 'its own'} epochs/trial)")
    _storage_line("storage share SQLite", sqlite)
    if postgres_reachable(args.postgres):
        pg_trials = POSTGRES_TRIALS_QUICK if quick else POSTGRES_TRIALS
        _storage_line("storage share PostgreSQL", spawn_worker(args.postgres, [pg_trials], epochs))
    else:
        _line("storage share PostgreSQL", f"skipped: {args.postgres} not reachable")
    return _trials_section(args, started)


def _trials_section(args: argparse.Namespace, started: float | None = None) -> int:
    from vae_search.bench.trials import throughput_lines

    throughput_lines(_line, quick=args.quick, trials_200=args.trials_200,
                     workers=args.workers_2, studies=args.study,
                     population=None if args.population == AUTO_POPULATION else args.population)
    _line("load average (1/5/15 min)", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if started is not None:
        _line("bench wall time", f"{time.perf_counter() - started:.0f} s")
    return 0


FAMILY_STUDIES = (("made", "digits_made", 8), ("gru", "sequences", 8))  # (family, study, latent)


def family_lines(quick: bool) -> None:
    """One line per decoder family beyond ``dense``: our trainer against ``Model.fit`` on the
    same model and data (the shipped study of that family)."""
    from vae_search.config.schema import load_config
    from vae_search.data.datasets import load_dataset
    from vae_search.models import spec_for

    for family, study, latent in FAMILY_STUDIES:
        config = load_config(study)
        data = load_dataset(config)
        epochs = (2 if quick else 6) if family == "gru" else (3 if quick else 15)
        case = Case(f"{family} ({study})", spec_for(config, data, latent), epochs=epochs,
                    repeats=1)
        base, ours = compare(case, data.x_train, data.x_val)
        _line(f"family {family}", f"Model.fit {base['epoch'] * 1e3:.1f} ms/epoch, trainer "
              f"{ours['epoch'] * 1e3:.1f} ms/epoch: {base['epoch'] / ours['epoch']:.2f}x "
              f"({study}: {data.x_train.shape[0]} x {data.n_features} train, latent {latent}, "
              f"{epochs} epochs; ELBO {base['elbo']:.2f} vs {ours['elbo']:.2f})")
        if family == "gru":
            _line("family gru: unroll", gru_unroll(case, data, 2 if quick else 5))


def gru_unroll(case: Case, data: Any, repeats: int) -> str:
    """The GRU trial epoch (train + validation + active units) with the recurrence unrolled and
    as a loop, alternated in one process."""
    import dataclasses

    from vae_search._tf import tf
    from vae_search.models import get_trainer

    xt, xv = tf.constant(data.x_train), tf.constant(data.x_val)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for unroll in (True, False):
            trainer = get_trainer(dataclasses.replace(case.spec, unroll=unroll))
            trainer.reset(0)
            trainer.run_epoch(xt, xv, beta=1.0)  # the first call traces
            for _ in range(3):  # single calls: a burst of other jobs hits one call, not all
                start = time.perf_counter()
                trainer.run_epoch(xt, xv, beta=1.0)
                times[unroll].append(time.perf_counter() - start)
    on, off = (statistics.median(times[u]) for u in (True, False))
    return (f"unrolled {on * 1e3:.1f} ms/trial epoch, loop {off * 1e3:.1f} ms: unroll "
            f"{off / on:.2f}x (median of {3 * repeats} calls each, alternated)")


def _storage_line(label: str, run: dict) -> None:
    """The hot-path storage share (calls on the training thread), then one line per method:
    its share, calls per trial, and the time it spent off the training thread."""
    wall, trials = run["wall"], run["trials"]
    _line(label, f"{run['storage_s'] / wall:.1%} of trial wall time on the training thread "
          f"({run['storage_s']:.2f} s in {run['storage_calls']} calls over {trials} trials of "
          f"{run['study']}, {run['epochs']} epochs, {wall:.1f} s; {wall / trials:.2f} s/trial, "
          f"{run['pruned']} pruned); off it (report writer, heartbeats) "
          f"{run['storage_background_s']:.2f} s")
    for name, hot, calls, background in run["storage_methods"]:
        if hot + background < 0.001 * wall:
            continue
        _line("", f"  {name:<32} {hot / wall:6.2%}  {calls / trials:5.1f} calls/trial"
              + (f"  (+{background:.2f} s off the training thread)" if background else ""))


if __name__ == "__main__":
    sys.exit(main())
