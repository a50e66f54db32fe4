"""Telemetry for every Jobs API HTTP attempt, built from the client's `HttpAttempt` (databricks_jobs/
client.py calls the observer once per attempt, in the calling thread, right after the attempt).

Each attempt becomes a CLIENT span, started back-dated by the attempt's elapsed time so it sits where
the request really was in the trace, and ended at once; its parent is whatever span is current in
that thread (the activity, the HTTP route). Named "<METHOD> /api/<version>/<path>": the client's
paths are templates already (ids travel in the query or body), and any numeric segment is replaced
by {id} all the same. Attributes follow the OpenTelemetry HTTP client conventions (method, url.full
WITHOUT the query, server address and port, status, resend count) plus Databricks' own facts: the
attempt number, the error code, the retry wait and the request id it sent. The token, the headers and
the query are never seen here, so they cannot be recorded.

Metrics per attempt: databricks.api.calls, databricks.api.duration, and for 429/503
databricks.api.throttled; every announced retry wait goes to databricks.api.retry_wait."""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

from telemetry.metrics import code, record
from telemetry.tracing import tracer

log = logging.getLogger(__name__)

THROTTLED_STATUSES = frozenset({429, 503})
_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|$)")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def endpoint_template(path: str) -> str:
    """The API path without ids: "jobs/runs/get" stays, "jobs/123/x" becomes "jobs/{id}/x"."""
    path = (path or "").split("?", 1)[0].strip("/")
    return _NUMERIC_SEGMENT.sub("/{id}", "/" + path).lstrip("/")[:128]


def attempt_observer(host: str, api_version: str) -> Callable[[Any], None]:
    """The `attempt_observer` for a JobsClient talking to `host` (the workspace URL from settings)
    with Jobs API `api_version`."""
    parts = urlsplit(host)
    scheme = parts.scheme or "https"
    server = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    origin = f"{scheme}://{server}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")

    def observe(attempt: Any) -> None:
        try:
            _observe(attempt, origin, server, port, api_version)
        except Exception as exc:  # telemetry never breaks a call
            log.warning("telemetry: Jobs API attempt not recorded (%s)", type(exc).__name__)

    return observe


def _observe(attempt: Any, origin: str, server: str, port: int, api_version: str) -> None:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    endpoint = endpoint_template(attempt.path)
    method = code(attempt.method, "_OTHER").upper()
    url_template = f"/api/{api_version}/{endpoint}"
    status: Optional[int] = attempt.status
    error_code = code(getattr(attempt, "error_code", None), "UNKNOWN") if getattr(attempt, "error_code", None) else None
    failed = status is None or status >= 400

    attributes: Dict[str, Any] = {
        "http.request.method": method,
        "url.template": url_template,
        "url.full": origin + url_template,
        "server.address": server,
        "server.port": port,
        "databricks.endpoint": endpoint,
        "databricks.attempt": int(attempt.attempt),
    }
    if attempt.attempt > 1:
        attributes["http.request.resend_count"] = int(attempt.attempt) - 1
    if status is not None:
        attributes["http.response.status_code"] = int(status)
    if failed:
        attributes["error.type"] = str(status) if status is not None else _transport_type(attempt.error_type)
    if error_code:
        attributes["databricks.error_code"] = error_code
    if attempt.retry_wait is not None:
        attributes["databricks.retry_wait_seconds"] = float(attempt.retry_wait)
    if attempt.request_id and _REQUEST_ID.fullmatch(str(attempt.request_id)):
        attributes["databricks.request_id"] = str(attempt.request_id)

    end = time.time_ns()
    start = end - max(int(attempt.elapsed_seconds * 1e9), 0)
    span = tracer().start_span(f"{method} {url_template}", kind=SpanKind.CLIENT, attributes=attributes,
                               start_time=start)
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=end)

    status_code = int(status) if status is not None else 0
    record("databricks.api.calls", 1, {"endpoint": endpoint, "method": method, "status_code": status_code,
                                       "error_code": error_code})
    record("databricks.api.duration", max(attempt.elapsed_seconds, 0.0),
           {"endpoint": endpoint, "method": method, "status_code": status_code})
    if status in THROTTLED_STATUSES:
        record("databricks.api.throttled", 1, {"endpoint": endpoint, "status_code": status_code})
    if attempt.retry_wait is not None:
        record("databricks.api.retry_wait", float(attempt.retry_wait), {"endpoint": endpoint, "status_code": status_code})


def _transport_type(error_type: Optional[str]) -> str:
    # The client reports e.g. "ConnectionError (ProtocolError)": exception type names only.
    return code((error_type or "").split(" ", 1)[0], "TransportError")
