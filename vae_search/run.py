"""``python -m vae_search.run``: create or join a study, run trials, show progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.config import ConfigError, StudyConfig, load_config
from vae_search.storage import DEFAULT_STORAGE, StorageError, mask_url

if TYPE_CHECKING:
    import optuna

__all__ = ["EXIT_USAGE", "build_parser", "main", "summary_table"]

EXIT_USAGE = 2  # bad input: config, flags, storage, data, study mismatch
EXIT_INTERRUPTED = 130
DEFAULT_STUDY = "digits"
DEFAULT_TRIALS = 20
MAX_CONSECUTIVE_FAILURES = 10  # a worker stops when this many trials in a row fail
SUMMARY_ROWS = 10


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m vae_search.run",
        description="Search KL-annealing schedules (klstart, annealtime), latent dimension and "
        "reduction for a VAE, with Optuna, judging every trial by its validation ELBO and "
        "recording posterior-collapse diagnostics.",
    )
    parser.add_argument(
        "--trials", type=_positive_int, default=DEFAULT_TRIALS,
        help="total budget of finished (complete + pruned) trials in the study, shared by all "
        f"workers; re-running resumes up to it (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=None,
        help="stop starting new trials after this many seconds",
    )
    parser.add_argument(
        "--study", default=DEFAULT_STUDY,
        help=f"a study config: a name under studies/ or a path to a TOML file "
        f"(default {DEFAULT_STUDY})",
    )
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE,
        help=f"SQLAlchemy URL of the study database (default {DEFAULT_STORAGE})",
    )
    parser.add_argument("--study-name", default=None, help="default: the config's name")
    parser.add_argument(
        "--seed", type=_nonneg_int, default=None, help="override the config's seed"
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help="override train.epochs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary only")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors instead of one line"
    )
    return parser


def resolve_config(args: argparse.Namespace) -> StudyConfig:
    """Load the config and apply command-line overrides (validated again)."""
    config = load_config(args.study)
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
        s, old = config.search, config.train.epochs
        if s.klstart[1] + s.annealtime[1] > args.epochs or s.klstart[1] >= args.epochs:
            # Shrink the schedule box in proportion so every trial still ends at beta = 1.
            def scaled(lo_hi: tuple[int, int]) -> list[int]:
                hi = min(lo_hi[1] * args.epochs // old, args.epochs // 2)
                return [min(lo_hi[0], hi), hi]

            overrides["search.klstart"] = scaled(s.klstart)
            overrides["search.annealtime"] = scaled(s.annealtime)
            if not args.quiet:
                print(f"note: --epochs {args.epochs}: schedule ranges scaled to klstart "
                      f"{overrides['search.klstart']}, annealtime {overrides['search.annealtime']}",
                      file=sys.stderr)
    return config.with_overrides(**overrides) if overrides else config


def finished_count(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Progress:
    """Optuna callback: a progress bar (done/total, elapsed, best ELBO, collapsed, pruned)."""

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool) -> None:
        from tqdm import tqdm

        self.total = total
        self.consecutive_failures = 0
        self.last_failure = ""
        self.bar = tqdm(
            total=total, initial=min(finished_count(study), total), unit="trial",
            disable=not enabled, dynamic_ncols=True, file=sys.stderr,
        )
        self._refresh_postfix(study)

    def _refresh_postfix(self, study: optuna.Study) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max((t.value for t in complete if t.value is not None), default=None)
        self.bar.set_postfix(
            best=f"{best:.2f}" if best is not None else "-",
            collapsed=sum(1 for t in trials if t.user_attrs.get(keys.ATTR_COLLAPSED) is True),
            pruned=sum(1 for t in trials if t.state == TrialState.PRUNED),
            failed=sum(1 for t in trials if t.state == TrialState.FAIL),
            refresh=False,
        )

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_failure = str(trial.user_attrs.get(keys.ATTR_FAIL_REASON, "see log"))
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.bar.write(
                    f"stopping: {self.consecutive_failures} trials in a row failed "
                    f"(last: {self.last_failure})"
                )
                study.stop()
        else:
            self.consecutive_failures = 0
        self.bar.n = min(finished_count(study), self.total)
        self._refresh_postfix(study)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def summary_table(study: optuna.Study, rows: int = SUMMARY_ROWS) -> str:
    """The best trials as a text table (complete trials first, by validation ELBO)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    collapsed = sum(1 for t in trials if t.user_attrs.get(keys.ATTR_COLLAPSED) is True)
    lines = [
        f"study {study.study_name!r}: {len(trials)} trials — "
        f"{by_state[TrialState.COMPLETE]} complete, {by_state[TrialState.PRUNED]} pruned, "
        f"{by_state[TrialState.FAIL]} failed, {by_state[TrialState.RUNNING]} running; "
        f"{collapsed} collapsed"
    ]
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: -t.value,  # type: ignore[operator]
    )
    if not complete:
        lines.append("no complete trials yet")
        return "\n".join(lines)
    header = ("trial", "klstart", "anneal", "latent", "reduction", "val ELBO", "active", "KL",
              "I(x;z)", "collapsed")
    table = [header]
    for t in complete[:rows]:
        u = t.user_attrs
        table.append((
            str(t.number),
            str(t.params.get("klstart", "")),
            str(t.params.get("annealtime", "")),
            str(t.params.get("latent_dim", "")),
            str(t.params.get("reduction", "")),
            f"{t.value:.2f}",
            f"{u.get(keys.ATTR_ACTIVE_UNITS, '')}",
            f"{u.get(keys.ATTR_KL_TOTAL, float('nan')):.2f}",
            f"{u.get(keys.ATTR_MUTUAL_INFO, float('nan')):.2f}",
            "yes" if u.get(keys.ATTR_COLLAPSED) else "no",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append(f"best {min(rows, len(complete))} by validation ELBO (nats/example, higher is "
                 "better):")
    for i, row in enumerate(table):
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run(args: argparse.Namespace) -> int:
    """Run one worker until the study's budget is met (or the timeout). Returns the exit code."""
    import warnings

    config = resolve_config(args)

    import optuna
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from vae_search.storage import make_storage
    from vae_search.study import open_study

    shown_url = mask_url(args.storage)
    storage = make_storage(args.storage, run=config.run)
    study = open_study(config, storage, study_name=args.study_name)
    done = finished_count(study)
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if done >= args.trials:
        print(f"study {study.study_name!r} already has {done} finished trials "
              f"(budget --trials {args.trials}); raise --trials to add more")
    else:
        say(f"study {study.study_name!r} on {shown_url}: {done}/{args.trials} trials finished; "
            "loading TensorFlow and the data...")
        from vae_search.objective import Objective, TrainingDiverged

        objective = Objective(config, worker=worker_identity())
        progress = Progress(study, args.trials, enabled=not args.quiet)
        started = time.monotonic()
        try:
            study.optimize(
                objective,
                timeout=args.timeout,
                catch=(TrainingDiverged,),
                callbacks=study_callbacks(study, config, args, progress),
            )
        finally:
            progress.close()
        say(f"ran for {time.monotonic() - started:.1f} s")
    finalize(study, config, args)
    return 0


def study_callbacks(
    study: optuna.Study, config: StudyConfig, args: argparse.Namespace, progress: Progress
) -> list[Any]:
    """Callbacks run after every trial of this worker: the budget, then the progress display."""
    import optuna

    return [
        optuna.study.MaxTrialsCallback(
            args.trials,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
        ),
        progress,
    ]


def finalize(study: optuna.Study, config: StudyConfig, args: argparse.Namespace) -> None:
    """What a worker does at the end: the summary table and how to browse the study."""
    shown_url = mask_url(args.storage)
    print(summary_table(study))
    print(f"\nbrowse: optuna-dashboard {shown_url}" +
          ("   (password hidden)" if "***" in shown_url else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vae_search.data import DataError
    from vae_search.study import StudyMismatch

    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; re-run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, DataError, StorageError, StudyMismatch) as exc:
        if args.debug:
            raise
        print(f"vae_search: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
