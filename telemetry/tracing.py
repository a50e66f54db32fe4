"""Spans around the app's entry points: one per activity execution and one per HTTP route, Event
Grid or queue invocation. They are the parents of the Jobs API attempt spans made inside them
(jobs_api.py): an activity runs on one worker thread, and the blocking calls a route or trigger
makes go through `asyncio.to_thread`, which carries the current context along.

The spans are INTERNAL: the Functions host records the invocation itself (the `requests` table), and
with PYTHON_ENABLE_OPENTELEMETRY=true the worker makes the host's invocation the parent of these
spans. They carry the route template, never the URL (a `?code=` function key rides in its query);
a failure is recorded as its exception TYPE and, for Databricks errors, the status and error code,
never the exception's text.

Use as decorators directly above the function, below the Functions decorators:
    @bp.activity_trigger(input_name="request", activity="createJob")
    @traced_activity("createJob")
    def createJob(request): ..."""
from __future__ import annotations

import functools
import inspect
import logging
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from telemetry.providers import PerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "durable_databricks_jobs"
# Methods named as they are; anything else is "_OTHER" (OpenTelemetry HTTP semantic conventions).
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"})

_tracer = PerProvider(lambda provider: provider.get_tracer(TRACER_NAME))


def tracer() -> Any:
    """The app's tracer from the current tracer provider (the global one, or the early one while the
    exporter is being set up: telemetry/deferred.py)."""
    from telemetry import setup

    return _tracer.get(setup.tracer_provider())


def error_attributes(exc: BaseException) -> Dict[str, Any]:
    """What a span may say about a failure: its type, and a Databricks error's status and code."""
    attributes: Dict[str, Any] = {"error.type": type(exc).__name__}
    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        # Not http.response.status_code: this span is not the HTTP call (that is the attempt span
        # beneath it), and Application Insights keeps http.* out of customDimensions.
        attributes["databricks.status_code"] = status
    error_code = getattr(exc, "error_code", None)
    if error_code:
        from telemetry.metrics import code

        attributes["databricks.error_code"] = code(error_code)
    return attributes


@contextmanager
def span(name: str, attributes: Optional[Mapping[str, Any]] = None) -> Iterator[Any]:
    """An INTERNAL span made current for the block; an exception marks it failed (type only) and
    propagates. Never fails the block because of telemetry."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    try:
        context_manager = tracer().start_as_current_span(
            name, kind=SpanKind.INTERNAL, attributes=dict(attributes or {}),
            record_exception=False, set_status_on_exception=False)
        current = context_manager.__enter__()
    except Exception as exc:
        log.warning("telemetry: span %s not started (%s)", name, type(exc).__name__)
        yield None
        return
    try:
        yield current
    except BaseException as exc:
        try:
            current.set_attributes(error_attributes(exc))
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        finally:
            context_manager.__exit__(None, None, None)
        raise
    context_manager.__exit__(None, None, None)


def traced_activity(activity: str) -> Callable[[Callable], Callable]:
    """One span per execution of the activity `activity` (at-least-once: a repeat is a second span)."""
    attributes = {"workflow.activity": activity}

    def wrap(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with span(f"activity {activity}", attributes):
                return function(*args, **kwargs)
        return run
    return wrap


def traced_route(route: str, *, request_param: str = "req") -> Callable[[Callable], Callable]:
    """A span per invocation of an async HTTP function serving `route` (the template, e.g.
    "workflows/{instanceId}"), named "<METHOD> /api/<route>", with the response status."""
    template = "/api/" + route.lstrip("/")

    def wrap(function: Callable) -> Callable:
        if not inspect.iscoroutinefunction(function):
            raise TypeError("traced_route wraps async functions")

        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.get(request_param, args[0] if args else None)
            method = str(getattr(request, "method", "") or "").upper()
            method = method if method in KNOWN_METHODS else "_OTHER"
            with span(f"{method} {template}", {"http.request.method": method, "http.route": template}) as current:
                response = await function(*args, **kwargs)
                status = getattr(response, "status_code", None)
                if current is not None and isinstance(status, int):
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        from opentelemetry.trace import Status, StatusCode
                        current.set_status(Status(StatusCode.ERROR))
                return response
        return run
    return wrap


def traced_trigger(name: str, attributes: Optional[Mapping[str, Any]] = None) -> Callable[[Callable], Callable]:
    """A span per invocation of an async trigger function (Event Grid, queue)."""
    fixed = dict(attributes or {})

    def wrap(function: Callable) -> Callable:
        if not inspect.iscoroutinefunction(function):
            raise TypeError("traced_trigger wraps async functions")

        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            with span(name, fixed):
                return await function(*args, **kwargs)
        return run
    return wrap
