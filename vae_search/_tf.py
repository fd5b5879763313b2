"""Import TensorFlow once, without its C++ start-up banner on stderr.

TensorFlow's native code prints oneDNN/absl notices before any Python logging is configured and
ignores ``TF_CPP_MIN_LOG_LEVEL`` for them, so stderr is pointed at /dev/null at the file
descriptor level for the import only. Import errors still surface as Python exceptions.
"""

from __future__ import annotations

import gc
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_quietly():  # noqa: ANN202 - returns the tensorflow module
    if "tensorflow" in sys.modules or os.environ.get("VAE_SEARCH_TF_VERBOSE"):
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


tf = _import_quietly()

import keras  # noqa: E402  (after TensorFlow, which it uses as backend)

# TensorFlow's and Keras' imports leave ~350,000 objects that live as long as the process, and
# every full pass of the collector walked them again: a worker of the default study spent
# 1.13-1.15 s in nine full passes; frozen, they are left out of later passes (0.71-0.74 s in
# eleven; scripts/perf/phases counts them).
gc.freeze()

__all__ = ["keras", "tf"]
