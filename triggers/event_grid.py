"""Event Grid entry point: start a workflow per event, exactly once.

Accepted events (Event Grid schema or CloudEvents v1.0; the worker decodes both):
- `Databricks.JobRun.Requested`: `data` is the workflow input (workflow/input.schema.json).
- `Microsoft.Storage.BlobCreated`: mapped by `EVENTGRID_BLOB_CREATED_WORKFLOW` to a notebook with the
  blob URL in one notebook parameter.

Event Grid delivers at least once and retries any failed delivery for up to 24 h, so:
- the instance id is derived from the event's source and id: a redelivery finds the instance and
  is acknowledged without starting anything;
- an event that can never start a workflow (invalid data, unknown type, data over the HTTP body's
  limits of `WORKFLOW_MAX_BODY_BYTES` and 32 levels of nesting) is acknowledged, logged with the
  field, and its raw copy is kept on the `WORKFLOW_INVALID_EVENT_QUEUE` queue, scrubbed of anything
  token-shaped and cut to fit one message (`eventTruncated`); retrying it would only delay the same
  answer by a day;
- anything transient (the Durable client, the invalid-event queue) raises, so Event Grid retries
  and finally dead-letters to the subscription's dead-letter container when one is configured.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional, Union

import azure.durable_functions as df
import azure.functions as func

from databricks_jobs.secret_values import scrubbed_logger
from messaging import settings as caller_settings, storage_queues
from telemetry.tracing import traced_trigger
from triggers.starter import (StartResult, checked_event_input, instance_id_for as _instance_id_for,
                              record_saved_job_definition, start_once)
from workflow import caller_policy
from workflow.inputs import (InputError, check_json_value, looks_like_credential,
                             parse_json_body, validate_request)
from workflow.settings import WorkflowSettings

# Scrubbed: a refusal's log line names the caller's field and may quote its value.
log = scrubbed_logger(__name__)

bp = df.Blueprint()

FUNCTION_NAME = "start_workflow_from_event"  # the subscription endpoint's ?functionName=
REQUESTED_EVENT_TYPE = "Databricks.JobRun.Requested"
BLOB_CREATED_EVENT_TYPE = "Microsoft.Storage.BlobCreated"
# ADLS Gen2 raises BlobCreated for CreateFile (an empty file) and again for FlushWithClose (the
# data is there); only the second one is worth a notebook run.
IGNORED_BLOB_APIS = frozenset({"CreateFile"})


@dataclass(frozen=True)
class ReceivedEvent:
    """One event in either schema, reduced to what routing needs, plus its raw form."""

    schema: str  # "eventgrid" | "cloudevents"
    id: str
    source: str  # Event Grid `topic`, CloudEvents `source`
    type: str
    subject: str
    data: Any
    raw: dict

    @classmethod
    def of(cls, event: Union[func.EventGridEvent, "func.CloudEvent"]) -> "ReceivedEvent":
        data = event.get_json()
        if hasattr(event, "specversion"):
            encoded = getattr(event, "extension_attrs", {}).get("data_base64")
            if data is None and isinstance(encoded, str):
                # CloudEvents JSON format carries binary data (or JSON sent as bytes) base64-encoded
                # in data_base64; the worker leaves it among the extension attributes.
                data = _decoded(encoded, event.datacontenttype)
            raw = {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                   "time": _iso(event.time), "subject": event.subject, "datacontenttype": event.datacontenttype,
                   "dataschema": event.dataschema, **getattr(event, "extension_attrs", {}), "data": data}
            return cls("cloudevents", event.id or "", event.source or "", event.type or "", event.subject or "",
                       data, {k: v for k, v in raw.items() if v is not None})
        raw = {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
               "eventTime": _iso(event.event_time), "dataVersion": event.data_version, "data": data}
        return cls("eventgrid", event.id or "", event.topic or "", event.event_type or "", event.subject or "",
                   data, {k: v for k, v in raw.items() if v is not None})


def _decoded(encoded: str, content_type: Optional[str]) -> Any:
    """data_base64 as the JSON it holds, or its text; InputError-safe: undecodable stays None."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(encoded, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if isinstance(value, datetime) else value


class IgnoredEvent(Exception):
    """A valid event this app deliberately does nothing for (filtered out)."""


def owner_of(event: ReceivedEvent, policies: Optional[caller_policy.CallerPolicies]) -> Optional[str]:
    """Whoever may publish to the topic is the caller (the endpoint itself only knows the system key):
    the policy's `sources["eventgrid:<topic>"]`, or the topic itself; None without a policy."""
    if policies is None:
        return None
    return policies.caller_for_source("eventgrid", event.source) or f"eventgrid:{event.source}"


def instance_id_for(event: ReceivedEvent, owner: Optional[str] = None) -> str:
    # Event ids are unique per source (CloudEvents: source + id; Event Grid: topic + id).
    return _instance_id_for(owner, "eventgrid", f"{event.source}\x00{event.id}")


def _data_object(event: ReceivedEvent, max_bytes: int) -> dict:
    """`data` as a JSON object, held to the HTTP body's limits (bytes, nesting, no duplicate keys)."""
    data = event.data
    if isinstance(data, (str, bytes)):
        # Publishers sometimes send the JSON as a string (CloudEvents data_base64/text).
        try:
            data = parse_json_body(data, max_bytes)
        except InputError as error:
            raise InputError(error.message.replace("request body", "'data'"), "data", error.status) from None
    else:
        check_json_value(data, max_bytes, "data")
    if not isinstance(data, dict):
        raise InputError("'data' must be a JSON object with the workflow inputs", "data")
    return data


def request_body_for(event: ReceivedEvent, max_bytes: Optional[int] = None) -> dict:
    """The workflow input an event asks for, before schema validation; `data` is held to the
    limits of an HTTP body (`WORKFLOW_MAX_BODY_BYTES`, 32 levels of nesting).
    Raises InputError (never start, dead-letter) or IgnoredEvent (acknowledge, nothing to do)."""
    max_bytes = WorkflowSettings.from_env().max_body_bytes if max_bytes is None else max_bytes
    if not event.id:
        raise InputError("event has no 'id'", "id")
    if event.type == REQUESTED_EVENT_TYPE:
        return _data_object(event, max_bytes)
    if event.type == BLOB_CREATED_EVENT_TYPE:
        try:
            mapping = caller_settings.blob_workflow()
        except caller_settings.CallerSettingError as exc:
            raise InputError(str(exc), "EVENTGRID_BLOB_CREATED_WORKFLOW") from None
        if mapping is None:
            raise InputError("blob-created events are not mapped to a workflow: set EVENTGRID_BLOB_CREATED_WORKFLOW",
                             "EVENTGRID_BLOB_CREATED_WORKFLOW")
        if not mapping.matches(event.subject):
            raise IgnoredEvent(f"subject {event.subject!r} is outside the configured prefix/suffix")
        data = _data_object(event, max_bytes)
        if data.get("api") in IGNORED_BLOB_APIS:
            raise IgnoredEvent(f"blob api {data['api']} (the file is not complete yet)")
        url = data.get("url")
        if not isinstance(url, str) or not url:
            raise InputError("blob-created event has no 'data.url'", "data.url")
        return mapping.request_for(url)
    raise InputError(f"event type {event.type!r} is not handled; expected {REQUESTED_EVENT_TYPE} "
                     f"or {BLOB_CREATED_EVENT_TYPE}", "type")


def _prefixed(error: InputError, event: ReceivedEvent) -> InputError:
    """Name fields from the event's root, as the publisher sees them (`data.jobName`)."""
    if error.field is None:
        return InputError(error.message, "data")
    if event.type == REQUESTED_EVENT_TYPE and not error.field.startswith("data"):
        return InputError(error.message, f"data.{error.field}")
    if event.type == BLOB_CREATED_EVENT_TYPE and not error.field.startswith(("data", "EVENTGRID_")):
        # The request came from the mapping setting, so that is what needs fixing.
        return InputError(error.message, f"EVENTGRID_BLOB_CREATED_WORKFLOW.{error.field}")
    return error


# The invalid-event copy must fit one queue message (48 KiB of text before base64); the error and
# field are held well under it, so the event itself always gets most of the room.
MAX_KEPT_TEXT_CHARS = 2_000


def _token_free(value: Any) -> Any:
    """`value` with every string (and key) that holds something token-shaped replaced by `***`:
    the copy must not keep the very credential the request schema refused, nor one `scrub` knows."""
    from databricks_jobs.secret_values import REDACTED, scrub

    def clean(text: str) -> str:
        return REDACTED if looks_like_credential(text) or scrub(text) != text else text

    # Iterative: the event may be nested deeper than the recursion limit allows (it was refused for that).
    root = {"value": value}
    stack = [(root, "value", value)]
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, str):
            parent[key] = clean(item)
        elif isinstance(item, dict):
            copy = {}
            for index, (name, child) in enumerate(item.items()):
                name = clean(str(name))
                name = name if name not in copy else f"{name}{index}"
                copy[name] = child
                stack.append((copy, name, child))
            parent[key] = copy
        elif isinstance(item, list):
            copy = list(item)
            stack.extend((copy, index, child) for index, child in enumerate(item))
            parent[key] = copy
    return root["value"]


def _bounded(text: Optional[str]) -> Optional[str]:
    if text is None or len(text) <= MAX_KEPT_TEXT_CHARS:
        return text
    return text[: MAX_KEPT_TEXT_CHARS - 3] + "..."


def invalid_event_record(event: ReceivedEvent, error: InputError, instance_id: str,
                         max_bytes: int = storage_queues.MAX_MESSAGE_TEXT_BYTES) -> str:
    """The invalid-event queue message: the error, its field and the raw event, scrubbed of
    anything token-shaped; when the event does not fit the message, its JSON text is cut to fit,
    with `eventTruncated` and the size it had (`eventBytes`). Always at most `max_bytes`."""
    from databricks_jobs.secret_values import scrub

    record = {"error": _bounded(scrub(error.message)), "field": _bounded(scrub(error.field or "")) or None,
              "instanceId": instance_id, "receivedAt": datetime.now(timezone.utc).isoformat(),
              "schema": event.schema, "event": None}
    try:
        event_json = json.dumps(_token_free(event.raw), ensure_ascii=False)
    except (RecursionError, ValueError):  # nested beyond what json can write: keep the facts, not the body
        event_json = json.dumps({"id": _bounded(event.id), "type": _bounded(event.type), "data": "(not kept)"})
    event_bytes = len(event_json.encode("utf-8"))
    head = json.dumps(record, ensure_ascii=False)
    if len(head.encode("utf-8")) + event_bytes <= max_bytes:
        return head[: -len("null}")] + event_json + "}"
    record.update(event=None, eventTruncated=True, eventBytes=event_bytes, eventText="")
    # The longest prefix of the event's text that fits once escaped again (binary search: escaping
    # grows text unevenly, and each try is one json.dumps of at most a queue message).
    fits, low, high = None, 0, min(len(event_json), max_bytes)
    while low <= high:
        middle = (low + high) // 2
        record["eventText"] = event_json[:middle]
        text = json.dumps(record, ensure_ascii=False)
        if len(text.encode("utf-8")) <= max_bytes:
            fits, low = text, middle + 1
        else:
            high = middle - 1
    if fits is None:  # cannot happen with the bounds above; still, never fail for size
        fits = json.dumps({"error": "invalid event (record too large to keep)", "field": None,
                           "instanceId": instance_id, "eventTruncated": True, "eventBytes": event_bytes})
    return fits


def keep_invalid(event: ReceivedEvent, error: InputError, instance_id: str) -> bool:
    """Keep the raw event, scrubbed and cut to fit, on the invalid-event queue; False when no queue
    is configured. Raises when the queue cannot be written, so Event Grid redelivers and nothing is lost."""
    queue = caller_settings.get("WORKFLOW_INVALID_EVENT_QUEUE")
    if not queue:
        return False
    storage_queues.send_text(queue, invalid_event_record(event, error, instance_id),
                             caller_settings.get("WORKFLOW_QUEUE_CONNECTION"))
    return True


def validated_event(event: ReceivedEvent, settings: WorkflowSettings):
    """The validated request an event asks for; run on a worker thread (schema validation of up to
    `WORKFLOW_MAX_BODY_BYTES` of data is CPU work that must not hold the event loop)."""
    body = request_body_for(event, settings.max_body_bytes)
    try:
        return validate_request(body, settings)
    except InputError as error:
        raise _prefixed(error, event) from None


async def handle_event(event: ReceivedEvent, client: df.DurableOrchestrationClient,
                       settings: Optional[WorkflowSettings] = None) -> Optional[StartResult]:
    """Start the workflow for one event; None when the event was refused or ignored."""
    # A bad document raises: Event Grid retries the delivery. It may read a file: off the event loop.
    policies = await asyncio.to_thread(caller_policy.from_env)
    owner = owner_of(event, policies)
    entry = policies.entry_for(owner) if policies is not None else None
    instance_id = instance_id_for(event, owner)
    try:
        settings = settings or WorkflowSettings.from_env()
        request = await asyncio.to_thread(validated_event, event, settings)
        try:
            envelope = await checked_event_input(client, request, settings, owner=owner, entry=entry)
        except InputError as error:
            raise _prefixed(error, event) from None
    except IgnoredEvent as reason:
        log.info("event %s (%s) ignored: %s", event.id, event.type, reason)
        return None
    except InputError as error:
        # Queue I/O is blocking: off the worker's event loop, which serves every HTTP route too.
        kept = await asyncio.to_thread(keep_invalid, event, error, instance_id)
        log.error("event %s (%s from %s) refused: field %s: %s; raw event %s", _bounded(event.id), _bounded(event.type),
                  _bounded(event.source), _bounded(error.field), _bounded(error.message),
                  "kept on queue " + caller_settings.get("WORKFLOW_INVALID_EVENT_QUEUE") if kept else "not kept (no queue)")
        return None
    result = await start_once(client, envelope, instance_id)
    if result.started:
        await record_saved_job_definition(client, entry, owner, envelope)
    log.info("event %s (%s): workflow %s %s", event.id, event.type, result.instance_id,
             "started" if result.started else "already existed (redelivery)")
    if result.started:
        from telemetry.metrics import workflow_started  # on first use: cold start

        workflow_started("eventgrid")
    return result


@bp.function_name(FUNCTION_NAME)
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
@traced_trigger("eventgrid " + FUNCTION_NAME, {"workflow.caller": "eventgrid"})
async def start_workflow_from_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    await handle_event(ReceivedEvent.of(event), client)
