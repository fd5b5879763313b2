"""Study configuration: frozen dataclasses loaded from ``studies/*.toml`` and validated.

Every study is described by one TOML file. Defaults are plain values with a short comment each;
an unknown key, a wrong type or an impossible range is a :class:`ConfigError` whose message names
the key. This module must not import TensorFlow (``--help`` and validation are instant).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vae_search.config._typed import ConfigError, build_dataclass, parse_assignment
from vae_search.config.checks import (
    MAX_STUDY_NAME,
    check_range,
    study_name_problem,
    validate_search_dims,
)

__all__ = [
    "DEFAULT_REFRESH_SECONDS",
    "FAMILIES",
    "CollapseConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PrunerConfig",
    "RunConfig",
    "SamplerConfig",
    "SearchConfig",
    "StudyConfig",
    "TrainConfig",
    "parse_assignment",
    "load_config",
    "parse_config",
    "resolve_study_path",
    "STUDIES_DIR",
    "MAX_SEED",
    "MAX_STUDY_NAME",
    "study_name_problem",
]

def _studies_dir() -> Path:
    """``studies/`` beside the package in a checkout, else the installed package data."""
    checkout = Path(__file__).resolve().parents[2] / "studies"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "studies"  # pip install . (not editable)


STUDIES_DIR = _studies_dir()
# The allowed values of each choice are its Literal type; the parser checks them.
DatasetName = Literal["digits", "synthetic", "file", "mnist", "sequences", "text"]
Likelihood = Literal["bernoulli", "gaussian", "categorical"]
Variance = Literal["learned", "fixed"]
DecoderName = Literal["dense", "made", "gru"]
Binarize = Literal["fixed", "dynamic"]
Reduction = Literal["sum", "mean"]
ScheduleName = Literal["linear", "cyclical"]
# Remedies for posterior collapse, each one mechanism (docs/science.md#remedy-families).
FamilyName = Literal["warmup", "cyclical", "free_bits", "word_dropout", "aggressive", "setpoint"]
SamplerName = Literal["tpe", "random"]
PrunerName = Literal["median", "hyperband", "none"]
ObjectiveName = Literal["elbo", "pareto"]
XlaMode = Literal["auto", "on", "off"]
DATASETS = typing.get_args(DatasetName)
FAMILIES = typing.get_args(FamilyName)
LIKELIHOODS = typing.get_args(Likelihood)
TOKEN_DATASETS = ("sequences", "text")  # always token ids; "file" is tokens when categorical
MAX_SEQUENCE_VOCAB = 62  # sequences: one symbol each from 0-9a-zA-Z
MAX_SEED = 2**32 - 1  # seeds NumPy's legacy RNG (Keras' set_random_seed) and TensorFlow's int64
# Seconds between two figure refreshes of a worker, at least: a refresh costs about as much as
# a trial of the default study (~0.5 s), and a run ends with one anyway.
DEFAULT_REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = "digits"  # digits | synthetic | file | mnist | sequences | text
    path: str = ""  # file: a .npz, .npy or .csv array (rows = examples); text: a UTF-8 file
    val_fraction: float = 0.2  # held-out share for the validation ELBO (fixed, seeded split)
    binarize: Binarize = "fixed"  # bernoulli: "fixed" (sampled once) | "dynamic" (every epoch)
    n_samples: int = 4000  # synthetic, sequences: number of examples
    n_features: int = 64  # synthetic: data dimension N
    true_latent_dim: int = 4  # synthetic, sequences: number of true generative factors k
    noise: float = 0.05  # synthetic + gaussian: observation noise std
    max_examples: int = 0  # use at most this many rows (0 = all); handy for large files
    vocab: int = 20  # sequences: number of symbols; file + categorical: token ids are < this
    length: int = 20  # sequences: tokens per sequence; text: characters per window


@dataclass(frozen=True)
class ModelConfig:
    likelihood: Likelihood = "bernoulli"  # bernoulli (binarized) | gaussian | categorical (tokens)
    variance: Variance = "learned"  # gaussian: "learned" (per dim, starts at 1) | "fixed" (sigma2)
    sigma2: float = 0.5  # gaussian, fixed: 0.5 makes -log p = sum((x - x_hat)^2) + const
    decoder: DecoderName = "dense"  # dense (factorized) | made (autoregressive) | gru (tokens)
    hidden: tuple[int, ...] = (128, 64)  # encoder widths, mirrored by dense/made; gru: [units]
    context: int = -1  # made: previous dims each dim sees (0 = factorized, -1 = all)
    embedding_dim: int = 32  # gru: token embedding width
    unroll: bool = False  # gru without XLA: unroll the recurrence (faster for short sequences)
    builder: str = ""  # "package.module:function" -> (encoder, decoder): your own model


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # every trial trains exactly this many epochs unless pruned
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam
    # The training step compiled by XLA: "auto" = for gru decoders (2x per epoch on this CPU;
    # dense and made steps were slower: docs/performance.md). The same model and loss, but
    # XLA draws its own random numbers, so a trial's numbers depend on it: compared on resume.
    xla: XlaMode = "auto"


@dataclass(frozen=True)
class SearchConfig:
    klstart: tuple[int, int] = (0, 15)  # epochs of pure reconstruction before the KL is on
    annealtime: tuple[int, int] = (0, 15)  # epochs to raise beta from 0 to 1 (0 = a step)
    latent_dim: tuple[int, ...] = (2, 4, 8, 16)
    reduction: tuple[Reduction, ...] = ("sum", "mean")
    schedule: tuple[ScheduleName, ...] = ("linear",)  # add "cyclical" (Fu et al. 2019) to search it
    cycles: tuple[int, int] = (2, 4)  # cyclical: number of cycles M after klstart
    ratio: tuple[float, float] = (0.5, 0.9)  # cyclical: share R of each cycle spent ramping
    # Optional dimensions, off when absent:
    sigma2: tuple[float, ...] | None = None  # gaussian, fixed: choices of sigma^2
    free_bits: tuple[float, float] | None = None  # [lo, hi] nats per latent dim (Kingma 2016)
    word_dropout: tuple[float, float] | None = None  # gru: [lo, hi] decoder-input dropout
    objective: ObjectiveName = "elbo"  # "pareto": maximize (ELBO, I(x;z)), pruning off
    # Remedy families a trial chooses from (the parameter "family" when more than one); each
    # combines with the klstart/annealtime warm-up. Only "warmup": the keys above as always.
    families: tuple[FamilyName, ...] = ("warmup",)
    kl_target: tuple[float, float] = (1.0, 10.0)  # setpoint: KL set-point, nats per example
    aggressive_epochs: tuple[int, int] = (1, 10)  # aggressive: most epochs in aggressive mode
    inner_steps: tuple[int, int] = (10, 50)  # aggressive: most encoder steps per decoder step


@dataclass(frozen=True)
class SamplerConfig:
    name: SamplerName = "tpe"  # tpe | random
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    constraint: bool = True  # TPE ranks collapsed trials last (false: the ELBO alone decides)


@dataclass(frozen=True)
class PrunerConfig:
    name: PrunerName = "median"  # median | hyperband | none
    patience: int = 2  # epochs at beta = 1 before a trial may be pruned
    n_startup_trials: int = 5  # median: trials that finish before any pruning
    aware: bool = True  # false: the plain pruner from epoch 0 (only to measure its bias)


@dataclass(frozen=True)
class CollapseConfig:
    active_threshold: float = 0.01  # unit u is active if Var_x(E_q[z_u|x]) > this
    kl_threshold: float = 0.01  # a latent dim with mean KL below this (nats) is collapsed
    min_active_units: int = 1  # fewer active units than this = posterior collapse
    min_mutual_info: float = 0.05  # I(x;z) below this (nats) = posterior collapse
    mi_batch_size: int = 256  # B of the aggregate-posterior estimator (MI <= log B)
    mi_repeats: int = 10  # MI replicates (random batches, fresh draws): mean and standard error
    mi_max_sd: float = 0.01  # MI enters the verdict only when its standard error is below this
    iwae_samples: int = 100  # k of the IWAE bound stored per trial (Burda et al. 2016)


@dataclass(frozen=True)
class RunConfig:
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats (RDB storage)
    grace_period: int = 120  # a trial silent this long is stale (must exceed any epoch)
    max_retry: int = 2  # stale trials are re-queued at most this many times
    refresh_every: int = 5  # refresh the study's figures every N finished trials (0 = end only)
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS  # ... but at most once per this (0 = no limit)


@dataclass(frozen=True)
class StudyConfig:
    name: str = "digits"  # default study name
    seed: int = 0  # seeds the split, the sampler and every trial's initialisation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain JSON-compatible data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def comparable(self) -> dict[str, Any]:
        """The parts that change trial results (stored in the study and compared on resume)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("run")  # heartbeat and refresh settings do not change results
        return d

    def with_overrides(self, *, validate: bool = True, **overrides: Any) -> StudyConfig:
        """Return a validated copy with dotted-key overrides, e.g. ``{"train.epochs": 5}``.

        Args:
            validate: ``False`` only type-checks, for a copy that more overrides follow (the
                last one validates: see :func:`vae_search.run.resolve_config`).

        Raises:
            ConfigError: an unknown section or key, or a value the TOML could not hold either.
        """
        raw = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.rpartition(".")
            if section and not isinstance(raw.get(section), dict):
                raise ConfigError(f"{dotted}: unknown section {section!r} (sections: "
                                  f"{', '.join(k for k, v in raw.items() if isinstance(v, dict))})")
            target = raw[section] if section else raw
            target[key] = value
        return parse_config(raw, validate=validate)

    def with_epochs(self, epochs: int) -> tuple[StudyConfig, str]:
        """A copy that trains ``epochs`` epochs, with the schedule box shrunk in proportion
        when it would not fit (each upper end to at most ``epochs // 2``), so every trial still
        ends at beta = 1. Returns the copy (validated) and a note saying what was scaled ("" if
        nothing). ``self`` may be unvalidated: ``epochs`` replaces its ``train.epochs`` before
        anything is checked, so an error names the epochs asked for.
        """
        s, old = self.search, self.train.epochs
        overrides: dict[str, Any] = {"train.epochs": epochs}
        note = ""
        if s.klstart[1] + s.annealtime[1] > epochs or s.klstart[1] >= epochs:

            def scaled(lo_hi: tuple[int, int]) -> list[int]:
                hi = min(lo_hi[1] * epochs // max(old, 1), epochs // 2)
                return [min(lo_hi[0], hi), hi]

            overrides["search.klstart"] = scaled(s.klstart)
            overrides["search.annealtime"] = scaled(s.annealtime)
            note = (f"schedule ranges scaled to klstart {overrides['search.klstart']}, "
                    f"annealtime {overrides['search.annealtime']}")
        return self.with_overrides(**overrides), note


def _validate(c: StudyConfig) -> None:
    d, m, t, s = c.data, c.model, c.train, c.search
    if not c.name or any(ch.isspace() for ch in c.name):
        raise ConfigError(f"name: must be a non-empty name without spaces, got {c.name!r}")
    if problem := study_name_problem(c.name):
        raise ConfigError(f"name: {problem}")
    if not 0 <= c.seed <= MAX_SEED:
        raise ConfigError(f"seed: must be in 0..{MAX_SEED} (0 <= seed < 2**32), got {c.seed}")
    if d.dataset in ("file", "text") and not d.path:
        raise ConfigError(f"data.path: required when data.dataset = {d.dataset!r}")
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in (0, 1), got {d.val_fraction}")
    if d.n_samples < 10:
        raise ConfigError(f"data.n_samples: must be >= 10, got {d.n_samples}")
    if d.n_features < 1:
        raise ConfigError(f"data.n_features: must be >= 1, got {d.n_features}")
    if not 1 <= d.true_latent_dim <= d.n_features:
        raise ConfigError(
            f"data.true_latent_dim: must be in [1, data.n_features={d.n_features}], "
            f"got {d.true_latent_dim}"
        )
    if d.noise <= 0:
        raise ConfigError(f"data.noise: must be > 0, got {d.noise}")
    if d.max_examples < 0:
        raise ConfigError(f"data.max_examples: must be >= 0, got {d.max_examples}")
    if d.vocab < 2:
        raise ConfigError(f"data.vocab: must be >= 2, got {d.vocab}")
    if d.dataset == "sequences" and d.vocab > MAX_SEQUENCE_VOCAB:
        raise ConfigError(
            f"data.vocab: sequences have at most {MAX_SEQUENCE_VOCAB} symbols (0-9a-zA-Z), "
            f"got {d.vocab}"
        )
    if d.length < 2:
        raise ConfigError(f"data.length: must be >= 2, got {d.length}")

    # Token data and the categorical likelihood go together ("file" is checked once loaded).
    if d.dataset in TOKEN_DATASETS and m.likelihood != "categorical":
        raise ConfigError(
            f"data.dataset: {d.dataset!r} holds tokens; set model.likelihood = 'categorical'"
        )
    if m.likelihood == "categorical" and d.dataset not in (*TOKEN_DATASETS, "file"):
        raise ConfigError(
            f"model.likelihood: 'categorical' needs token data, and data.dataset = "
            f"{d.dataset!r} is not; use 'sequences', 'text' or 'file' (integer ids)"
        )
    _validate_model(c)

    if t.epochs < 1:
        raise ConfigError(f"train.epochs: must be >= 1, got {t.epochs}")
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size: must be >= 1, got {t.batch_size}")
    if not 0 < t.learning_rate < 1:
        raise ConfigError(f"train.learning_rate: must be in (0, 1), got {t.learning_rate}")

    check_range(s.klstart, "search.klstart", minimum=0)
    check_range(s.annealtime, "search.annealtime", minimum=0)
    if s.klstart[1] + s.annealtime[1] > t.epochs:
        raise ConfigError(
            f"search.klstart: klstart + annealtime can reach {s.klstart[1]} + {s.annealtime[1]} "
            f"= {s.klstart[1] + s.annealtime[1]} > train.epochs = {t.epochs}; every trial must "
            "end at beta = 1 (lower the highs or raise train.epochs)"
        )
    if s.klstart[1] >= t.epochs:
        raise ConfigError(
            f"search.klstart: high end {s.klstart[1]} must be < train.epochs = {t.epochs}"
        )
    if any(k < 1 for k in s.latent_dim):
        raise ConfigError(f"search.latent_dim: every choice must be >= 1, got {list(s.latent_dim)}")
    for key, values in (
        ("search.latent_dim", s.latent_dim),
        ("search.reduction", s.reduction),
        ("search.schedule", s.schedule),
    ):
        if len(set(values)) != len(values):
            raise ConfigError(f"{key}: duplicate choices in {list(values)}")
    validate_search_dims(c)
    check_range(s.cycles, "search.cycles", minimum=1)
    check_range(s.ratio, "search.ratio", minimum=0)
    if s.ratio[0] <= 0 or s.ratio[1] > 1:
        raise ConfigError(f"search.ratio: must lie in (0, 1], got {list(s.ratio)}")

    if c.sampler.n_startup_trials < 0:
        raise ConfigError("sampler.n_startup_trials: must be >= 0")
    if c.pruner.patience < 0:
        raise ConfigError(f"pruner.patience: must be >= 0, got {c.pruner.patience}")
    if c.pruner.n_startup_trials < 0:
        raise ConfigError("pruner.n_startup_trials: must be >= 0")

    k = c.collapse
    for key in ("active_threshold", "kl_threshold", "min_mutual_info", "mi_max_sd"):
        if getattr(k, key) < 0:
            raise ConfigError(f"collapse.{key}: must be >= 0, got {getattr(k, key)}")
    if k.min_active_units < 0:
        raise ConfigError("collapse.min_active_units: must be >= 0")
    if k.mi_batch_size < 2:
        raise ConfigError(f"collapse.mi_batch_size: must be >= 2, got {k.mi_batch_size}")
    if k.mi_repeats < 2:
        raise ConfigError(f"collapse.mi_repeats: must be >= 2 (the standard error needs two), "
                          f"got {k.mi_repeats}")
    if k.iwae_samples < 1:
        raise ConfigError(f"collapse.iwae_samples: must be >= 1, got {k.iwae_samples}")

    r = c.run
    if r.heartbeat_interval < 1:
        raise ConfigError("run.heartbeat_interval: must be >= 1 second")
    if r.grace_period <= r.heartbeat_interval:
        raise ConfigError(
            f"run.grace_period: must exceed run.heartbeat_interval ({r.heartbeat_interval} s)"
        )
    if r.max_retry < 0 or r.refresh_every < 0:
        raise ConfigError("run.max_retry and run.refresh_every: must be >= 0")
    if r.refresh_seconds < 0:
        raise ConfigError(f"run.refresh_seconds: must be >= 0, got {r.refresh_seconds}")


def _validate_model(c: StudyConfig) -> None:
    m = c.model
    if any(h < 1 for h in m.hidden):
        raise ConfigError(f"model.hidden: every width must be >= 1, got {list(m.hidden)}")
    if not m.sigma2 > 0:
        raise ConfigError(f"model.sigma2: must be > 0, got {m.sigma2}")
    if m.context < -1:
        raise ConfigError(f"model.context: must be >= 0 (or -1 = all previous dims), got "
                          f"{m.context}")
    if m.embedding_dim < 1:
        raise ConfigError(f"model.embedding_dim: must be >= 1, got {m.embedding_dim}")
    if m.builder and ":" not in m.builder:
        raise ConfigError(f"model.builder: expected 'package.module:function', got {m.builder!r}")
    if m.builder:
        return  # your own model: any likelihood; its shapes are checked when it is built
    if m.decoder == "gru" and m.likelihood != "categorical":
        raise ConfigError("model.decoder: 'gru' models token sequences; set model.likelihood = "
                          "'categorical' (and a token dataset)")
    if m.decoder in ("dense", "made") and m.likelihood == "categorical":
        raise ConfigError(f"model.likelihood: 'categorical' (token data) needs model.decoder = "
                          f"'gru' or a model.builder, not {m.decoder!r}")


def parse_config(raw: dict[str, Any], *, validate: bool = True) -> StudyConfig:
    """Build and validate a :class:`StudyConfig` from parsed TOML data.

    Args:
        raw: The TOML document as a dict (missing keys take their defaults).
        validate: ``False`` only type-checks (see :meth:`StudyConfig.with_overrides`).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: on an unknown key, a wrong type or an impossible value.
    """
    config = build_dataclass(StudyConfig, raw)
    if validate:
        _validate(config)
    return config


def resolve_study_path(study: str | Path) -> Path:
    """A study argument is either a path to a TOML file or a name under ``studies/``."""
    path = Path(study)
    if path.suffix == ".toml" or path.exists() or len(path.parts) > 1:
        return path
    return STUDIES_DIR / f"{study}.toml"


def load_config(study: str | Path, *, validate: bool = True) -> StudyConfig:
    """Load and validate a study configuration.

    Args:
        study: A TOML path, or the name of a file under ``studies/`` (``"digits"``).
        validate: ``False`` only type-checks (see :meth:`StudyConfig.with_overrides`).

    Returns:
        The validated configuration; ``name`` defaults to the file's stem.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or fails validation.
    """
    try:
        path = resolve_study_path(study)
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ConfigError(f"study config {str(study)[:80]!r}: {exc.strerror}") from None
    if not found:
        known = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.toml")))
        raise ConfigError(f"study config not found: {path} (built-in studies: {known})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    raw.setdefault("name", path.stem)
    return parse_config(raw, validate=validate)
