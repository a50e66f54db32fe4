"""Telemetry recorded while the Azure Monitor exporter is still being set up, kept and handed to it
once it is ready, so that neither the app's import nor its first invocations wait for the exporter.

Importing azure-monitor-opentelemetry and calling `configure_azure_monitor` takes about half a
second; on the path that indexes the functions it would more than double a cold start (issue 18).
`telemetry.setup` therefore does that on a background thread, and until it is done:
- spans come from an early OpenTelemetry SDK tracer provider (not the global one) whose only span
  processor keeps finished spans; at hand-over they are passed, in order, to the span processors of
  the provider the distro installed (its batch processor and exporter), and a span that ends after the
  hand-over goes there directly. Context, ids and parents are the SDK's own, so a span started early
  stays the parent of the ones started after;
- metric measurements are kept as (name, value, attributes) and replayed into the real instruments.
Both buffers are bounded (a burst before the exporter is ready cannot exhaust memory); what does not
fit is counted and reported once in the log. If the exporter cannot be set up, both are dropped."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, List, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

MAX_SPANS = 4096
MAX_MEASUREMENTS = 20000


class Deferred:
    """One process's buffers. `target_span_processor` None: still buffering."""

    def __init__(self, max_spans: int = MAX_SPANS, max_measurements: int = MAX_MEASUREMENTS):
        self._lock = threading.Lock()
        self._spans: List[Any] = []
        self._measurements: List[Tuple[str, float, Mapping[str, Any]]] = []
        self._max_spans = max_spans
        self._max_measurements = max_measurements
        self._span_target: Optional[Any] = None
        self._closed = False
        self.dropped_spans = 0
        self.dropped_measurements = 0
        self._provider: Optional[Any] = None

    # -- spans --------------------------------------------------------------------------------

    def tracer_provider(self) -> Any:
        """The early SDK tracer provider (built on first use: the SDK import is ~0.1 s, so the
        background thread builds it first and the app's first span normally finds it built)."""
        provider = self._provider
        if provider is None:
            with self._lock:
                if self._provider is None:
                    from opentelemetry.sdk.trace import TracerProvider

                    provider = TracerProvider()
                    provider.add_span_processor(_KeepingSpanProcessor(self))
                    self._provider = provider
                provider = self._provider
        return provider

    def span_ended(self, span: Any) -> None:
        with self._lock:
            target = self._span_target
            if target is None:
                if self._closed:
                    return
                if len(self._spans) < self._max_spans:
                    self._spans.append(span)
                else:
                    self.dropped_spans += 1
                return
        target.on_end(span)

    # -- metrics ------------------------------------------------------------------------------

    def measurement(self, name: str, value: float, attributes: Mapping[str, Any]) -> bool:
        """Keep a measurement; False once handed over (the caller records it on the real instrument)."""
        with self._lock:
            if self._span_target is not None or self._closed:
                return False
            if len(self._measurements) < self._max_measurements:
                self._measurements.append((name, value, dict(attributes)))
            else:
                self.dropped_measurements += 1
            return True

    # -- the end of buffering -----------------------------------------------------------------

    def hand_over(self, span_processor: Any, record: Callable[[str, float, Mapping[str, Any]], None]) -> None:
        """Pass what was kept to the real pipeline: spans to `span_processor.on_end`, measurements to
        `record`. Under the lock, so nothing recorded meanwhile can overtake or be missed."""
        with self._lock:
            spans, self._spans = self._spans, []
            measurements, self._measurements = self._measurements, []
            self._span_target = span_processor
            for span in spans:
                try:
                    span_processor.on_end(span)
                except Exception as exc:  # never the text: it may quote a connection string
                    log.warning("telemetry: an early span was not exported (%s)", type(exc).__name__)
            for name, value, attributes in measurements:
                record(name, value, attributes)
        self._report_drops()

    def discard(self) -> None:
        """The exporter could not be set up: drop what was kept and keep nothing more."""
        with self._lock:
            self._closed = True
            self._spans, self._measurements = [], []

    def _report_drops(self) -> None:
        if self.dropped_spans or self.dropped_measurements:
            log.warning("telemetry: %d spans and %d metric measurements recorded before the exporter was ready "
                        "did not fit the start-up buffer and were dropped", self.dropped_spans,
                        self.dropped_measurements)


class _KeepingSpanProcessor:
    """The early provider's span processor: finished spans go to `Deferred.span_ended`. Duck-typed
    (the SDK calls these four methods), so this module imports nothing at load."""

    def __init__(self, deferred: Deferred):
        self._deferred = deferred

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def _on_ending(self, span: Any) -> None:  # SDK >= 1.39 calls it on processors that define it
        return None

    def on_end(self, span: Any) -> None:
        self._deferred.span_ended(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
