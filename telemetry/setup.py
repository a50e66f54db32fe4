"""One place that decides whether this process exports telemetry, and sets it up once.

Three outcomes of `configure()`:
- `off`: APPLICATIONINSIGHTS_CONNECTION_STRING is unset. Nothing is imported or started; spans and
  metrics go to the OpenTelemetry API's no-op providers.
- `worker`: PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true. The Python worker has already called
  `configure_azure_monitor` itself before indexing the app (azure-functions-python-worker,
  dispatcher `worker_init_request`); configuring twice would install a second set of providers.
- `azure_monitor`: this module calls `configure_azure_monitor` with the options below, on a
  background thread (`telemetry-setup`): importing the distro and setting it up takes ~0.5 s, which on
  the path that indexes the functions would more than double a cold start. Until it is done, spans and
  metric measurements are kept (deferred.py) and handed to the exporter once it exists; nothing waits
  for it, neither the import nor the first invocation. `wait_until_ready()` is for tests and tools.

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
from typing import Any, Callable, Mapping, MutableMapping, Optional

from telemetry.deferred import Deferred

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
_deferred: Optional[Deferred] = None  # set while the exporter is being set up; None once handed over
_ready = threading.Event()  # set when the background set-up has ended (either way)
THREAD_NAME = "telemetry-setup"


def mode_for(environ: Mapping[str, str]) -> str:
    """What `configure` would do with these settings (no side effect)."""
    if not (environ.get(CONNECTION_STRING) or "").strip():
        return OFF
    if (environ.get(WORKER_TELEMETRY) or "").strip().lower() == "true":
        return WORKER
    return AZURE_MONITOR


def configure(environ: Optional[MutableMapping[str, str]] = None,
              set_up: Optional[Callable[[MutableMapping[str, str]], None]] = None) -> str:
    """Set up telemetry export for this process once; later calls return the first outcome. With
    Azure Monitor the set-up runs on a background thread and this returns at once. Never raises: a
    process that cannot export telemetry still runs workflows. `set_up` replaces the distro (tests)."""
    global _mode, _deferred
    env = os.environ if environ is None else environ
    with _lock:
        if _mode is not None:
            return _mode
        mode = mode_for(env)
        _mode = mode
        if mode != AZURE_MONITOR:
            _ready.set()
            return mode
        _deferred = Deferred()
        # A daemon: a worker that exits must not wait for an exporter still importing.
        threading.Thread(target=_set_up_in_background, args=(env, set_up or _configure_azure_monitor, _deferred),
                         name=THREAD_NAME, daemon=True).start()
        return mode


def _set_up_in_background(env: MutableMapping[str, str], set_up: Callable[[MutableMapping[str, str]], None],
                          deferred: Deferred) -> None:
    global _mode, _deferred
    try:
        deferred.tracer_provider()  # the SDK first (~0.1 s): the app's first spans find it built
        set_up(env)
        from opentelemetry import trace

        from telemetry import metrics

        provider = trace.get_tracer_provider()
        processor = getattr(provider, "_active_span_processor", None)  # the SDK provider's processors
        if processor is None:
            raise TypeError("the global tracer provider is not the OpenTelemetry SDK's")
        deferred.hand_over(processor, metrics.record_now)
        _deferred = None
    except Exception as exc:  # the text may quote the connection string: the type only
        log.warning("telemetry: Azure Monitor could not be set up (%s); no spans or metrics will be sent",
                    type(exc).__name__)
        deferred.discard()
        _deferred = None
        _mode = OFF
    finally:
        _ready.set()


def configured_mode() -> Optional[str]:
    """The outcome of `configure()`, or None before it ran (azure_monitor from the start of the
    background set-up; off if it failed)."""
    return _mode


def wait_until_ready(timeout: Optional[float] = None) -> bool:
    """Block until the background set-up has ended (tests, tools; never the app's own path)."""
    return _ready.wait(timeout)


def pending() -> Optional[Deferred]:
    """The buffers while the exporter is being set up; None when spans and metrics go to the global
    providers (set up, off, or run by the worker)."""
    return _deferred


def tracer_provider() -> Any:
    """Where the app's spans go now: the early provider while the exporter is being set up, else the
    global one."""
    deferred = _deferred
    if deferred is not None:
        return deferred.tracer_provider()
    from opentelemetry import trace

    return trace.get_tracer_provider()


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
