"""What a naive pruner costs: the same study pruned naively and annealing-aware, side by side.

``python -m vae_search.report.pruning_bias --storage URL --aware NAME --naive NAME`` compares
two studies that differ only in ``pruner.aware`` (same seed, sampler and budget):

* the share of trials each pruner killed, by warm-up region, and how many were killed while
  still warming up (before beta reached 1);
* each study's best trial, and whether the best schedule differs;
* the schedules ``vae-search confirm`` found non-collapsed in the aware study (every seed
  healthy), and which of them a plain ``MedianPruner`` would have killed: Optuna's own pruner
  is replayed on each source trial's reported curve, against the aware study's trials that had
  completed before it (a counterfactual: a naive study would have completed other trials).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vae_search.cli import EXIT_USAGE, OneLineParser, add_storage_args, error_line
from vae_search.report.confirmation import confirmation_rows
from vae_search.report.findings import text_table
from vae_search.report.rows import (
    COMPLETE,
    PRUNED,
    WARMUP_BINS,
    TrialRow,
    best_rows,
    study_config,
    trial_rows,
)
from vae_search.storage.connection import StorageError, load_study

if TYPE_CHECKING:
    import optuna

__all__ = ["NaiveReplay", "main", "pruned_by_region", "replay_naive"]


@dataclass(frozen=True)
class NaiveReplay:
    """One trial's curve under a plain MedianPruner: the step it would be killed at, if any."""

    number: int
    full_beta_epoch: int | None
    pruned_at: int | None  # None: the naive pruner lets it finish

    @property
    def killed_in_warm_up(self) -> bool:
        return (self.pruned_at is not None and self.full_beta_epoch is not None
                and self.pruned_at < self.full_beta_epoch)


def replay_naive(study: optuna.Study, n_startup_trials: int) -> dict[int, NaiveReplay]:
    """Replay ``MedianPruner(n_startup_trials)`` (no warm-up steps, as ``pruner.aware =
    false``) on every finished trial of ``study``, in trial order, against the trials that had
    completed before it. Returns the replay of each trial with reported values, by number."""
    import optuna
    from optuna.trial import TrialState, create_trial

    pruner = optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials)
    seen = optuna.create_study(direction="maximize")  # in memory: the completed trials so far
    out: dict[int, NaiveReplay] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        curve = dict(sorted(t.intermediate_values.items()))
        if not curve:
            continue
        pruned_at = None
        for step in curve:
            partial = create_trial(
                state=TrialState.RUNNING, params=t.params, distributions=t.distributions,
                intermediate_values={s: v for s, v in curve.items() if s <= step},
            )
            if pruner.prune(seen, partial):
                pruned_at = step
                break
        full = t.user_attrs.get("full_beta_epoch")
        out[t.number] = NaiveReplay(t.number, int(full) if full is not None else None, pruned_at)
        if t.state == TrialState.COMPLETE:
            seen.add_trial(t)
    return out


def _pruned_in_warm_up(r: TrialRow) -> bool:
    last = max(r.history.get("epoch", [-1]) or [-1])
    return r.state == PRUNED and r.full_beta_epoch is not None and last < r.full_beta_epoch


def pruned_by_region(rows: Sequence[TrialRow]) -> list[tuple[str, int, int, int]]:
    """``(warm-up region, trials, pruned, pruned while beta < 1)`` for each region."""
    out = []
    for _, _, region in WARMUP_BINS:
        sel = [r for r in rows if r.warmup_region == region and r.state in (COMPLETE, PRUNED)]
        out.append((region, len(sel), sum(r.state == PRUNED for r in sel),
                    sum(_pruned_in_warm_up(r) for r in sel)))
    return out


def _describe(r: TrialRow | None) -> str:
    if r is None or r.params is None:
        return "-"
    p = r.params
    return (f"#{r.number}: klstart={p.klstart}, annealtime={p.annealtime}, "
            f"latent={p.latent_dim}, {p.reduction}, ELBO {r.value:.2f}")


def compare(aware: optuna.Study, naive: optuna.Study) -> str:
    """The comparison as plain text (what the command prints)."""
    header = ("study", "pruner", *(f"{region.split(' (')[0]}: pruned/trials (in warm-up)"
                                   for _, _, region in WARMUP_BINS))
    lines, best = [], {}
    table = []
    for label, study in (("annealing-aware", aware), ("naive", naive)):
        rows = trial_rows(study)
        cells = [f"{p}/{n} ({w})" for _, n, p, w in pruned_by_region(rows)]
        table.append((study.study_name, label, *cells))
        top = best_rows(rows, 1)
        best[label] = top[0] if top else None
    lines.append("trials killed by each pruner, by warm-up length:\n" + text_table(header, table))
    same = (best["annealing-aware"] is not None and best["naive"] is not None
            and best["annealing-aware"].params == best["naive"].params)
    lines.append("best trial:\n" + "\n".join(
        f"  {label}: {_describe(r)}" for label, r in best.items())
        + f"\n  same schedule: {'yes' if same else 'no'}")
    config = study_config(aware)
    replay = replay_naive(aware, config.pruner.n_startup_trials)
    confirmed = [c for c in confirmation_rows(trial_rows(aware, confirms=True))
                 if c.schedule.startswith("#") and c.collapsed == 0]
    lost = [c for c in confirmed if (r := replay.get(int(c.schedule[1:]))) is not None
            and r.pruned_at is not None]
    detail = ", ".join(
        f"{c.schedule} (klstart={c.klstart}, annealtime={c.annealtime}; killed at epoch "
        f"{replay[int(c.schedule[1:])].pruned_at}, beta = 1 from epoch "
        f"{replay[int(c.schedule[1:])].full_beta_epoch})" for c in lost)
    lines.append(
        f"confirmed non-collapsed schedules of {aware.study_name!r} (vae-search confirm, every "
        f"seed healthy): {len(confirmed)}; a plain MedianPruner replayed on their curves would "
        f"have killed {len(lost)}" + (f": {detail}" if lost else ""))
    killed = [r for r in replay.values() if r.killed_in_warm_up]
    lines.append(f"replay over all {len(replay)} trials of {aware.study_name!r}: the naive "
                 f"pruner would have killed {len(killed)} of them before beta reached 1")
    return "\n\n".join(lines)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_storage_args(parser, study_name_help=argparse.SUPPRESS)
    parser.add_argument("--aware", required=True, help="the study with the annealing-aware pruner")
    parser.add_argument("--naive", required=True, help="the same study with pruner.aware = false")
    return parser


def main(argv: Sequence[str] | None = None, *,
         prog: str = "python -m vae_search.report.pruning_bias") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        aware = load_study(args.storage, args.aware)
        naive = load_study(args.storage, args.naive)
    except StorageError as exc:
        print(error_line(prog, exc), file=sys.stderr)
        return EXIT_USAGE
    print(compare(aware, naive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
