"""When does a trial lose its active units? Reads a finished vae_search study (no TensorFlow).

    python docs/findings/collapse_onset.py --storage sqlite:///digits-random.db

For every reduction mode: how many complete trials had all their units active during the
warm-up, how many ended collapsed, the median epochs from ``klstart`` to the first epoch with no
active unit, and the median beta at that epoch; the median active units by latent dim; and by
warm-up length, the median share of the latent dims active at the end, I(x;z) and ELBO.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_search.report import WARMUP_BINS, trial_rows  # noqa: E402
from vae_search.storage.connection import load_study  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study-name", default=None)
    args = parser.parse_args()
    study = load_study(args.storage, args.study_name)
    rows = [r for r in trial_rows(study) if r.state == "COMPLETE" and r.history and r.params]
    for mode in sorted({r.params.reduction for r in rows}):
        sel = [r for r in rows if r.params.reduction == mode]
        lag, beta_at = [], []
        warm_full = 0
        for r in sel:
            units, betas = r.history["active_units"], r.history["beta"]
            k = r.params.klstart
            if k > 0 and all(u == r.params.latent_dim for u in units[:k]):
                warm_full += 1
            dead = next((e for e, u in enumerate(units) if e >= k and u == 0), None)
            if dead is not None:
                lag.append(dead - k)
                beta_at.append(betas[dead])
        print(f"{mode}: {len(sel)} complete trials; {warm_full} of "
              f"{sum(1 for r in sel if r.params.klstart > 0)} with klstart > 0 had every unit "
              f"active at the end of the warm-up; {sum(1 for r in sel if r.collapsed)} collapsed")
        if lag:
            print(f"  had 0 active units at some epoch >= klstart in {len(lag)} trials: first "
                  f"median {statistics.median(lag):g} epochs after klstart (range {min(lag)}-"
                  f"{max(lag)}), at median beta {statistics.median(beta_at):.2f} "
                  f"(range {min(beta_at):.2f}-{max(beta_at):.2f})")
        dims = sorted({r.params.latent_dim for r in sel})
        print("  median active units by latent dim: " + ", ".join(
            f"d={d}: {statistics.median(r.active_units for r in sel if r.params.latent_dim == d):g}"
            f" (n={sum(1 for r in sel if r.params.latent_dim == d)})" for d in dims))
        for _, _, label in WARMUP_BINS:
            group = [r for r in sel if r.full_beta_epoch is not None
                     and next(lb for lo, hi, lb in WARMUP_BINS if lo <= r.full_beta_epoch <= hi)
                     == label]
            if group:
                share = statistics.median(r.active_units / r.params.latent_dim for r in group)
                mi = statistics.median(r.mutual_info for r in group)
                elbo = statistics.median(r.value for r in group)
                print(f"  warm-up {label}: {len(group)} trials, median active share "
                      f"{share:.2f}, median I(x;z) {mi:.2f} nats, median ELBO {elbo:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
