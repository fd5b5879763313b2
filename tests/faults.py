"""A signal sent at a known moment: freeze the workers (SIGSTOP), read the study, signal, thaw.

What a poll of the database shows lags what a worker does: reports and start attrs are stored by
a background thread (dozens of epochs behind through the proxy or for a population), and a trial
stays RUNNING through its diagnostics, IWAE bound, artifact and tell. A test that polls and then
signals cannot know what the signal will meet: the trial it saw may be finishing. So the tests
freeze the workers first. A frozen worker changes nothing, and a trial's tell is synchronous on
its main thread, so the trials RUNNING in the snapshot are the ones in flight (one whose tell was
on the wire may still finish, which is legitimate). The signal is queued while the workers are
stopped (for ``--workers``, the parent forwards it to its frozen children) and acted on when
they continue. The tests then assert what the command promises whatever the signal met
(:func:`assert_stopped_cleanly`), not that some trial happened to be mid-training.

Linux only (``/proc``), like the ``--workers`` pool's parent-death signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from vae_search import keys

Trials = dict[int, optuna.trial.FrozenTrial]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# What a trial that completed or was pruned stores when it finishes (Objective.finish); the
# IWAE bound only a complete one.
DIAGNOSTICS = (keys.ATTR_HISTORY, keys.ATTR_MUTUAL_INFO, keys.ATTR_ACTIVE_UNITS)
KERNEL_WAIT = 30.0  # seconds: stopping a process or queueing a forwarded signal takes far less

# Every fault test runs one trial at a time and as a population (its own loop).
POPULATIONS = pytest.mark.parametrize("population", ["1", "2"], ids=["one", "population"])
# The signal tests, pairwise: each signal and each population size once per storage. SIGINT and
# SIGTERM differ only in the exit status (tests/test_loop.py), so their product with the
# population sizes would double the slowest tests for no new path.
SIGNALS = pytest.mark.parametrize(("signum", "population"), [
    (signal.SIGINT, "1"), (signal.SIGTERM, "2")], ids=["SIGINT-one", "SIGTERM-population"])


def study_trials(url: str, name: str) -> Trials:
    """The study's trials by number (none if the study does not exist yet).

    Its connection is closed at once: the tests poll, and the server is shared."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        return {t.number: t for t in study.get_trials()}
    except KeyError:
        return {}
    finally:
        storage.engine.dispose()


def _stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: state, ppid, ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def pool_workers(parent: int) -> list[int]:
    """The worker processes a ``--workers`` parent started (its children running a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat(int(entry.name))[1]) != parent:
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # exited meanwhile
        if b"--worker-index" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _until(what: str, done: Callable[[], bool]) -> None:
    end = time.monotonic() + KERNEL_WAIT
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def _pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` is queued for (stopped) process ``pid``."""
    masks = dict(line.split(":\t", 1) for line in
                 Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    bit = 1 << (signum - 1)
    return any(int(masks[name], 16) & bit for name in ("ShdPnd", "SigPnd"))


def freeze(pids: list[int]) -> None:
    """SIGSTOP ``pids`` and wait until the kernel has stopped them all."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    _until("the workers are stopped", lambda: all(_stat(p)[0] in "tT" for p in pids))


def thaw(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def signal_frozen(proc: subprocess.Popen, signum: int, read: Callable[[], Trials],
                  workers: list[int] | None = None) -> Trials:
    """Freeze ``workers`` (default: ``proc`` itself), take ``read()``, send ``signum`` to
    ``proc``, wait until every worker has it queued, and let them go on.

    Returns:
        The study as it was while the workers were frozen, by trial number.
    """
    frozen = workers or [proc.pid]
    freeze(frozen)
    try:
        snapshot = read()
        proc.send_signal(signum)
        _until(f"the workers have {signal.Signals(signum).name} queued",
               lambda: all(_pending(p, signum) for p in frozen))
    finally:
        thaw(frozen)
    return snapshot


def assert_finished_intact(trial: optuna.trial.FrozenTrial, epochs: int | None = None) -> None:
    """A complete or pruned trial with its per-epoch reports and its diagnostics attrs."""
    assert trial.state in FINISHED, (trial.number, trial.state)
    steps = sorted(trial.intermediate_values)
    assert steps == list(range(len(steps))) and steps, trial.number
    assert trial.user_attrs[keys.ATTR_HISTORY]["epoch"] == steps
    assert set(DIAGNOSTICS) <= set(trial.user_attrs), (trial.number, sorted(trial.user_attrs))
    if trial.state == TrialState.COMPLETE:
        assert keys.ATTR_IWAE in trial.user_attrs, trial.number
        if epochs is not None:
            assert len(steps) == epochs, trial.number
        assert trial.value == pytest.approx(trial.intermediate_values[steps[-1]])


def assert_stopped_cleanly(code: int, err: str, signum: int, before: Trials, after: Trials, *,
                           epochs: int) -> None:
    """What ``run`` promises when SIGINT/SIGTERM arrives, wherever it lands.

    * Exit status 128 + signal number, one "interrupted" line, no traceback.
    * No trial left RUNNING; the trials finished at the freeze are unchanged.
    * Every trial in flight at the freeze (RUNNING in ``before``) ended FAIL with fail_reason
      "interrupted", or finished intact (it had trained all its epochs when the signal was
      acted on: its diagnostics and tell are not torn).
    * No trial started after the signal finished or trained: a trial not in ``before`` (asked
      while the signal was on its way, e.g. its insert was on the wire at the freeze) is FAIL
      "interrupted" with no epoch reported. The loop raises a held signal after filling its
      slots and before it trains them, one trial at a time and in a population alike.
    """
    assert code == 128 + signum, f"exit status {code}: {err[-3000:]}"
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, f"{len(lines)} 'interrupted' lines: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    running = {n: (t.params, sorted(t.user_attrs), len(t.intermediate_values))
               for n, t in after.items() if t.state == TrialState.RUNNING}
    assert not running, f"left RUNNING (params, user attrs, reports): {running}"
    for number, seen in before.items():
        now = after[number]
        if seen.state == TrialState.RUNNING:
            if now.state == TrialState.FAIL:
                assert now.user_attrs.get(keys.ATTR_FAIL_REASON) == "interrupted", number
            else:
                assert_finished_intact(now, epochs)
        else:
            assert (now.state, now.params, now.intermediate_values, now.value) == (
                seen.state, seen.params, seen.intermediate_values, seen.value), number
    for number in sorted(set(after) - set(before)):
        t = after[number]
        assert t.state == TrialState.FAIL, f"trial {number} started after the signal: {t.state}"
        assert t.user_attrs.get(keys.ATTR_FAIL_REASON) == "interrupted", number
        assert not t.intermediate_values, (number, t.intermediate_values)


def finished(trials: Trials) -> Trials:
    return {n: t for n, t in trials.items() if t.state in FINISHED}
