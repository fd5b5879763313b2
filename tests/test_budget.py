"""The budget gate's look before asking, on a real SQLite study."""

from __future__ import annotations

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from vae_search import keys
from vae_search.engine.budget import REQUEUE_WAIT, BudgetGate

DIST = {"latent_dim": IntDistribution(2, 16)}


def _study(tmp_path) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'gate.db'}", direction="maximize")
    for value in (1.0, 2.0):
        study.add_trial(create_trial(params={"latent_dim": 4}, distributions=DIST, value=value))
    return study


def _stale_failed(study: optuna.Study) -> int:
    """A trial failed as Optuna's stale check fails one: no fail_reason; its number."""
    study.add_trial(create_trial(state=TrialState.FAIL, params={"latent_dim": 8},
                                 distributions=DIST))
    return study.trials[-1].number


def _requeue(study: optuna.Study, *history: int) -> None:
    """The copy of the last trial of ``history``, as RetryFailedTrialCallback queues it: its
    ``failed_trial`` is the first failed ancestor, ``retry_history`` lists them all."""
    study.add_trial(create_trial(
        state=TrialState.WAITING, params={"latent_dim": 8}, distributions=DIST,
        system_attrs={"failed_trial": history[0], "retry_history": list(history)}))


def test_a_stale_trial_failed_but_not_yet_requeued_holds_its_place(tmp_path):
    """Between the stale check's two writes (fail, then queue the copy) a worker that asked
    would take the copy's place in the budget: it waits until the copy is queued."""
    study, now = _study(tmp_path), [100.0]
    gate = BudgetGate(3, clock=lambda: now[0])
    assert gate.poll(study) is True  # 2 of 3 finished, nothing running
    victim = _stale_failed(study)
    assert gate.poll(study) is None  # its copy is on its way: no fresh trial
    now[0] += 1.0
    assert gate.poll(study) is None
    _requeue(study, victim)
    assert gate.poll(study) is True  # ask pops the queued copy
    copy = study.ask()
    assert copy.number == victim + 1 and copy.params == {"latent_dim": 8}
    # The copy dies too: its own copy names the original first and the copy last.
    study.tell(copy, state=TrialState.FAIL)
    assert gate.poll(study) is None
    _requeue(study, victim, copy.number)
    assert gate.poll(study) is True


def test_a_failure_that_is_never_requeued_holds_its_place_only_briefly(tmp_path):
    study, now = _study(tmp_path), [100.0]
    gate = BudgetGate(3, clock=lambda: now[0])
    gate.poll(study)
    _stale_failed(study)  # max_retry reached: no copy will come
    assert gate.poll(study) is None
    now[0] += REQUEUE_WAIT
    assert gate.poll(study) is True


def test_explained_and_earlier_failures_do_not_hold_places(tmp_path):
    study, now = _study(tmp_path), [100.0]
    _stale_failed(study)  # failed before this worker's first look: history
    gate = BudgetGate(3, clock=lambda: now[0])
    assert gate.poll(study) is True
    study.add_trial(create_trial(state=TrialState.FAIL, params={"latent_dim": 8},
                                 distributions=DIST,
                                 user_attrs={keys.ATTR_FAIL_REASON: "diverged: NaN loss"}))
    assert gate.poll(study) is True  # this project's own failures say why: no copy comes
