"""The findings tables: best trials, and the collapse rate by reduction and schedule region.

The same tables are printed by ``vae-search report``, drawn into the HTML page, and (the best
trials) printed by ``vae-search run`` at the end as its summary. No plotting here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vae_search.report.confirmation import (
    confirmation_rows,
    confirmation_table,
    wilson_interval,
)
from vae_search.report.rows import (
    WARMUP_BINS,
    StateCounts,
    TrialRow,
    best_rows,
    by_family,
    diagnosed_rows,
    study_config,
    trial_rows,
)
from vae_search.trial.baseline import stored_baseline
from vae_search.trial.reference import PpcaReference, find_reference, stored_references
from vae_search.trial.space import sigma2_of

if TYPE_CHECKING:
    import optuna

__all__ = [
    "BEST_ROWS",
    "REFERENCE_TITLE",
    "WARMUP_BINS",
    "Findings",
    "counts_line",
    "family_table",
    "findings",
    "findings_text",
    "gap_to_decoder_only",
    "reference_table",
    "summary_table",
    "text_table",
]

BEST_ROWS = 10  # rows of the best-trials table
# "ELBO_k": the ELBO on the IWAE bound's own k draws, which cannot sit above it; "val ELBO" (the
# trial's value) is one draw per example, whose noise can (docs/findings.md).
BEST_HEADER = ("trial", "klstart", "annealtime", "latent", "reduction", "val ELBO", "ELBO_k",
               "IWAE", "gap to decoder-only", "active", "KL", "I(x;z)", "collapsed")
GAP_TO_PPCA = "gap to pPCA"  # a fixed-variance Gaussian study's extra best-trials column
REFERENCE_HEADER = ("sigma2", "latent", "pPCA active", "pPCA log p(x)", "all collapsed",
                    "decoder alone", "trials", "best ELBO", "median active")
RATE_COLUMNS = ("trials", "collapsed", "rate [95% CI]", "median active", "median I(x;z)",
                "best ELBO")

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]  # (header, rows), all strings


@dataclass(frozen=True)
class Findings:
    """Tables as (header, rows) pairs of strings, plus the counts they are based on."""

    counts: dict[str, int]
    decoder_only_nll: float | None  # the study's baseline (None until computed)
    best: Table
    by_reduction: Table
    by_region: Table
    confirmation: Table  # one row per schedule of ``vae-search confirm`` (empty before)
    # Theory's reference (fixed-variance Gaussian): one row per (sigma2, latent dim); empty
    # for other studies.
    reference: Table = ((), [])
    # One row per remedy family (search.families); empty when the study searches one.
    by_family: Table = ((), [])


def _number(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def gap_to_decoder_only(elbo: float | None, decoder_only_nll: float | None) -> float | None:
    """``ELBO - (-decoder_only_nll)``, nats: what the latent code buys (0 = collapsed)."""
    if elbo is None or decoder_only_nll is None:
        return None
    return elbo + decoder_only_nll


def _gap_to_ppca(r: TrialRow, references: Sequence[PpcaReference]) -> tuple[str, ...]:
    """``(ELBO - pPCA log p(x),)`` at the trial's sigma^2 and latent dim; ``()`` when the study
    has no reference (the column is not shown)."""
    if not references:
        return ()
    ref = find_reference(references, r.p.sigma2, r.p.latent_dim)
    return (_number(None if ref is None or r.value is None else r.value - ref.log_likelihood),)


def _best_table(rows: Sequence[TrialRow], n: int, decoder_only_nll: float | None,
                references: Sequence[PpcaReference] = ()) -> Table:
    """The ``n`` best complete trials with their schedule and diagnostics (and, with pPCA
    references, the distance from the linear optimum: > 0 where the nonlinear VAE beats it)."""
    gap = BEST_HEADER.index("gap to decoder-only") + 1
    header = BEST_HEADER[:gap] + ((GAP_TO_PPCA,) if references else ()) + BEST_HEADER[gap:]
    families = bool(by_family(rows))  # comparing remedy families: say whose each trial is
    if families:
        header = header[:1] + ("family",) + header[1:]
    return header, [(
        str(r.number), *((r.family or "-",) if families else ()),
        str(r.p.klstart), str(r.p.annealtime), str(r.p.latent_dim),
        r.p.reduction, _number(r.value), _number(r.elbo_k), _number(r.iwae),
        _number(gap_to_decoder_only(r.value, decoder_only_nll)), *_gap_to_ppca(r, references),
        str(r.active_units) if r.active_units is not None else "-",
        _number(r.kl_total), _number(r.mutual_info), "yes" if r.collapsed else "no",
    ) for r in best_rows(rows, n) if r.params is not None]


def reference_table(references: Sequence[PpcaReference], rows: Sequence[TrialRow],
                    decoder_only_nll: float | None, model_sigma2: float | None) -> Table:
    """pPCA's prediction per (sigma^2, latent dim) beside the baseline and the trials there.

    ``decoder alone`` is shown on the rows of the sigma^2 the baseline was trained with
    (``model.sigma2``); ``trials``, ``best ELBO`` and ``median active`` count the diagnosed
    trials with that sigma^2 and latent dim.
    """
    out: list[tuple[str, ...]] = []
    for ref in references:
        sel = [r for r in rows if r.diagnosed and r.params is not None
               and find_reference([ref], r.p.sigma2, r.p.latent_dim) is not None]
        values = [r.value for r in sel if r.value is not None]
        trained_here = model_sigma2 is not None and math.isclose(ref.sigma2, model_sigma2)
        alone = -decoder_only_nll if decoder_only_nll is not None and trained_here else None
        out.append((
            f"{ref.sigma2:g}", str(ref.latent_dim), str(ref.active),
            _number(ref.log_likelihood), _number(ref.collapsed), _number(alone), str(len(sel)),
            _number(max(values) if values else None),
            f"{statistics.median(r.active_units or 0 for r in sel):g}" if sel else "-",
        ))
    header: tuple[str, ...] = REFERENCE_HEADER if out else ()
    return header, out


def _rate_row(label: tuple[str, ...], sel: Sequence[TrialRow]) -> tuple[str, ...]:
    n = len(sel)
    collapsed = sum(1 for r in sel if r.collapsed)
    values = [r.value for r in sel if r.value is not None]
    low, high = wilson_interval(collapsed, n)
    return (*label, str(n), str(collapsed),
            f"{collapsed / n:.0%} [{low:.0%}, {high:.0%}]" if n else "-",
            f"{statistics.median(r.active_units or 0 for r in sel):g}" if n else "-",
            f"{statistics.median(r.mutual_info or 0.0 for r in sel):.2f}" if n else "-",
            f"{max(values):.2f}" if values else "-")


def family_table(diag: Sequence[TrialRow]) -> Table:
    """The collapse rate, I(x;z) and IWAE of each remedy family, in the order first seen, when
    the trials ran more than one (``search.families``). The IWAE is the median over the
    family's complete trials (a pruned trial has none)."""
    families = by_family(diag)
    if not families:
        return (), []
    out = []
    for name, sel in families.items():
        iwaes = [r.iwae for r in sel if r.iwae is not None]
        out.append((*_rate_row((name,), sel),
                    f"{statistics.median(iwaes):.2f}" if iwaes else "-"))
    return ("family", *RATE_COLUMNS, "median IWAE"), out


def findings(study: optuna.Study, rows: Sequence[TrialRow] | None = None) -> Findings:
    """The findings tables. Collapse rates count complete and pruned trials with diagnostics
    (a pruned trial is diagnosed at the point of pruning, after beta reached 1)."""
    config = study_config(study)
    rows = trial_rows(study, config) if rows is None else rows
    baseline = stored_baseline(study)
    references = stored_references(study)
    diag = diagnosed_rows(rows)
    states = StateCounts.of_rows(rows)
    counts = {"complete": states.complete, "pruned": states.pruned, "fail": states.fail,
              "diagnosed": len(diag), "collapsed": sum(1 for r in diag if r.collapsed)}
    modes = sorted({r.p.reduction for r in diag}, key=lambda m: (m != "sum", m))
    by_reduction = [_rate_row((m,), [r for r in diag if r.p.reduction == m]) for m in modes]
    by_region = []
    for m in modes:
        for _, _, label in WARMUP_BINS:
            sel = [r for r in diag if r.p.reduction == m
                   and r.warmup_region == label]
            if sel:
                by_region.append(_rate_row((m, label), sel))
    return Findings(
        counts=counts,
        decoder_only_nll=baseline,
        best=_best_table(rows, BEST_ROWS, baseline, references),
        by_reduction=(("reduction", *RATE_COLUMNS), by_reduction),
        by_region=(("reduction", "KL warm-up before beta = 1", *RATE_COLUMNS), by_region),
        confirmation=confirmation_table(confirmation_rows(trial_rows(study, confirms=True))),
        reference=reference_table(references, rows, baseline, sigma2_of(config.model)),
        by_family=family_table(diag),
    )


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A right-aligned plain-text table, indented by two spaces."""
    if not rows:
        return "  (none)"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  " + "  ".join(c.rjust(w) for c, w in zip(header, widths, strict=True)),
             "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def counts_line(study_name: str, f: Findings) -> str:
    """One line of counts, the first line of the findings."""
    c = f.counts
    nll = f.decoder_only_nll
    return (f"study {study_name!r}: {c['complete']} complete, {c['pruned']} pruned, "
            f"{c['fail']} failed; {c['diagnosed']} diagnosed, {c['collapsed']} collapsed; "
            + (f"decoder alone (no latent code): ELBO {-nll:.2f}" if nll is not None
               else "decoder-only baseline not computed yet"))


REFERENCE_TITLE = ("theory's reference: probabilistic PCA, the linear VAE's optimum at a fixed "
                   "sigma2 (Lucas et al. 2019; validation log p(x), nats/example)")


FAMILY_TITLE = ("collapse rate by remedy family (search.families; rate with its 95% Wilson "
                "interval, IWAE over complete trials)")


def findings_text(study: optuna.Study, f: Findings | None = None) -> str:
    """The findings tables as plain text (what ``vae-search report`` prints)."""
    f = f or findings(study)
    reference = [f"{REFERENCE_TITLE}:\n" + text_table(*f.reference)] if f.reference[1] else []
    by_family = [f"{FAMILY_TITLE}:\n" + text_table(*f.by_family)] if f.by_family[1] else []
    return "\n\n".join([
        counts_line(study.study_name, f),
        "best trials by validation ELBO (nats/example, higher is better):\n"
        + text_table(*f.best),
        *reference,
        "collapse rate by reduction mode:\n" + text_table(*f.by_reduction),
        "collapse rate by schedule region:\n" + text_table(*f.by_region),
        *by_family,
        "confirmation (new seeds per schedule, 'vae-search confirm'; rate with its 95% Wilson "
        "interval):\n" + text_table(*f.confirmation),
    ])


def summary_table(study: optuna.Study, rows: int = BEST_ROWS) -> str:
    """What ``vae-search run`` prints at the end: the trial counts and the best trials."""
    counts = StateCounts.of_trials(study.get_trials(deepcopy=False))
    lines = [
        f"study {study.study_name!r}: {counts.total} trials — {counts.complete} complete, "
        f"{counts.pruned} pruned, {counts.fail} failed, {counts.running} running; "
        f"{counts.collapsed} collapsed"
    ]
    trials = trial_rows(study)
    header, best = _best_table(trials, rows, stored_baseline(study), stored_references(study))
    if not best:
        lines.append("no complete trials yet")
        return "\n".join(lines)
    lines.append(f"best {len(best)} by validation ELBO (nats/example, higher is better):")
    lines.append(text_table(header, best))
    families = family_table(diagnosed_rows(trials))
    if families[1]:
        lines.append(f"{FAMILY_TITLE}:\n" + text_table(*families))
    return "\n".join(lines)
