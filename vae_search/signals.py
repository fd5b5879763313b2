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
from collections.abc import Callable
from typing import Any

from vae_search.cli import EXIT_FAULT, EXIT_INTERRUPTED, EXIT_USAGE

__all__ = ["FAIL_INTERRUPTED", "DatabaseLost", "Interrupted", "SignalState", "run_command",
           "worker_identity"]

FAIL_INTERRUPTED = "interrupted"  # fail_reason of a trial stopped by SIGINT/SIGTERM


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


class SignalState:
    """SIGINT and SIGTERM as :class:`Interrupted`, raised now or held for a safe point.

    The exception unwinds the running trial like Ctrl-C does (Optuna marks it FAIL; the worker
    records ``fail_reason = "interrupted"``) instead of the default SIGTERM action, which would
    leave the trial RUNNING until its heartbeat goes stale. While Optuna stores a trial's result
    (``deferred``) or TensorFlow runs (``training``) the signal is held and raised at the next
    safe point, so a finished trial is never half-written. A second signal exits at once with
    the same status.
    """

    def __init__(self) -> None:
        self.fired: int | None = None
        self.deferred = False  # True while Optuna records a finished trial (must not be torn)
        self.training = False  # True while the objective runs TensorFlow code
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
        if self.fired is not None:  # a second signal during the clean-up: leave now
            os._exit(128 + self.fired)
        self.fired = signum
        if self.deferred or self.training:
            # An exception raised from a signal handler inside TensorFlow's tracing or C++
            # calls can surface as a SystemError; hold it for the next epoch boundary instead.
            self.pending = signum
            return
        raise Interrupted(signum)

    def raise_pending(self) -> None:
        """Raise the signal that arrived while it was held, if any."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    def at_epoch_end(self, trial: Any, epoch: int, record: Any) -> None:
        """``Objective(on_epoch=...)``: a safe point to raise a signal held during training."""
        self.raise_pending()

    def defer(self) -> None:
        self.deferred = True

    def resume(self) -> None:
        """Stop deferring; raise the signal that arrived meanwhile, if any."""
        self.deferred = False
        self.raise_pending()


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
        usage_errors: The user mistakes: one line and status 2. :class:`DatabaseLost` is 1,
            a signal 128 + its number.
    """
    errors: tuple[type[BaseException], ...] = (*usage_errors, DatabaseLost)
    signals = SignalState()
    saved = signals.install()
    try:
        return body(signals)
    except KeyboardInterrupt as exc:
        if not quiet_interrupt:
            print("interrupted: finished trials are kept; re-run the same command to resume",
                  file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    except errors as exc:
        if debug:
            raise
        print(f"{label}: error: {exc}", file=sys.stderr)
        return EXIT_FAULT if isinstance(exc, DatabaseLost) else EXIT_USAGE
    finally:
        for sig, previous in saved.items():  # main() may run inside another program (tests)
            signal.signal(sig, previous)
