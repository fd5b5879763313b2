"""The fast trainer agrees with the plain Keras recipe, and the bench command runs.

No timing assertions here (the machine is shared): speed lives in the bench output.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import subprocess_env, tiny_config
from vae_search.bench.command import Case, dense_train_flops, run_baseline, run_trainer
from vae_search.bench.timing import CallTimer
from vae_search.data.datasets import load_dataset
from vae_search.models import TrainerSpec

ELBO_TOLERANCE = 1.0  # nats per example: "the same ELBO" across a few seeds
SEEDS = (0, 1, 2)
TINY = Case("tiny", TrainerSpec(decoder="dense", data_shape=(64,), latent_dim=4,
                                likelihood="bernoulli", hidden=(32,), batch_size=64),
            epochs=6, repeats=1)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(tiny_config())
    return data.x_train, data.x_val


def _mean_elbo(run, case, x_train, x_val) -> float:
    from vae_search._tf import tf

    if run is run_trainer:
        x_train, x_val = tf.constant(x_train), tf.constant(x_val)
    return float(np.mean([run(case, x_train, x_val, seed)["elbo"] for seed in SEEDS]))


def test_trainer_matches_model_fit_recipe(digits):
    baseline = _mean_elbo(run_baseline, TINY, *digits)
    ours = _mean_elbo(run_trainer, TINY, *digits)
    assert abs(ours - baseline) < ELBO_TOLERANCE, (ours, baseline)
    # The tolerance discriminates: a third of the training is clearly worse than either.
    short = Case("short", TINY.spec, epochs=2, repeats=1)
    assert _mean_elbo(run_trainer, short, *digits) < baseline - ELBO_TOLERANCE


def test_dense_flops_by_hand():
    # 4 -> 3 encoder, 3 -> (2 + 2) heads, 2 -> 3 -> 4 decoder; one example.
    forward = 2 * (4 * 3 + 3 * 4 + 2 * 3 + 3 * 4)
    backward = 2 * forward - 2 * 4 * 3  # no input gradient for the first layer
    assert dense_train_flops(4, (3,), 2, 1) == forward + backward
    assert dense_train_flops(4, (3,), 2, 10) == 10 * (forward + backward)


def test_bench_help_does_not_import_tensorflow():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['bench', '--help']\n"
        "try:\n    runpy.run_module('vae_search.bench.command', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-NOT-LOADED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), check=True).stdout
    assert "--quick" in out
    assert "TF-NOT-LOADED" in out


@pytest.mark.slow  # a minute or more: every measurement, including whole tiny studies
def test_bench_quick_prints_every_measurement():
    out = subprocess.run([sys.executable, "-m", "vae_search.bench.command", "--quick"],
                         capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split("  ")[0].strip(): line for line in out.stdout.splitlines()}
    for label in (
        "load average (1/5/15 min)",
        "run --help start-up",
        "device",
        "matmul reference",
        "digits: baseline Model.fit",
        "digits: trainer",
        "digits: speed-up",
        "family made",
        "family gru",
        "family gru: unroll",
        "synthetic: baseline Model.fit",
        "synthetic: trainer",
        "synthetic: speed-up",
        "synthetic: achieved",
        "worker RSS",
        "storage share SQLite",
        "storage share PostgreSQL",
        "trials/min seed_mse 6: default",
        "trials/min seed_mse 6: one at a time (--workers 1 --population 1)",
        "trials/min seed_mse 6: --workers 1 --population auto",
        "trials/min seed_mse 6: Optuna + Model.fit loop",
        "trials/min seed_mse 6: ratios",
        "trials/min sequences 2: default",
        "trials/min sequences 2: ratios",
    ):
        assert label in lines, f"missing {label!r} in:\n{out.stdout}"
    assert "GFLOP/s" in lines["matmul reference"]
    assert "ms/epoch" in lines["digits: trainer"] and "ELBO" in lines["digits: trainer"]
    assert "x per epoch" in lines["digits: speed-up"]
    for family in ("made", "gru"):
        assert "ms/epoch" in lines[f"family {family}"] and "x (" in lines[f"family {family}"]
    assert "% of trial wall time" in lines["storage share SQLite"]
    assert "CPU (" in lines["device"] or "GPU (" in lines["device"]
    assert "unroll" in lines["family gru: unroll"]
    # the storage breakdown: one line per storage method, with its calls per trial
    assert "calls/trial" in out.stdout and "set_trial_intermediate_value" in out.stdout


class _Storage:
    def outer(self) -> int:
        return self.inner() + 1

    def inner(self) -> int:
        return 1


def test_call_timer_records_each_outermost_call_by_thread():
    import threading

    storage = _Storage()
    timer = CallTimer(storage)
    threads = [threading.Thread(target=storage.outer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.outer() == 2 and storage.inner() == 1
    assert {k: len(v) for k, v in timer.hot.items()} == {"outer": 1, "inner": 1}
    assert {k: len(v) for k, v in timer.background.items()} == {"outer": 4}  # not the inner
    assert {k: len(v) for k, v in timer.every_call().items()} == {"outer": 5, "inner": 1}
    assert timer.calls == 6 and timer.by_method["outer"][1] == 5
    assert timer.seconds == sum(timer.hot["outer"] + timer.hot["inner"]) > 0
    assert timer.background_seconds == sum(timer.background["outer"]) > 0


def test_a_nested_call_timer_times_the_parts_but_not_a_call_of_itself():
    timer = CallTimer(nested=True)

    def countdown(n: int) -> int:
        return part(n) if n == 0 else timed_countdown(n - 1)

    part = timer.wrap("part", lambda n: n)
    timed_countdown = timer.wrap("countdown", countdown)
    assert timed_countdown(3) == 0
    assert {k: len(v) for k, v in timer.hot.items()} == {"countdown": 1, "part": 1}
@pytest.mark.parametrize("argv", [
    ["--trials-only", "--population", "0"],  # a traceback
    ["--quick", "--population", "0"],  # accepted, then failed in the trials/min section
    ["--population", "-3"],
    ["--population", "many"],
    ["--worker", "seed_mse", "--worker-trials", "1,x"],
    ["--trials-only", "--study", "mnist"],
])
def test_bench_arguments_are_one_consistent_check(argv, capsys):
    from vae_search.bench.command import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err, err
    assert "--population" in err or "--worker-trials" in err or "--study" in err


def test_bench_population_auto_is_the_default():
    from vae_search.bench.command import build_parser
    from vae_search.cli import AUTO_POPULATION

    assert build_parser().parse_args([]).population == AUTO_POPULATION
    assert build_parser().parse_args(["--population", "auto"]).population == AUTO_POPULATION
    assert build_parser().parse_args(["--population", "4"]).population == 4
    assert build_parser().parse_args([]).study is None  # every regime
    chosen = build_parser().parse_args(["--study", "text", "--study", "seed_mse"]).study
    assert chosen == ["text", "seed_mse"]
