"""`POST /api/databricks/notifications`: Databricks job webhook notifications end the wait early.

Jobs created with `DATABRICKS_NOTIFICATION_DESTINATION_ID` notify a generic-webhook destination
on start, success and failure. This endpoint maps the notification to the waiting instance and
raises `runFinished`, so the orchestrator polls the run now instead of at its next (long) timer.
A notification is a hint: runs/get stays the source of truth, and a lost or refused notification
only costs the safety-net poll interval (`WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS`).

Gate: HTTP Basic credentials from settings, compared in constant time. The route is anonymous at
the Functions level: Databricks stores destination passwords write-only, while a `?code=` function
key in the destination URL would be one more secret readable in the workspace configuration.

Answers: 202 `{"status": "delivered"|"remembered"|"ignored"}`; 401 + WWW-Authenticate; 400/413
malformed; 503 when the Durable store cannot be asked right now. Nothing here ever starts a workflow.

The run is mapped to its workflow through the registry of awaited runs (entities/awaited_runs.py):
no Jobs API call per notification. A workflow registers its run with an entity signal, which the
extension delivers seconds (sometimes tens of seconds) after run-now; a short run may be notified
first. Databricks documents no retry of a notification, so one for a run not (yet) in the registry
is `remembered` there (workflow.early_ends) and the run watcher tells the workflow once the run
registers. Release-1.0 workflows never register their run: their jobs carry the instance id in the
`durable_instance_id` tag, read with one jobs/get per job (kept), so they are `delivered` at once.
A Suspended workflow counts as waiting: the extension holds the event until it is resumed.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

import azure.durable_functions as df
import azure.functions as func

from databricks_jobs.errors import ConfigurationError
from telemetry.tracing import traced_route
from orchestrators.create_job_and_run import RUN_FINISHED_EVENT
from messaging import settings as caller_settings
from triggers.http_responses import json_response
from triggers.starter import RUNNING_STATUSES
from workflow import early_ends, watch
from workflow.inputs import InputError, parse_json_body

log = logging.getLogger(__name__)

bp = df.Blueprint()

ROUTE = "databricks/notifications"
REALM = "databricks-notifications"
MAX_BODY_BYTES = 16 * 1024  # real payloads are a few hundred bytes
# Notifications that mean the run has ended; others (on_start, duration warnings) need no poll.
RUN_ENDED_EVENTS = frozenset({"jobs.on_success", "jobs.on_failure"})
# A workflow waits while it is not finished; a Suspended one gets the event when it is resumed.
WAITING_STATUSES = RUNNING_STATUSES | {df.OrchestrationRuntimeStatus.Suspended}
# Release 1.0 tagged each workflow's own job with its instance id (the tag's name then).
RELEASE_1_INSTANCE_TAG = "durable_instance_id"

# The seam through which the endpoint reads the time; tests point it at a virtual clock.
utcnow: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731


def _unauthorized() -> func.HttpResponse:
    return json_response(401, {"error": "HTTP Basic credentials of the notification destination are required"},
                 {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})


def authenticated(authorization: Optional[str], env: Optional[Mapping[str, str]] = None) -> bool:
    """True when the header carries the configured Basic credentials. Both parts are compared in
    constant time and always both, so timing reveals neither which part nor how much matched."""
    username = caller_settings.get("DATABRICKS_WEBHOOK_USERNAME", env)
    try:
        password = caller_settings.secret("DATABRICKS_WEBHOOK_PASSWORD", env)
    except ConfigurationError as exc:
        # e.g. the literal @Microsoft.KeyVault(...) text App Service leaves when it cannot resolve
        # the reference: refusing every call beats accepting that text as the password.
        log.error("Databricks notification refused: %s", exc)
        return False
    if not username or not password:
        log.warning("Databricks notification refused: DATABRICKS_WEBHOOK_USERNAME/PASSWORD are not set")
        return False
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, secret = decoded.partition(b":")
    if not sep:
        return False
    user_ok = hmac.compare_digest(user, username.encode("utf-8"))
    secret_ok = hmac.compare_digest(secret, password.encode("utf-8"))
    return user_ok & secret_ok


def _id(value: Any, field: str) -> int:
    """Databricks ids arrive as numbers (captured payloads) or strings (documented example)."""
    if isinstance(value, bool):
        raise InputError(f"'{field}' must be a numeric id", field)
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    raise InputError(f"'{field}' must be a numeric id (number or digit string)", field)


def parse_notification(body: bytes) -> dict:
    """`{"eventType", "jobId", "runId"}` (runId: the JOB run, also for task-level notifications)."""
    data = parse_json_body(body, MAX_BODY_BYTES)
    if not isinstance(data, dict):
        raise InputError("notification must be a JSON object", None)
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise InputError("'event_type' is required", "event_type")
    job, run = data.get("job"), data.get("run")
    if not isinstance(job, dict):
        raise InputError("'job' must be an object with 'job_id'", "job")
    if not isinstance(run, dict):
        raise InputError("'run' must be an object with 'run_id'", "run")
    job_id = _id(job.get("job_id"), "job.job_id")
    # Task notifications carry the task run id in run_id and the job run id in parent_run_id.
    if run.get("parent_run_id") is not None:
        run_id = _id(run["parent_run_id"], "run.parent_run_id")
    else:
        run_id = _id(run.get("run_id"), "run.run_id")
    return {"eventType": event_type, "jobId": job_id, "runId": run_id}


class _JobTags:
    """(workspace, job id) -> the job's release-1.0 instance tag (or None). A job's tags are set
    when it is created, so answers are kept, at most `size` of them (least recently used dropped)."""

    def __init__(self, size: int = 1024):
        self._size = size
        self._items: "OrderedDict[tuple, Optional[str]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: int, fetch: Callable[[int], Mapping[str, Any]], workspace: str = "") -> Optional[str]:
        key = (workspace, job_id)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        job = fetch(job_id) or {}
        tags = (job.get("settings") or {}).get("tags") or {}
        value = tags.get(RELEASE_1_INSTANCE_TAG)
        value = value if isinstance(value, str) and value else None
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


release_1_tags = _JobTags()


def _workspace() -> str:
    from databricks_jobs.settings import get_settings  # lazy: settings are read at first use
    try:
        return get_settings().host
    except Exception:  # noqa: BLE001 - misconfigured: the fetch reports it
        return ""


def _fetch_job(job_id: int) -> Mapping[str, Any]:
    from databricks_jobs.client import get_jobs_client  # lazy: settings are read at first use
    return get_jobs_client().get_job(job_id)


async def _release_1_instance(note: dict) -> Optional[str]:
    """The release-1.0 workflow whose job this is, or None (a 2.0 job, a job gone, Databricks not
    answering: the notification is then remembered instead). Blocking HTTP runs in a thread."""
    try:
        return await asyncio.to_thread(release_1_tags.get, note["jobId"], _fetch_job, _workspace())
    except Exception as exc:  # noqa: BLE001 - a lookup that fails must not lose the notification
        log.info("Databricks notification: job %s could not be read (%s); not a release-1.0 lookup",
                 note["jobId"], type(exc).__name__)
        return None


def _ignored(reason: str, **extra) -> func.HttpResponse:
    log.info("Databricks notification ignored: %s %s", reason, extra or "")
    return json_response(202, {"status": "ignored", "reason": reason, **extra})


async def handle_notification(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if not authenticated(req.headers.get("Authorization")):
        return _unauthorized()
    try:
        note = parse_notification(req.get_body())
    except InputError as error:
        log.warning("malformed Databricks notification: field %s: %s", error.field, error.message)
        return json_response(error.status, error.to_dict())

    if note["eventType"] not in RUN_ENDED_EVENTS:
        return _ignored(f"event type {note['eventType']} does not end a run")
    # The registry of awaited runs maps the run to its workflow: one read of one entity shard, no
    # Jobs API call (a job may be shared by many workflows, or absent for a one-time run).
    try:
        registry = await client.read_entity_state(df.EntityId(watch.REGISTRY_ENTITY, watch.shard_of(note["runId"])))
    except Exception as exc:
        log.warning("could not read the registry of awaited runs for a notification: %s", exc)
        return json_response(503, {"error": "the registry of awaited runs could not be read; try again"},
                             {"Retry-After": "30"})
    entry = watch.merged([registry.entity_state if registry.entity_exists else None]).get(note["runId"])
    if entry is None:
        instance_id = await _release_1_instance(note)
        if instance_id is not None:
            status = await client.get_status(instance_id)
            custom = getattr(status, "custom_status", None)
            custom = custom if isinstance(custom, dict) else {}
            if getattr(status, "runtime_status", None) in WAITING_STATUSES \
                    and str(custom.get("runId")) == str(note["runId"]):
                return await _deliver(client, instance_id, note)
        return await _remember(client, note)
    instance_id = entry["instanceId"]
    status = await client.get_status(instance_id)
    runtime = getattr(status, "runtime_status", None)
    if runtime is None:
        return _ignored("no waiting workflow for the run", runId=note["runId"])
    if runtime not in WAITING_STATUSES:
        return _ignored(f"workflow is {runtime.value}", runId=note["runId"])
    return await _deliver(client, instance_id, note)


async def _remember(client: df.DurableOrchestrationClient, note: dict) -> func.HttpResponse:
    """Keep the notification in the registry until its run registers (workflow.early_ends)."""
    try:
        await client.signal_entity(df.EntityId(watch.REGISTRY_ENTITY, watch.shard_of(note["runId"])),
                                   early_ends.NOTE_END, {"runId": note["runId"], "jobId": note["jobId"],
                                                         "eventType": note["eventType"],
                                                         "at": utcnow().timestamp()})
    except Exception as exc:
        log.warning("could not remember a notification for run %s: %s", note["runId"], exc)
        return json_response(503, {"error": "the notification could not be kept; try again"},
                             {"Retry-After": "30"})
    log.info("Databricks %s for run %s remembered until a workflow registers the run", note["eventType"],
             note["runId"])
    return json_response(202, {"status": "remembered", "runId": note["runId"]})


async def _deliver(client: df.DurableOrchestrationClient, instance_id: str, note: dict) -> func.HttpResponse:
    try:
        await client.raise_event(instance_id, RUN_FINISHED_EVENT,
                                 {"runId": note["runId"], "jobId": note["jobId"], "eventType": note["eventType"]})
    except Exception as exc:
        # The instance may have ended between the status read and the event (410/404).
        later = await client.get_status(instance_id)
        if later.runtime_status is None or later.runtime_status not in WAITING_STATUSES:
            return _ignored("workflow ended meanwhile", runId=note["runId"])
        log.warning("could not raise %s on %s: %s", RUN_FINISHED_EVENT, instance_id, exc)
        return json_response(503, {"error": "the workflow could not be signalled; try again"}, {"Retry-After": "30"})
    log.info("Databricks %s for run %s delivered to workflow %s", note["eventType"], note["runId"], instance_id)
    return json_response(202, {"status": "delivered", "instanceId": instance_id})


@bp.route(route=ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
@traced_route(ROUTE)
async def databricks_notification(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await handle_notification(req, client)
