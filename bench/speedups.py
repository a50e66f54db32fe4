"""Two process-wide changes that make the big virtual-time benchmarks feasible without changing
what is measured (profiled in docs/benchmarks.md, "Where the simulation spends its time").

- Loopback servers answer without Nagle's delay. devhost's management API (the Durable client's
  endpoint, used by the run watcher and the webhook function) writes a response's headers and body
  in two sends; with Nagle on, the body waits for the client's delayed ACK, about 20-40 ms a call
  on loopback. The real extension answers on a socket without that stall. `disable_nagle_algorithm`
  is socketserver's own switch (TCP_NODELAY on each accepted connection); the servers' code is
  untouched. It changes wall time only: virtual time does not move while a call waits.
- azure-functions-durable parses every history event's timestamp with dateutil on every replay
  (HistoryEvent.__init__), so a 100-event history costs 100 parses per episode. The same strings
  come back episode after episode; a cache in front of the same parser returns equal (immutable)
  datetimes, and `check()` proves it on the formats the host writes.

`applied()` puts both in place for a block and takes them away after it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import socketserver
import sys
from typing import Iterator


def _history_event_module():
    importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    # The package re-exports the class under the module's name: take the module itself.
    return sys.modules["azure.durable_functions.models.history.HistoryEvent"]


@contextlib.contextmanager
def applied() -> Iterator[None]:
    module = _history_event_module()
    saved_nagle = socketserver.StreamRequestHandler.__dict__.get("disable_nagle_algorithm", False)
    saved_parse = module.dt_parse
    socketserver.StreamRequestHandler.disable_nagle_algorithm = True
    if not hasattr(saved_parse, "cache_info"):
        module.dt_parse = functools.lru_cache(maxsize=1 << 16)(saved_parse)
    try:
        yield
    finally:
        module.dt_parse = saved_parse
        socketserver.StreamRequestHandler.disable_nagle_algorithm = saved_nagle


def check() -> None:
    """The cached parser (in place) gives what dateutil gives, for the timestamp shapes devhost writes."""
    from dateutil.parser import parse

    module = _history_event_module()
    if not hasattr(module.dt_parse, "cache_info"):
        raise AssertionError("the cached timestamp parser is not in place")
    for text in ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:05:00.123456Z", "2026-01-01T23:59:59Z",
                 "2026-01-02T00:00:00.5Z"):
        for _ in range(2):  # the second time from the cache
            cached, fresh = module.dt_parse(text), parse(text)
            if cached != fresh or cached.utcoffset() != fresh.utcoffset():
                raise AssertionError(f"cached timestamp parser differs from dateutil on {text!r}")
