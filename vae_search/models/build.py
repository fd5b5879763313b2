"""Which VAE a trial trains: the architecture key and the one place that builds it.

:class:`TrainerSpec` holds everything that fixes a compiled graph (the trainer cache's key);
:func:`spec_for` derives it from a study configuration, a dataset and a latent dim, and
:func:`build_vae` dispatches to the decoder family's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_search.config.schema import StudyConfig
    from vae_search.data.datasets import Dataset
    from vae_search.models.vae import VAE

__all__ = ["TrainerSpec", "build_vae", "spec_for", "xla_step"]


@dataclass(frozen=True)
class TrainerSpec:
    """Everything that fixes a trainer's architecture and compiled code."""

    decoder: str  # dense | made | gru | builder
    data_shape: tuple[int, ...]  # (N,) flat, or (L,) token ids
    latent_dim: int
    likelihood: str  # bernoulli | gaussian | categorical
    hidden: tuple[int, ...] = (128, 64)
    vocab_size: int = 0  # token data only
    variance: str = "learned"  # gaussian: learned | fixed
    context: int = -1  # made: previous dims each dim sees (-1 = all)
    embedding_dim: int = 32  # gru
    unroll: bool = False  # gru: unrolled recurrence (short sequences), without XLA only
    xla: bool = False  # the training step compiled by XLA (train.xla)
    batch_size: int = 64
    learning_rate: float = 1e-3
    dynamic_binarization: bool = False
    config: Any = None  # builder only: the StudyConfig handed to the user's function


def xla_step(config: StudyConfig) -> bool:
    """Whether a trial's training step is compiled by XLA (``train.xla``; ``"auto"``: a ``gru``
    decoder, whose recurrence XLA fuses: 2x per epoch. A dense or MADE step, a few matmuls,
    ran slower under XLA, and a user's model may use ops XLA lacks)."""
    mode = config.train.xla
    return mode == "on" or (mode == "auto" and config.model.decoder == "gru"
                            and not config.model.builder)


def spec_for(config: StudyConfig, dataset: Dataset, latent_dim: int) -> TrainerSpec:
    """The trainer spec of a trial of ``config`` on ``dataset`` with ``latent_dim``."""
    m, t = config.model, config.train
    return TrainerSpec(
        decoder="builder" if m.builder else m.decoder,
        data_shape=tuple(int(d) for d in dataset.x_train.shape[1:]),
        latent_dim=int(latent_dim),
        likelihood=m.likelihood,
        hidden=m.hidden,
        vocab_size=dataset.vocab_size,
        variance=m.variance,
        context=m.context,
        embedding_dim=m.embedding_dim,
        unroll=m.unroll,
        xla=xla_step(config),
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        dynamic_binarization=dataset.dynamic_binarization,
        config=config if m.builder else None,
    )


def build_vae(spec: TrainerSpec, *, seed: int = 0) -> VAE:
    """Build the (uncompiled) VAE that ``spec`` describes."""
    from vae_search.models.likelihoods import make_likelihood
    from vae_search.models.vae import VAE

    n = spec.data_shape[0]
    if spec.decoder == "dense":
        from vae_search.models.dense import build_decoder, build_encoder

        encoder = build_encoder(n, spec.hidden, spec.latent_dim)
        decoder = build_decoder(spec.latent_dim, spec.hidden, n)
    elif spec.decoder == "made":
        from vae_search.models.dense import build_encoder
        from vae_search.models.made import build_made_decoder

        encoder = build_encoder(n, spec.hidden, spec.latent_dim)
        context = None if spec.context < 0 else spec.context
        decoder = build_made_decoder(spec.latent_dim, spec.hidden, n, context=context)
    elif spec.decoder == "gru":
        from vae_search.models.gru import build_gru_decoder, build_gru_encoder

        v, d, e, u = spec.vocab_size, spec.latent_dim, spec.embedding_dim, spec.hidden[0]
        # Under XLA the recurrence stays a loop: XLA compiles it whole, and unrolled it took
        # 2.5-4x longer to compile for no faster epoch (docs/performance.md).
        unroll = spec.unroll and not spec.xla
        encoder = build_gru_encoder(v, n, d, embedding_dim=e, units=u, unroll=unroll)
        decoder = build_gru_decoder(v, n, d, embedding_dim=e, units=u, unroll=unroll)
    elif spec.decoder == "builder":
        from vae_search.models.builder import build_user_model

        encoder, decoder = build_user_model(spec.config, spec.data_shape, spec.latent_dim,
                                            vocab_size=spec.vocab_size)
    else:
        raise ValueError(f"unknown decoder family {spec.decoder!r}")
    likelihood = make_likelihood(spec.likelihood, n, variance=spec.variance)
    return VAE(encoder, decoder, likelihood, seed=seed)
