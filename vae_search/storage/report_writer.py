"""``trial.report`` off the training thread: each epoch's storage write overlaps the next epoch.

A trial reports its validation ELBO every epoch (the dashboard's training curve and the pruner's
input). Each report is one storage transaction (about 1.5-3.5 ms on SQLite, more on a server),
which on the default study's ~15 ms epochs was a fifth of the trial. TensorFlow releases the GIL
while a compiled epoch runs, so a second thread can commit epoch ``e``'s report while epoch
``e + 1`` trains (so do the trial's start attrs, during its first epoch). Only Optuna's public
``Trial.report`` (and the objective's own writes) are called, in order, from one thread;
:meth:`ReportWriter.flush` waits until every queued write is stored (before the pruner reads
them, and before the trial ends), so what is stored, and what the pruner sees, does not change.
A population (:mod:`~vae_search.engine.population`) shares one writer among its members: their
P reports
of an epoch are stored while the next population epoch trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["ReportWriter"]

_STOP = None  # the queue item that ends the thread


class ReportWriter:
    """A context manager around one trial: :meth:`put` queues a report, :meth:`flush` waits.

    A write that fails (e.g. the database connection dropped) is raised by the next
    :meth:`flush` or at the exit of the ``with`` block, so the worker's storage-fault handling
    sees it as if ``trial.report`` had raised it; writes queued after a failure are dropped.

    Args:
        trial: The running trial whose reports :meth:`put` queues (``None``: a writer shared
            by several trials, which queues each trial's writes with :meth:`submit`).
        name: The thread's name (default ``reports-<trial number>``).
    """

    def __init__(self, trial: optuna.Trial | None = None, *, name: str | None = None) -> None:
        self.trial = trial
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, dict] | None] = queue.Queue()
        self._error: BaseException | None = None
        if name is None:
            name = "reports" if trial is None else f"reports-{trial.number}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> ReportWriter:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Always drain: Optuna marks the trial finished right after the objective returns or
        # raises, and a report stored after that would be refused.
        self._queue.put(_STOP)
        self._thread.join()
        if exc is None:
            self._raise_error()

    def put(self, value: float, step: int) -> None:
        """Queue ``trial.report(value, step=step)``."""
        if self.trial is None:
            raise TypeError("a shared ReportWriter has no trial: submit(trial.report, ...)")
        self.submit(self.trial.report, value, step=step)

    def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue any other storage write of this trial (run in submission order)."""
        self._queue.put((write, args, kwargs))

    def flush(self) -> bool:
        """Wait until every queued write is stored; raise a failed write's error.

        Returns:
            True (so that ``... and reports.flush() and trial.should_prune()`` reads in order).
        """
        self._queue.join()
        self._raise_error()
        return True

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    try:
                        write, args, kwargs = item
                        write(*args, **kwargs)
                    except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
                        self._error = exc
            finally:
                self._queue.task_done()
