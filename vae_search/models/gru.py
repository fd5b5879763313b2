"""A recurrent VAE over token sequences (Bowman et al. 2016), with word dropout.

The decoder factorizes ``p(x|z) = prod_t p(x_t | x_<t, z)`` over the ``L`` tokens of a sequence
``x in {0..V-1}^L``. Training uses teacher forcing: the GRU reads the data shifted right by one,
``[BOS, x_1, ..., x_{L-1}]``, so its state at step ``t`` has seen ``x_<t`` and nothing later,
and one pass yields every conditional's logits. ``z`` sets the initial state,
``h_0 = tanh(W z + b)``, and is also concatenated to every step's input embedding, so the
decoder cannot forget it over long sequences.

Word dropout weakens this strong decoder: in training, each decoder-input token (never the BOS)
is replaced by a ``BLANK`` id with probability ``rate``, so predicting ``x_t`` must lean on ``z``
rather than on ``x_{t-1}``. The rate is a non-trainable variable, so a trial sets it without
retracing compiled code. Ids: data tokens ``0..V-1``, ``BOS = V``, ``BLANK = V + 1``; the
decoder's embedding table has ``V + 2`` rows, the encoder's ``V``.
"""

from __future__ import annotations

from typing import Any

from vae_search._tf import keras

ops = keras.ops

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_UNITS",
    "ShiftRight",
    "WordDropout",
    "build_gru_decoder",
    "build_gru_encoder",
    "set_word_dropout",
]

DEFAULT_EMBEDDING_DIM = 32  # small vocabularies need few dims per token
DEFAULT_UNITS = 128  # GRU state size


@keras.saving.register_keras_serializable(package="vae_search")
class WordDropout(keras.layers.Layer):
    """In training, replace each token by ``blank_id`` with probability ``rate``.

    The identity in inference. ``rate`` is a non-trainable weight (kept with its initializer as
    ``self.rate_initializer``, per the trainer's re-initialisation contract); set it with
    :func:`set_word_dropout`. Randomness comes from ``self.seed_generator``.

    Args:
        blank_id: The id that replaces dropped tokens.
        rate: Initial drop probability in ``[0, 1]``.
        seed: Seeds ``self.seed_generator``.
    """

    def __init__(
        self, blank_id: int, *, rate: float = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        _check_rate(rate)
        self.blank_id = blank_id
        self.rate_initializer = keras.initializers.Constant(rate)
        self.rate = self.add_weight(
            name="rate", shape=(), initializer=self.rate_initializer, trainable=False
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens: Any, training: bool | None = None) -> Any:
        if not training:
            return tokens
        # u < rate drops: never with rate 0 (u >= 0), always with rate 1 (u < 1).
        u = keras.random.uniform(ops.shape(tokens), seed=self.seed_generator)
        return ops.where(u < self.rate, ops.cast(self.blank_id, tokens.dtype), tokens)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "blank_id": self.blank_id, "rate": float(self.rate)}


@keras.saving.register_keras_serializable(package="vae_search")
class ShiftRight(keras.layers.Layer):
    """Teacher forcing: ``[x_1, ..., x_L] -> [bos, x_1, ..., x_{L-1}]``.

    Args:
        bos_id: The id put in front.
    """

    def __init__(self, bos_id: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bos_id = bos_id

    def call(self, tokens: Any) -> Any:
        bos = ops.full((ops.shape(tokens)[0], 1), self.bos_id, dtype=tokens.dtype)
        return ops.concatenate([bos, tokens[:, :-1]], axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bos_id": self.bos_id}


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"word dropout rate must be in [0, 1], got {rate}")


def set_word_dropout(model: keras.layers.Layer, rate: float) -> int:
    """Assign ``rate`` to every :class:`WordDropout` in ``model``, searching nested models.

    A variable assignment: compiled code that reads the rate sees the new value, no retrace.

    Args:
        model: A model (or layer) that may contain WordDropout layers at any depth.
        rate: Drop probability in ``[0, 1]``.

    Returns:
        How many layers were set (0 if the model has no word dropout).
    """
    from vae_search.models.seeding import walk_layers

    _check_rate(rate)
    found = [layer for layer in walk_layers(model) if isinstance(layer, WordDropout)]
    for layer in found:
        layer.rate.assign(rate)
    return len(found)


def build_gru_encoder(
    vocab_size: int,
    length: int,
    latent_dim: int,
    *,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    units: int = DEFAULT_UNITS,
    unroll: bool = False,
) -> keras.Model:
    """Encoder ``x -> (z_mean, z_log_var)``: Embedding, GRU (final state), two Dense heads.

    Args:
        vocab_size: ``V``; tokens are ``0..V-1``.
        length: ``L``, tokens per sequence.
        latent_dim: Size of ``z``.
        embedding_dim: Embedding size.
        units: GRU state size.
        unroll: Unroll the GRU loop (faster for short sequences, same math).

    Returns:
        A model with input int32 ``(L,)`` and outputs ``[z_mean, z_log_var]``.
    """
    x = keras.Input(shape=(length,), dtype="int32", name="x")
    e = keras.layers.Embedding(vocab_size, embedding_dim, name="enc_embedding")(x)
    h = keras.layers.GRU(units, unroll=unroll, name="enc_gru")(e)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


def build_gru_decoder(
    vocab_size: int,
    length: int,
    latent_dim: int,
    *,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    units: int = DEFAULT_UNITS,
    unroll: bool = False,
    word_dropout: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """Autoregressive decoder ``[z, x] -> logits (L, V)`` with teacher forcing.

    ``inputs = [BOS, drop(x)_1..L-1]``, ``h_0 = tanh(Dense(z))``,
    ``h_t = GRU(h_{t-1}, [embed(inputs_t), z])``, ``logits_t = Dense(h_t)``.

    Args:
        vocab_size: ``V``; tokens are ``0..V-1`` (``V`` is BOS, ``V + 1`` the blank).
        length: ``L``, tokens per sequence.
        latent_dim: Size of ``z``.
        embedding_dim: Embedding size.
        units: GRU state size.
        unroll: Unroll the GRU loop (faster for short sequences, same math).
        word_dropout: Initial word dropout rate (trials set it with :func:`set_word_dropout`).
        seed: Seeds the word dropout.

    Returns:
        A model with inputs ``[z (latent_dim,), x int32 (L,)]`` and output ``(L, V)`` logits,
        whose logits at position ``t`` depend on ``x`` only through ``x_<t``.
    """
    z = keras.Input(shape=(latent_dim,), name="z")
    x = keras.Input(shape=(length,), dtype="int32", name="x")
    # Drop before shifting: the BOS is added afterwards and is never dropped.
    dropped = WordDropout(vocab_size + 1, rate=word_dropout, seed=seed, name="word_dropout")(x)
    inputs = ShiftRight(vocab_size, name="decoder_inputs")(dropped)
    e = keras.layers.Embedding(vocab_size + 2, embedding_dim, name="dec_embedding")(inputs)
    e = keras.layers.Concatenate(name="dec_step_inputs")(
        [e, keras.layers.RepeatVector(length, name="z_every_step")(z)]
    )
    h0 = keras.layers.Dense(units, activation="tanh", name="dec_h0")(z)
    h = keras.layers.GRU(units, return_sequences=True, unroll=unroll, name="dec_gru")(
        e, initial_state=h0
    )
    logits = keras.layers.Dense(vocab_size, name="x_out")(h)
    return keras.Model([z, x], logits, name="decoder")
