"""``vae-search confirm`` (``python -m vae_search confirm``): is a schedule's verdict a property
of the schedule, or of one seed?

Collapse is a per-seed outcome. ``confirm`` re-trains, each with ``--seeds`` new seeds:

* the ``--top`` best complete, non-collapsed trials of the search (their exact parameters);
* three reference schedules on the best trial's other parameters (or trial ``--like N``'s):
  ``no-warmup``
  (``klstart = annealtime = 0``), ``middle`` (the middle of the search box) and ``longest``
  (the longest warm-up of the box).

The runs are trials of the same study, enqueued with fixed parameters and user attr
``confirms`` (the source trial's number, or the reference's name). A run's seed comes from its
own trial number, as for every trial, so each run has a new seed. Runs are never pruned, do not
count toward the search's ``--trials`` budget (any worker that pops one runs it), and get the
IWAE bound with 1,000 samples. The result, one row per schedule with the collapse rate and its
95% Wilson interval, is printed and stored as study user attr ``confirmation``; the report and
optuna-dashboard draw it ("collapse probability by schedule").

Re-running adds only the missing runs, so an interrupted confirm resumes. More machines join
with ``vae-search confirm --join`` on the same storage (``--join`` never enqueues: start the
planning command once).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.cli import ConfirmOptions
from vae_search.config.schema import ConfigError, SearchConfig, StudyConfig
from vae_search.config.stored import stored_config
from vae_search.engine.budget import FAIL_SURPLUS, BudgetGate, BudgetReached
from vae_search.report.confirmation import confirmation_rows, confirmation_table
from vae_search.report.findings import text_table
from vae_search.report.rows import elbo_value, is_confirmation, trial_rows
from vae_search.storage.connection import StorageError, load_study
from vae_search.trial.space import ANNEALTIME, CYCLES, KLSTART, RATIO, SCHEDULE

if TYPE_CHECKING:
    import optuna

__all__ = ["REFERENCES", "ConfirmError", "ConfirmGate", "enqueue", "main", "plan",
           "reference_params"]

REFERENCES = ("no-warmup", "middle", "longest")  # the reference schedules, in table order
# A confirm run is asked for only while one is queued; a trial sampled instead (another worker
# took the last run in between) is failed before training with this reason.
FAIL_NO_RUN = f"{FAIL_SURPLUS}: no confirmation run was left in the queue; it was not run"

Planned = tuple[int | str, dict[str, Any]]  # (the ``confirms`` value, fixed parameters)


class ConfirmError(RuntimeError):
    """Nothing to confirm: the study has no complete trial yet."""


def reference_params(best: dict[str, Any], space: SearchConfig) -> dict[str, dict[str, Any]]:
    """The reference schedules, linear, on the best trial's other parameters.

    Args:
        best: The best trial's parameters (latent dim, reduction, ... are kept).
        space: The search box (``klstart + annealtime <= epochs`` holds all over it).
    """
    (k_lo, k_hi), (a_lo, a_hi) = space.klstart, space.annealtime
    schedules = {"no-warmup": (0, 0), "middle": ((k_lo + k_hi) // 2, (a_lo + a_hi) // 2),
                 "longest": (k_hi, a_hi)}
    base = {k: v for k, v in best.items() if k not in (CYCLES, RATIO)}
    if SCHEDULE in base:
        base[SCHEDULE] = "linear"
    return {name: {**base, KLSTART: k, ANNEALTIME: a} for name, (k, a) in schedules.items()}


def plan(study: optuna.Study, config: StudyConfig, top: int, *,
         references: bool = True, like: int | None = None) -> list[Planned]:
    """The schedules to confirm: the ``top`` best complete, non-collapsed search trials, then
    the references, on the parameters of trial ``like`` if given (named ``"no-warmup like #N"``
    and so on), else of the best non-collapsed trial (else the best trial).

    Raises:
        ConfirmError: the study has no complete search trial yet, or no trial ``like``.
    """
    from optuna.trial import TrialState

    search = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not is_confirmation(t) and elbo_value(t) is not None]
    if not search:
        raise ConfirmError(f"study {study.study_name!r} has no complete trials to confirm yet; "
                           "run 'vae-search run' first")
    ranked = sorted(search, key=lambda t: -(elbo_value(t) or 0.0))
    healthy = [t for t in ranked if t.user_attrs.get(keys.ATTR_COLLAPSED) is False]
    planned: list[Planned] = [(t.number, dict(t.params)) for t in healthy[:top]]
    if references and "linear" in config.search.schedule:
        base, suffix = (healthy or ranked)[0], ""
        if like is not None:
            found = [t for t in study.get_trials(deepcopy=False, states=(
                         TrialState.COMPLETE, TrialState.PRUNED))
                     if t.number == like and t.params and not is_confirmation(t)]
            if not found:
                raise ConfirmError(f"--like {like}: study {study.study_name!r} has no complete "
                                   "or pruned search trial with that number and parameters")
            base, suffix = found[0], f" like #{like}"
        planned += [(name + suffix, params) for name, params
                    in reference_params(dict(base.params), config.search).items()]
    return planned


def enqueue(study: optuna.Study, planned: Sequence[Planned], seeds: int) -> int:
    """Queue the runs each schedule still lacks (waiting, running or complete runs count, so a
    re-run resumes and a failed run is replaced); returns how many were queued."""
    from optuna.trial import TrialState

    have = Counter(
        t.user_attrs[keys.ATTR_CONFIRMS]
        for t in study.get_trials(deepcopy=False, states=(
            TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
        if is_confirmation(t)
    )
    added = 0
    for label, params in planned:
        for _ in range(seeds - have[label]):
            study.enqueue_trial(params, user_attrs={keys.ATTR_CONFIRMS: label})
            added += 1
    return added


def _queued(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if is_confirmation(t))


class ConfirmGate:
    """The trial loop's gate for confirm: ask while a confirmation run is queued, and run
    only confirmation runs (never the search's sampled trials)."""

    reap = staticmethod(BudgetGate.reap)

    def poll(self, study: optuna.Study) -> bool:
        return _queued(study) > 0

    slot_free = poll

    def admit(self, trial: optuna.Trial, *, wait: bool = True) -> None:
        if keys.ATTR_CONFIRMS not in trial.user_attrs:
            trial.set_user_attr(keys.ATTR_FAIL_REASON, FAIL_NO_RUN)
            raise BudgetReached(FAIL_NO_RUN)


def _child_command(options: ConfirmOptions, name: str, index: int, threads: int) -> list[str]:
    argv = [sys.executable, "-m", "vae_search.engine.confirm", "--join", "--quiet", "--study-name",
            name, "--worker-index", str(index), "--threads", str(threads)]
    if options.artifacts is not None:
        argv += ["--artifacts", options.artifacts]
    return argv + (["--debug"] if options.debug else [])


def _work(options: ConfirmOptions, study: optuna.Study, config: StudyConfig, total: int,
          signals: Any) -> None:
    """Run queued confirmation runs: in this process, or in ``--workers`` children."""
    import os

    from vae_search.report import Progress

    if options.workers > 1:
        from vae_search.engine.pool import check_shareable, supervise

        check_shareable(options.storage)
        size = min(options.workers, max(1, _queued(study)))
        threads = options.threads or max(1, (os.cpu_count() or 1) // size)
        codes, received = supervise(
            [_child_command(options, study.study_name, i, threads) for i in range(size)],
            options.storage, Progress(study, total, enabled=not options.quiet, confirms=True),
            study,
        )
        if received:
            from vae_search.engine.signals import Interrupted

            raise Interrupted(received)
        return
    from vae_search.engine.worker import prepare, train

    run = options.run_options(study.study_name)
    dataset, worker_study = prepare(run, config)
    train(worker_study, config, dataset, run, signals, gate=ConfirmGate(),
          progress=Progress(worker_study, total, enabled=not options.quiet, confirms=True),
          trials_left=max(1, _queued(worker_study)))


def confirm(options: ConfirmOptions, signals: Any) -> int:
    """Plan, queue and run the confirmation runs, then print and store the table."""
    from vae_search.report.rows import StateCounts

    study = load_study(options.storage, options.study_name)
    config = stored_config(study)
    if not options.join:
        planned = plan(study, config, options.top, references=not options.no_references,
                       like=options.like)
        added = enqueue(study, planned, options.seeds)
        if not options.quiet:
            names = ", ".join(f"#{p}" if isinstance(p, int) else p for p, _ in planned)
            print(f"confirm {study.study_name!r}: {len(planned)} schedules ({names}) x "
                  f"{options.seeds} seeds; queued {added} new runs", file=sys.stderr)
    counts = StateCounts.of_trials(study.get_trials(deepcopy=False), confirms=True)
    total = counts.finished + counts.running + _queued(study)
    started = time.monotonic()
    _work(options, study, config, total, signals)
    if options.worker_index is not None:
        return 0  # a --workers child: the parent prints the table
    rows = confirmation_rows(trial_rows(study, config, confirms=True))
    study.set_user_attr(keys.STUDY_ATTR_CONFIRMATION, [r.as_dict() for r in rows])
    from vae_search.report import FigureRefresher

    FigureRefresher(0).refresh(study)
    running = StateCounts.of_trials(study.get_trials(deepcopy=False), confirms=True).running
    if not options.quiet:
        print(f"ran for {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(f"confirmation of study {study.study_name!r} (collapse rate with its 95% Wilson "
          "interval; ELBO and IWAE in nats/example):\n" + text_table(*confirmation_table(rows)))
    if running:
        print(f"note: {running} confirmation runs are still running on other workers; re-run "
              "'vae-search confirm --join' later to refresh the table")
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command; returns the exit status (0, 1 database lost, 2 bad input, 130/143)."""
    from vae_search.data.datasets import DataError
    from vae_search.engine.signals import run_command

    options = ConfirmOptions.parse(argv, prog=prog or "python -m vae_search.engine.confirm")
    return run_command(lambda signals: confirm(options, signals),
                       label=prog or "vae_search.engine.confirm", debug=options.debug,
                       quiet_interrupt=options.worker_index is not None,
                       usage_errors=(ConfigError, ConfirmError, DataError, StorageError))


if __name__ == "__main__":
    sys.exit(main())
