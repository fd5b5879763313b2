"""The one trial loop (``vae_search.engine.loop``) and the signal state it relies on.

The fault tests (signals, SIGKILL, dropped connections, the proxy's restart) run the same loop
with one trial at a time and with a population: tests/test_interrupts.py,
tests/test_distributed.py and tests/test_proxy.py.
"""

from __future__ import annotations

import contextlib
import signal

import optuna
import pytest
from optuna.trial import TrialState

from vae_search import keys
from vae_search.engine import loop as loop_module
from vae_search.engine.signals import Interrupted, SignalState, run_command
from vae_search.run import main
from vae_search.trial.objective import Objective

# -- signals ----------------------------------------------------------------------------------


def test_a_held_signal_is_raised_once_at_the_next_safe_point():
    signals = SignalState()
    signals.training = True
    signals.handler(signal.SIGTERM, None)  # held: no exception inside TensorFlow's calls
    with pytest.raises(Interrupted) as raised:
        signals.raise_pending()
    assert raised.value.exit_code == 143
    signals.raise_pending()  # raised once


def test_a_signal_whose_raise_was_swallowed_is_raised_again_at_the_next_safe_point():
    signals = SignalState()
    # as when Python prints "Exception ignored in ..." for a raise inside a finalizer
    with contextlib.suppress(Interrupted):
        signals.handler(signal.SIGINT, None)
    with pytest.raises(Interrupted):
        signals.raise_pending()


def test_a_command_that_ends_with_a_signal_pending_exits_with_its_status(capsys):
    def body(signals: SignalState) -> int:
        signals.training = True
        signals.handler(signal.SIGINT, None)  # held, and the body ends before a safe point
        return 0

    assert run_command(body, label="t", debug=False, quiet_interrupt=False,
                       usage_errors=()) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_second_signal_waits_for_the_clean_up_and_a_third_exits_at_once(monkeypatch, capsys):
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    signals = SignalState()
    signals.training = True
    signals.handler(signal.SIGINT, None)
    signals.handler(signal.SIGINT, None)  # a double Ctrl-C: the trials are still failed
    assert exits == [] and "stopping" in capsys.readouterr().err
    signals.handler(signal.SIGINT, None)
    assert exits == [130]


def test_any_other_error_is_one_line_and_exit_1_unless_debug(capsys):
    def body(signals: SignalState) -> int:
        raise RuntimeError("boom\nsecond line")

    assert run_command(body, label="t", debug=False, quiet_interrupt=False,
                       usage_errors=()) == 1
    err = capsys.readouterr().err
    assert err.strip() == "t: error: RuntimeError: boom (--debug shows the traceback)"
    with pytest.raises(RuntimeError):
        run_command(body, label="t", debug=True, quiet_interrupt=False, usage_errors=())


# -- the loop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("population", ["1", "2"], ids=["one", "population"])
def test_a_failure_streak_stops_the_run_with_exit_1_and_one_line(tmp_path, tiny_toml, capsys,
                                                                 population):
    toml = tiny_toml(model={"builder": "tests.user_builders:nan_decoder"})
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = main(["--study", str(toml), "--storage", url, "--trials", "50", "--quiet",
                 "--population", population, "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(f"stopped: {loop_module.MAX_CONSECUTIVE_FAILURES} trials in a row failed"
               in line for line in lines), err
    assert "Traceback" not in err
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == loop_module.MAX_CONSECUTIVE_FAILURES  # not a flood
    assert all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs[keys.ATTR_FAIL_REASON].startswith("training diverged")
               for t in trials)


@pytest.mark.parametrize("population", ["1", "2"], ids=["one", "population"])
def test_an_error_in_a_trial_fails_it_and_leaves_nothing_running(tmp_path, tiny_toml, capsys,
                                                                 monkeypatch, population):
    def broken(self, params, seed):  # noqa: ANN001, ANN202
        raise RuntimeError("out of coffee")

    monkeypatch.setattr(Objective, "start", broken)
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = main(["--study", str(tiny_toml()), "--storage", url, "--trials", "5", "--quiet",
                 "--population", population])
    err = capsys.readouterr().err
    assert code == 1 and "out of coffee" in err and "Traceback" not in err, err
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs[keys.ATTR_FAIL_REASON] == "error: out of coffee" for t in trials)


def test_every_family_runs_through_the_one_loop(tmp_path, tiny_toml, monkeypatch):
    """dense and made stack P trials; a user's builder (like gru) asked for a population
    trains one at a time, in the same loop."""
    seen: list[str] = []
    real = loop_module.TrialLoop.epoch

    def epoch(self):  # noqa: ANN001, ANN202
        seen.append(type(self.trainers).__name__)
        return real(self)

    monkeypatch.setattr(loop_module.TrialLoop, "epoch", epoch)
    url = f"sqlite:///{tmp_path / 's.db'}"
    for name, model, slots in (
        ("d", {}, "PopulationTrainer"),
        ("m", {"decoder": "made"}, "PopulationTrainer"),
        ("b", {"builder": "tests.user_builders:nan_decoder"}, "OneSlot"),
    ):
        seen.clear()
        main(["--study", str(tiny_toml(name=name, model=model)), "--storage", url,
              "--trials", "2", "--quiet", "--population", "2"])
        assert seen and set(seen) == {slots}, (name, seen)


@pytest.mark.slow
def test_sigint_at_random_moments_always_exits_130_and_leaves_nothing_running(tmp_path,
                                                                             tiny_toml):
    """20 runs, each stopped at a random moment: start-up, the baseline, mid-epoch, between
    trials; every fourth with a second SIGINT 50 ms later (a double Ctrl-C)."""
    import random
    import subprocess
    import sys
    import time

    from tests.conftest import subprocess_env

    rng = random.Random(7)
    toml = tiny_toml(train={"epochs": 30})
    outcomes = []
    for run in range(20):
        url = f"sqlite:///{tmp_path / f'r{run}.db'}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage", url,
             "--trials", "200", "--quiet", "--population", "2" if run % 2 else "1",
             "--workers", "1"],
            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 9.0))
        proc.send_signal(signal.SIGINT)
        if run % 4 == 3:
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        try:
            trials = optuna.load_study(study_name="tiny", storage=url).trials
        except KeyError:  # stopped before the study was created
            trials = []
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        outcomes.append((run, proc.returncode, len(trials), running, err[-300:]))
    bad = [o for o in outcomes if o[1] != 130 or o[3] or "Traceback" in o[4]]
    assert not bad, bad


def test_a_run_waiting_on_a_dead_workers_trial_says_so_and_for_how_long(tmp_path, tiny_toml,
                                                                        capsys):
    from vae_search.config.schema import load_config
    from vae_search.engine.study import open_study
    from vae_search.storage._optuna import study_storage, trial_id
    from vae_search.storage.connection import make_storage

    toml = tiny_toml(run={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 0})
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = load_config(toml)
    study = open_study(config, make_storage(url, run=config.run))
    with pytest.warns(UserWarning, match="Heartbeat"):  # asked outside Study.optimize
        dead = study.ask()  # a worker that died after its first heartbeat
    study_storage(study).record_heartbeat(trial_id(dead))
    assert main(["--study", str(toml), "--storage", url, "--trials", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("waiting: the running trials (#0) may fill the budget of 1; a trial whose worker "
            "died is failed after 3 s without a heartbeat") in err, err
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] in ([TrialState.COMPLETE], [TrialState.PRUNED])


def test_a_trial_whose_worker_stopped_before_its_first_heartbeat_is_failed_not_waited_for(
        tmp_path, tiny_toml):
    """Optuna's stale-trial check skips a RUNNING trial with no heartbeat at all (a worker
    that lost the database, or was killed, while ``study.ask()`` sampled): the budget would wait
    on it for ever. It is failed after the grace period, and not re-queued (it never trained)."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env
    from vae_search.config.schema import load_config
    from vae_search.engine.study import open_study
    from vae_search.storage.connection import make_storage
    from vae_search.storage.heartbeat import UNBEATEN

    toml = tiny_toml(run={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 3})
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = load_config(toml)
    study = open_study(config, make_storage(url, run=config.run))
    with pytest.warns(UserWarning, match="Heartbeat"):  # asked outside Study.optimize
        study.ask()  # and never beaten for
    proc = subprocess.run([sys.executable, "-m", "vae_search.run", "--study", str(toml),
                           "--storage", url, "--trials", "1", "--quiet"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[keys.ATTR_FAIL_REASON] == UNBEATEN
    assert [t.state for t in trials[1:]] in ([TrialState.COMPLETE], [TrialState.PRUNED])


def test_a_trial_without_a_heartbeat_is_judged_by_the_checkers_own_clock(tmp_path):
    """Failed once this process has seen it without a heartbeat for the grace period, whatever
    its stored start time says (another machine's clock or time zone); a trial that gets its
    first heartbeat meanwhile is left alone."""
    from vae_search.storage._optuna import study_storage, trial_id
    from vae_search.storage.connection import make_storage
    from vae_search.storage.heartbeat import UNBEATEN, StaleTrials

    storage = make_storage(f"sqlite:///{tmp_path / 'c.db'}", heartbeat=True)
    storage.heartbeat_interval, storage.grace_period = 1, 60
    study = optuna.create_study(storage=storage, study_name="clock")
    with pytest.warns(UserWarning, match="Heartbeat"):
        orphan, late = study.ask(), study.ask()
    now = [1000.0]
    stale = StaleTrials(clock=lambda: now[0])
    stale.check(study)  # first seen
    now[0] += 59.0
    stale.check(study)
    assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}
    study_storage(study).record_heartbeat(trial_id(late))  # its worker was only slow
    now[0] += 1.0
    stale.check(study)
    states = {t.number: t for t in study.get_trials()}
    assert states[orphan.number].state == TrialState.FAIL
    assert states[orphan.number].user_attrs[keys.ATTR_FAIL_REASON] == UNBEATEN
    assert states[late.number].state == TrialState.RUNNING
