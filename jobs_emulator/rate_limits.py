"""Databricks' request limits, as the emulator enforces them (off unless asked for).

Per-endpoint request rates. `RateLimits("databricks")` is the published set (Azure Databricks
resource limits, as transcribed in 2026-09; unverified against a primary source): jobs create, get,
list, reset and run-now 20 requests/s per workspace; jobs update and delete 10/s; runs/get 100/s.
No figure is published for the other endpoints (runs/list, runs/submit, runs/cancel, ...), so they
are not limited unless a mapping names them. A mapping `{endpoint: requests per second}` sets any
(endpoint as the path after `jobs/`: "run-now", "runs/get", ...).

Requests are counted per whole second of the emulator's clock (a virtual clock in the benchmarks
and tests): within one second the first `rate` requests to an endpoint are served and the rest
answered 429 REQUEST_LIMIT_EXCEEDED with an integer `Retry-After` (the seconds until the next
second starts, at least 1), the shape the SDK reads ("is what Databricks platform returns"). A
refused request does not count toward the rate."""

from __future__ import annotations

import math
import threading
from typing import Mapping

from .model import ApiError

DATABRICKS: dict[str, int] = {
    "create": 20, "get": 20, "list": 20, "reset": 20, "run-now": 20,
    "update": 10, "delete": 10,
    "runs/get": 100,
}
ENDPOINTS = frozenset({"create", "list", "get", "reset", "update", "delete", "run-now", "runs/submit",
                       "runs/repair", "runs/list", "runs/get", "runs/get-output", "runs/cancel",
                       "runs/cancel-all"})
MESSAGE = "Too many requests. Please wait a moment and try again. Exceeded the limit of {rate} requests per second " \
          "for {endpoint}."


def _endpoint(name: str) -> str:
    key = str(name).strip().strip("/")
    if key.startswith("jobs/"):
        key = key[len("jobs/"):]
    if key not in ENDPOINTS:
        raise ValueError(f"rate_limits: unknown endpoint {name!r}; choose from {sorted(ENDPOINTS)}")
    return key


class RateLimits:
    """Per-endpoint requests-per-second limits over whole seconds of a clock."""

    def __init__(self, rates: str | Mapping[str, float]):
        if isinstance(rates, str):
            if rates != "databricks":
                raise ValueError("rate_limits must be 'databricks' or a mapping of endpoint to requests per second")
            rates = DATABRICKS
        parsed: dict[str, int] = {}
        for name, rate in dict(rates).items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 1 or rate != int(rate):
                raise ValueError(f"rate_limits[{name!r}] must be a whole number of requests per second >= 1")
            parsed[_endpoint(name)] = int(rate)
        self.rates = parsed
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}  # endpoint -> (second, requests served in it)

    @classmethod
    def coerce(cls, value) -> "RateLimits | None":
        if value is None or isinstance(value, RateLimits):
            return value
        return cls(value)

    @classmethod
    def parse(cls, text: str) -> "RateLimits":
        """Command line: `databricks`, or `run-now=20,runs/get=100`."""
        text = text.strip()
        if text == "databricks":
            return cls(text)
        rates: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, rate = item.partition("=")
            if not sep:
                raise ValueError(f"expected 'databricks' or ENDPOINT=RATE[,...], got {item!r}")
            try:
                rates[name] = float(rate)
            except ValueError:
                raise ValueError(f"rate of {name!r} is not a number: {rate!r}") from None
        return cls(rates)

    def admit(self, endpoint: str, now: float) -> ApiError | None:
        """None if this request to `endpoint` (path after jobs/) at `now` is served; else the 429."""
        rate = self.rates.get(endpoint)
        if rate is None:
            return None
        second = math.floor(now)
        with self._lock:
            window, served = self._windows.get(endpoint, (second, 0))
            if window != second:
                window, served = second, 0
            if served < rate:
                self._windows[endpoint] = (window, served + 1)
                return None
        retry_after = max(1, math.ceil(second + 1 - now))
        return ApiError(429, "REQUEST_LIMIT_EXCEEDED", MESSAGE.format(rate=rate, endpoint=f"jobs/{endpoint}"),
                        {"Retry-After": str(retry_after)})
