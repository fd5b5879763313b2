"""The report thread stores every report in order before the trial ends, and hands a failed
write back to the training thread."""

from __future__ import annotations

import optuna
import pytest

from vae_search.storage.report_writer import ReportWriter


def test_reports_are_stored_in_order_before_the_block_ends(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'w.db'}", direction="maximize")
    trial = study.ask()
    with ReportWriter(trial) as reports:
        for step in range(20):
            reports.put(float(step), step=step)
        reports.submit(trial.set_user_attr, "k", "v")
    study.tell(trial, 1.0)
    stored = study.trials[0]
    assert stored.intermediate_values == {step: float(step) for step in range(20)}
    assert stored.user_attrs == {"k": "v"}


def test_flush_waits_and_raises_a_failed_write():
    study = optuna.create_study()
    trial = study.ask()

    def broken() -> None:
        raise ConnectionError("database gone")

    with pytest.raises(ConnectionError, match="database gone"), ReportWriter(trial) as reports:
        reports.submit(broken)
        reports.put(1.0, step=0)  # dropped: queued after the failure
        assert reports.flush()
    assert study.trials[0].intermediate_values == {}


def test_a_failed_write_surfaces_at_the_end_of_the_block():
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(ValueError), ReportWriter(trial) as reports:
        reports.put(float("nan"), step=-1)  # Optuna refuses a negative step
