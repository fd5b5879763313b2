"""Every command line of vae_search: the parsers, their shared arguments, the options they
parse into, and ``vae-search``, the one command that dispatches to them (the exit codes,
defaults and argument types are in :mod:`vae_search.arguments`, re-exported here).

Nothing here imports Optuna, plotly or TensorFlow: ``vae-search --help`` and
``vae-search run --help`` answer at once. Adding a subcommand is one line in :data:`COMMANDS`
(the module must have ``main(argv)``); ``python -m vae_search COMMAND`` is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from vae_search.arguments import (
    ARTIFACTS_ENV,
    AUTO_POPULATION,
    AUTO_WORKERS,
    DEFAULT_CONFIRM_SEEDS,
    DEFAULT_CONFIRM_TOP,
    DEFAULT_HOST,
    DEFAULT_POPULATION,
    DEFAULT_PORT,
    DEFAULT_STUDY,
    DEFAULT_TRIALS,
    DEFAULT_WORKERS,
    EXIT_FAULT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    STORAGE_ENV,
    OneLineParser,
    add_artifacts_arg,
    add_storage_args,
    bounded_int,
    default_storage,
    error_line,
    nonneg_int,
    population_arg,
    port_number,
    port_problem,
    positive_float,
    positive_int,
    study_name,
    trial_choice,
    workers_arg,
    writable_dir,
    writable_file,
)
from vae_search.storage.url import DEFAULT_STORAGE, StorageURL

__all__ = [
    "ARTIFACTS_ENV",
    "AUTO_POPULATION",
    "AUTO_WORKERS",
    "COMMANDS",
    "DEFAULT_STORAGE",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "STORAGE_ENV",
    "OneLineParser",
    "RunOptions",
    "add_artifacts_arg",
    "add_storage_args",
    "bounded_int",
    "console",
    "exiting",
    "default_storage",
    "error_line",
    "ConfirmOptions",
    "build_confirm_parser",
    "build_dashboard_parser",
    "build_export_parser",
    "build_report_parser",
    "build_run_parser",
    "main",
    "population_arg",
    "port_problem",
    "positive_float",
    "stop_quietly_on_signals",
    "study_name",
    "trial_choice",
    "writable_dir",
    "writable_file",
]

class Command(NamedTuple):
    module: str  # has main(argv)
    summary: str  # one line for ``vae-search --help``


# The subcommands of ``vae-search``: one line each.
COMMANDS: dict[str, Command] = {
    "run": Command("vae_search.run", "create or join a study and run trials (the search)"),
    "report": Command("vae_search.report", "write the HTML report and print the findings"),
    "dashboard": Command("vae_search.report.dashboard",
                         "refresh the figures, serve optuna-dashboard"),
    "bench": Command("vae_search.bench.command",
                     "benchmark the trainer, start-up and storage share"),
    "export": Command("vae_search.engine.export",
                      "re-train one trial and save it as a Keras model"),
    "confirm": Command("vae_search.engine.confirm",
                       "repeat the best and reference schedules with new seeds (intervals)"),
    "serve": Command("vae_search.storage.proxy",
                     "serve Optuna's gRPC storage proxy for many workers"),
}


def stop_quietly_on_signals() -> None:
    """Until a command holds SIGINT/SIGTERM itself (it imports Optuna and TensorFlow first, for
    seconds), either one exits at once with 128 + its number and one line, not a traceback:
    nothing has been started that needs closing."""
    import signal

    def stop(signum: int, frame: object) -> None:
        print("interrupted during start-up: nothing was started", file=sys.stderr)
        raise SystemExit(exiting(128 + signum))

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def exiting(status: int) -> int:
    """``status``, for a process about to exit; after a signal, later ones are ignored.

    Python's finalization puts the default handlers back, under which another Ctrl-C in the
    second or so TensorFlow takes to unload would kill the process with no exit status at all
    (-2) after it has closed its trials and said so.

    A process that loaded TensorFlow exits here, without that unloading (0.97 s against 0.03 s
    after the last line, measured; a ``--workers`` run paid it once per worker, in series with
    its end): by now every trial, report and figure is stored and the streams are flushed.
    Not under a profiler or tracer (``python -m cProfile``, coverage): they write at exit.
    """
    import signal

    if status in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    if "tensorflow" in sys.modules and sys.getprofile() is None and sys.gettrace() is None:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
                stream.flush()
        os._exit(status)
    return status


def console() -> None:
    """The ``vae-search`` executable."""
    sys.exit(exiting(main()))

def build_run_parser(prog: str = "python -m vae_search.run") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Search KL-annealing schedules (klstart, annealtime), latent dimension and "
        "reduction for a VAE, with Optuna, judging every trial by its validation ELBO and "
        "recording posterior-collapse diagnostics.",
    )
    parser.add_argument(
        "--trials", type=positive_int, default=DEFAULT_TRIALS,
        help="total budget of finished (complete + pruned) trials in the study, shared by all "
        f"workers; re-running resumes up to it (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=None,
        help="stop starting new trials after this many seconds",
    )
    parser.add_argument(
        "--study", default=DEFAULT_STUDY,
        help=f"a study config: a name under studies/ or a path to a TOML file "
        f"(default {DEFAULT_STUDY})",
    )
    add_storage_args(parser, study_name_help="default: the config's name")
    add_artifacts_arg(parser)
    parser.add_argument(
        "--seed", type=nonneg_int, default=None, help="override the config's seed"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None,
        help="override train.epochs (the schedule box is scaled to fit when needed)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config key, type-checked like the TOML (repeatable), e.g. "
        "--set model.decoder=made --set search.latent_dim=[4,8]",
    )
    parser.add_argument(
        "--workers", type=workers_arg, default="auto", metavar="K|auto",
        help="local worker processes sharing the study and its --trials budget (default "
        "auto: one per CPU core, at most one per 50 trials left; never more than the trials "
        "left); more machines can join with the same --storage",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None,
        help="TensorFlow threads per worker process (default: CPU cores / workers)",
    )
    parser.add_argument(
        "--population", type=population_arg, default=DEFAULT_POPULATION, metavar="P|auto",
        help="trials each worker trains side by side as one stacked model (dense and made "
        "decoders; 'auto': chosen from the CPU cores and memory; default 1: one trial at a "
        "time; see docs/performance.md)",
    )
    parser.add_argument(  # set by the --workers parent for its children
        "--worker-index", type=nonneg_int, default=None, help=argparse.SUPPRESS
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary only")
    parser.add_argument(
        "--debug", action="store_true",
        help="show tracebacks for errors instead of one line, and TensorFlow's warnings",
    )
    return parser


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What ``vae-search run`` was asked to do, parsed and checked once (see its --help)."""

    trials: int = DEFAULT_TRIALS
    timeout: float | None = None
    study: str = DEFAULT_STUDY
    storage: StorageURL = field(default_factory=lambda: StorageURL.parse(DEFAULT_STORAGE))
    study_name: str | None = None
    artifacts: str | None = None  # the artifact store (None: the storage's default directory)
    seed: int | None = None
    epochs: int | None = None
    set: tuple[str, ...] = ()  # --set section.key=value overrides, in order
    workers: int = DEFAULT_WORKERS  # AUTO_WORKERS: chosen from the cores and the trials left
    threads: int | None = None
    population: int = DEFAULT_POPULATION  # trials trained side by side (AUTO_POPULATION: chosen)
    worker_index: int | None = None  # set for the children of a --workers parent
    quiet: bool = False
    debug: bool = False

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunOptions:
        """The options of a parsed ``build_run_parser()`` command line."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        values["set"] = tuple(values["set"])
        return cls(**values)

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None, *,
              prog: str = "python -m vae_search.run") -> RunOptions:
        """Parse a ``run`` command line (exits with status 2 on bad input, 0 for --help)."""
        return cls.from_namespace(build_run_parser(prog).parse_args(argv))

    @property
    def child(self) -> bool:
        """Whether this process is one of the workers started by a ``--workers`` parent."""
        return self.worker_index is not None


def build_report_parser(prog: str = "python -m vae_search.report") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Write a self-contained HTML report (figures + findings tables) of a "
        "vae_search study, print the findings tables, and refresh the figures stored in the "
        "study for optuna-dashboard.",
    )
    add_storage_args(parser,
                     study_name_help="the study (default: the only study in the storage)")
    parser.add_argument("--out", required=True, type=writable_file,
                        help="the HTML file to write")
    parser.add_argument("--figures-dir", default=None, type=writable_dir,
                        help="also write each figure as a standalone page DIR/<figure id>.html")
    parser.add_argument("--no-save", action="store_true",
                        help="do not refresh the figures stored in the study")
    return parser


def build_dashboard_parser(
    prog: str = "vae-search dashboard",
) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Refresh the vae_search figures stored in the study (or every study in the "
        "storage), then serve optuna-dashboard on the same storage and artifact directory.",
    )
    add_storage_args(parser,
                     study_name_help="refresh only this study's figures (default: every study)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    add_artifacts_arg(parser, "--artifact-dir")
    return parser


def build_export_parser(prog: str = "vae-search export") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Re-train one trial of a study from its stored parameters and seed, check "
        "that it reproduces the stored validation ELBO, and save it as a Keras model "
        "(x -> [z_mean, z_log_var, decoded parameters]).",
    )
    add_storage_args(parser,
                     study_name_help="the study (default: the only study in the storage)")
    parser.add_argument("--trial", default="best", type=trial_choice,
                        help="'best' (default: the best feasible complete trial) or a number")
    parser.add_argument("--out", required=True, type=writable_file,
                        help="the .keras file to write")
    return parser


def build_confirm_parser(prog: str = "vae-search confirm") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Re-train the best complete, non-collapsed trials of a study and three "
        "reference schedules (no warm-up, the middle and the longest warm-up of the box) with "
        "new seeds, as never-pruned trials of the same study outside its --trials budget; "
        "print and store the collapse rate of each schedule with a 95% Wilson interval.",
    )
    add_storage_args(parser,
                     study_name_help="the study (default: the only study in the storage)")
    add_artifacts_arg(parser)
    parser.add_argument("--top", type=nonneg_int, default=DEFAULT_CONFIRM_TOP,
                        help="best non-collapsed trials to repeat, of each remedy family "
                        f"when the study searches several (default {DEFAULT_CONFIRM_TOP})")
    parser.add_argument("--seeds", type=positive_int, default=DEFAULT_CONFIRM_SEEDS,
                        help="runs (new seeds) per schedule; re-running adds only the missing "
                        f"ones (default {DEFAULT_CONFIRM_SEEDS})")
    parser.add_argument("--no-references", action="store_true",
                        help="repeat only the best trials, not the reference schedules")
    parser.add_argument("--trial", type=nonneg_int, action="append", default=[], metavar="N",
                        dest="trials", help="also repeat search trial N, whatever its rank "
                        "(repeatable)")
    parser.add_argument("--like", type=nonneg_int, default=None, metavar="N",
                        help="the references take trial N's other parameters (latent dim, "
                        "reduction, ...) instead of the best trial's")
    parser.add_argument("--join", action="store_true",
                        help="plan nothing: only run the queued confirmation runs (more "
                        "machines join a confirm this way)")
    parser.add_argument("--yes", action="store_true",
                        help="queue more than 200 new runs (--top x --seeds) at once")
    queue = parser.add_mutually_exclusive_group()
    queue.add_argument("--list", action="store_true", dest="show",
                       help="print the queued schedules and their runs, run nothing")
    queue.add_argument("--cancel", action="store_true",
                       help="drop the runs not started yet (finished runs are kept)")
    parser.add_argument("--workers", type=workers_arg, default="auto",
                        metavar="K|auto", help="local worker processes (default auto: one "
                        "per CPU core, at most one per 4 runs left)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="TensorFlow threads per worker process")
    parser.add_argument("--worker-index", type=nonneg_int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar, table only")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks for errors instead of one line")
    return parser


@dataclass(frozen=True, kw_only=True)
class ConfirmOptions:
    """What ``vae-search confirm`` was asked to do (see its --help)."""

    storage: StorageURL = field(default_factory=lambda: StorageURL.parse(DEFAULT_STORAGE))
    study_name: str | None = None
    artifacts: str | None = None
    top: int = DEFAULT_CONFIRM_TOP
    seeds: int = DEFAULT_CONFIRM_SEEDS
    no_references: bool = False
    trials: tuple[int, ...] = ()  # --trial N: search trials repeated whatever their rank
    like: int | None = None  # the references take this trial's other parameters
    join: bool = False
    yes: bool = False  # more than confirm.MAX_RUNS new runs
    show: bool = False  # --list: print the plan only
    cancel: bool = False  # drop the runs not started
    workers: int = DEFAULT_WORKERS
    threads: int | None = None
    worker_index: int | None = None
    quiet: bool = False
    debug: bool = False

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None, *,
              prog: str = "vae-search confirm") -> ConfirmOptions:
        parser = build_confirm_parser(prog)
        args = parser.parse_args(argv)
        args.trials = tuple(dict.fromkeys(args.trials))  # in order, once each
        if args.top == 0 and args.no_references and not args.trials and not args.join:
            parser.error("--top 0 with --no-references: nothing to confirm (repeat some best "
                         "trials, or the references)")
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def run_options(self, study_name: str) -> RunOptions:
        """The worker-loop options of one confirm worker on ``study_name``."""
        return RunOptions(storage=self.storage, study_name=study_name, artifacts=self.artifacts,
                          threads=self.threads, worker_index=self.worker_index,
                          quiet=self.quiet, debug=self.debug)


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    parser = OneLineParser(
        prog="vae-search",
        usage="vae-search COMMAND [ARGS...]",
        description="Search KL-annealing schedules under which a VAE's posterior does not\n"
        "collapse (Optuna), and show which ones do.",
        epilog=f"commands:\n{listing}\n\n'vae-search COMMAND --help' shows a command's "
        "arguments. Each command is also 'python -m vae_search COMMAND'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                        help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``vae-search COMMAND [ARGS...]``: run one subcommand (imported only when chosen)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _top_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if argv[0].startswith("-"):
        parser.parse_args(argv[:1])  # --help (exit 0) or an error (exit 2)
    name = parser.parse_args(argv[:1]).command
    command_main = importlib.import_module(COMMANDS[name].module).main
    if "prog" in inspect.signature(command_main).parameters:
        return int(command_main(argv[1:], prog=f"vae-search {name}") or 0)
    return int(command_main(argv[1:]) or 0)


if __name__ == "__main__":
    console()
