"""A signal that lands while Optuna asks for the next trial leaves that trial RUNNING.

    PYTHONPATH=$PWD/scripts/faults/trace python scripts/faults/signal_in_ask.py [--population N]

Runs ``vae_search.run`` on a SQLite file with the trace hook's $VAE_SEARCH_SIGNAL_IN_ASK=2: the
worker gets SIGTERM right after Optuna's second ``study.ask()`` created trial 1, before the
objective runs. Prints the exit status and every trial's state and fail_reason.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402

from tests.conftest import subprocess_env, write_tiny_toml  # noqa: E402
from vae_search import keys  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--population", default="1")
args = p.parse_args()
tmp = Path(tempfile.mkdtemp(prefix="ask-"))
toml = write_tiny_toml(tmp, name="ask", pruner={"name": "none"},
                       run={"heartbeat_interval": 1, "grace_period": 30})
url = f"sqlite:///{tmp / 'ask.db'}"
env = {**subprocess_env(), "VAE_SEARCH_SIGNAL_IN_ASK": "2", "VAE_SEARCH_TRACE": str(tmp / "t")}
proc = subprocess.run([sys.executable, "-m", "vae_search.run", "--study", str(toml), "--storage",
                       url, "--trials", "5", "--quiet", "--population", args.population],
                      cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
print("exit", proc.returncode, "| stderr:", proc.stderr.strip().replace("\n", " / ")[-300:])
for t in optuna.load_study(study_name="ask", storage=url).trials:
    print(f"  trial {t.number}: {t.state.name} values={len(t.intermediate_values)} "
          f"fail_reason={t.user_attrs.get(keys.ATTR_FAIL_REASON)!r}")
