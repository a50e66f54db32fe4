"""The app's metrics: one catalog (`METRICS`) and one small function per thing worth counting.

Instruments are created through the OpenTelemetry API (`metrics.get_meter_provider()`), so without a
configured SDK every call is a no-op. They are built on first use and again whenever the global
meter provider changes (tests install in-memory providers), and `opentelemetry.metrics` itself is
imported on first use, so importing this module costs cold start nothing.

Attribute values come from fixed vocabularies (codes, names, numbers); `code()` keeps any value from
outside (a Databricks error code, a result state) to the shape of a code, so a response body can
never smuggle text, let alone a secret, into a metric. Every function here swallows its own
failures: telemetry never breaks a call, an activity or an orchestration."""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from telemetry.providers import PerProvider

log = logging.getLogger(__name__)

METER_NAME = "durable_databricks_jobs"

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"


class Metric:
    """One metric of the catalog. A plain class: a dataclass would cost cold start for nothing."""

    __slots__ = ("name", "kind", "unit", "attributes", "description")

    def __init__(self, name: str, kind: str, unit: str, attributes: Tuple[str, ...], description: str):
        self.name = name
        self.kind = kind  # COUNTER | HISTOGRAM | GAUGE
        self.unit = unit  # UCUM: s, {workflow}, ...
        self.attributes = attributes
        self.description = description

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self.kind!r}, {self.unit!r}, {self.attributes!r})"


# Callers of the workflow (the `caller` attribute).
CALLERS = ("http", "eventgrid", "queue")

METRICS: Tuple[Metric, ...] = (
    Metric("workflow.started", COUNTER, "{workflow}", ("caller",),
           "Workflows started, by entry point. A repeated delivery or Idempotency-Key that finds its workflow "
           "is not counted."),
    Metric("workflow.ended", COUNTER, "{workflow}", ("result_state", "failed", "reason", "step"),
           "Workflows that ended. result_state is the caller's (SUCCESS, SUCCESS_WITH_FAILURES, FAILED, TIMEDOUT, "
           "CANCELED, SKIPPED), or none when the orchestration itself failed (failed=true). reason: Databricks' own "
           "result (e.g. FAILED, MAXIMUM_CONCURRENT_RUNS_REACHED, INTERNAL_ERROR), cancelRequested or "
           "deadlineExceeded; for a failed orchestration the Databricks error code (PERMISSION_DENIED, ...) or the "
           "error kind (CREDENTIAL_ERROR, CONFIGURATION_ERROR, ...), with step = the activity that failed."),
    Metric("workflow.run.duration", HISTOGRAM, "s", ("result_state",),
           "How long the Databricks run took, from its start_time to its end_time as Databricks reports them."),
    Metric("workflow.detection.lag", HISTOGRAM, "s", ("result_state", "signals"),
           "From the run's end on Databricks (end_time) to the moment the workflow saw the terminal state. "
           "signals=true: the run watcher or webhooks could wake the workflow; false: only its own polls. "
           "Not recorded for runs the workflow cancelled (cancel, deadline)."),
    Metric("workflow.polls", HISTOGRAM, "{poll}", ("result_state", "signals"),
           "runs/get polls one workflow made for its run, across continue_as_new."),
    Metric("databricks.api.calls", COUNTER, "{request}", ("endpoint", "method", "status_code", "error_code"),
           "Jobs API HTTP attempts (a retried call counts each attempt). endpoint is the path without the version "
           "(jobs/runs/get); status_code 0 means no HTTP answer (connection refused, reset, timeout); error_code is "
           "Databricks' (REQUEST_LIMIT_EXCEEDED, RESOURCE_DOES_NOT_EXIST, ...) on error answers."),
    Metric("databricks.api.duration", HISTOGRAM, "s", ("endpoint", "method", "status_code"),
           "Time of one Jobs API HTTP attempt, request sent to answer read."),
    Metric("databricks.api.throttled", COUNTER, "{request}", ("endpoint", "status_code"),
           "Jobs API attempts Databricks answered with 429 or 503 (throttled or temporarily unavailable)."),
    Metric("databricks.api.retry_wait", HISTOGRAM, "s", ("endpoint", "status_code"),
           "Waits before the client retried a Jobs API call (Retry-After, or backoff), by the answer that caused it."),
    Metric("databricks.token.fetches", COUNTER, "{fetch}", ("auth_mode", "outcome"),
           "Tokens obtained from Entra ID (managed_identity, default_azure_credential) or a PAT read from Key Vault "
           "(key_vault); outcome success or failure. pat mode reads its token from settings and fetches none."),
    Metric("workflow.watcher.ticks", COUNTER, "{tick}", ("result",),
           "Run watcher timer ticks: idle (no awaited runs), not_due, listed, refused (Databricks refused the list "
           "for good; every awaited workflow is told), failed (a transient error; the next tick tries again)."),
    Metric("workflow.watcher.list_calls", COUNTER, "{request}", (),
           "runs/list pages the run watcher read."),
    Metric("workflow.watcher.signals", COUNTER, "{signal}", ("outcome",),
           "runFinished events the watcher raised: delivered, gone (the workflow had ended; the run is forgotten), "
           "failed (not delivered; tried again next tick)."),
    Metric("workflow.watcher.awaited_runs", GAUGE, "{run}", (),
           "Runs the watcher's registry holds at a tick: workflows waiting for a run on Databricks."),
)

BY_NAME: Dict[str, Metric] = {m.name: m for m in METRICS}

_CODE = r"[A-Za-z][A-Za-z0-9_.]{0,63}"  # compiled (and cached by re) on first use, not at import


def code(value: Any, default: str = "OTHER") -> str:
    """`value` if it looks like a code (letters, digits, _ and ., at most 64), else `default`."""
    text = str(value) if value is not None else ""
    return text if re.fullmatch(_CODE, text) else default


def flag(value: Any) -> str:
    return "true" if value else "false"


class _Instruments:
    def __init__(self, meter: Any):
        self.by_name: Dict[str, Any] = {}
        for metric in METRICS:
            create = {COUNTER: meter.create_counter, HISTOGRAM: meter.create_histogram,
                      GAUGE: meter.create_gauge}[metric.kind]
            self.by_name[metric.name] = create(metric.name, unit=metric.unit, description=metric.description)


_instruments = PerProvider(lambda provider: _Instruments(provider.get_meter(METER_NAME)))


def instrument(name: str) -> Any:
    """The instrument `name` of the current global meter provider."""
    from opentelemetry import metrics

    return _instruments.get(metrics.get_meter_provider()).by_name[name]


def record(name: str, value: float, attributes: Optional[Mapping[str, Any]] = None) -> None:
    """Add to a counter, record into a histogram or set a gauge; never raises. While the exporter is
    being set up the measurement is kept and recorded when it is ready (telemetry/deferred.py)."""
    try:
        metric = BY_NAME[name]
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        unknown = set(attrs) - set(metric.attributes)
        if unknown:
            raise ValueError(f"{name} has no attribute {sorted(unknown)}")
        from telemetry import setup

        deferred = setup.pending()
        if deferred is not None and deferred.measurement(name, value, attrs):
            return
        record_now(name, value, attrs)
    except Exception as exc:
        log.warning("telemetry: metric %s not recorded (%s)", name, type(exc).__name__)


def record_now(name: str, value: float, attrs: Mapping[str, Any]) -> None:
    """Record a checked measurement on the current global provider's instrument."""
    try:
        metric = BY_NAME[name]
        target = instrument(name)
        if metric.kind == COUNTER:
            target.add(value, attrs)
        elif metric.kind == HISTOGRAM:
            target.record(value, attrs)
        else:
            target.set(value, attrs)
    except Exception as exc:
        log.warning("telemetry: metric %s not recorded (%s)", name, type(exc).__name__)


# -- what callers record -----------------------------------------------------------------------

def workflow_started(caller: str) -> None:
    """A workflow was started by `caller` (http, eventgrid, queue); not for a duplicate start."""
    record("workflow.started", 1, {"caller": caller if caller in CALLERS else "other"})


def token_fetched(auth_mode: str, ok: bool) -> None:
    record("databricks.token.fetches", 1, {"auth_mode": code(auth_mode), "outcome": "success" if ok else "failure"})


def watcher_tick(outcome: Optional[Mapping[str, Any]], *, failed: bool = False) -> None:
    """One run watcher tick from what `watch_once` returned (None with failed=True: it raised)."""
    if failed or outcome is None:
        record("workflow.watcher.ticks", 1, {"result": "failed"})
        return
    if not outcome.get("awaited"):
        result = "idle"
    elif not outcome.get("listed"):
        result = "not_due"
    else:
        result = "refused" if outcome.get("refused") else "interrupted" if outcome.get("interrupted") else "listed"
    record("workflow.watcher.ticks", 1, {"result": result})
    record("workflow.watcher.awaited_runs", int(outcome.get("awaited") or 0))
    if not outcome.get("listed"):
        return
    if outcome.get("calls"):
        record("workflow.watcher.list_calls", int(outcome["calls"]))
    told, gone = len(outcome.get("told") or ()), len(outcome.get("forgotten") or ())
    undelivered = max(int(outcome.get("signaled") or 0) - told - gone, 0)
    for name, count in (("delivered", told), ("gone", gone), ("failed", undelivered)):
        if count:
            record("workflow.watcher.signals", count, {"outcome": name})
