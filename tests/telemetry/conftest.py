"""Telemetry tests: the app's real functions on devhost's replay engine, talking over loopback HTTP to
the Jobs API emulator on the same virtual clock (the pattern of tests/workflow), with the
OpenTelemetry SDK's in-memory exporter and metric reader installed as the global providers."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from devhost import ReplayHost
from telemetry_support import SECRET_TOKEN, T0, installed


@pytest.fixture
def recorded():
    with installed() as recorded:
        yield recorded


@pytest.fixture
def virtual_start():
    return T0


@pytest.fixture
def secret_token():
    return SECRET_TOKEN


@pytest.fixture
def make_host(clock, databricks_env, monkeypatch):
    """A ReplayHost over the function app, the run watcher's timer on the virtual clock."""
    from function_app import app
    from triggers import run_watcher

    monkeypatch.setattr(run_watcher, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    run_watcher.memory.reset()
    hosts = []

    def make(*, twice: bool = False, watcher: bool = True) -> ReplayHost:
        host = ReplayHost(app, clock, timer_triggers=["watch_runs"] if watcher else False,
                          activities_twice=twice, batch_events=twice)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()
