"""One place that decides whether this process exports telemetry, and sets it up once.

Three outcomes of `configure()`:
- `off`: APPLICATIONINSIGHTS_CONNECTION_STRING is unset. Nothing is imported or started; spans and
  metrics go to the OpenTelemetry API's no-op providers.
- `worker`: PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true. The Python worker has already called
  `configure_azure_monitor` itself before indexing the app (azure-functions-python-worker,
  dispatcher `worker_init_request`); configuring twice would install a second set of providers.
- `azure_monitor`: this module calls `configure_azure_monitor` with the options below.

Options, and why:
- logging off: the Functions host already sends the worker's log records to the `traces` table; a
  second copy from the distro would double every line;
- requests / urllib / urllib3 instrumentation off: every Jobs API attempt already has its own span
  (jobs_api.py) with the Databricks facts an operator needs; the generic one would be a second
  `dependencies` row per attempt. Azure SDK calls (Key Vault, identity, queues) stay traced by
  azure-core, which redacts query strings itself;
- live metrics and performance counters off: the host reports both for the app already;
- resource detectors default to `azure_functions`, as the worker does: the distro's default also
  probes the VM metadata endpoint, which costs cold start on Functions and finds nothing there.
Sending with Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING=ClientId=...;Authorization=AAD, set
by infra/) is read by the exporter itself. Sampling follows the distro (5 traces per second unless
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG say otherwise); metrics are never sampled."""
from __future__ import annotations

import logging
import os
import threading
from typing import Mapping, MutableMapping, Optional

log = logging.getLogger(__name__)

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
RESOURCE_DETECTORS = "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"

OFF = "off"
WORKER = "worker"
AZURE_MONITOR = "azure_monitor"

# Settings this package reads beyond the Functions host's own (APPLICATIONINSIGHTS_CONNECTION_STRING
# and PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY are the host's and the worker's): none so far.
# Rows, when there are any, follow tools/settings_table: (name, default, meaning).
SETTINGS: tuple[tuple[str, str, str], ...] = ()

# azure-monitor-opentelemetry's library names (its `_constants._ALL_SUPPORTED_INSTRUMENTED_LIBRARIES`).
DISABLED_INSTRUMENTATIONS = ("requests", "urllib", "urllib3", "django", "fastapi", "flask", "psycopg2")

_lock = threading.Lock()
_mode: Optional[str] = None


def mode_for(environ: Mapping[str, str]) -> str:
    """What `configure` would do with these settings (no side effect)."""
    if not (environ.get(CONNECTION_STRING) or "").strip():
        return OFF
    if (environ.get(WORKER_TELEMETRY) or "").strip().lower() == "true":
        return WORKER
    return AZURE_MONITOR


def configure(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Set up telemetry export for this process once; later calls return the first outcome.
    Never raises: a process that cannot export telemetry still runs workflows."""
    global _mode
    env = os.environ if environ is None else environ
    with _lock:
        if _mode is not None:
            return _mode
        mode = mode_for(env)
        if mode == AZURE_MONITOR:
            try:
                _configure_azure_monitor(env)
            except Exception as exc:  # the text may quote the connection string: the type only
                log.warning("telemetry: Azure Monitor could not be set up (%s); no spans or metrics will be sent",
                            type(exc).__name__)
                mode = OFF
        _mode = mode
        return mode


def configured_mode() -> Optional[str]:
    """The outcome of `configure()`, or None before it ran."""
    return _mode


def _configure_azure_monitor(env: MutableMapping[str, str]) -> None:
    env.setdefault(RESOURCE_DETECTORS, "azure_functions")
    from azure.monitor.opentelemetry import configure_azure_monitor  # only here: heavy, and only when on

    configure_azure_monitor(
        connection_string=env[CONNECTION_STRING].strip(),
        disable_logging=True,
        enable_live_metrics=False,
        enable_performance_counters=False,
        instrumentation_options={name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS},
    )
    log.info("telemetry: spans and metrics are sent to Application Insights")
