"""``--workers K``: local worker processes on one shared storage; the parent only watches.

Never more workers than trials are left, and a warning when more would start than the
machine has CPU cores (each one is a TensorFlow process: they would only compete).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vae_search.cli import AUTO_POPULATION, AUTO_WORKERS, STORAGE_ENV, RunOptions
from vae_search.config.schema import StudyConfig
from vae_search.engine.sizing import TRIALS_PER_WORKER, cpu_cores, default_workers
from vae_search.engine.worker import budget_met, finish, finished_count, prepare, run_worker
from vae_search.storage.connection import StorageError
from vae_search.storage.url import StorageURL

if TYPE_CHECKING:
    import optuna

    from vae_search.engine.signals import SignalState
    from vae_search.report import FigureRefresher, Progress

__all__ = ["check_shareable", "pool_size", "run_pool", "supervise"]

POOL_POLL = 1.0  # seconds between the parent's reads of the study
EXIT_POLL = 0.1  # seconds between its looks at its children


def pool_size(requested: int, trials_left: int, cpus: int,
              per_worker: int = TRIALS_PER_WORKER) -> tuple[int, list[str]]:
    """How many workers to start, and the notes to show about it.

    Args:
        requested: ``--workers`` (:data:`~vae_search.cli.AUTO_WORKERS`: chosen here).
        trials_left: The budget minus the finished trials (> 0).
        cpus: The CPU cores this process may use (:func:`~vae_search.engine.sizing.cpu_cores`).
        per_worker: ``auto`` starts at most one worker per this many trials left.

    Returns:
        ``auto``: :func:`~vae_search.engine.sizing.default_workers`; otherwise
        ``min(requested, trials_left)``, with the lines explaining any difference.
    """
    if requested == AUTO_WORKERS:
        return default_workers(trials_left, cpus, per_worker), []
    notes = []
    size = max(1, min(requested, trials_left))
    if size < requested:
        notes.append(f"note: starting {size} worker{'s' if size > 1 else ''}, not {requested}: "
                     f"only {trials_left} trial{'s are' if trials_left > 1 else ' is'} left")
    if size > cpus:  # about the workers that will start
        notes.append(f"warning: {size} workers are more than the {cpus} CPU cores of this "
                     "machine; they will compete for them (each is a TensorFlow process)")
    return size, notes


def _child_command(options: RunOptions, index: int, threads: int) -> list[str]:
    # "--workers 1": a child is one worker (the default, auto, would start workers of its own).
    argv = [sys.executable, "-m", "vae_search.run", "--workers", "1", "--worker-index",
            str(index), "--threads", str(threads), "--trials", str(options.trials),
            "--study", str(options.study), "--quiet"]
    for flag, value in (("--timeout", options.timeout), ("--study-name", options.study_name),
                        ("--seed", options.seed), ("--epochs", options.epochs),
                        ("--artifacts", options.artifacts),
                        ("--population", "auto" if options.population == AUTO_POPULATION
                         else options.population)):
        if value is not None:
            argv += [flag, str(value)]
    for assignment in options.set:
        argv += ["--set", assignment]
    if options.debug:
        argv.append("--debug")
    return argv


def _die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """Linux: a child gets SIGTERM if the --workers parent dies (no orphaned workers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def check_shareable(url: StorageURL) -> None:
    if url.in_memory:
        raise StorageError("--workers needs a database the processes can share: a SQLite file "
                           "(sqlite:///path.db) or a server, not an in-memory SQLite")


def run_pool(options: RunOptions, config: StudyConfig, signals: SignalState) -> int:
    """Run ``--workers`` worker processes on the same storage and wait for them.

    The parent creates (or joins and checks) the study once, so a bad config or storage is
    one error, then starts the single-worker command in each child, with the storage URL in
    ``$VAE_SEARCH_STORAGE`` (never on a command line), ``--threads`` = cores / workers, and its
    own process group: Ctrl-C reaches only the parent, which forwards SIGINT/SIGTERM exactly
    once to every child and waits for them to close their trials. When ``--workers auto``
    chooses one worker, this process is it (no child, no second start-up).

    Returns:
        130 (SIGINT) or 143 (SIGTERM); otherwise the first non-zero child status, or 0.
    """
    dataset, study = prepare(options, config)  # one clear error here rather than one per child
    done = finished_count(study)
    if done >= options.trials:
        budget_met(study, done, options.trials)
        finish(study, config, options)
        return 0
    cpus = cpu_cores()
    size, notes = pool_size(options.workers, options.trials - done, cpus)
    for note in notes:
        if note.startswith("warning") or not options.quiet:
            print(note, file=sys.stderr)
    if size == 1:
        return run_worker(replace(options, workers=1), config, signals,
                          prepared=(dataset, study))
    check_shareable(options.storage)
    threads = options.threads or max(1, cpus // size)
    if not options.quiet:
        chosen = (f" (auto: {cpus} CPU cores, {options.trials - done} trials left; "
                  "--workers K to choose)") if options.workers == AUTO_WORKERS else ""
        print(f"study {study.study_name!r} on {options.storage.masked}: {done}/"
              f"{options.trials} trials finished; starting {size} workers ({threads} "
              f"TensorFlow thread(s) each){chosen}...", file=sys.stderr)
    from vae_search.report import FigureRefresher, Progress

    codes, received = supervise(
        [_child_command(options, index, threads) for index in range(size)], options.storage,
        Progress(study, options.trials, enabled=not options.quiet), study,
        figures=FigureRefresher(config.run.refresh_every, seconds=config.run.refresh_seconds,
                                finished=done),
    )
    if received:
        print("interrupted: finished trials are kept; re-run the same command to resume",
              file=sys.stderr)
        return 128 + received
    failed = [code for code in codes if code != 0]
    if failed:
        print(f"vae_search: {len(failed)} of {size} workers exited with status "
              f"{failed[0]}{' (rerun with --debug for tracebacks)' if not options.debug else ''}",
              file=sys.stderr)
    finish(study, config, options)
    return failed[0] if failed else 0


def supervise(
    commands: list[list[str]], storage: StorageURL, progress: Progress, study: optuna.Study,
    *, figures: FigureRefresher | None = None,
) -> tuple[list[int], int]:
    """Start one child per command, forward signals, draw the progress bar until all have
    exited (the bar is closed on return).

    Args:
        commands: The children's command lines (never holding the storage URL).
        storage: The storage URL, passed in ``$VAE_SEARCH_STORAGE``.
        progress: Redrawn from the study while the children run.
        study: The study the children work on.
        figures: Refreshes the study's figures as trials finish (the children draw none).

    Returns:
        The children's exit statuses, and the signal received (0 if none).
    """
    env = {**os.environ, STORAGE_ENV: storage.text}
    # The children import this very package, installed or not (e.g. run from a checkout).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    received: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for command in commands:
        procs.append(subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent,
        ))
        if received:  # a signal arrived while starting them
            procs[-1].send_signal(received[0])
    try:
        read_at = time.monotonic()
        while any(proc.poll() is None for proc in procs):
            time.sleep(EXIT_POLL)  # the last child's exit is seen at once, the study read less
            if received or time.monotonic() - read_at < POOL_POLL:
                continue
            read_at = time.monotonic()
            progress.refresh(study)
            if figures is not None:
                figures.observe(study, progress.finished)
        progress.refresh(study)
    finally:
        progress.close()
    return [proc.returncode for proc in procs], (received[0] if received else 0)
