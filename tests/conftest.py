"""Fixtures every test folder can use."""
from typing import List

import pytest


class SleepRecorder:
    """Stands in for time.sleep in the client's retry policy: records each wait and moves a fake
    clock by it, so retry tests take no wall time and can assert the waits."""

    def __init__(self) -> None:
        self.sleeps: List[float] = []
        self.now = 1000.0

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


# A Jobs API emulator on a virtual clock, the workspace the workflow and telemetry tests run against.
# Each folder supplies its own `virtual_start` and `secret_token` (so a leak test knows what to look for).

@pytest.fixture
def clock(virtual_start):
    from devhost import VirtualClock

    return VirtualClock(virtual_start)


@pytest.fixture
def emulator(clock, secret_token):
    from jobs_emulator import JobsEmulator

    emu = JobsEmulator(clock=clock.now, tokens={secret_token})
    clock.on_advance(emu.tick)
    emu.start(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def databricks_env(monkeypatch, emulator, secret_token):
    """The app's settings pointed at the emulator, with every process-wide cache emptied around the test."""
    import databricks_jobs
    from activities.jobs import known_jobs

    monkeypatch.setenv("DATABRICKS_HOST", emulator.base_url)
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", secret_token)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    databricks_jobs.reset_all()
    known_jobs.clear()
    yield
    databricks_jobs.reset_all()
    known_jobs.clear()
