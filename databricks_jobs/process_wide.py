"""A value built on first use and shared by the whole process (settings, token provider, client).

Activities run concurrently on worker threads; the lock makes sure only one is ever built, so a
token is fetched once per process, not once per thread that raced to the first call."""
from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class ProcessWide(Generic[T]):
    def __init__(self, build: Callable[[], T], close: Optional[Callable[[T], None]] = None):
        self._build = build
        self._close = close
        self._lock = threading.Lock()
        self._value: Optional[T] = None

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def override(self, value: T) -> None:
        """Use `value` from now on (tests: e.g. a client whose retry sleeps are recorded)."""
        self.reset()
        with self._lock:
            self._value = value

    def reset(self) -> None:
        """Forget the value (tests, or after the environment changed), closing it if it can be."""
        with self._lock:
            if self._value is not None and self._close is not None:
                self._close(self._value)
            self._value = None
