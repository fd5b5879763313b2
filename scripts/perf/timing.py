"""What the perf scripts share: a wrapper that records how long each call of a function took."""

import time
from collections.abc import Callable
from typing import Any


def timed(name: str, fn: Callable[..., Any], into: dict[str, list[float]]) -> Callable[..., Any]:
    """``fn``, appending the seconds of each call to ``into[name]`` (a ``defaultdict(list)``)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name].append(time.perf_counter() - start)

    return wrapper
