"""Clocks shared by the development tools (devhost, jobs_emulator).

Development tool only: production runs on the Durable Task extension in Azure Functions,
which uses real time. ``VirtualClock`` lets a test run a 24-hour orchestration in
milliseconds; ``RealClock`` has the same interface on wall-clock time.
"""
from __future__ import annotations

import inspect
import threading
import time
from datetime import datetime, timezone
from typing import Callable, List, Union

TimeLike = Union[datetime, float, int]


def to_epoch(t: TimeLike) -> float:
    """Epoch seconds for a float or a datetime (naive datetimes are taken as UTC)."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()
    return float(t)


def _call_listener(callback: Callable, now: float) -> None:
    # Listeners may take the new time or nothing (e.g. an emulator's ``tick()``).
    try:
        params = [p for p in inspect.signature(callback).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if params:
        callback(now)
    else:
        callback()


class _ClockBase:
    def __init__(self) -> None:
        self._listeners: List[Callable] = []
        self._listeners_lock = threading.Lock()

    def now(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self) -> float:
        # So the clock itself can be passed where a zero-argument time source is expected.
        return self.now()

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)

    def on_advance(self, callback: Callable) -> Callable:
        """Register ``callback()`` or ``callback(now)`` to run after each advance."""
        with self._listeners_lock:
            self._listeners.append(callback)
        return callback

    def remove_listener(self, callback: Callable) -> None:
        with self._listeners_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        now = self.now()
        for cb in listeners:
            _call_listener(cb, now)

    def advance(self, seconds: float) -> float:
        return self.advance_to(self.now() + float(seconds))

    def advance_to(self, t: TimeLike) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class VirtualClock(_ClockBase):
    """A clock that only moves when told to. Thread-safe; never goes backwards."""

    is_virtual = True

    def __init__(self, start: TimeLike = None) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._now = to_epoch(start) if start is not None else time.time()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance_to(self, t: TimeLike) -> float:
        target = to_epoch(t)
        with self._lock:
            moved = target > self._now
            if moved:
                self._now = target
            now = self._now
        if moved:
            self._notify()
        return now

    def __repr__(self) -> str:
        return f"VirtualClock({self.utcnow().isoformat()})"


class RealClock(_ClockBase):
    """Wall-clock time with the VirtualClock interface; ``advance_to`` sleeps until then."""

    is_virtual = False

    def now(self) -> float:
        return time.time()

    def advance_to(self, t: TimeLike) -> float:
        delay = to_epoch(t) - time.time()
        if delay > 0:
            time.sleep(delay)
        self._notify()
        return self.now()

    def __repr__(self) -> str:
        return "RealClock()"
