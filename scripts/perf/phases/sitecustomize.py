"""Wall time per phase of every ``--workers`` child, and its garbage collections.

Usage (the children inherit both variables; the parent, without ``$VAE_SEARCH_STORAGE`` in its
environment, is not instrumented)::

    VAE_PHASES=/tmp/phases PYTHONPATH=scripts/perf/phases \
        python -m vae_search.run --trials 200 --storage sqlite:////tmp/p.db --quiet
    cat /tmp/phases/*

Each child writes ``DIR/<pid>``: the seconds and calls of the trial loop's phases (main thread
only; nested phases are inside their callers), the epochs' median and the first calls that
traced (> 100 ms), and the collector's passes by generation.
"""

import os

if os.environ.get("VAE_PHASES") and os.environ.get("VAE_SEARCH_STORAGE"):
    import collections
    import functools
    import gc
    import statistics
    import threading
    import time

    START = time.perf_counter()
    SECONDS: dict = collections.defaultdict(float)
    CALLS: collections.Counter = collections.Counter()
    EPOCHS: list = []
    GC: dict = collections.defaultdict(float)
    _gc_began = [0.0]

    def _timed(cls, name):
        wrapped, label = getattr(cls, name), f"{cls.__name__}.{name}"

        @functools.wraps(wrapped)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return wrapped(*args, **kwargs)
            began = time.perf_counter()
            try:
                return wrapped(*args, **kwargs)
            finally:
                spent = time.perf_counter() - began
                SECONDS[label] += spent
                CALLS[label] += 1
                if label == "Trainer.run_epoch":
                    EPOCHS.append(spent)

        setattr(cls, name, timed)

    def _collected(phase, info):
        if phase == "start":
            _gc_began[0] = time.perf_counter()
        else:
            GC[f"generation {info['generation']} s"] += time.perf_counter() - _gc_began[0]
            GC[f"generation {info['generation']} passes"] += 1

    gc.callbacks.append(_collected)
    began = time.perf_counter()
    import optuna

    from vae_search.engine import loop
    from vae_search.models import trainer
    from vae_search.trial import objective

    SECONDS["imports (TensorFlow, Optuna, vae_search)"] = time.perf_counter() - began
    for cls, name in [
        (loop.TrialLoop, "fill"), (loop.TrialLoop, "epoch"), (loop.TrialLoop, "_end"),
        (objective.Objective, "plan"), (objective.Objective, "start"),
        (objective.Objective, "finish"), (objective.Objective, "diagnostics"),
        (objective.Objective, "decoder_only_nll"), (trainer.Trainer, "__init__"),
        (trainer.Trainer, "run_epoch"), (optuna.Study, "ask"), (optuna.Study, "tell"),
    ]:
        _timed(cls, name)

    def _write():
        SECONDS["total"] = time.perf_counter() - START
        os.makedirs(os.environ["VAE_PHASES"], exist_ok=True)
        with open(os.path.join(os.environ["VAE_PHASES"], str(os.getpid())), "w") as out:
            for label in sorted(SECONDS, key=SECONDS.get, reverse=True):
                print(f"{SECONDS[label]:8.2f} s {CALLS[label]:6d}  {label}", file=out)
            if EPOCHS:
                traced = [t for t in EPOCHS if t > 0.1]
                print(f"epochs {len(EPOCHS)}: median {statistics.median(EPOCHS) * 1e3:.1f} ms; "
                      f"{len(traced)} over 100 ms (traces) {sum(traced):.2f} s", file=out)
            print("collector: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(GC.items())),
                  file=out)

    _exit = os._exit  # a worker that loaded TensorFlow ends with os._exit (vae_search.cli)

    def _write_then_exit(status):
        _write()
        _exit(status)

    os._exit = _write_then_exit
