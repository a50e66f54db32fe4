"""Injected failures: what a client must survive against real Databricks.

Random faults draw from a seeded RNG so a failing test can be replayed; scripted faults
(:meth:`Faults.script`) hit the next matching requests in order, for exact tests.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from collections import deque
from dataclasses import dataclass, field

# 429 and 503 carry Retry-After; "drop" closes the connection before answering; "drop_after"
# processes the request and then closes without answering (the reply is lost: what idempotency
# tokens are for); "slow" answers normally after `slow_seconds`. "400", "403" and "404" are final
# refusals (a deleted resource, a permission withdrawn), for scripted tests of how a client tells
# them apart from what heals.
FAULT_KINDS = ("429", "500", "503", "drop", "drop_after", "slow", "400", "403", "404")
DEFAULT_KINDS = ("429", "500", "503", "drop", "slow")


@dataclass
class Faults:
    """Fault injection settings.

    rate: probability that a matching request gets a fault (0 disables random faults).
    kinds: which faults to draw from, uniformly (a dict kind -> weight also works).
    paths: fnmatch globs on the request path (e.g. ``"*/runs/get"``); None matches every API path.
    methods: e.g. ``{"GET"}``; None matches all.
    """

    rate: float = 0.0
    kinds: tuple | list | dict = DEFAULT_KINDS
    seed: int | None = 0
    retry_after: int = 1
    slow_seconds: float = 2.0
    paths: list[str] | None = None
    methods: set[str] | None = None
    _scripted: deque = field(default_factory=deque, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        weights = self.kinds if isinstance(self.kinds, dict) else {k: 1.0 for k in self.kinds}
        unknown = set(weights) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("fault rate must be within [0, 1]")
        self._names = list(weights)
        self._weights = [float(w) for w in weights.values()]
        self._rng = random.Random(self.seed)

    @classmethod
    def coerce(cls, value) -> "Faults":
        if value is None:
            return cls()
        if isinstance(value, Faults):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError("faults must be a Faults, a dict of its fields, or None")

    def script(self, *kinds: str, path: str | None = None) -> None:
        """Force these faults, in order, on the next requests whose path matches `path`."""
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._scripted.extend((kind, path) for kind in kinds)

    def pick(self, method: str, path: str) -> str | None:
        """The fault for this request, or None. Called only for requests that reach an API route."""
        with self._lock:
            for i, (kind, glob) in enumerate(self._scripted):
                if glob is None or fnmatch.fnmatchcase(path, glob):
                    del self._scripted[i]
                    return kind
            if self.rate <= 0 or not self._names:
                return None
            if self.methods is not None and method not in self.methods:
                return None
            if self.paths is not None and not any(fnmatch.fnmatchcase(path, g) for g in self.paths):
                return None
            if self._rng.random() >= self.rate:
                return None
            return self._rng.choices(self._names, self._weights)[0]
