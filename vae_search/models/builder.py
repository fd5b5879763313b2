"""Your own model: ``model.builder = "package.module:function"``.

The contract (also in docs/science.md, Regimes):

* ``function(data_shape, latent_dim, config) -> (encoder, decoder)``, where ``data_shape`` is
  ``(N,)`` for flat data or ``(L,)`` for token ids, and ``config`` is the study's
  :class:`~vae_search.config.schema.StudyConfig` (read ``config.model`` for your own sizes).
* ``encoder``: a Keras model ``x -> [z_mean, z_log_var]``, each of shape ``(latent_dim,)``.
* ``decoder``: a Keras model ``z -> params`` (factorized given z), or ``[z, x] -> params``
  (autoregressive; position i must see x only through x_<i). ``params`` has the data's shape
  for ``bernoulli`` (logits) and ``gaussian`` (means; the variance is the likelihood's), and
  ``(L, vocab_size)`` logits for ``categorical``.

vae_search anneals it, reseeds it per trial (weights from their layers' initializers) and
computes the comparable ELBO and every diagnostic, as for the built-in families. A builder that
does not import, raises, calls ``sys.exit``, or returns the wrong shapes is a
:class:`BuilderError` naming it. Its module is imported from the current directory too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from vae_search.config.schema import ConfigError

__all__ = ["BuilderError", "build_user_model", "check_builder", "load_builder"]


class BuilderError(ConfigError):
    """``model.builder`` cannot be imported, raised, or broke the contract."""


def load_builder(path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``, from the current directory too (as
    ``python -m`` would: the ``vae-search`` script does not put it on ``sys.path``)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BuilderError(f"model.builder: expected 'package.module:function', got {path!r}")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise BuilderError(f"model.builder {path!r}: importing {module_name} called "
                           f"sys.exit({exc.code!r})") from None
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise BuilderError(
            f"model.builder {path!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BuilderError(f"model.builder {path!r}: {module_name} has no function {attr!r}")
    return fn


def _shape(tensor: Any) -> tuple[Any, ...]:
    return tuple(tensor.shape[1:])


def _check(path: str, encoder: Any, decoder: Any, data_shape: tuple[int, ...],
           latent_dim: int, likelihood: str, vocab_size: int) -> None:
    from vae_search._tf import keras

    def fail(what: str) -> None:
        raise BuilderError(f"model.builder {path!r}: {what}")

    if not isinstance(encoder, keras.Model) or not isinstance(decoder, keras.Model):
        fail(f"must return (encoder, decoder) Keras models, got ({type(encoder).__name__}, "
             f"{type(decoder).__name__})")
    if len(encoder.inputs) != 1 or _shape(encoder.inputs[0]) != data_shape:
        fail(f"the encoder must take one input of shape {data_shape}, got "
             f"{[_shape(t) for t in encoder.inputs]}")
    outs = [_shape(t) for t in encoder.outputs]
    if outs != [(latent_dim,), (latent_dim,)]:
        fail(f"the encoder must output [z_mean, z_log_var] of shape ({latent_dim},) each, "
             f"got {outs}")
    ins = [_shape(t) for t in decoder.inputs]
    if ins not in ([(latent_dim,)], [(latent_dim,), data_shape]):
        fail(f"the decoder must take z of shape ({latent_dim},), or [z, x] with x of shape "
             f"{data_shape}, got {ins}")
    want = (*data_shape, vocab_size) if likelihood == "categorical" else data_shape
    got = [_shape(t) for t in decoder.outputs]
    if got != [want]:
        fail(f"the decoder must output the {likelihood} parameters of shape {want}, got {got}")


def build_user_model(config: Any, data_shape: tuple[int, ...], latent_dim: int, *,
                     vocab_size: int = 0) -> tuple[Any, Any]:
    """Call the configured builder and check what it returns against the contract.

    Raises:
        BuilderError: import failure, an exception in the builder, or a broken contract.
    """
    path = config.model.builder
    fn = load_builder(path)
    try:
        result = fn(tuple(data_shape), int(latent_dim), config)
    except SystemExit as exc:
        raise BuilderError(f"model.builder {path!r} called sys.exit({exc.code!r})") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: report it in one line
        raise BuilderError(f"model.builder {path!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise BuilderError(f"model.builder {path!r}: must return (encoder, decoder), got "
                           f"{type(result).__name__}")
    encoder, decoder = result
    _check(path, encoder, decoder, tuple(data_shape), latent_dim, config.model.likelihood,
           vocab_size)
    return encoder, decoder


def check_builder(config: Any, dataset: Any) -> None:
    """Build the user's model once per latent-dim choice, before any study is touched.

    Raises:
        BuilderError: as :func:`build_user_model`.
    """
    if not config.model.builder:
        return
    for latent_dim in config.search.latent_dim:
        build_user_model(config, tuple(dataset.x_train.shape[1:]), latent_dim,
                         vocab_size=dataset.vocab_size)
