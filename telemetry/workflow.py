"""What the orchestrator reports when a workflow ends: the workflow.ended count, run duration,
detection lag and polls, and one `workflow ended` span carrying that workflow's own numbers (for
"which workflows were slowest to notice", which a histogram's sum and count cannot answer).

Orchestrator code is replayed: call these only when `not context.is_replaying`, at the workflow's
end, so each workflow end is reported once. They read the context and its history, never change
them, and never raise.

Detection lag = when the workflow saw the terminal state - the run's end_time on Databricks. The
moment it saw it is read from the history, deterministically: the getJobRun completion that first
carried this terminal state, and the orchestrator episode that consumed it (the OrchestratorStarted
after it); the episode's time is when the workflow acted on it."""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, Optional

from telemetry.metrics import code, flag, record
from telemetry.tracing import span

log = logging.getLogger(__name__)

TASK_COMPLETED = 5  # HistoryEventType
ORCHESTRATOR_STARTED = 12
NO_RESULT_STATE = "none"  # workflow.ended's result_state when the orchestration itself failed
TERMINAL_LIFE_CYCLE_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})

_API_ERROR = r"Databricks API error (\d{1,3}) ([A-Z_]*)"  # patterns compile on first use, not at import
# The fixed prefixes activity errors start with (databricks_jobs.errors, activities.notifications,
# the host's function timeout), as reasons.
_KIND_REASONS = (
    ("Credential temporarily unavailable:", "CREDENTIAL_UNAVAILABLE"),
    ("Credential error:", "CREDENTIAL_ERROR"),
    ("Configuration error:", "CONFIGURATION_ERROR"),
    ("Notification target temporarily unavailable:", "NOTIFICATION_UNAVAILABLE"),
    ("Notification refused:", "NOTIFICATION_REFUSED"),
    ("Invalid activity input:", "INVALID_ACTIVITY_INPUT"),
    ("Timeout value of ", "FUNCTION_TIMEOUT"),
)
_STEP = r"([A-Za-z][A-Za-z0-9_]{0,63}): "


def failure_reason(text: str) -> Dict[str, str]:
    """{"reason", "step"} of a failed workflow's error text ("<activity>: <error>")."""
    text = text or ""
    step = re.match(_STEP, text)
    match = re.search(_API_ERROR, text)
    if match:
        reason = code(match.group(2)) if match.group(2) else f"HTTP_{match.group(1)}"
    else:
        reason = next((name for prefix, name in _KIND_REASONS if prefix in text), "OTHER")
    return {"reason": reason, "step": step.group(1) if step else "unknown"}


def workflow_ended(context: Any, progress: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """Report a workflow that completed with `outputs` (its resultState is the caller's)."""
    try:
        _ended(context, progress, outputs)
    except Exception as exc:
        log.warning("telemetry: workflow end not recorded (%s)", type(exc).__name__)


def workflow_failed(context: Any, progress: Mapping[str, Any], error: str) -> None:
    """Report a workflow whose orchestration failed with `error` (the WorkflowFailed text)."""
    try:
        why = failure_reason(error)
        attributes = {"result_state": NO_RESULT_STATE, "failed": "true", **why}
        record("workflow.ended", 1, attributes)
        _workflow_span(context, progress, attributes, {}, failed=True)
    except Exception as exc:
        log.warning("telemetry: workflow failure not recorded (%s)", type(exc).__name__)


def _ended(context: Any, progress: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    result_state = code(outputs.get("resultState"), NO_RESULT_STATE)
    stopped = "cancelRequested" if outputs.get("cancelRequested") else (
        "deadlineExceeded" if outputs.get("deadlineExceeded") else None)
    reason = stopped or code(outputs.get("databricksResultState") or result_state)
    record("workflow.ended", 1, {"result_state": result_state, "failed": "false", "reason": reason})
    signals = flag(progress.get("signals"))
    numbers: Dict[str, Any] = {"workflow.polls": int(progress.get("polls") or 0)}
    record("workflow.polls", numbers["workflow.polls"], {"result_state": result_state, "signals": signals})

    run = progress.get("run") or {}
    start_ms, end_ms = _ms(run.get("startTime")), _ms(run.get("endTime"))
    if start_ms and end_ms and end_ms >= start_ms:
        numbers["workflow.run_duration_seconds"] = (end_ms - start_ms) / 1000.0
        record("workflow.run.duration", numbers["workflow.run_duration_seconds"], {"result_state": result_state})
    if end_ms and not stopped:
        seen = noticed_at(context, progress.get("runId"), end_ms)
        if seen is not None:
            lag = max(seen.timestamp() - end_ms / 1000.0, 0.0)
            numbers["workflow.detection_lag_seconds"] = lag
            record("workflow.detection.lag", lag, {"result_state": result_state, "signals": signals})
    _workflow_span(context, progress, {"result_state": result_state, "failed": "false", "reason": reason,
                                       "signals": signals}, numbers, failed=False)


def noticed_at(context: Any, run_id: Any, end_ms: int) -> Optional[datetime]:
    """When the workflow acted on the first getJobRun result showing run `run_id` ended at `end_ms`."""
    found: Optional[datetime] = None
    for event in getattr(context, "histories", None) or ():
        event_type = getattr(event, "event_type", None)
        if found is not None and event_type == ORCHESTRATOR_STARTED:
            return _utc(event.timestamp)
        if found is None and event_type == TASK_COMPLETED and _shows_end(getattr(event, "Result", None), run_id,
                                                                       end_ms):
            found = _utc(event.timestamp)
    if found is not None:
        return found
    now = getattr(context, "current_utc_datetime", None)
    return _utc(now) if isinstance(now, datetime) else None


def _shows_end(result: Any, run_id: Any, end_ms: int) -> bool:
    if isinstance(result, str):
        if '"endTime"' not in result:
            return False
        try:
            result = json.loads(result)
        except ValueError:
            return False
    if not isinstance(result, dict) or result.get("runId") != run_id or _ms(result.get("endTime")) != end_ms:
        return False
    status = result.get("status") or {}
    return result.get("lifeCycleState") in TERMINAL_LIFE_CYCLE_STATES or status.get("state") == "TERMINATED"


def _workflow_span(context: Any, progress: Mapping[str, Any], attributes: Mapping[str, Any],
                   numbers: Mapping[str, Any], *, failed: bool) -> None:
    facts: Dict[str, Any] = {f"workflow.{k}": v for k, v in attributes.items()}
    facts.update(numbers)
    instance_id = getattr(context, "instance_id", None)
    if instance_id:
        facts["workflow.instance_id"] = str(instance_id)
    for key, name in (("jobId", "databricks.job_id"), ("runId", "databricks.run_id")):
        if isinstance(progress.get(key), int):
            facts[name] = progress[key]
    with span("workflow ended", facts) as current:
        if failed and current is not None:
            from opentelemetry.trace import Status, StatusCode
            current.set_status(Status(StatusCode.ERROR, str(attributes.get("reason", ""))))


def _ms(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
