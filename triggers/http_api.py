"""HTTP API: start a workflow, poll its status, cancel it.

Shaped for the asynchronous request-reply pattern that Logic Apps' HTTP action follows: start
answers 202 + Location + Retry-After; the status route answers 202 while running, 200 with the
outputs on success, and a non-2xx (outputs in the body) when the run did not succeed, so the
Logic Apps action fails visibly.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from databricks_jobs.errors import ConfigurationError, CredentialError
from databricks_jobs.settings import check_configuration
from orchestrators.create_job_and_run import CANCEL_EVENT
from telemetry.tracing import traced_route
from triggers import access
from triggers.http_responses import json_response, method_not_allowed, ROUTE_METHODS
from triggers.starter import (INSTANCE_ID_PATTERN, RUNNING_STATUSES, JobLookupUnavailable, check_saved_jobs,
                              instance_id_for, record_saved_job_definition, resolve_job, start_once)
from workflow import caller_policy
from workflow import policy
from workflow.inputs import InputError, orchestration_input, require_json_content_type, validated_body
from workflow.settings import WorkflowSettingError, WorkflowSettings

log = logging.getLogger(__name__)

bp = df.Blueprint()

# The seam through which the status route reads the time; tests point it at a virtual clock.
utcnow: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731

START_ROUTE = "workflows/create-job-and-run"
STATUS_ROUTE = "workflows/{instanceId}"
CANCEL_ROUTE = "workflows/{instanceId}/cancel"
RETRY_AFTER_SECONDS = 10
# A run that ended but did not succeed: the request depended on a Databricks run that failed.
# A 4xx, so Logic Apps fails the action at once instead of retrying it as it would a 5xx.
RUN_NOT_SUCCEEDED_STATUS = 424
MAX_IDEMPOTENCY_KEY_LENGTH = 255



def _bad(error: InputError) -> func.HttpResponse:
    return json_response(error.status, error.to_dict())


def _misconfigured(error: Exception) -> func.HttpResponse:
    """The app cannot run a workflow until a setting is fixed: 503 naming it, nothing started."""
    setting = getattr(error, "setting", None)
    log.error("refusing to start a workflow: %s", error)
    return json_response(503, {"error": str(error), "setting": setting}, {"Retry-After": "300"})


def _api_url(req: func.HttpRequest, path: str) -> str:
    """An absolute URL to one of our routes. Never with the caller's key (`?code=`): a URL ends up in
    run histories and request logs; callers authenticate each request themselves (a token, or the
    `x-functions-key` header)."""
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}/api/{path}"


def _links(req: func.HttpRequest, instance_id: str) -> dict:
    return {
        "id": instance_id,
        "statusQueryGetUri": _api_url(req, f"workflows/{instance_id}"),
        "cancelPostUri": _api_url(req, f"workflows/{instance_id}/cancel"),
    }


def _accepted(req: func.HttpRequest, instance_id: str, body: dict,
              retry_after: int = RETRY_AFTER_SECONDS) -> func.HttpResponse:
    location = _api_url(req, f"workflows/{instance_id}")
    return json_response(202, body, {"Location": location, "Retry-After": str(retry_after)})


async def _existing_instance(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller):
    """The instance named by the route and its status; InputError (400 or 404) otherwise. Another
    caller's workflow is answered exactly as an unknown one, so that existence does not leak."""
    instance_id = req.route_params.get("instanceId", "")
    if not INSTANCE_ID_PATTERN.match(instance_id):
        raise InputError("'instanceId' is not a valid instance id", "instanceId")
    if await access.owners_matter(caller):
        status = await client.get_status(instance_id, show_input=True)
        visible = status.runtime_status is not None and await access.may_see(caller, status)
    else:  # single-team mode: every key holder is the one caller, as before
        status = await client.get_status(instance_id)
        visible = status.runtime_status is not None
    if not visible:
        raise InputError(f"no workflow instance '{instance_id}'", "instanceId", status=404)
    return instance_id, status


@bp.route(route=START_ROUTE, methods=ROUTE_METHODS)
@bp.durable_client_input(client_name="client")
@traced_route(START_ROUTE)
async def start_workflow(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if req.method.upper() != "POST":
        return method_not_allowed("POST")
    try:
        # Who calls (401), and whether it may start at all (403), before anything about the request.
        caller = await access.caller_of(req)
        entry = await access.entry_for_start(caller)
    except access.Denied as denied:
        return denied.response
    try:
        # A workflow that could only fail on its first activity is refused now, naming the setting.
        settings = WorkflowSettings.from_env()
        check_configuration()
    except (WorkflowSettingError, ConfigurationError) as error:
        return _misconfigured(error)
    try:
        require_json_content_type(req.headers.get("Content-Type"))
        # Off the event loop: validating a large body is CPU work that would stall other requests.
        request = await asyncio.to_thread(validated_body, req.get_body(), settings)
        key = req.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and key.isprintable()):
            raise InputError(f"'Idempotency-Key' must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
                             "Idempotency-Key")
    except InputError as error:
        return _bad(error)
    if entry is not None:
        # Before any lookup: the answer must not depend on whether a job exists.
        try:
            caller_policy.check_request(entry, request.body)
        except caller_policy.Refusal as refusal:
            return access.refused(refusal)
    instance_id = instance_id_for(caller.id, "http", key)
    try:
        if entry is not None and caller_policy.needs_counts(entry) and (
                instance_id is None or (await client.get_status(instance_id)).runtime_status is None):
            await access.check_rates(client, entry, caller.id, utcnow())  # a replay is never refused
    except access.Denied as denied:
        return denied.response

    try:
        request = await resolve_job(request)
    except InputError as error:
        return _bad(error)
    except JobLookupUnavailable as error:
        return json_response(503, {"error": f"Databricks could not be asked which job jobName means: {error}",
                                   "setting": None, "field": "jobName"}, {"Retry-After": "30"})
    except (ConfigurationError, CredentialError) as error:
        return _misconfigured(error)
    envelope = orchestration_input(request, settings, owner=caller.id, policy=entry)
    try:
        await check_saved_jobs(client, entry, caller.id, envelope)
    except caller_policy.Refusal as refusal:
        return access.refused(refusal)
    result = await start_once(client, envelope, instance_id)
    if result.started:
        await record_saved_job_definition(client, entry, caller.id, envelope)
    if result.different_request:
        # The common idempotency-key convention: a key names one request; reusing it for another
        # is the caller's mistake, not a replay.
        return json_response(422, {"error": "'Idempotency-Key' was already used for a different request",
                                   "field": "Idempotency-Key"})
    log.info("workflow %s %s", result.instance_id, "started" if result.started else "already existed")
    if result.started:
        from telemetry.metrics import workflow_started  # on first use: cold start

        workflow_started("http")
    response = _accepted(req, result.instance_id, _links(req, result.instance_id))
    if not result.started:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.route(route=STATUS_ROUTE, methods=ROUTE_METHODS)
@bp.durable_client_input(client_name="client")
@traced_route(STATUS_ROUTE)
async def get_workflow_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if req.method.upper() != "GET":
        return method_not_allowed("GET")
    try:
        instance_id, status = await _existing_instance(req, client, await access.caller_of(req))
    except access.Denied as denied:
        return denied.response
    except InputError as error:
        return _bad(error)
    runtime = status.runtime_status
    if runtime in RUNNING_STATUSES or runtime == df.OrchestrationRuntimeStatus.Suspended:
        progress = status.custom_status if isinstance(status.custom_status, dict) else {}
        return _accepted(req, instance_id, {
            "id": instance_id, "runtimeStatus": runtime.value, "customStatus": status.custom_status,
            "createdTime": status.created_time.isoformat() if status.created_time else None,
            "lastUpdatedTime": status.last_updated_time.isoformat() if status.last_updated_time else None,
        }, retry_after=policy.status_retry_after(policy.workflow_age_seconds(progress, utcnow())))
    if runtime == df.OrchestrationRuntimeStatus.Completed:
        outputs = status.output or {}
        code = 200 if policy.is_success(outputs.get("resultState")) else RUN_NOT_SUCCEEDED_STATUS
        return json_response(code, outputs)
    if runtime in (df.OrchestrationRuntimeStatus.Terminated, df.OrchestrationRuntimeStatus.Canceled):
        return json_response(410, {"id": instance_id, "runtimeStatus": runtime.value, "error": "workflow was terminated",
                           "reason": status.output})
    # Failed: the orchestration itself gave up (e.g. Databricks refused a call); 502 says the
    # fault is upstream of us, not in the caller's request. The caller gets the error itself,
    # bounded; a stack trace (server paths and all) stays in the logs.
    log.warning("workflow %s failed: %s", instance_id, status.output)
    return json_response(502, {"id": instance_id, "runtimeStatus": runtime.value, "error": "workflow failed",
                               "detail": policy.failure_detail(status.output), "customStatus": status.custom_status})


_CANCELLABLE = RUNNING_STATUSES | {df.OrchestrationRuntimeStatus.Suspended}


@bp.route(route=CANCEL_ROUTE, methods=ROUTE_METHODS)
@bp.durable_client_input(client_name="client")
@traced_route(CANCEL_ROUTE)
async def cancel_workflow(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if req.method.upper() != "POST":
        return method_not_allowed("POST")
    try:
        instance_id, status = await _existing_instance(req, client, await access.caller_of(req))
    except access.Denied as denied:
        return denied.response
    except InputError as error:
        return _bad(error)
    # A suspended workflow takes the event too, and acts on it when it is resumed.
    if status.runtime_status not in _CANCELLABLE:
        return _already_finished(status)
    try:
        await client.raise_event(instance_id, CANCEL_EVENT, {"reason": "cancel requested over HTTP"})
    except Exception as exc:
        # It may have ended between the status read and the event (the extension answers 410).
        status = await client.get_status(instance_id)
        if status.runtime_status not in _CANCELLABLE:
            return _already_finished(status)
        log.warning("could not raise cancel on %s: %s", instance_id, exc)
        return json_response(503, {"error": "the cancel could not be delivered; try again", "field": None},
                             {"Retry-After": "5"})
    return _accepted(req, instance_id, _links(req, instance_id))


def _already_finished(status) -> func.HttpResponse:
    return json_response(409, {"error": f"workflow is already {status.runtime_status.value}", "field": "instanceId"})
