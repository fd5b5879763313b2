"""What every command line shares: the exit codes, the defaults, the argument types that check
a value as the user typed it (one line and exit 2 when it is wrong), and the ``--storage``,
``--study-name`` and ``--artifacts`` arguments of every command.

Split from :mod:`vae_search.cli` (the parsers and the dispatcher), which re-exports these names.
Imports nothing heavier than the storage URL parser.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from vae_search.storage.url import DEFAULT_STORAGE, StorageError, StorageURL

__all__ = [
    "nonneg_int",
    "port_number",
    "positive_int",
    "storage_url_arg",
    "ARTIFACTS_ENV",
    "AUTO_POPULATION",
    "AUTO_WORKERS",
    "DEFAULT_CONFIRM_SEEDS",
    "DEFAULT_CONFIRM_TOP",
    "DEFAULT_HOST",
    "DEFAULT_POPULATION",
    "DEFAULT_PORT",
    "DEFAULT_STUDY",
    "DEFAULT_TRIALS",
    "DEFAULT_WORKERS",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "OneLineParser",
    "STORAGE_ENV",
    "add_artifacts_arg",
    "add_storage_args",
    "bounded_int",
    "default_storage",
    "error_line",
    "population_arg",
    "positive_or_auto",
    "workers_arg",
    "port_problem",
    "positive_float",
    "study_name",
    "trial_choice",
    "writable_dir",
    "writable_file",
]

EXIT_OK = 0
EXIT_FAULT = 1  # the environment failed (database lost); not a user mistake
EXIT_USAGE = 2  # bad input: flags, config, storage, data, study mismatch
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

STORAGE_ENV = "VAE_SEARCH_STORAGE"  # default for --storage (keeps passwords off command lines)
ARTIFACTS_ENV = "VAE_SEARCH_ARTIFACTS"  # default for --artifacts (one store for every worker)
DEFAULT_STUDY = "seed_mse"  # the recipe's loss: the schedule decides collapse (docs/findings.md)
DEFAULT_TRIALS = 20
# --workers: "auto" (AUTO_WORKERS) starts one worker process per CPU core, but at most one
# per engine.sizing.TRIALS_PER_WORKER trials left; a number is taken as asked.
AUTO_WORKERS = 0
DEFAULT_WORKERS = AUTO_WORKERS
DEFAULT_HOST = "127.0.0.1"  # dashboard: local only, optuna-dashboard has no authentication
DEFAULT_PORT = 8080  # optuna-dashboard's own default
# --population: 1 trains one trial at a time; "auto" (AUTO_POPULATION) picks P from cores and
# memory. Opt-in: on 2 cores it gained 1.0-1.2x, --workers 2 1.8x (docs/performance.md).
AUTO_POPULATION = 0
DEFAULT_POPULATION = 1
DEFAULT_CONFIRM_TOP = 3  # confirm: the best complete, non-collapsed trials repeated
DEFAULT_CONFIRM_SEEDS = 5  # confirm: new seeds per schedule


def error_line(label: str, message: object) -> str:
    """``label: error: message`` as one line: line breaks and other control characters a
    user's input brought in (a name, a path, a value) are shown escaped."""
    text = str(message)
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode()
                   for ch in text)
    return f"{label}: error: {text}"


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, error_line(self.prog, f"{message} (see --help)") + "\n")


def bounded_int(
    minimum: int, maximum: int | None = None, *, noun: str = "a whole number"
) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers in ``[minimum, maximum]``.

    Args:
        minimum: The smallest accepted value.
        maximum: The largest accepted value (``None``: no upper bound).
        noun: What the value is, for the message when the text is not a number.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if maximum is None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in {minimum}..{maximum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type`` for a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _unwritable(directory: Path) -> str | None:
    """Why no file can be created in ``directory`` (``None``: one can). Probed with a
    temporary file, since permission bits do not tell (root, read-only mounts)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".vae_search-probe-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def writable_file(text: str) -> str:
    """An argparse ``type`` for a file to write: not empty, not a directory, in an existing
    directory where this process can create (or overwrite) it. Checked before any work."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a file, got {text!r}")
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; name a file in it")
        if not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"directory {path.parent} does not exist")
        if path.exists():
            open(path, "ab").close()  # appends nothing: the file is left as it is
        elif reason := _unwritable(path.parent):
            raise argparse.ArgumentTypeError(f"cannot write in {path.parent}: {reason}")
    except OSError as exc:  # a name too long, a file that cannot be opened for writing
        raise argparse.ArgumentTypeError(f"cannot write {text}: {exc.strerror}") from None
    return text


def writable_dir(text: str) -> str:
    """An argparse ``type`` for a directory to write files in: not empty, not a file, either
    a writable directory or a new one in a writable existing directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a directory, got {text!r}")
    path = Path(text).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
        where = path if path.is_dir() else path.parent
        if not where.is_dir():
            raise argparse.ArgumentTypeError(f"directory {where} does not exist")
    except OSError as exc:  # a name too long
        raise argparse.ArgumentTypeError(f"cannot use {text}: {exc.strerror}") from None
    if reason := _unwritable(where):
        raise argparse.ArgumentTypeError(f"cannot write in {where}: {reason}")
    return text


def trial_choice(text: str) -> str:
    """An argparse ``type`` for ``export --trial``: ``best`` or a trial number."""
    if text == "best" or (text.isdigit() and text.isascii()):
        return text if text == "best" else str(int(text))
    raise argparse.ArgumentTypeError(f"expected 'best' or a trial number, got {text!r}")


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (in use, no such address), or ``None``: a plain bind
    first, before a server says it listens (gRPC binds with SO_REUSEPORT and would share a
    busy port)."""
    import socket

    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return f"cannot serve on {host}:{port}: {exc.strerror or exc}"


positive_int = bounded_int(1)


nonneg_int = bounded_int(0)
port_number = bounded_int(1, 65535, noun="a port number")


def positive_or_auto(auto: int) -> Callable[[str], int]:
    """An argparse ``type``: a positive whole number, or ``auto`` (returned as ``auto``)."""

    def parse(text: str) -> int:
        return auto if text.strip().lower() == "auto" else positive_int(text)

    return parse


workers_arg = positive_or_auto(AUTO_WORKERS)  # --workers K|auto
population_arg = positive_or_auto(AUTO_POPULATION)  # --population P|auto


def default_storage() -> str:
    """``$VAE_SEARCH_STORAGE``, else the SQLite file in the working directory."""
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def storage_url_arg(text: str) -> StorageURL:
    """An argparse ``type``: the URL parsed, or its one-line error."""
    try:
        return StorageURL.parse(text)
    except StorageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def study_name(text: str) -> str:
    """An argparse ``type`` for ``--study-name``: not blank, short enough for every storage."""
    from vae_search.config.schema import study_name_problem

    if problem := study_name_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def add_storage_args(
    parser: argparse.ArgumentParser, *, study_name_help: str | None,
    what: str = "SQLAlchemy URL of the study database, or grpc://HOST:PORT for the proxy",
) -> None:
    """``--storage`` (default ``$VAE_SEARCH_STORAGE``, else the SQLite file), parsed once into
    a :class:`~vae_search.storage.url.StorageURL` (a malformed URL is a usage error), and
    ``--study-name``: the same two arguments for every command.

    Args:
        parser: The command's parser.
        study_name_help: What ``--study-name`` means for this command (``None``: no such
            argument, e.g. for ``serve``).
        what: What ``--storage`` names, for its help.
    """
    parser.add_argument(
        "--storage", type=storage_url_arg, default=default_storage(),
        help=f"{what} (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})",
    )
    if study_name_help is not None:
        parser.add_argument("--study-name", type=study_name, default=None, help=study_name_help)


def add_artifacts_arg(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """``--artifacts DIR|s3://BUCKET`` (default ``$VAE_SEARCH_ARTIFACTS``): the one artifact
    store of a study, the same for every worker and the dashboard."""
    parser.add_argument(
        "--artifacts", *aliases, default=os.environ.get(ARTIFACTS_ENV) or None,
        help=f"artifact store: a directory every worker and the dashboard share, or "
        f"s3://BUCKET (the [s3] extra) (default: ${ARTIFACTS_ENV}, else a directory beside "
        "the SQLite file, e.g. vae_search-artifacts/, or ./vae_search-artifacts for servers)",
    )
