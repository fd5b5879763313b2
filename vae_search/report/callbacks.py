"""What a running study shows: a progress bar, and the figures kept fresh for the dashboard.

Both are Optuna callbacks (``callback(study, frozen_trial)``) that the worker runs after each
of its trials; the ``--workers`` parent also redraws the bar from the shared storage.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from vae_search.report.figures import save_figures
from vae_search.report.rows import StateCounts

if TYPE_CHECKING:
    import optuna

__all__ = ["FigureRefresher", "Progress"]


class Progress:
    """A progress bar: done/total, elapsed, best ELBO, collapsed, pruned and failed trials.

    Args:
        study: The study (read once now for the starting count).
        total: The budget (``--trials``): the bar's end.
        enabled: Draw the bar (``--quiet`` turns it off; :meth:`warn` still prints).
        confirms: Count the confirmation runs (``vae-search confirm``), not the search's trials.
    """

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool,
                 confirms: bool = False) -> None:
        from tqdm import tqdm

        self.total = total
        self.confirms = confirms
        done, postfix = self._state(study)
        self.bar = tqdm(
            total=total, initial=done, postfix=postfix, unit="trial", disable=not enabled,
            dynamic_ncols=True, file=sys.stderr,
        )

    def _state(self, study: optuna.Study) -> tuple[int, dict[str, Any]]:
        """Finished trials (capped at the budget) and the postfix, from one read of the trials."""
        counts = StateCounts.of_trials(study.get_trials(deepcopy=False), confirms=self.confirms)
        postfix = {
            "best": f"{counts.best:.2f}" if counts.best is not None else "-",
            "collapsed": counts.collapsed,
            "pruned": counts.pruned,
            "failed": counts.fail,
        }
        return min(counts.finished, self.total), postfix

    def refresh(self, study: optuna.Study) -> None:
        """Redraw from the storage (after each trial; the ``--workers`` parent polls it)."""
        self.bar.n, postfix = self._state(study)
        self.bar.set_postfix(**postfix, refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.refresh(study)

    def warn(self, message: str) -> None:
        """A line on stderr that does not break the progress bar (shown even with --quiet)."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class FigureRefresher:
    """Re-save the figures every ``every`` trials this worker finishes.

    A failure to save (a locked database, say) is reported once and never stops the study.

    Args:
        every: Finished (complete or pruned) trials between refreshes; 0 = never (end only).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.finished = 0
        self.warned = False

    def refresh(self, study: optuna.Study) -> None:
        """Save the figures now, warning (once) instead of raising on failure."""
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
        if self.finished % self.every == 0:
            self.refresh(study)
