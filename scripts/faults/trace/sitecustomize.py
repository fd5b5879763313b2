"""Trace a worker's signal handling (repro only): loaded when this folder is on PYTHONPATH and
$VAE_SEARCH_TRACE names a log file. Appends one line per event: wall time, pid, event, detail.

Events: sig (the handler ran; training/deferred flags), epoch (one-at-a-time epoch done: trial,
epoch), finish+/finish- (Objective._finish start/end), told (a trial's tell, its state),
pop_epoch (population epoch done: member epochs), gate+/gate- (waiting in gate.slot_free),
raise (Interrupted raised).
"""
import importlib.abc
import importlib.util
import os
import sys
import time

LOG = os.environ.get("VAE_SEARCH_TRACE")


def log(event, detail=""):
    with open(LOG, "a") as f:
        f.write(f"{time.time():.4f} {os.getpid()} {event} {detail}\n")


def patch(name, module):
    if name == "vae_search.search.signals":
        S = module.SignalState
        handler, raise_pending = S.handler, S.raise_pending

        def traced_handler(self, signum, frame):
            log("sig", f"{signum} training={self.training} deferred={self.deferred}")
            return handler(self, signum, frame)

        def traced_raise(self):
            if self.pending is not None:
                log("raise", f"pending={self.pending}")
            return raise_pending(self)

        S.handler, S.raise_pending = traced_handler, traced_raise
        init = module.Interrupted.__init__

        def traced_init(self, signum):
            log("interrupted", str(signum))
            init(self, signum)

        module.Interrupted.__init__ = traced_init
    elif name == "vae_search.trial.objective":
        objective = module.Objective
        finish = objective._finish

        def traced_finish(self, t, *a, **k):
            log("finish+", f"trial={t.number}")
            try:
                return finish(self, t, *a, **k)
            finally:
                log("finish-", f"trial={t.number}")

        objective._finish = traced_finish
        run_epoch = objective.run_epoch

        def traced_epoch(self, trainer, beta):
            r = run_epoch(self, trainer, beta)
            log("epoch", "")
            return r

        objective.run_epoch = traced_epoch
    elif name == "vae_search.search.population":
        P = module.PopulationLoop
        epoch, tell = P.epoch, P._tell

        def traced_pop_epoch(self):
            log("pop_epoch+", str([None if m is None else (m.trial.number, m.epoch)
                                   for m in self.slots]))
            r = epoch(self)
            log("pop_epoch-", "")
            return r

        def traced_tell(self, trial, *, state=None, values=None):
            f = tell(self, trial, state=state, values=values)
            log("told", f"trial={trial.number} {f.state.name}")
            return f

        P.epoch, P._tell = traced_pop_epoch, traced_tell
    elif name == "vae_search.search.budget":
        G = module.BudgetGate
        slot_free = G.slot_free

        def traced_slot_free(self, study):
            log("gate+")
            try:
                return slot_free(self, study)
            finally:
                log("gate-")

        G.slot_free = traced_slot_free
    elif name == "vae_search.search.worker":
        L = module.TrialLoop
        after = L.after_trial

        def traced_after(self, study, trial):
            log("told", f"trial={trial.number} {trial.state.name}")
            return after(self, study, trial)

        L.after_trial = traced_after


class Hook(importlib.abc.MetaPathFinder):
    names = {"vae_search.search.signals", "vae_search.trial.objective",
             "vae_search.search.population", "vae_search.search.budget",
             "vae_search.search.worker"}

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader
        exec_module = loader.exec_module

        def traced_exec(module):
            exec_module(module)
            patch(fullname, module)

        loader.exec_module = traced_exec
        return spec


if LOG:
    sys.meta_path.insert(0, Hook())


def _signal_in_ask() -> None:
    """$VAE_SEARCH_SIGNAL_IN_ASK=N: SIGTERM this process as Optuna's N-th ``study.ask()``
    returns, i.e. after the trial row is created and before the objective starts (where a real
    signal lands when it arrives while the sampler reads or the heartbeat thread starts)."""
    import signal as _signal

    import optuna

    original = optuna.Study.ask
    count = [0]

    def ask(self, *args, **kwargs):
        trial = original(self, *args, **kwargs)
        count[0] += 1
        if count[0] == int(os.environ["VAE_SEARCH_SIGNAL_IN_ASK"]):
            log("signal-in-ask", f"trial={trial.number}")
            os.kill(os.getpid(), _signal.SIGTERM)  # the handler runs here, inside ask
        return trial

    optuna.Study.ask = ask


_patch = patch


def patch(name, module):  # noqa: F811 (the one above, plus the ask hook)
    _patch(name, module)
    if name == "vae_search.search.worker" and os.environ.get("VAE_SEARCH_SIGNAL_IN_ASK"):
        _signal_in_ask()
