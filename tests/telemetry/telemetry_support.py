"""Reading what the app records: the OpenTelemetry SDK's in-memory span exporter and metric reader,
installed as the process's global providers for one test and removed after it.

The API lets a process set its global providers only once; tests need a fresh pair each, so
`installed()` resets the API's private set-once guards (and the proxy meter provider, which
would otherwise keep handing out the previous test's instruments). Test-only: the app itself
never swaps providers."""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Look like real secrets, so a leak would be obvious; tests assert they appear nowhere.
SECRET_TOKEN = "dapi0123456789abcdef0123456789abcdef-TELEMETRY-SECRET"
FUNCTION_KEY = "fnkey-TELEMETRY-SECRET-0123456789"

# What the `workflow ended` span of a completed workflow carries (docs/operations.md queries them).
WORKFLOW_END_ATTRIBUTES = {
    "workflow.instance_id", "workflow.result_state", "workflow.reason", "workflow.failed", "workflow.signals",
    "workflow.polls", "workflow.run_duration_seconds", "workflow.detection_lag_seconds", "databricks.job_id",
    "databricks.run_id"}

REQUEST = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
           "existingClusterId": "0923-164208-meows279"}


def _reset_globals() -> None:
    import opentelemetry.metrics._internal as metrics_api
    import opentelemetry.trace as trace_api
    from opentelemetry.util._once import Once

    trace_api._TRACER_PROVIDER_SET_ONCE = Once()
    trace_api._TRACER_PROVIDER = None
    metrics_api._METER_PROVIDER_SET_ONCE = Once()
    metrics_api._METER_PROVIDER = None
    metrics_api._PROXY_METER_PROVIDER = metrics_api._ProxyMeterProvider()


class Recorded:
    """What the app recorded while installed: finished spans and collected metric points."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self._metrics: Optional[Any] = None

    # -- spans --------------------------------------------------------------------------------

    def spans(self, name: Optional[str] = None, prefix: Optional[str] = None) -> List[ReadableSpan]:
        found = list(self.exporter.get_finished_spans())
        if name is not None:
            found = [s for s in found if s.name == name]
        if prefix is not None:
            found = [s for s in found if s.name.startswith(prefix)]
        return found

    def span_text(self) -> str:
        """Every span as JSON: names, attributes, events, status, resource."""
        return "\n".join(s.to_json() for s in self.exporter.get_finished_spans())

    # -- metrics ------------------------------------------------------------------------------

    def collect(self) -> None:
        self._metrics = self.reader.get_metrics_data()

    def points(self, name: str) -> List[Any]:
        """Data points of metric `name` (collected once per test, on first use)."""
        if self._metrics is None:
            self.collect()
        found = []
        for resource_metrics in (self._metrics.resource_metrics if self._metrics else ()):
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's points (or of a histogram's counts) whose attributes include these."""
        value = 0.0
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                value += point.count if hasattr(point, "count") else point.value
        return value

    def histogram(self, name: str, **attributes: Any) -> Dict[str, float]:
        """{"count", "sum", "min", "max"} over a histogram's points matching these attributes."""
        points = [p for p in self.points(name) if all(p.attributes.get(k) == v for k, v in attributes.items())]
        if not points:
            return {"count": 0, "sum": 0.0, "min": None, "max": None}
        return {"count": sum(p.count for p in points), "sum": sum(p.sum for p in points),
                "min": min(p.min for p in points), "max": max(p.max for p in points)}

    def attribute_sets(self, name: str) -> List[dict]:
        return [dict(p.attributes) for p in self.points(name)]

    def metric_text(self) -> str:
        if self._metrics is None:
            self.collect()
        return self._metrics.to_json() if self._metrics else ""


@contextmanager
def installed() -> Iterator[Recorded]:
    recorded = Recorded()
    import opentelemetry.metrics as metrics_api
    import opentelemetry.trace as trace_api

    _reset_globals()
    trace_api.set_tracer_provider(recorded.tracer_provider)
    metrics_api.set_meter_provider(recorded.meter_provider)
    try:
        yield recorded
    finally:
        _reset_globals()
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


def parent_id(span: ReadableSpan) -> Optional[int]:
    return span.parent.span_id if span.parent is not None else None


def as_json(value: Any) -> str:
    return json.dumps(value, default=str)
