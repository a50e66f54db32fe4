"""`GET /api/workflows/{instanceId}/results/{taskKey}`: the whole output of one task of a finished
workflow, whose inline copy in the outputs may have been cut (workflow/results.py).

The answer is JSON: `{"taskKey", "runId", "notebookResult"?, "error"?, "errorTrace"?,
"notebookResultTruncatedAtSource"?}`, each field whole (Databricks itself keeps only the first 5 MB
of an exit value). The owner only: another caller's workflow answers 404 as an unknown one does
(the status route's check). A `Range: bytes=...` header is served as 206 with that slice only, read
from storage alone, so a caller can take a 5 MB result in pieces."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import azure.durable_functions as df
import azure.functions as func

from telemetry.tracing import traced_route
from triggers import access
from triggers.http_api import _existing_instance
from triggers.http_responses import ROUTE_METHODS, json_response, method_not_allowed
from triggers.starter import RUNNING_STATUSES
from workflow import results
from workflow.inputs import InputError

log = logging.getLogger(__name__)

bp = df.Blueprint()

ROUTE = results.RESULTS_ROUTE
# Databricks task keys: letters, digits, `_` and `-`, at most 100.
TASK_KEY_PATTERN = re.compile(r"^[\w-]{1,100}$", re.ASCII)
JSON_TYPE = "application/json; charset=utf-8"


def _not_found(message: str) -> func.HttpResponse:
    return json_response(404, {"error": message, "field": "taskKey"})


@bp.route(route=ROUTE, methods=ROUTE_METHODS)
@bp.durable_client_input(client_name="client")
@traced_route(ROUTE)
async def get_task_result(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if req.method.upper() != "GET":
        return method_not_allowed("GET")
    try:
        instance_id, status = await _existing_instance(req, client, await access.caller_of(req))
        task_key = req.route_params.get("taskKey", "")
        if not TASK_KEY_PATTERN.match(task_key):
            raise InputError("'taskKey' is not a valid Databricks task key", "taskKey")
    except access.Denied as denied:
        return denied.response
    except InputError as error:
        return json_response(error.status, error.to_dict())
    runtime = status.runtime_status
    if runtime in RUNNING_STATUSES or runtime == df.OrchestrationRuntimeStatus.Suspended:
        return json_response(409, {"error": f"workflow is {runtime.value}: its results come when it ends",
                                   "field": "instanceId"}, {"Retry-After": "10"})
    outputs = status.output if isinstance(status.output, dict) else {}
    entry = next((t for t in outputs.get("tasks") or () if isinstance(t, dict) and t.get("taskKey") == task_key), None)
    if entry is None:
        return _not_found(f"workflow '{instance_id}' has no output of task '{task_key}'")
    if not entry.get("resultPath"):
        # Nothing was cut: the outputs hold all of it.
        return _answer(req, json.dumps(results.document_from_entry(entry), ensure_ascii=False).encode("utf-8"))
    # Blob I/O blocks: off the event loop, like token validation.
    return await asyncio.to_thread(_stored, req, results.blob_name(instance_id, task_key, int(entry["runId"])),
                                   task_key)


def _answer(req: func.HttpRequest, body: bytes) -> func.HttpResponse:
    try:
        wanted = results.parse_range(req.headers.get("Range"), len(body))
    except ValueError as error:
        return _unsatisfiable(error, len(body))
    if wanted is None:
        return func.HttpResponse(body, status_code=200, headers={"Accept-Ranges": "bytes"}, mimetype="application/json",
                                 charset="utf-8")
    offset, length = wanted
    return _partial(body[offset:offset + length], offset, length, len(body))


def _stored(req: func.HttpRequest, name: str, task_key: str) -> func.HttpResponse:
    from messaging import result_blobs

    try:
        size = result_blobs.size(name)
        if size is None:
            return _not_found(f"the kept output of task '{task_key}' no longer exists")
        try:
            wanted = results.parse_range(req.headers.get("Range"), size)
        except ValueError as error:
            return _unsatisfiable(error, size)
        offset, length = wanted if wanted is not None else (0, size)
        # The SDK reads it in pieces of READ_CHUNK_BYTES; the answer holds what was asked for,
        # which the kept copy bounds (5 MB per field).
        body = b"".join(result_blobs.read_chunks(name, offset, length))
    except result_blobs.ResultStoreConfigurationError as error:
        log.error("results route: %s", error)
        return json_response(503, {"error": str(error), "setting": "WORKFLOW_RESULTS_CONNECTION"},
                             {"Retry-After": "300"})
    except result_blobs.ResultStoreError as error:
        log.warning("results route: %s", error)
        return json_response(503, {"error": str(error), "setting": None}, {"Retry-After": "30"})
    if wanted is None:
        return func.HttpResponse(body, status_code=200, headers={"Accept-Ranges": "bytes"}, mimetype="application/json",
                                 charset="utf-8")
    return _partial(body, offset, length, size)


def _partial(body: bytes, offset: int, length: int, size: int) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=206, mimetype="application/json", charset="utf-8", headers={
        "Accept-Ranges": "bytes", "Content-Range": f"bytes {offset}-{offset + length - 1}/{size}"})


def _unsatisfiable(error: ValueError, size: int) -> func.HttpResponse:
    return json_response(416, {"error": f"'Range' cannot be served: {error}", "field": "Range"},
                         {"Content-Range": f"bytes */{size}"})
