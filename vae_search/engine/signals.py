"""A worker process: who it is, SIGINT/SIGTERM held for safe points, errors as exit codes.

:class:`SignalState` turns the two signals into :class:`Interrupted` at a point where no
finished trial can be half-written; :func:`run_command` runs a command's body with it and maps
what goes wrong to one line and an exit status (``run`` and ``confirm`` share it). Importing this
module does not import TensorFlow or Optuna.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from vae_search.cli import EXIT_FAULT, EXIT_INTERRUPTED, EXIT_USAGE, error_line

__all__ = ["FAIL_INTERRUPTED", "TAKEN_OVER", "DatabaseLost", "FailureStreak", "Interrupted",
           "LostConnections", "SignalState", "run_command", "worker_identity"]

FAIL_INTERRUPTED = "interrupted"  # fail_reason of a trial stopped by SIGINT/SIGTERM
STORAGE_RETRIES = 5  # consecutive lost-connection failures a worker rides out
STORAGE_BACKOFF = 2.0  # seconds, times the attempt number, before retrying
TAKEN_OVER = ("warning: another worker failed this worker's trial as stale (its heartbeat was "
              "later than run.grace_period; raise it if epochs are long); continuing")


def worker_identity() -> str:
    """Who runs a trial (user attr ``worker``): ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; carries the exit status (128 + signal number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class DatabaseLost(RuntimeError):
    """The database kept failing mid-run; finished trials are committed, the run can resume."""


class FailureStreak(RuntimeError):
    """Too many trials in a row failed: the run stopped instead of flooding the study."""


class LostConnections:
    """How a worker rides out a database that drops or refuses its connections.

    The pool (``pool_pre_ping``) or the gRPC channel reconnects on the next call, so a worker
    waits a little longer each time and goes on; after :data:`STORAGE_RETRIES` losses with no
    trial finished in between it stops with :class:`DatabaseLost`. Finished trials are already
    committed either way.

    Args:
        warn: Prints one line without breaking the progress bar.
    """

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.lost = 0  # losses with no finished trial in between
        self._finished_at_loss = 0

    def lost_connection(self, exc: BaseException, finished: int) -> str:
        """Count a loss, wait before the retry, and return its one-line reason.

        Args:
            exc: The storage fault.
            finished: Trials this worker has finished so far (a finished trial resets the
                count).

        Raises:
            DatabaseLost: Too many losses in a row.
        """
        from vae_search.storage.connection import error_reason

        self.lost = 1 if finished > self._finished_at_loss else self.lost + 1
        self._finished_at_loss = finished
        reason = error_reason(exc)
        if self.lost > STORAGE_RETRIES:
            raise DatabaseLost(
                f"lost the database connection {self.lost} times in a row ({reason}); "
                "finished trials are kept; re-run the same command to resume"
            ) from None
        self.warn(f"warning: database connection lost ({reason}); "
                  f"reconnecting (attempt {self.lost} of {STORAGE_RETRIES})")
        time.sleep(STORAGE_BACKOFF * self.lost)
        return reason


class SignalState:
    """SIGINT and SIGTERM as :class:`Interrupted`, raised now or held for a safe point.

    The exception unwinds the running trials like Ctrl-C does (the loop fails them with
    ``fail_reason = "interrupted"``) instead of the default SIGTERM action, which would leave
    them RUNNING until their heartbeats go stale. While the loop trains or stores a trial
    (``training``) the signal is held and raised at the loop's next safe point
    (:meth:`raise_pending`: an epoch boundary), so a trial is never half-written, and no
    exception surfaces from inside TensorFlow's C++ calls.

    A signal is never lost: it stays pending until a safe point raises it, even when the
    exception raised from the handler was swallowed (Python only prints "Exception ignored"
    for one raised while a finalizer runs, which happens during heavy imports), and
    :func:`run_command` turns a signal that arrived into its exit status whatever the body
    returned. A second signal only says that the clean-up is under way (a double Ctrl-C must
    not leave trials RUNNING); a third exits at once with the same status.
    """

    def __init__(self) -> None:
        self.fired: int | None = None
        self.repeats = 0  # signals after the first
        self.training = False  # True while the loop trains or stores trials
        self.pending: int | None = None

    def install(self) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM (main thread); returns the previous handlers."""
        saved: dict[int, Any] = {
            sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        for sig in saved:
            signal.signal(sig, self.handler)
        return saved

    def handler(self, signum: int, frame: Any) -> None:
        if self.fired is not None:
            self.repeats += 1
            if self.repeats >= 2:  # a third signal: leave now, whatever is left RUNNING
                os._exit(128 + self.fired)
            print("stopping: failing the running trials as interrupted (a third signal exits "
                  "at once and leaves them to go stale)", file=sys.stderr)
            return
        self.fired = self.pending = signum
        if not self.training:
            raise Interrupted(signum)

    def raise_pending(self) -> None:
        """Raise the signal that arrived and was not acted on yet, if any (once)."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


def run_command(
    body: Callable[[SignalState], int], *, label: str, debug: bool, quiet_interrupt: bool,
    usage_errors: tuple[type[BaseException], ...],
) -> int:
    """Run ``body(signals)`` with SIGINT/SIGTERM handled; returns its exit status.

    Args:
        body: The command; returns its exit status.
        label: The prefix of an error line (``"vae_search"`` gives ``vae_search: error: ...``).
        debug: Re-raise errors (tracebacks) instead of printing one line.
        quiet_interrupt: Do not print the "interrupted" line (a ``--workers`` child: the
            parent prints it once).
        usage_errors: The user mistakes: one line and status 2. :class:`DatabaseLost`,
            :class:`FailureStreak` and any other error are 1 (one line; the traceback with
            ``debug``), a signal 128 + its number.
    """
    faults = (DatabaseLost, FailureStreak)
    errors: tuple[type[BaseException], ...] = (*usage_errors, *faults)
    signals = SignalState()
    saved = signals.install()
    try:
        status = body(signals)
        if signals.fired is None:
            return status
        raise Interrupted(signals.fired)  # arrived, held, and the body ended first
    except KeyboardInterrupt as exc:
        if not quiet_interrupt:
            print("interrupted: finished trials are kept; re-run the same command to resume",
                  file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    except errors as exc:
        if debug:
            raise
        print(error_line(label, exc), file=sys.stderr)
        return EXIT_FAULT if isinstance(exc, faults) else EXIT_USAGE
    except Exception as exc:  # a bug, or a user's model: one line unless --debug
        if debug:
            raise
        from vae_search.storage.connection import error_reason

        print(error_line(label, f"{type(exc).__name__}: {error_reason(exc)} (--debug shows "
                         "the traceback)"), file=sys.stderr)
        return EXIT_FAULT
    finally:
        for sig, previous in saved.items():  # main() may run inside another program (tests)
            signal.signal(sig, previous)
