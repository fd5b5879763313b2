"""Does the collapse constraint steer TPE? Two studies that differ only in sampler.constraint.

    python docs/findings/constraint_effect.py --storage URL --with NAME --without NAME

For each study: the share of non-collapsed trials in each block of the study's course (trial
order, diagnosed complete or pruned trials), and the best ELBO of a non-collapsed trial, with
the trial at which it was found. Reads the studies only (no TensorFlow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_search.report.confirmation import wilson_interval  # noqa: E402
from vae_search.report.rows import trial_rows  # noqa: E402
from vae_search.storage.connection import load_study  # noqa: E402

BLOCK = 50  # trials per block of the study's course


def describe(storage: str, name: str) -> list[str]:
    study = load_study(storage, name)
    rows = [r for r in trial_rows(study) if r.diagnosed and r.params is not None]
    lines = [f"{name}: {len(rows)} diagnosed trials"]
    for start in range(0, len(rows), BLOCK):
        block = rows[start:start + BLOCK]
        healthy = sum(1 for r in block if not r.collapsed)
        lo, hi = wilson_interval(healthy, len(block))
        lines.append(f"  trials {start + 1}-{start + len(block)}: non-collapsed {healthy}/"
                     f"{len(block)} = {healthy / len(block):.0%} [{lo:.0%}, {hi:.0%}]")
    healthy_rows = [r for r in rows if not r.collapsed and r.value is not None]
    best = max(healthy_rows, key=lambda r: r.value or 0.0, default=None)
    overall = max((r for r in rows if r.value is not None), key=lambda r: r.value or 0.0,
                  default=None)
    if best is not None:
        lines.append(f"  best non-collapsed ELBO {best.value:.3f} (trial #{best.number}, "
                     f"latent {best.p.latent_dim}, {best.p.reduction}, klstart "
                     f"{best.p.klstart}, annealtime {best.p.annealtime})")
    if overall is not None:
        lines.append(f"  best ELBO overall {overall.value:.3f} (trial #{overall.number}, "
                     f"{'collapsed' if overall.collapsed else 'not collapsed'})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--with", dest="with_", required=True, help="sampler.constraint = true")
    parser.add_argument("--without", required=True, help="sampler.constraint = false")
    args = parser.parse_args()
    print("\n".join(describe(args.storage, args.with_) + describe(args.storage, args.without)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
