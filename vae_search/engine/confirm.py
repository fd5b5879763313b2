"""``vae-search confirm`` (``python -m vae_search confirm``): is a schedule's verdict a property
of the schedule, or of one seed?

Collapse is a per-seed outcome. ``confirm`` re-trains, each with ``--seeds`` new seeds:

* the ``--top`` best complete, non-collapsed trials of the search (their exact parameters);
* three reference schedules on the best trial's other parameters (or trial ``--like N``'s):
  ``no-warmup`` (``klstart = annealtime = 0``), ``middle`` (the middle of the search box) and
  ``longest`` (the longest warm-up of the box).

The plan is a study user attr (``confirm_plan``: schedule, parameters, runs wanted); a confirm
worker turns one missing run at a time into a trial of the same study with fixed parameters and
user attr ``confirms`` (the source trial's number, or the reference's name), so a ``vae-search
run`` on the study never pops one. A run's seed comes from its own trial number, as for every
trial, so each run has a new seed. Runs are never pruned, do not count toward the search's
``--trials`` budget, and get the IWAE bound with 1,000 samples. One confirm plans at most
:data:`MAX_RUNS` new runs without ``--yes``; ``--list`` shows the plan, ``--cancel`` drops
what has not started. The result, one row per schedule with the collapse rate and its
95% Wilson interval, is printed and stored as study user attr ``confirmation``; the report and
optuna-dashboard draw it ("collapse probability by schedule").

Re-running adds only the missing runs, so an interrupted confirm resumes. More machines join
with ``vae-search confirm --join`` on the same storage (``--join`` never plans).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.cli import AUTO_WORKERS, ConfirmOptions
from vae_search.config.schema import ConfigError, SearchConfig, StudyConfig
from vae_search.config.stored import stored_config
from vae_search.engine.budget import FAIL_SURPLUS, BudgetReached
from vae_search.report.confirmation import confirmation_rows, confirmation_table
from vae_search.report.findings import text_table
from vae_search.report.rows import elbo_value, is_confirmation, trial_rows
from vae_search.storage.connection import StorageError, load_study
from vae_search.storage.heartbeat import StaleTrials
from vae_search.trial.space import ANNEALTIME, CYCLES, FAMILY, KLSTART, RATIO, SCHEDULE

if TYPE_CHECKING:
    import optuna

__all__ = ["MAX_RUNS", "REFERENCES", "ConfirmError", "ConfirmGate", "cancel", "enqueue",
           "lacking", "main", "plan", "plan_table", "reference_params", "runs_left"]

REFERENCES = ("no-warmup", "middle", "longest")  # the reference schedules, in table order
# A confirm run is asked for only while one is queued; a trial sampled instead (another worker
# took the last run in between) is failed before training with this reason.
FAIL_NO_RUN = f"{FAIL_SURPLUS}: no confirmation run was left in the queue; it was not run"
FAIL_SURPLUS_RUN = (f"{FAIL_SURPLUS}: another worker queued the same confirmation run at the "
                    "same instant; it was not run")
FAIL_CANCELLED = "cancelled: vae-search confirm --cancel"  # a queued run that never started
MAX_RUNS = 200  # new runs one confirm plans without --yes (7,791 were once queued by mistake)
RUNS_PER_WORKER = 4  # --workers auto: one more worker per this many runs left, up to the cores

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
    if base.get(FAMILY) == "cyclical":  # a reference is a linear warm-up
        base[FAMILY] = "warmup"
    return {name: {**base, KLSTART: k, ANNEALTIME: a} for name, (k, a) in schedules.items()}


def plan(study: optuna.Study, config: StudyConfig, top: int, *,
         references: bool = True, like: int | None = None,
         trials: Sequence[int] = ()) -> list[Planned]:
    """The schedules to confirm: the ``top`` best complete, non-collapsed search trials (of each
    remedy family when the study searches several; a family with none, its best trial), the
    search ``trials`` named (``--trial N``), then the references, on the parameters of trial
    ``like`` if given (named ``"no-warmup like #N"`` and so on), else of the best
    non-collapsed trial (else the best trial).

    Raises:
        ConfirmError: the study has no complete search trial yet, or no trial ``like`` or
            ``trials``.
    """
    from optuna.trial import TrialState

    search = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not is_confirmation(t) and elbo_value(t) is not None]
    if not search:
        raise ConfirmError(f"study {study.study_name!r} has no complete trials to confirm yet; "
                           "run 'vae-search run' first")
    ranked = sorted(search, key=lambda t: -(elbo_value(t) or 0.0))
    healthy = [t for t in ranked if t.user_attrs.get(keys.ATTR_COLLAPSED) is False]
    families = config.search.families  # a reference is a linear warm-up of the family
    chosen = healthy[:top]
    if len(families) > 1:  # the best of each family, compared on new seeds
        chosen, kept = [], {t.number for t in healthy}
        for family in families:
            own = [t for t in ranked if t.params.get(FAMILY, families[0]) == family]
            # a family none of whose trials kept its code is confirmed on its best trial
            chosen += [t for t in own if t.number in kept][:top] or own[:min(top, 1)]
    picked = {t.number for t in chosen}
    chosen += [_search_trial(study, n, "--trial") for n in trials if n not in picked]
    planned: list[Planned] = [(t.number, dict(t.params)) for t in chosen]
    if references and "linear" in config.search.schedule and (
            "warmup" in families or (len(families) == 1 and families[0] != "cyclical")):
        base, suffix = (healthy or ranked)[0], ""
        if like is not None:
            base, suffix = _search_trial(study, like, "--like"), f" like #{like}"
        planned += [(name + suffix, params) for name, params
                    in reference_params(dict(base.params), config.search).items()]
    return planned


def _search_trial(study: optuna.Study, number: int, flag: str) -> optuna.trial.FrozenTrial:
    """Search trial ``number``, complete or pruned (its parameters are what is repeated)."""
    from optuna.trial import TrialState

    found = [t for t in study.get_trials(deepcopy=False, states=(
                 TrialState.COMPLETE, TrialState.PRUNED))
             if t.number == number and t.params and not is_confirmation(t)]
    if not found:
        raise ConfirmError(f"{flag} {number}: study {study.study_name!r} has no complete or "
                           "pruned search trial with that number and parameters")
    return found[0]


def _have(study: optuna.Study, *, below: int | None = None) -> Counter[Any]:
    """Runs per schedule that count as done or under way (queued, running, finished), of
    those numbered below ``below`` if given."""
    from optuna.trial import TrialState

    return Counter(
        t.user_attrs[keys.ATTR_CONFIRMS]
        for t in study.get_trials(deepcopy=False, states=(
            TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
        if is_confirmation(t) and (below is None or t.number < below)
    )


def _plan_entries(study: optuna.Study) -> list[dict[str, Any]]:
    return list(study.user_attrs.get(keys.STUDY_ATTR_CONFIRM_PLAN, []))


def _wanted(study: optuna.Study, label: int | str) -> int:
    """The runs the plan wants of schedule ``label`` (0 once ``--cancel`` dropped it)."""
    return next((e["seeds"] for e in _plan_entries(study) if e["confirms"] == label), 0)


def lacking(study: optuna.Study) -> list[tuple[int | str, dict[str, Any], int]]:
    """The planned schedules that still lack runs: ``(label, params, runs lacking)``."""
    have = _have(study)
    return [(e["confirms"], e["params"], e["seeds"] - have[e["confirms"]])
            for e in _plan_entries(study) if e["seeds"] > have[e["confirms"]]]


def runs_left(study: optuna.Study) -> int:
    """How many planned runs no worker has started yet."""
    return sum(n for _, _, n in lacking(study))


def enqueue(study: optuna.Study, planned: Sequence[Planned], seeds: int, *,
            limit: int | None = MAX_RUNS) -> int:
    """Add ``seeds`` runs of each planned schedule to the study's confirm plan (a schedule
    planned before keeps the larger count; started and finished runs count, so a re-run
    resumes and a failed run is replaced); returns how many runs are new.

    The plan is a study user attr, not queued Optuna trials: a ``vae-search run`` on the same
    study asks the sampler and never pops a confirmation run, and ``--cancel`` clears it.

    Raises:
        ConfirmError: more than ``limit`` new runs (``None``: no limit, ``--yes``).
    """
    have = _have(study)
    entries = {repr(e["confirms"]): e for e in _plan_entries(study)}
    added = 0
    for label, params in planned:
        old = entries.get(repr(label), {"seeds": 0})
        added += max(0, seeds - max(old["seeds"], have[label]))
        entries[repr(label)] = {"confirms": label, "params": params,
                                "seeds": max(seeds, old["seeds"])}
    if limit is not None and added > limit:
        raise ConfirmError(
            f"this would queue {added} runs ({len(planned)} schedules x --seeds {seeds}), more "
            f"than {limit}: pass --yes to queue them, or ask for fewer --seeds or --top")
    study.set_user_attr(keys.STUDY_ATTR_CONFIRM_PLAN, list(entries.values()))
    return added


def cancel(study: optuna.Study) -> int:
    """Drop the plan and fail the runs queued but not started; returns how many runs were
    left. Started and finished runs are kept."""
    from optuna.trial import TrialState

    from vae_search.storage._optuna import study_storage, trial_id

    left = runs_left(study)
    study.set_user_attr(keys.STUDY_ATTR_CONFIRM_PLAN, [])
    storage = study_storage(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if is_confirmation(t):  # queued by an older vae_search, or a worker that then died
            tid = trial_id(t)
            storage.set_trial_user_attr(tid, keys.ATTR_FAIL_REASON, FAIL_CANCELLED)
            storage.set_trial_state_values(tid, TrialState.FAIL)
            left += 1
    return left


def plan_table(study: optuna.Study) -> str:
    """The plan, one row per schedule: runs wanted, finished, running, not started."""
    from vae_search.report.rows import StateCounts

    rows: list[tuple[str, ...]] = []
    trials = [t for t in study.get_trials(deepcopy=False) if is_confirmation(t)]
    missing = {label: n for label, _, n in lacking(study)}
    for e in _plan_entries(study):
        counts = StateCounts.of_trials(
            (t for t in trials if t.user_attrs[keys.ATTR_CONFIRMS] == e["confirms"]),
            confirms=True)
        label = f"#{e['confirms']}" if isinstance(e["confirms"], int) else e["confirms"]
        rows.append((label, str(e["seeds"]), str(counts.finished), str(counts.running),
                     str(missing.get(e["confirms"], 0))))
    return text_table(("schedule", "runs", "finished", "running", "not started"), rows)


class ConfirmGate:
    """The trial loop's gate for confirm: ask while a planned run is not started, and run
    only confirmation runs (never the search's sampled trials)."""

    def __init__(self) -> None:
        self.stale = StaleTrials()

    def reap(self, study: optuna.Study) -> None:
        self.stale.check(study)

    def poll(self, study: optuna.Study) -> bool:
        return runs_left(study) > 0

    slot_free = poll

    @staticmethod
    def ask(study: optuna.Study) -> optuna.Trial:
        """Queue one run of the first schedule that lacks one, and ask for it (two workers
        that do so at the same instant queue the same run twice: :meth:`admit` fails the
        later one)."""
        todo = lacking(study)
        if todo:
            label, params, _ = todo[0]
            study.enqueue_trial(params, user_attrs={keys.ATTR_CONFIRMS: label})
        return study.ask()

    def admit(self, trial: optuna.Trial, *, wait: bool = True) -> None:
        """The reservation check at run start; raises :class:`BudgetReached` if surplus.

        A run is admitted only if fewer runs of its schedule than planned are numbered below
        it (queued, running or finished). Trials are numbered in the order they were queued,
        so of two workers that queued the same missing run at once, the later one is failed
        before training and its worker asks again.
        """
        label = trial.user_attrs.get(keys.ATTR_CONFIRMS)
        if label is None:
            reason = FAIL_NO_RUN
        elif _have(trial.study, below=trial.number)[label] >= _wanted(trial.study, label):
            reason = FAIL_SURPLUS_RUN
        else:
            return
        trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
        raise BudgetReached(reason)


def _child_command(options: ConfirmOptions, name: str, index: int, threads: int) -> list[str]:
    # "--workers 1": a child is one worker (the default, auto, would start workers of its own).
    argv = [sys.executable, "-m", "vae_search.engine.confirm", "--join", "--quiet", "--study-name",
            name, "--workers", "1", "--worker-index", str(index), "--threads", str(threads)]
    if options.artifacts is not None:
        argv += ["--artifacts", options.artifacts]
    return argv + (["--debug"] if options.debug else [])


def _work(options: ConfirmOptions, study: optuna.Study, config: StudyConfig, total: int,
          signals: Any) -> None:
    """Run queued confirmation runs: in this process, or in ``--workers`` children."""
    from vae_search.engine.pool import check_shareable, pool_size, supervise
    from vae_search.engine.sizing import cpu_cores
    from vae_search.report import Progress

    cpus = cpu_cores()
    # A confirmation run trains every epoch and is never pruned: worth a worker sooner.
    size, _ = pool_size(options.workers, max(1, runs_left(study)), cpus,
                        per_worker=RUNS_PER_WORKER)
    if size > 1 and options.storage.backend == "sqlite":
        # Optuna hands out a queued run with a read and then a write, which SQLite does not
        # lock together: two workers could take the same run (seen under load: one run trained
        # twice, its twin left queued). PostgreSQL locks the row.
        if options.workers != AUTO_WORKERS and not options.quiet:
            print(f"note: confirm on SQLite runs one worker, not {options.workers} (two could "
                  "take the same queued run); use PostgreSQL for more", file=sys.stderr)
        size = 1
    if size > 1:
        check_shareable(options.storage)
        threads = options.threads or max(1, cpus // size)
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
          trials_left=max(1, runs_left(worker_study)))


def confirm(options: ConfirmOptions, signals: Any) -> int:
    """Plan, queue and run the confirmation runs, then print and store the table."""
    from vae_search.report.rows import StateCounts

    study = load_study(options.storage, options.study_name)
    if options.show or options.cancel:
        if options.cancel:
            print(f"cancelled {cancel(study)} confirmation runs of study "
                  f"{study.study_name!r} that had not started; finished runs are kept")
        print(plan_table(study))
        return 0
    config = stored_config(study)
    if not options.join:
        planned = plan(study, config, options.top, references=not options.no_references,
                       like=options.like, trials=options.trials)
        added = enqueue(study, planned, options.seeds, limit=None if options.yes else MAX_RUNS)
        if not options.quiet:
            names = ", ".join(f"#{p}" if isinstance(p, int) else p for p, _ in planned)
            print(f"confirm {study.study_name!r}: {len(planned)} schedules ({names}) x "
                  f"{options.seeds} seeds; queued {added} new runs", file=sys.stderr)
    counts = StateCounts.of_trials(study.get_trials(deepcopy=False), confirms=True)
    total = counts.finished + counts.running + runs_left(study)
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

    options = ConfirmOptions.parse(argv, prog=prog or "vae-search confirm")
    return run_command(lambda signals: confirm(options, signals),
                       label=prog or "vae-search confirm", debug=options.debug,
                       quiet_interrupt=options.worker_index is not None,
                       usage_errors=(ConfigError, ConfirmError, DataError, StorageError))


if __name__ == "__main__":
    from vae_search.cli import exiting

    sys.exit(exiting(main()))
