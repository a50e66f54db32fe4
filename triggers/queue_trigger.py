"""Storage queue entry point: one message starts one workflow, exactly once.

Message: the workflow input (workflow/input.schema.json) as a JSON object, plus an optional
`instanceId`. Without it the instance id is derived from the queue message id, which a redelivery
keeps (visibility timeout expired, worker crashed after starting): the second delivery finds the
instance and starts nothing. A client that may send the same request twice (its own retry) must
pass `instanceId`, since a re-sent message gets a new message id.

A malformed message raises an error naming the field. The host retries it up to `maxDequeueCount`
(host.json, 5) and then moves it, unchanged, to `<queue>-poison`: nothing is lost, and a fixed copy
can be re-queued by hand.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

import azure.durable_functions as df
import azure.functions as func

from messaging import settings as caller_settings
from telemetry.tracing import traced_trigger
from triggers.starter import (INSTANCE_ID_PATTERN, StartResult, checked_event_input, instance_id_for, queue_instance_key,
                              record_saved_job_definition, start_once)
from workflow import caller_policy
from workflow.inputs import InputError, WorkflowRequest, parse_json_body, validate_request
from workflow.settings import WorkflowSettings

log = logging.getLogger(__name__)

bp = df.Blueprint()

# Binding expressions (%NAME%) fail indexing when the setting is missing; reading the setting when
# the worker indexes the functions gives it a real default. App setting changes restart the worker.
REQUEST_QUEUE = caller_settings.get("WORKFLOW_REQUEST_QUEUE") or caller_settings.DEFAULTS["WORKFLOW_REQUEST_QUEUE"]
CONNECTION = caller_settings.get("WORKFLOW_QUEUE_CONNECTION") or caller_settings.DEFAULTS["WORKFLOW_QUEUE_CONNECTION"]
INSTANCE_ID_FIELD = "instanceId"


class QueueMessageError(ValueError):
    """A message that cannot start a workflow; raised so the host retries it and then poisons it."""

    def __init__(self, message_id: Optional[str], error: InputError):
        self.message_id = message_id
        self.field = error.field
        self.error = error
        super().__init__(f"queue message {message_id}: field {error.field!r}: {error.message}")


def request_of(body: bytes, settings: WorkflowSettings) -> tuple[WorkflowRequest, Optional[str]]:
    """(validated request, caller's instance id or None) from a message body."""
    data = parse_json_body(body, settings.max_body_bytes)
    if not isinstance(data, dict):
        raise InputError("message must be a JSON object with the workflow inputs", None)
    data = dict(data)
    instance_id = data.pop(INSTANCE_ID_FIELD, None)
    if instance_id is not None and not (isinstance(instance_id, str) and INSTANCE_ID_PATTERN.match(instance_id)):
        raise InputError(f"'{INSTANCE_ID_FIELD}' must be 1..64 of letters, digits, '_', '.', ':', '-', "
                         f"starting with a letter or digit", INSTANCE_ID_FIELD)
    return validate_request(data, settings), instance_id


async def handle_message(msg: func.QueueMessage, client: df.DurableOrchestrationClient,
                         settings: Optional[WorkflowSettings] = None) -> StartResult:
    settings = settings or WorkflowSettings.from_env()
    # Whoever may write to the queue is its caller (Azure RBAC on the queue): the policy's
    # `sources["queue:<name>"]`, or the queue itself. A bad document raises: the host retries.
    policies = await asyncio.to_thread(caller_policy.from_env)  # may read a file: off the event loop
    owner = entry = None
    if policies is not None:
        owner = policies.caller_for_source("queue", REQUEST_QUEUE) or f"queue:{REQUEST_QUEUE}"
        entry = policies.entry_for(owner)
    try:
        # Off the event loop: validation is CPU work that would stall every other trigger and route.
        request, instance_id = await asyncio.to_thread(request_of, msg.get_body(), settings)
        envelope = await checked_event_input(client, request, settings, owner=owner, entry=entry)
    except InputError as error:
        failure = QueueMessageError(msg.id, error)
        log.error("%s (dequeue count %s; moved to %s-poison after the last retry)", failure, getattr(msg, "dequeue_count", None),
                  REQUEST_QUEUE)
        raise failure from None
    if instance_id is not None:
        # Namespaced to this queue: a sender cannot squat an HTTP or Event Grid workflow's id.
        instance_id = instance_id_for(owner, "queue", queue_instance_key(REQUEST_QUEUE, instance_id))
    else:
        if not msg.id:
            raise QueueMessageError(None, InputError("message has no id to derive an instance id from",
                                                     INSTANCE_ID_FIELD))
        instance_id = instance_id_for(owner, "queue", msg.id)
    result = await start_once(client, envelope, instance_id)
    if result.started:
        await record_saved_job_definition(client, entry, owner, envelope)
    log.info("queue message %s: workflow %s %s", msg.id, result.instance_id,
             "started" if result.started else "already existed (duplicate delivery)")
    if result.started:
        from telemetry.metrics import workflow_started  # on first use: cold start

        workflow_started("queue")
    return result


@bp.queue_trigger(arg_name="msg", queue_name=REQUEST_QUEUE, connection=CONNECTION)
@bp.durable_client_input(client_name="client")
@traced_trigger("queue start_workflow_from_queue", {"workflow.caller": "queue"})
async def start_workflow_from_queue(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    await handle_message(msg, client)
