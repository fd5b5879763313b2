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
                 "--population", population])
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
