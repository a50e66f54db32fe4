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


# -- Azurite's blob service: the kept copies of large task outputs (messaging/result_blobs.py) ----

@pytest.fixture(scope="session")
def azurite_blob():
    """A real blob service (azurite-blob from npm, .tools/azurite), in memory, on loopback. Required,
    never skipped: without npm the tests fail."""
    from devhost.azurite import AzuriteUnavailable, start_blob_service

    try:
        service = start_blob_service()
    except AzuriteUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    yield service
    service.stop()


@pytest.fixture
def results_storage(azurite_blob, monkeypatch):
    """WORKFLOW_RESULTS_CONNECTION pointing at Azurite, a container of this test's own, and a reader."""
    import uuid

    from messaging import result_blobs

    monkeypatch.setenv("WORKFLOW_RESULTS_TEST_STORAGE", azurite_blob.connection_string)
    monkeypatch.setenv("WORKFLOW_RESULTS_CONNECTION", "WORKFLOW_RESULTS_TEST_STORAGE")
    container = f"results-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("WORKFLOW_RESULTS_CONTAINER", container)
    result_blobs.reset_cache()

    def names():
        return sorted(b.name for b in result_blobs.container_client().list_blobs())

    def read(name):
        return b"".join(result_blobs.read_chunks(name))

    yield type("ResultsStorage", (), {"container": container, "names": staticmethod(names),
                                      "read": staticmethod(read),
                                      "connection_string": azurite_blob.connection_string})
    result_blobs.reset_cache()
