"""Telemetry an operator can act on: spans and metrics through the OpenTelemetry API, exported to
Application Insights by azure-monitor-opentelemetry when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

- `configure()` (function_app.py calls it once, last, when the worker imports the app) starts setting
  up the exporter on a background thread, keeping what is recorded meanwhile for it (deferred.py),
  or does nothing at all: without a connection string no OpenTelemetry SDK, exporter or thread is
  loaded, and every instrument below is the API's no-op.
- Spans (tracing.py): one per Jobs API HTTP attempt (jobs_api.py), one per activity execution and one
  per HTTP route / Event Grid / queue invocation, the parents of the attempts made inside them.
- Metrics (metrics.py; names, units and attributes in `metrics.METRICS`): workflows started and
  ended, run duration, detection lag, polls per run, Jobs API calls, throttling and retry waits,
  token fetches, the run watcher's ticks, list calls and signals.
- Nothing recorded ever carries a token, a header value, a query string or an exception's text:
  attributes are names, numbers and codes from fixed vocabularies.

The queries an operator opens first, and which metric answers which question: docs/operations.md.
Importing this package costs no more than `os` and `logging`: cold start pays for telemetry only
when it is configured."""
from telemetry.setup import SETTINGS, configure

__all__ = ["SETTINGS", "configure"]
