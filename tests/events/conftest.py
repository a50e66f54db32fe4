"""Fixtures for the event-driven entry points: an in-memory Durable client, a real queue service
(Azurite from npm, installed into .tools/azurite on first use), and clean settings.

Everything listens on 127.0.0.1. Azurite is required, never skipped: without npm the tests fail."""
from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import pytest

from events_support import (AZURITE_DIR, AZURITE_QUEUE_BIN, DEV_ACCOUNT, DEV_KEY, FakeDurableClient,
                            _free_port, _install_azurite)
from messaging import settings as caller_settings, storage_queues
from triggers import databricks_webhook


@pytest.fixture
def client() -> FakeDurableClient:
    return FakeDurableClient()


# -- settings -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
    for name, _, _ in caller_settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__accountName"):
        monkeypatch.delenv(name, raising=False)
    # A configured app (the start route refuses to start workflows on a misconfigured one).
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1234567890123456.7.azuredatabricks.net")
    for name in ("DATABRICKS_AUTH", "DATABRICKS_TOKEN", "DATABRICKS_JOBS_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    storage_queues.reset_cache()
    yield
    storage_queues.reset_cache()


# -- Azurite ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def azurite():
    """A real queue service: azurite-queue on a free loopback port, in memory, no telemetry."""
    _install_azurite()
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    log_path = Path(workdir) / "azurite.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(AZURITE_QUEUE_BIN), "--queueHost", "127.0.0.1", "--queuePort", str(port), "--inMemoryPersistence",
         "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"azurite-queue exited with {proc.returncode}:\n{log_path.read_text()}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"azurite-queue did not listen on {port} within 30 s:\n{log_path.read_text()}",
                                pytrace=False)
                time.sleep(0.05)
        yield SimpleNamespace(
            port=port,
            connection_string=(f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                               f"QueueEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def storage(azurite, monkeypatch):
    """AzureWebJobsStorage pointing at Azurite, and helpers to read queues back."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    from azure.storage.queue import QueueClient

    def client_for(queue: str) -> QueueClient:
        return QueueClient.from_connection_string(azurite.connection_string, queue)

    def drain(queue: str) -> List[str]:
        """Every message's text (base64-decoded, as the Functions queue trigger decodes it)."""
        qc = client_for(queue)
        texts = []
        for message in qc.receive_messages(messages_per_page=32, visibility_timeout=30):
            texts.append(base64.b64decode(message.content).decode("utf-8"))
            qc.delete_message(message)
        return texts

    suffix = uuid.uuid4().hex[:8]
    return SimpleNamespace(connection_string=azurite.connection_string, client_for=client_for, drain=drain,
                           queue_name=lambda base: f"{base}-{suffix}")


# -- the whole app on devhost, against the Jobs API emulator, in virtual time ----------------------

WEBHOOK_USER, WEBHOOK_PASSWORD = "databricks-webhook", "webhook-password-for-tests"
DESTINATION_ID = "dest-0001"


@pytest.fixture
def app_stack(monkeypatch):
    """Build the real app on devhost (`DevServer` over a `ReplayHost`) with a `VirtualClock` and the
    Jobs API emulator ticking on it. `build(webhooks=..., destination_password=..., foreground=...)`:

    - webhooks: created jobs notify DESTINATION_ID, which the emulator POSTs to devhost's
      /api/databricks/notifications (a loopback endpoint serving the webhook function);
    - destination_password: what the emulator sends (a wrong one is refused with 401);
    - foreground: stop devhost's worker so the test drives the clock itself;
    - realism: devhost's realistic mode (devhost.realism.Realism), e.g. a registration that arrives late.
    """
    import databricks_jobs
    from devhost import ReplayHost, VirtualClock
    from devhost.serve import DevServer
    from jobs_emulator import JobsEmulator

    import function_app

    started = []

    def build(*, webhooks: bool = True, destination_password: str = WEBHOOK_PASSWORD, foreground: bool = True,
              scenario: Optional[dict] = None, watcher: bool = False, realism=None):
        from activities.jobs import known_jobs
        from triggers import run_watcher

        clock = VirtualClock(datetime(2026, 1, 5, tzinfo=timezone.utc))
        app = function_app.app
        # The run watcher (a timer trigger) runs on the virtual clock when asked for; without it,
        # workflows rely on webhooks and their own polls.
        monkeypatch.setenv("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "15" if watcher else "0")
        from triggers import databricks_webhook
        monkeypatch.setattr(run_watcher, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
        monkeypatch.setattr(databricks_webhook, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
        run_watcher.memory.reset()
        known_jobs.clear()
        server = DevServer(app, ReplayHost(app, clock, timer_triggers=["watch_runs"] if watcher else False,
                                           realism=realism))
        base_url = server.start()
        if foreground:
            server.host.stop()
        emulator = JobsEmulator(clock=clock.now, scenario=scenario, notification_destinations={
            DESTINATION_ID: {"url": f"{base_url}/api/databricks/notifications",
                             "username": WEBHOOK_USER, "password": destination_password}})
        emulator_url = emulator.start(port=0)
        clock.on_advance(emulator.tick)
        started.append((server, emulator))
        monkeypatch.setenv("DATABRICKS_HOST", emulator_url)
        monkeypatch.setenv("DATABRICKS_AUTH", "pat")
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-emulator")
        if webhooks:
            monkeypatch.setenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", DESTINATION_ID)
        else:
            monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
        monkeypatch.setenv("DATABRICKS_WEBHOOK_USERNAME", WEBHOOK_USER)
        monkeypatch.setenv("DATABRICKS_WEBHOOK_PASSWORD", WEBHOOK_PASSWORD)
        databricks_jobs.reset_all()
        return SimpleNamespace(clock=clock, server=server, host=server.host, emulator=emulator, base_url=base_url)

    yield build
    for server, emulator in started:
        server.stop()
        emulator.stop()
    import databricks_jobs as dj
    dj.reset_all()
