"""The HTTP API over real HTTP: the app's own functions on devhost's server (the real durable client
talking to devhost's management API), the Jobs API emulator behind, everything in virtual time."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import databricks_jobs
from activities.jobs import known_jobs
from devhost import ReplayHost, VirtualClock
from devhost.serve import DevServer
from http_support import TOKEN
from jobs_emulator import JobsEmulator


@pytest.fixture
def stack(monkeypatch):
    import function_app

    clock = VirtualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, tokens={TOKEN})
    clock.on_advance(emulator.tick)
    monkeypatch.setenv("DATABRICKS_HOST", emulator.start(port=0))
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    databricks_jobs.reset_all()
    known_jobs.clear()
    from triggers import http_api

    monkeypatch.setattr(http_api, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    host = ReplayHost(function_app.app, clock)
    server = DevServer(function_app.app, host)
    base_url = server.start()
    host.stop()  # the test drives the workflow in virtual time itself
    yield SimpleNamespace(base_url=base_url, host=host, clock=clock, emulator=emulator)
    server.stop()
    emulator.stop()
    databricks_jobs.reset_all()


