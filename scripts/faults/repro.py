"""Run a fault test's scenario N times, as the test did it, and show what the signal met.

    PYTHONPATH=scripts/faults/trace python scripts/faults/repro.py proxy -n 10
    PYTHONPATH=scripts/faults/trace python scripts/faults/repro.py workers -n 5 --population auto

Per run: the trials the test's poll saw (number, state, stored intermediate values) when it
sent the signal; what each of them ended as; and, from the workers' trace
(scripts/faults/trace/sitecustomize.py), where each worker really was when the handler ran
(epochs trained by then, in _finish or not) and when it acted.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tests.conftest import DEFAULT_PG_URL  # noqa: E402
from tests.test_distributed import _running_trial, _toml, _worker  # noqa: E402
from vae_search import keys  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
PG = os.environ.get("VAE_SEARCH_TEST_PG_URL", DEFAULT_PG_URL)


def row(t) -> str:
    reason = t.user_attrs.get(keys.ATTR_FAIL_REASON, "")
    return (f"#{t.number} {t.state.name} values={len(t.intermediate_values)} "
            f"pid={str(t.user_attrs.get(keys.ATTR_WORKER, ':?')).rsplit(':', 1)[1]}"
            + (f" reason={reason}" if reason else ""))


def trace_lines(log: Path, sent: float) -> list[str]:
    """The trace around the signal: per pid, epochs since the last tell up to the handler,
    then the events from the handler on."""
    if not log.exists():
        return ["(no trace)"]
    events = [line.split(" ", 3) for line in log.read_text().splitlines()]
    out = []
    for pid in sorted({e[1] for e in events}):
        mine = [e for e in events if e[1] == pid]
        sig = next((i for i, e in enumerate(mine) if e[2] == "sig"), None)
        if sig is None:
            out.append(f"  pid {pid}: handler never ran")
            continue
        before = mine[:sig]
        last_told = max((i for i, e in enumerate(before) if e[2] == "told"), default=-1)
        epochs = sum(e[2] in ("epoch", "pop_epoch-") for e in before[last_told + 1:])
        state = before[-1][2] + " " + (before[-1][3] if len(before[-1]) > 3 else "")
        out.append(f"  pid {pid}: handler at +{float(mine[sig][0]) - sent:.3f}s, "
                   f"{epochs} epochs since its last tell, last event before: {state.strip()}")
        for e in mine[sig:sig + 12]:
            if e[2] in ("epoch",):
                continue
            out.append(f"      +{float(e[0]) - sent:.3f}s {e[2]} {e[3] if len(e) > 3 else ''}")
    return out


def proxy_run(args, tmp: Path, name: str) -> dict:
    from tests.test_proxy import running_proxy

    toml = _toml(tmp, epochs=30, batch_size=32)
    with running_proxy(PG, tmp / "serve.log") as (proxy_url, _):
        proc = _worker(toml, proxy_url, name, 5, "--population", args.population)
        deadline, trial = time.monotonic() + 120, None
        while trial is None and time.monotonic() < deadline:
            time.sleep(0.5)
            trial, _ = _running_trial(PG, name, {proc.pid}, epochs=1)
        seen = [trial] if trial is not None else []
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    def ok(trials) -> bool:
        return trial is not None and trials[trial.number].state == TrialState.FAIL

    return {"code": proc.returncode, "seen": seen, "sent": sent, "err": err, "ok": ok}


def workers_run(args, tmp: Path, name: str) -> dict:
    from tests.test_distributed import _finished

    toml = _toml(tmp, epochs=80, batch_size=32)
    signum = signal.SIGINT
    parent = _worker(toml, PG, name, 20, "--workers", "2", "--population", args.population)
    deadline, running = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=PG)
        except KeyError:
            continue
        all_running = study.get_trials(states=(TrialState.RUNNING,))
        running = [t for t in all_running if 0 < len(t.intermediate_values) < 60]
        if len(_finished(study.trials)) >= 1 and running:
            break
    sent = time.time()
    parent.send_signal(signum)
    _, err = parent.communicate(timeout=60)
    return {"code": parent.returncode, "seen": all_running, "sent": sent, "err": err,
            "ok": lambda trials: any(t.user_attrs.get(keys.ATTR_FAIL_REASON) == "interrupted"
                                     for t in trials)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["proxy", "workers"])
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--population", default="1")
    args = p.parse_args()
    bad = 0
    for run in range(args.n):
        tmp = Path(tempfile.mkdtemp(prefix="repro-"))
        log = tmp / "trace.log"
        os.environ["VAE_SEARCH_TRACE"] = str(log)
        name = f"repro_{uuid.uuid4().hex[:10]}"
        try:
            r = (proxy_run if args.scenario == "proxy" else workers_run)(args, tmp, name)
            trials = optuna.load_study(study_name=name, storage=PG).trials
            ok = r["ok"](trials)
            bad += not ok
            print(f"run {run}: exit {r['code']} {'PASS' if ok else 'FAIL'}")
            print("  seen RUNNING at the signal: " + "; ".join(row(t) for t in r["seen"]))
            ends = [trials[t.number] for t in r["seen"]]
            print("  those at the end:           " + "; ".join(
                row(t) + f" (ended {t.datetime_complete.timestamp() - r['sent']:+.3f}s)"
                for t in ends))
            print("  all at the end: " + "; ".join(row(t) for t in trials))
            print("\n".join(trace_lines(log, r["sent"])))
        finally:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=PG)
        sys.stdout.flush()
    print(f"{args.n - bad}/{args.n} runs as the test expected")


if __name__ == "__main__":
    main()
