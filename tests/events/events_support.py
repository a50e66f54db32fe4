"""Helpers shared by the tests in tests/events (a module, not conftest, so tests can import it)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import azure.durable_functions as df
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The Azurite package, its development account and the installer live in devhost/azurite.py.
from devhost.azurite import AZURITE_DIR, DEV_ACCOUNT, DEV_KEY, _free_port  # noqa: E402,F401

AZURITE_QUEUE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-queue"

VALID_INPUT = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/a@b.c/load",
               "existingClusterId": "0923-164208-meows279"}


# -- a Durable client that keeps instances in memory --------------------------------------------

class FakeDurableClient:
    """The DurableOrchestrationClient calls the entry points make, with the extension's
    semantics: starting an existing running instance fails; raising on a finished one fails."""

    def __init__(self):
        self.instances: Dict[str, dict] = {}
        self.started: List[tuple] = []
        self.events: List[tuple] = []
        self.entities: Dict[tuple, Any] = {}  # (name, key) -> state
        self.entity_reads: List[tuple] = []
        self.signals: List[tuple] = []  # (entity, operation, input)

    async def read_entity_state(self, entity_id, *args, **kwargs):
        key = (entity_id.name.lower(), entity_id.key)
        self.entity_reads.append(key)
        if key not in self.entities:
            return SimpleNamespace(entity_exists=False, entity_state=None)
        return SimpleNamespace(entity_exists=True, entity_state=json.loads(json.dumps(self.entities[key])))

    async def signal_entity(self, entity_id, operation_name, operation_input=None, *args, **kwargs):
        """The registry of awaited runs, applied at once with its real state transitions."""
        from workflow import early_ends
        key = (entity_id.name.lower(), entity_id.key)
        self.signals.append((key, operation_name, operation_input))
        self.entities[key] = early_ends.apply(self.entities.get(key), operation_name, operation_input)

    def register_run(self, run_id: int, instance_id: str, job_id: Optional[int] = None, since: float = 0.0):
        """What a workflow signals once its run exists."""
        import asyncio
        from workflow import watch
        asyncio.run(self.signal_entity(df.EntityId(watch.REGISTRY_ENTITY, watch.shard_of(run_id)), "watch",
                                       {"runId": run_id, "instanceId": instance_id, "jobId": job_id, "since": since}))

    async def start_new(self, name, instance_id=None, client_input=None, version=None):
        instance_id = instance_id or uuid.uuid4().hex
        if instance_id in self.instances and self.instances[instance_id]["status"] in ("Pending", "Running"):
            raise Exception("An Orchestration instance with the status Running already exists.")
        self.instances[instance_id] = {"name": name, "input": client_input, "status": "Pending",
                                       "custom": None, "output": None}
        self.started.append((name, instance_id, client_input))
        return instance_id

    async def get_status(self, instance_id, *args, **kwargs):
        inst = self.instances.get(instance_id)
        if inst is None:
            return SimpleNamespace(runtime_status=None, custom_status=None, output=None, created_time=None,
                                   last_updated_time=None)
        return SimpleNamespace(runtime_status=df.OrchestrationRuntimeStatus(inst["status"]),
                               custom_status=inst["custom"], output=inst["output"], input_=inst["input"],
                               created_time=datetime(2026, 1, 2, tzinfo=timezone.utc),
                               last_updated_time=datetime(2026, 1, 2, 0, 1, tzinfo=timezone.utc))

    async def raise_event(self, instance_id, event_name, event_data=None, *args, **kwargs):
        inst = self.instances.get(instance_id)
        if inst is None:
            raise Exception(f"No instance with ID '{instance_id}' found.")
        # A Suspended instance takes the event; the extension holds it until the instance resumes.
        if inst["status"] not in ("Pending", "Running", "Suspended"):
            raise Exception(f"Instance with ID '{instance_id}' is gone: {inst['status']}")
        self.events.append((instance_id, event_name, event_data))

    def set_status(self, instance_id, status, output=None, custom=None):
        self.instances[instance_id] = {"name": "create_job_and_run", "input": None, "status": status,
                                       "custom": custom, "output": output}

    def set_running(self, instance_id, **custom):
        inst = self.instances.setdefault(instance_id, {"name": "create_job_and_run", "input": None,
                                                       "custom": None, "output": None})
        inst["status"] = "Running"
        inst["custom"] = custom


# -- events ---------------------------------------------------------------------------------------

def eventgrid_event(data: Any, *, event_id: str = "evt-1", event_type: str = "Databricks.JobRun.Requested",
                    topic: str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/jobs",
                    subject: str = "requests/1"):
    import azure.functions as func
    return func.EventGridEvent(id=event_id, data=data, topic=topic, subject=subject, event_type=event_type,
                               event_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), data_version="1.0")


def cloud_event(data: Any, *, event_id: str = "ce-1", event_type: str = "Databricks.JobRun.Requested",
                source: str = "/apps/scheduler", subject: Optional[str] = None, **extensions):
    from azure.functions._eventgrid import CloudEvent
    return CloudEvent(id=event_id, source=source, type=event_type, specversion="1.0", data=data,
                      time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), subject=subject,
                      datacontenttype="application/json", **extensions)


def queue_message(body: Any, *, message_id: str = "msg-1", dequeue_count: int = 1):
    from azure.functions.queue import QueueMessage  # the worker's concrete class (has dequeue_count)
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return QueueMessage(id=message_id, body=raw, dequeue_count=dequeue_count)


def app_functions(app):
    """`app.get_functions()`, callable more than once: azure-functions records the names on the
    first call and then refuses the same names as duplicates (devhost indexes the same app later,
    in whatever order the tests run)."""
    app.functions_bindings = {}
    try:
        return app.get_functions()
    finally:
        app.functions_bindings = {}


# -- Azurite ----------------------------------------------------------------------------------------

def _install_azurite() -> None:
    from devhost.azurite import AzuriteUnavailable, install

    try:
        install()  # one installer, locked against the suite's other workers
    except AzuriteUnavailable as error:
        pytest.fail(str(error), pytrace=False)
