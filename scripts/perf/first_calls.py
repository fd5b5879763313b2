"""What a new latent dim costs a worker before its first epoch is cheap: the trainer's build,
and the first call (trace) of ``reset``, the fused epoch, ``encode`` and the IWAE bound, with a
second call beside each for the steady-state cost; the default study's four dims in order.

Usage: ``PYTHONPATH=. python scripts/perf/first_calls.py [STUDY]`` (one TensorFlow thread).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
began = time.perf_counter()
from vae_search._tf import tf  # noqa: E402
from vae_search.config.schema import load_config  # noqa: E402
from vae_search.data.datasets import load_dataset  # noqa: E402
from vae_search.models import configure_threads, spec_for  # noqa: E402
from vae_search.models.trainer import Trainer  # noqa: E402

configure_threads(1)
print(f"imports {time.perf_counter() - began:.2f} s, load {os.getloadavg()[0]:.2f}")
config = load_config(sys.argv[1] if len(sys.argv) > 1 else "seed_mse")
data = load_dataset(config)
x_train, x_val = tf.constant(data.x_train), tf.constant(data.x_val)


def ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def first_calls(latent: int) -> dict[str, float]:
    """Milliseconds of each first call (and a second one) for a new trainer of ``latent``."""
    spec = spec_for(config, data, latent)
    start = time.perf_counter()
    trainer = Trainer(spec)
    costs = {"build": (time.perf_counter() - start) * 1e3}
    costs["reset"] = ms(lambda: trainer.reset(0))
    costs["epoch"] = ms(lambda: trainer.run_epoch(x_train, x_val, beta=1.0))
    costs["epoch again"] = ms(lambda: trainer.run_epoch(x_train, x_val, beta=1.0))
    costs["encode"] = ms(lambda: trainer.encode(data.x_val))
    costs["IWAE"] = ms(lambda: trainer.bounds(data.x_val, config.collapse.iwae_samples))
    costs["IWAE again"] = ms(lambda: trainer.bounds(data.x_val, config.collapse.iwae_samples))
    return costs


for latent in config.search.latent_dim:
    costs = first_calls(latent)
    first = sum(v for k, v in costs.items() if not k.endswith("again"))
    print(f"latent {latent}: " + ", ".join(f"{k} {v:.0f}" for k, v in costs.items())
          + f" ms; first calls {first:.0f} ms", flush=True)
