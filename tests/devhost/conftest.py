"""Fixtures for the devhost tests: the toy app (devhost_toyapp.py), clocks, hosts, a server."""
from datetime import datetime, timezone

import pytest

import devhost_toyapp as toy
from devhost import RealClock, ReplayHost, VirtualClock
from devhost.serve import DevServer

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _demo_settings_stay_in_the_test(monkeypatch):
    """run_demo and start_stack set the demo's watcher tick, the embedded emulator's address and its
    webhook wiring in the environment, as `make demo` wants; in this process they must not outlive
    the test (the app reads them when first imported or first used)."""
    # setenv first: monkeypatch restores only what it has recorded, and an absent variable deleted
    # with raising=False is not recorded.
    for name in ("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN",
                 "DATABRICKS_NOTIFICATION_DESTINATION_ID", "DATABRICKS_WEBHOOK_USERNAME",
                 "DATABRICKS_WEBHOOK_PASSWORD"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def app():
    toy.FLAKY_CALLS["count"] = 0
    toy.QUEUE_SEEN.clear()
    toy.EVENTGRID_SEEN.clear()
    toy.HELLO_CALLS.clear()
    toy.TIMER_SEEN.clear()
    return toy.make_app()


@pytest.fixture
def clock():
    return VirtualClock(T0)


@pytest.fixture
def host(app, clock):
    h = ReplayHost(app, clock)
    yield h
    h.stop()


@pytest.fixture
def server(app):
    """devhost serve's server for the toy app on a free loopback port, real time."""
    dev = DevServer(app, ReplayHost(app, RealClock()))
    dev.start()
    yield dev
    dev.stop()
