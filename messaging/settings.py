"""Settings of the event-driven entry points (Event Grid, Storage queue, Databricks webhooks) and of
the `notifyCompletion` activity. Pure: no Azure imports, read from a mapping so tests pass their own.

`SETTINGS` is the one list of names, defaults and meanings; docs/callers.md is checked against it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

# (name, default, meaning); "" as default means unset / feature off.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("WORKFLOW_QUEUE_CONNECTION", "AzureWebJobsStorage",
     "Name of the storage connection (connection string setting, or `<name>__queueServiceUri` for a managed "
     "identity) used by the request queue trigger, the invalid-event queue and the completion queue."),
    ("WORKFLOW_REQUEST_QUEUE", "workflow-requests",
     "Queue whose messages start workflows. Read when the worker indexes functions (restart to change). "
     "Poison messages go to `<name>-poison`."),
    ("WORKFLOW_INVALID_EVENT_QUEUE", "workflow-requests-invalid",
     "Queue that receives the raw copy of an Event Grid event that cannot start a workflow, with the error "
     "and field. Empty: invalid events are only logged."),
    ("EVENTGRID_BLOB_CREATED_WORKFLOW", "",
     "JSON mapping `Microsoft.Storage.BlobCreated` events to a workflow: "
     "`{\"jobName\", \"taskKey\", \"notebookPath\", \"existingClusterId\", \"blobUrlParameter\": \"input_path\", "
     "\"notebookParams\"?, \"timeoutSeconds\"?, \"pollIntervalSeconds\"?, \"subjectBeginsWith\"?, \"subjectEndsWith\"?}`. "
     "Empty: blob events are refused as invalid."),
    ("WORKFLOW_COMPLETION_QUEUE", "",
     "Queue that receives a `Databricks.JobRun.Completed` CloudEvent (base64 text, the Functions default) when an "
     "event- or queue-started workflow ends. Empty: no queue notification."),
    ("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", "",
     "Event Grid endpoint that receives the same CloudEvent: a topic or domain with the CloudEvents v1.0 input "
     "schema, `https://<name>.<region>-1.eventgrid.azure.net/api/events`, or a namespace topic, "
     "`https://<namespace>.<region>-1.eventgrid.azure.net/topics/<topic>:publish`. Must be https unless the host "
     "is loopback (127.0.0.0/8, ::1, localhost). Empty: none."),
    ("WORKFLOW_COMPLETION_TOPIC_KEY", "",
     "Access key of that topic, domain or namespace (sent as `aeg-sas-key`, or `Authorization: SharedAccessKey` "
     "to a namespace); a Key Vault reference in Azure. Empty: the app's managed identity (role EventGrid Data "
     "Sender) is used instead."),
    ("WORKFLOW_COMPLETION_EVENT_SOURCE", "/workflows/create-job-and-run",
     "CloudEvents `source` of completion events. With an Event Grid domain, the name of the domain topic to "
     "deliver to (a domain routes a CloudEvent by its source)."),
    ("DATABRICKS_WEBHOOK_USERNAME", "",
     "HTTP Basic user name the Databricks notification destination sends to `POST /api/databricks/notifications`. "
     "Empty (with the password): the endpoint refuses every call."),
    ("DATABRICKS_WEBHOOK_PASSWORD", "",
     "HTTP Basic password of that destination; a Key Vault reference in Azure."),
)

DEFAULTS = {name: default for name, default, _ in SETTINGS}


class CallerSettingError(ValueError):
    """A setting of this module is invalid; the message starts with the setting's name."""


def get(name: str, env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    value = env.get(name)
    return DEFAULTS[name] if value is None else value.strip()


def secret(name: str, env: Optional[Mapping[str, str]] = None) -> str:
    """A secret setting (webhook password, topic key), cleaned like the Databricks credentials:
    `ConfigurationError` naming the setting for an unresolved Key Vault reference or a value with
    whitespace inside; the value itself is never shown."""
    from databricks_jobs.secret_values import clean_secret

    return clean_secret(name, get(name, env)) or ""


@dataclass(frozen=True)
class BlobWorkflow:
    """How a `Microsoft.Storage.BlobCreated` event becomes a workflow request."""

    request: dict  # the workflow inputs, without the blob parameter
    blob_url_parameter: str
    subject_begins_with: str = ""
    subject_ends_with: str = ""

    def matches(self, subject: str) -> bool:
        return subject.startswith(self.subject_begins_with) and subject.endswith(self.subject_ends_with)

    def request_for(self, blob_url: str) -> dict:
        params = dict(self.request.get("notebookParams") or {})
        params[self.blob_url_parameter] = blob_url
        return {**self.request, "notebookParams": params}


_BLOB_KEYS = {"blobUrlParameter", "subjectBeginsWith", "subjectEndsWith"}


def blob_workflow(env: Optional[Mapping[str, str]] = None) -> Optional[BlobWorkflow]:
    """The configured blob-created mapping, or None when unset. The workflow fields themselves are
    validated with the request schema when an event arrives, so their errors name the field."""
    name = "EVENTGRID_BLOB_CREATED_WORKFLOW"
    raw = get(name, env)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CallerSettingError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CallerSettingError(f"{name} must be a JSON object")
    parameter = data.get("blobUrlParameter")
    if not isinstance(parameter, str) or not parameter:
        raise CallerSettingError(f"{name}.blobUrlParameter must be a non-empty string (the notebook widget name)")
    for key in ("subjectBeginsWith", "subjectEndsWith"):
        if not isinstance(data.get(key, ""), str):
            raise CallerSettingError(f"{name}.{key} must be a string")
    return BlobWorkflow(
        request={k: v for k, v in data.items() if k not in _BLOB_KEYS},
        blob_url_parameter=parameter,
        subject_begins_with=data.get("subjectBeginsWith", ""),
        subject_ends_with=data.get("subjectEndsWith", ""),
    )


@dataclass(frozen=True)
class CompletionTargets:
    queue: str = ""
    topic_endpoint: str = ""
    topic_key: str = field(default="", repr=False)  # never printed
    source: str = DEFAULTS["WORKFLOW_COMPLETION_EVENT_SOURCE"]
    connection: str = DEFAULTS["WORKFLOW_QUEUE_CONNECTION"]

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "CompletionTargets":
        endpoint = topic_endpoint(get("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", env))
        return cls(
            queue=get("WORKFLOW_COMPLETION_QUEUE", env),
            topic_endpoint=endpoint,
            topic_key=secret("WORKFLOW_COMPLETION_TOPIC_KEY", env),
            source=get("WORKFLOW_COMPLETION_EVENT_SOURCE", env) or DEFAULTS["WORKFLOW_COMPLETION_EVENT_SOURCE"],
            connection=get("WORKFLOW_QUEUE_CONNECTION", env) or DEFAULTS["WORKFLOW_QUEUE_CONNECTION"],
        )


def topic_endpoint(value: str) -> str:
    """The completion topic's URL, parsed: https, or http only to a loopback host (127.0.0.0/8, ::1,
    localhost; the dev host's stand-in), judged by the host name itself, so that
    `http://localhost.evil.com/` is refused: the topic key travels with every event."""
    from urllib.parse import urlsplit

    from databricks_jobs.settings import is_loopback

    name = "WORKFLOW_COMPLETION_TOPIC_ENDPOINT"
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
        parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise CallerSettingError(f"{name} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("https", "http") or not host:
        raise CallerSettingError(f"{name} must be an https URL with a host name")
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise CallerSettingError(f"{name} must be an https URL: only a loopback host (127.0.0.0/8, ::1, localhost) "
                                 f"may use http, since the topic key is sent with every event (host {host})")
    if parts.username is not None or parts.password is not None or any(ch.isspace() for ch in value):
        raise CallerSettingError(f"{name} must not carry credentials or spaces; the key goes in "
                                 f"WORKFLOW_COMPLETION_TOPIC_KEY")
    return value
