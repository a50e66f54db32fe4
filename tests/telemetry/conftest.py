"""Telemetry tests: the app's real functions on devhost's replay engine, talking over loopback HTTP to
the Jobs API emulator on the same virtual clock (the pattern of tests/workflow), with the
OpenTelemetry SDK's in-memory exporter and metric reader installed as the global providers."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

import databricks_jobs
from activities.jobs import known_jobs
from devhost import ReplayHost, VirtualClock
from jobs_emulator import JobsEmulator
from telemetry_support import SECRET_TOKEN, T0, installed


@pytest.fixture
def recorded():
    with installed() as recorded:
        yield recorded


@pytest.fixture
def clock():
    return VirtualClock(T0)


@pytest.fixture
def emulator(clock):
    emu = JobsEmulator(clock=clock.now, tokens={SECRET_TOKEN})
    clock.on_advance(emu.tick)
    emu.start(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def databricks_env(monkeypatch, emulator):
    monkeypatch.setenv("DATABRICKS_HOST", emulator.base_url)
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", SECRET_TOKEN)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    databricks_jobs.reset_all()
    known_jobs.clear()
    yield
    databricks_jobs.reset_all()
    known_jobs.clear()


@pytest.fixture
def make_host(clock, databricks_env, monkeypatch):
    """A ReplayHost over the function app, the run watcher's timer on the virtual clock."""
    from function_app import app
    from triggers import run_watcher

    monkeypatch.setattr(run_watcher, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    run_watcher.memory.pages = None
    hosts = []

    def make(*, twice: bool = False, watcher: bool = True) -> ReplayHost:
        host = ReplayHost(app, clock, timer_triggers=["watch_runs"] if watcher else False,
                          activities_twice=twice, batch_events=twice)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()
