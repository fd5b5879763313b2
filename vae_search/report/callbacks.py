"""What a running study shows: a progress bar, and the figures kept fresh for the dashboard.

Both are Optuna callbacks (``callback(study, frozen_trial)``) that the worker runs after each
of its trials; the ``--workers`` parent also redraws the bar from the shared storage.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from vae_search.config.schema import DEFAULT_REFRESH_SECONDS
from vae_search.report.figures import save_figures
from vae_search.report.rows import StateCounts

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

__all__ = ["PROGRESS_READ_SECONDS", "FigureRefresher", "Progress"]

PROGRESS_READ_SECONDS = 2.0  # other workers' trials show up on the bar within this


class Progress:
    """A progress bar: done/total, elapsed, best ELBO, collapsed, pruned and failed trials.

    After each of this worker's trials the bar counts that trial from the trial itself and
    re-reads the study (for other workers' trials) at most every ``read_seconds``: reading
    every trial after every trial cost ~2-3 ms, as much as a few epochs' reports.

    Args:
        study: The study (read once now for the starting count).
        total: The budget (``--trials``): the bar's end.
        enabled: Draw the bar (``--quiet`` turns it off; :meth:`warn` still prints).
        confirms: Count the confirmation runs (``vae-search confirm``), not the search's trials.
        read_seconds: The longest a redraw after a trial goes without reading the study.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool,
                 confirms: bool = False, read_seconds: float = PROGRESS_READ_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from tqdm import tqdm

        self.total = total
        self.confirms = confirms
        self.read_seconds = read_seconds
        self.clock = clock
        self.trials: dict[int, optuna.trial.FrozenTrial] = {}  # by number, as last known
        self.read_at = 0.0
        self._read(study)
        done, postfix = self.state()
        self.bar = tqdm(
            total=total, initial=done, postfix=postfix, unit="trial", disable=not enabled,
            dynamic_ncols=True, file=sys.stderr,
        )

    def _read(self, study: optuna.Study) -> None:
        self.trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        self.read_at = self.clock()

    @property
    def finished(self) -> int:
        """Finished (complete or pruned) trials known now."""
        return StateCounts.of_trials(self.trials.values(), confirms=self.confirms).finished

    def state(self) -> tuple[int, dict[str, Any]]:
        """What the bar shows: finished trials (capped at the budget) and the postfix, from
        the trials known now."""
        counts = StateCounts.of_trials(self.trials.values(), confirms=self.confirms)
        postfix = {
            "best": f"{counts.best:.2f}" if counts.best is not None else "-",
            "collapsed": counts.collapsed,
            "pruned": counts.pruned,
            "failed": counts.fail,
        }
        return min(counts.finished, self.total), postfix

    def _draw(self) -> None:
        self.bar.n, postfix = self.state()
        self.bar.set_postfix(**postfix, refresh=False)
        self.bar.refresh()

    def refresh(self, study: optuna.Study) -> None:
        """Read the storage and redraw (the ``--workers`` parent polls it)."""
        self._read(study)
        self._draw()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.trials[trial.number] = trial
        if self.clock() - self.read_at >= self.read_seconds:
            self._read(study)
        self._draw()

    def warn(self, message: str) -> None:
        """A line on stderr that does not break the progress bar (shown even with --quiet)."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class FigureRefresher:
    """Re-save the figures every ``every`` trials this worker finishes, at most once every
    ``seconds``.

    A refresh rebuilds all six figures from every trial (a few hundred ms, growing with the
    study); the default study finishes a trial about every 0.5 s, so ``every`` alone made the
    refreshes cost a fifth of a run. The first refresh is not held back (the dashboard gets
    figures early); later ones wait until ``seconds`` have passed, then happen at the next
    trial, once ``every`` trials have finished since the last. The run refreshes once more
    at the end whatever the timing. A failure to save (a locked database, say) is reported
    once and never stops the study. A worker calls it after each of its trials; the
    ``--workers`` parent calls :meth:`observe` instead, and its children draw nothing.

    Args:
        every: Finished (complete or pruned) trials between refreshes; 0 = never (end only).
        seconds: The minimum time between two refreshes (``run.refresh_seconds``).
        finished: Trials already finished when counting starts (:meth:`observe`).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, every: int, *, seconds: float = DEFAULT_REFRESH_SECONDS,
                 finished: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.seconds = seconds
        self.clock = clock
        self.finished = finished  # trials finished (by this worker; all, for observe)
        self.pending = 0  # ... since the last refresh
        self.last: float | None = None  # when the last refresh started (None: none yet)
        self.refreshes = 0
        self.warned = False

    def refresh(self, study: optuna.Study) -> None:
        """Save the figures now, warning (once) instead of raising on failure."""
        self.last = self.clock()
        self.pending = 0
        self.refreshes += 1
        try:
            save_figures(study)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost a trial
            if not self.warned:
                print(f"warning: could not refresh the study figures: {exc}", file=sys.stderr)
                self.warned = True

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state.name not in ("COMPLETE", "PRUNED") or self.every <= 0:
            return
        self.finished += 1
        self.pending += 1
        self._due(study)

    def observe(self, study: optuna.Study, finished: int) -> None:
        """The ``--workers`` parent's look at the study: ``finished`` trials so far, whoever
        ran them. The parent draws the figures for its children (idle, it has the time; each
        child would pay plotly's import and redraw the same figures)."""
        if self.every <= 0:
            return
        self.pending += max(0, finished - self.finished)
        self.finished = max(finished, self.finished)
        self._due(study)  # also when trials that finished earlier waited for the interval

    def _due(self, study: optuna.Study) -> None:
        if self.pending >= self.every and (
                self.last is None or self.clock() - self.last >= self.seconds):
            self.refresh(study)
