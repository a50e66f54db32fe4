"""Activity `notifyCompletion`: report a finished event- or queue-started workflow.

Input `{"instanceId", "eventId", "outputs"}` (docs/design.md). Sends one CloudEvent of type
`Databricks.JobRun.Completed` whose `data` is the outputs to the configured completion queue
and/or Event Grid topic, domain or namespace topic (settings in messaging/settings.py). Activities run at least once, so
the CloudEvent `id` is the workflow run's key (drawn once per workflow run): a consumer that dedupes
on `id` sees each workflow end once, and an instance id started again after a purge is a new event.
Keys and connection strings stay in settings; they are never returned, logged or put in events.

Failures state their kind for the orchestrator: `Notification target temporarily unavailable:`
(throttling, 5xx, network) is retried; `Notification refused:` (4xx, auth) and
`Configuration error:` are not.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote

import azure.durable_functions as df

from activities.jobs import activity_input
from databricks_jobs.errors import ConfigurationError
from databricks_jobs.process_wide import ProcessWide
from databricks_jobs.secret_values import scrub
from messaging import event_grid_targets, settings as caller_settings, storage_queues
from telemetry.tracing import traced_activity
from workflow.results import result_path

log = logging.getLogger(__name__)

bp = df.Blueprint()

ACTIVITY_NAME = "notifyCompletion"
COMPLETED_EVENT_TYPE = "Databricks.JobRun.Completed"
EVENTGRID_SCOPE = "https://eventgrid.azure.net/.default"
# Event Grid accepts events up to 1 MB; queue messages are far smaller (storage_queues).
MAX_TOPIC_EVENT_BYTES = 1_000_000
# Outputs that can be large; dropped (and flagged) when the event would not fit: each task's first.
_TASK_BULK = ("notebookResult", "error", "errorTrace", "stateMessage")
_LARGE_FIELDS = ("notebookResult", "errorTrace", "error", "stateMessage", "outputError", "notificationError")
_CORE_FIELDS = ("jobId", "runId", "resultState", "lifeCycleState", "databricksResultState", "runPageUrl",
                "workflowFailed", "cancelRequested", "deadlineExceeded", "jobDeleted", "taskCount",
                "notebookResultBytes", "notebookResultTruncated", "notificationTruncated", "outputsPath",
                "resultsPath", "resultPath")
HTTP_TIMEOUT_SECONDS = 30

_credential = None


class NotificationError(Exception):
    """A completion target failed; the message prefix says whether another attempt can help."""

    def __init__(self, problem: str, *, transient: bool):
        self.transient = transient
        kind = "Notification target temporarily unavailable" if transient else "Notification refused"
        super().__init__(f"{kind}: {problem}")


def completion_event(instance_id: str, outputs: Mapping[str, Any], source: str,
                     now: Optional[datetime] = None, event_id: Optional[str] = None) -> dict:
    return {
        "specversion": "1.0",
        "type": COMPLETED_EVENT_TYPE,
        "source": source,
        "id": event_id or instance_id,
        "subject": f"workflows/{instance_id}",
        "time": (now or datetime.now(timezone.utc)).isoformat(),
        "datacontenttype": "application/json",
        "data": dict(outputs),
    }


def _size(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event).encode("utf-8"))


def fit(event: dict, max_bytes: int) -> dict:
    """The event, made to fit `max_bytes` as JSON, so a completion is never lost for its size.
    Per-task bulk goes first (each task's notebookResult, error and errorTrace: one of 60 KB alone
    would overflow a queue message), then the large top-level fields, then the task list itself,
    then all but the core fields. A cut event says `notificationTruncated` and where the whole is:
    `outputsPath` (the status route) and `resultsPath` (one task's whole output)."""
    if _size(event) <= max_bytes:
        return event
    data = dict(event["data"])
    instance_id = str(event.get("subject", "")).partition("workflows/")[2]
    data["notificationTruncated"] = True
    if instance_id:
        data["outputsPath"] = "/api/workflows/" + quote(instance_id, safe="")
        data["resultsPath"] = result_path(instance_id, "TASKKEY").replace("TASKKEY", "{taskKey}")
    if isinstance(data.get("tasks"), list):
        data["tasks"] = [{k: v for k, v in t.items() if k not in _TASK_BULK} if isinstance(t, dict) else t
                         for t in data["tasks"]]
    for step in (_drop_top_level_bulk, _drop_tasks, _core_only):
        candidate = {**event, "data": data}
        if _size(candidate) <= max_bytes:
            return candidate
        data = step(data)
    return {**event, "data": data}


def _drop_top_level_bulk(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in _LARGE_FIELDS}


def _drop_tasks(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in ("tasks", "repairs")}
    if isinstance(data.get("tasks"), list):
        out["taskCount"] = len(data["tasks"])
    return out


def _core_only(data: dict) -> dict:
    """What is always small: the ids, the states and the paths, each string at most 1,000 chars."""
    return {k: (v[:1000] if isinstance(v, str) else v) for k, v in data.items()
            if k in _CORE_FIELDS and (v is None or isinstance(v, (str, int, float, bool)))}


def _bearer_token() -> str:
    global _credential
    if _credential is None:
        import os

        from azure.identity import DefaultAzureCredential
        # The app's user-assigned identity, if it has one (the same one it uses for Databricks).
        client_id = (os.environ.get("DATABRICKS_MANAGED_IDENTITY_CLIENT_ID") or "").strip() or None
        _credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    return _credential.get_token(EVENTGRID_SCOPE).token


def _topic_session() -> "requests.Session":
    import requests  # on first use: it is heavy, and cold start pays for every import

    session = requests.Session()
    # No .netrc credentials or proxy variables: requests' module-level calls read both, and .netrc
    # would add an Authorization header of its own (CVE-2024-47081 leaked it to other hosts).
    session.trust_env = False
    return session


# One pooled session per process (activities run on worker threads; requests sessions are used
# that way by the Jobs API client too).
topic_session = ProcessWide(_topic_session, close=lambda session: session.close())


def publish_to_topic(event: dict, endpoint: str, key: str, *, session: Optional[requests.Session] = None,
                     token_provider: Callable[[], str] = _bearer_token) -> None:
    """POST `event` to an Event Grid topic, domain or namespace topic (messaging/event_grid_targets.py
    says how each is addressed and where its key goes)."""
    try:
        target = event_grid_targets.publish_target(endpoint)
    except event_grid_targets.UnknownTopicEndpoint as exc:
        raise ConfigurationError(event_grid_targets.SETTING, str(exc)) from None
    headers = {"Content-Type": event_grid_targets.CONTENT_TYPE}
    headers.update(target.key_headers(key) if key else {"Authorization": f"Bearer {token_provider()}"})
    import requests  # on first use: it is heavy, and cold start pays for every import

    sender = session or topic_session.get()
    try:
        response = sender.post(target.url, data=json.dumps([event]), headers=headers, timeout=HTTP_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        # Built from the exception's type only: its text may quote the request, key header included.
        raise NotificationError(f"Event Grid topic unreachable ({type(exc).__name__})", transient=True) from None
    if response.status_code >= 300:
        # The body is Event Grid's error text; the key is in a header and never echoed.
        transient = response.status_code == 429 or response.status_code >= 500
        raise NotificationError(f"Event Grid topic answered {response.status_code}: {scrub(response.text[:500])}",
                                transient=transient)


def _send_to_queue(queue: str, text: str, connection: str) -> str:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    try:
        return storage_queues.send_text(queue, text, connection)
    except storage_queues.QueueConfigurationError as exc:
        raise ConfigurationError("WORKFLOW_QUEUE_CONNECTION", str(exc)) from None
    except ClientAuthenticationError as exc:
        raise NotificationError(f"queue {queue} refused our credentials ({type(exc).__name__})", transient=False) from None
    except HttpResponseError as exc:
        status = getattr(exc, "status_code", None) or 0
        raise NotificationError(f"queue {queue} answered {status or type(exc).__name__}",
                                transient=status == 429 or status >= 500 or status == 0) from None
    except ServiceRequestError as exc:
        raise NotificationError(f"queue {queue} unreachable ({type(exc).__name__})", transient=True) from None


def notify(payload: Mapping[str, Any], targets: Optional[caller_settings.CompletionTargets] = None) -> dict:
    try:
        targets = targets or caller_settings.CompletionTargets.from_env()
    except caller_settings.CallerSettingError as exc:
        setting, _, problem = str(exc).partition(" ")
        raise ConfigurationError(setting, problem) from None
    instance_id = payload["instanceId"]
    event = completion_event(instance_id, payload.get("outputs") or {}, targets.source,
                             event_id=payload.get("eventId"))
    result: dict = {"instanceId": instance_id, "queueMessageId": None, "topic": False}
    if targets.queue:
        queued = fit(event, storage_queues.MAX_MESSAGE_TEXT_BYTES)
        result["queueMessageId"] = _send_to_queue(targets.queue, json.dumps(queued), targets.connection)
    if targets.topic_endpoint:
        publish_to_topic(fit(event, MAX_TOPIC_EVENT_BYTES), targets.topic_endpoint, targets.topic_key)
        result["topic"] = True
    if not targets.queue and not targets.topic_endpoint:
        log.warning("workflow %s ended but no completion target is configured "
                    "(WORKFLOW_COMPLETION_QUEUE, WORKFLOW_COMPLETION_TOPIC_ENDPOINT)", instance_id)
    else:
        log.info("workflow %s: completion sent (queue=%s, topic=%s)", instance_id, bool(targets.queue),
                 result["topic"])
    return result


@bp.activity_trigger(input_name="payload", activity=ACTIVITY_NAME)
@traced_activity(ACTIVITY_NAME)
def notifyCompletion(payload: Any) -> dict:  # noqa: N802 - the function name is the activity name
    return notify(activity_input(payload))
