"""The one timing wrapper of the bench and the perf scripts: :class:`CallTimer`.

It records the wall time of each call of the functions it wraps, by name and by thread: calls
on the thread that made the timer (the training thread) are the hot path; calls from other
threads (the report writer, Optuna's heartbeat) overlap training and are kept apart. It wraps
functions one by one (:meth:`CallTimer.wrap`) or every public method of an object, e.g. an
Optuna storage (instance patching, so Optuna's own calls on that object are timed too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CallTimer"]


class CallTimer:
    """Times the calls of wrapped functions.

    Args:
        target: An object whose public methods are all wrapped now (optional).
        nested: ``False``: only a thread's outermost call of any wrapped function is timed (a
            storage method calling another one is one call). ``True``: every call is timed,
            except a function's calls of itself (for the parts of a larger timed call).
    """

    def __init__(self, target: Any = None, *, nested: bool = False) -> None:
        self.nested = nested
        self.hot: dict[str, list[float]] = {}  # name -> seconds of each call on the main thread
        self.background: dict[str, list[float]] = {}  # name -> ... on other threads
        self._main = threading.get_ident()
        self._local = threading.local()  # the names inside a timed call, per thread
        self._lock = threading.Lock()
        if target is not None:
            self.patch(target)

    def patch(self, target: Any) -> None:
        """Wrap every public method of ``target`` (on the instance), named after it."""
        for name in dir(type(target)):
            method = getattr(target, name, None)
            if not name.startswith("_") and callable(method):
                setattr(target, name, self.wrap(name, method))

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, its calls timed under ``name``."""
        key = name if self.nested else ""

        def timed(*args: Any, **kwargs: Any) -> Any:
            inside: set[str] = self._local.__dict__.setdefault("inside", set())
            if key in inside:  # a call made by a timed call
                return fn(*args, **kwargs)
            inside.add(key)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)
                inside.discard(key)

        return timed

    def add(self, name: str, seconds: float) -> None:
        """Record one call of ``seconds`` under ``name``, on the calling thread."""
        calls = self.hot if threading.get_ident() == self._main else self.background
        with self._lock:
            calls.setdefault(name, []).append(seconds)

    @property
    def seconds(self) -> float:
        """Hot-path seconds (the main thread's calls)."""
        return sum(sum(v) for v in self.hot.values())

    @property
    def background_seconds(self) -> float:
        """Seconds of the calls made on other threads."""
        return sum(sum(v) for v in self.background.values())

    @property
    def calls(self) -> int:
        """Calls timed, on any thread."""
        return sum(map(len, self.hot.values())) + sum(map(len, self.background.values()))

    @property
    def by_method(self) -> dict[str, list[float]]:
        """Per name: ``[hot seconds, calls, background seconds]``."""
        return {name: [sum(self.hot.get(name, ())),
                       len(self.hot.get(name, ())) + len(self.background.get(name, ())),
                       sum(self.background.get(name, ()))]
                for name in {*self.hot, *self.background}}

    def every_call(self) -> dict[str, list[float]]:
        """Per name, the seconds of each call, whatever its thread."""
        return {name: [*self.hot.get(name, ()), *self.background.get(name, ())]
                for name in {*self.hot, *self.background}}
