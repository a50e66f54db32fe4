"""FROZEN copy of release 1.0's workflow/policy.py (see orchestrators/v1/__init__.py).

Pure policy for the create-job-and-run workflow: run-state classification, poll schedule,
task selection and error classification. No Azure imports, no I/O, no clock: the orchestrator
passes everything in, so this module is deterministic and unit-testable on its own."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

# Databricks documents these three life-cycle states as terminal; everything else (QUEUED,
# PENDING, RUNNING, TERMINATING, BLOCKED, WAITING_FOR_RETRY and any state added later) keeps
# polling, bounded by the workflow deadline.
TERMINAL_LIFE_CYCLE_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
# Jobs API 2.2 `status.state`: only TERMINATED is terminal.
TERMINAL_STATUS_STATES = frozenset({"TERMINATED"})

SUCCESS = "SUCCESS"
CANCELED = "CANCELED"
TIMEDOUT = "TIMEDOUT"

MAX_IDEMPOTENCY_TOKEN_LENGTH = 64


def is_terminal(run: Mapping[str, Any]) -> bool:
    """True once the run summary says Databricks will not change the run any more."""
    if run.get("lifeCycleState") in TERMINAL_LIFE_CYCLE_STATES:
        return True
    status = run.get("status") or {}
    return status.get("state") in TERMINAL_STATUS_STATES


def result_state(run: Mapping[str, Any]) -> Optional[str]:
    """The outcome of a terminal run, never None for one.

    `result_state` is absent for some terminal runs (SKIPPED, INTERNAL_ERROR); then the
    2.2 termination code or the life-cycle state itself names the outcome."""
    if run.get("resultState"):
        return run["resultState"]
    if not is_terminal(run):
        return None
    code = ((run.get("status") or {}).get("termination_details") or {}).get("code")
    if run.get("lifeCycleState") in ("SKIPPED", "INTERNAL_ERROR"):
        return run["lifeCycleState"]
    return code or run.get("lifeCycleState") or "UNKNOWN"


def is_success(state: Optional[str]) -> bool:
    return state == SUCCESS


def select_task_run(run: Mapping[str, Any], task_key: str) -> Optional[Mapping[str, Any]]:
    """The latest attempt of the task named `task_key`: get-output needs a task run id,
    and a retried task leaves one entry per attempt."""
    attempts = [t for t in run.get("tasks") or () if t.get("taskKey") == task_key]
    if not attempts:
        return None
    return max(attempts, key=lambda t: (t.get("attemptNumber") or 0, t.get("startTime") or 0))


@dataclass(frozen=True)
class PollSchedule:
    """When to poll a run again: quickly at first (most notebook runs are short), then at a lag
    proportional to how long the run has been going, never longer than `max_seconds`.

    A run that ends after t seconds is noticed within about max(steady, t * fraction) seconds,
    while a day-long run costs a few hundred polls instead of thousands: each poll is an
    activity, a Jobs API call and an orchestration replay."""

    first_seconds: int = 5
    step_seconds: int = 5
    steady_seconds: int = 30
    fraction: float = 0.1
    max_seconds: int = 300

    def delay_after(self, polls_done: int, elapsed_seconds: float = 0) -> int:
        """Seconds to wait after the `polls_done`-th poll (1-based), `elapsed_seconds` into the run."""
        ramp = min(self.first_seconds + self.step_seconds * max(polls_done - 1, 0), self.steady_seconds)
        delay = max(ramp, int(elapsed_seconds * self.fraction))
        return max(1, min(delay, self.max_seconds))


def poll_schedule(*, webhooks: bool, max_seconds: int) -> PollSchedule:
    """With Databricks webhooks on, a notification ends the wait and polls are only a safety net
    against a lost one, so they can lag further behind (and cost less)."""
    if webhooks:
        return PollSchedule(steady_seconds=60, fraction=0.5, max_seconds=max_seconds)
    return PollSchedule(max_seconds=max_seconds)


def status_retry_after(elapsed_seconds: float, *, minimum: int = 10, maximum: int = 300) -> int:
    """Retry-After for callers polling the status route: like our own polls, a lag in proportion
    to the workflow's age, so a Logic App waiting a day costs hundreds of requests, not 8,640."""
    return max(minimum, min(maximum, int(elapsed_seconds * 0.1)))


def run_idempotency_token(key: str) -> str:
    """run-now idempotency token for a workflow run's key (Databricks allows 64 chars): the same
    key always gets the same run, however often the activity runs."""
    if len(key) <= MAX_IDEMPOTENCY_TOKEN_LENGTH:
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# `str(DatabricksApiError)` starts with this (docs/design.md); the orchestrator only sees text.
_API_ERROR = re.compile(r"Databricks API error (\d{3}) ([A-Z_]*)")
# Throttling and server-side failures are worth another activity attempt; a 4xx will not change.
_RETRYABLE_ERROR_CODES = frozenset({"COULD_NOT_ACQUIRE_LOCK", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def is_retryable_activity_error(message: str) -> bool:
    """Whether an activity failure (as text) is worth retrying from the orchestrator.

    Errors that are not Databricks API errors (a worker crash, a timeout, a network error that
    outlived the client's own retries) are retried; Databricks 4xx are not, except throttling."""
    match = _API_ERROR.search(message or "")
    if not match:
        return True
    status, code = int(match.group(1)), match.group(2)
    return status >= 500 or status == 429 or code in _RETRYABLE_ERROR_CODES


@dataclass(frozen=True)
class ActivityRetry:
    """Orchestrator-side retry of activities: Python's RetryOptions cannot skip
    non-retryable errors nor back off exponentially, so the orchestrator does both on timers."""

    max_attempts: int = 4
    first_delay_seconds: int = 10
    backoff: float = 2.0

    def delay_before(self, attempt: int) -> int:
        """Seconds to wait before attempt number `attempt` (2-based: attempt 1 is immediate)."""
        return int(self.first_delay_seconds * self.backoff ** max(attempt - 2, 0))


def outputs(
    *,
    job_id: Optional[int],
    run_id: Optional[int],
    result: Optional[str],
    run: Optional[Mapping[str, Any]] = None,
    task_output: Optional[Mapping[str, Any]] = None,
) -> dict:
    """The workflow outputs: the Arazzo names first, then what an operator needs to act."""
    run = run or {}
    task_output = task_output or {}
    out: dict = {
        "jobId": job_id,
        "runId": run_id,
        "resultState": result,
        "notebookResult": task_output.get("notebookResult"),
        "lifeCycleState": run.get("lifeCycleState"),
        "stateMessage": run.get("stateMessage"),
        "runPageUrl": run.get("runPageUrl"),
    }
    if task_output.get("truncated"):
        out["notebookResultTruncated"] = True
    if not is_success(result):
        for key in ("error", "errorTrace"):
            if task_output.get(key):
                out[key] = task_output[key]
    return out


def failure_outputs(*, job_id: Optional[int], run_id: Optional[int], error: str) -> dict:
    """What a completion notification carries when the workflow itself failed (e.g. Databricks
    refused a call): the Arazzo names, no result state, and the reason."""
    return {"jobId": job_id, "runId": run_id, "resultState": None, "notebookResult": None,
            "workflowFailed": True, "error": error[:4000]}


def progress_status(
    *, step: str, run: Optional[Mapping[str, Any]], polls: int, elapsed_seconds: int,
    job_id: Optional[int] = None, run_id: Optional[int] = None, failed_polls: int = 0,
) -> dict:
    """Custom status shown while the workflow runs (kept well under the 16 KB limit)."""
    run = run or {}
    status = {
        "step": step,
        "jobId": job_id,
        "runId": run_id,
        "lifeCycleState": run.get("lifeCycleState"),
        "runPageUrl": run.get("runPageUrl"),
        "polls": polls,
        "elapsedSeconds": elapsed_seconds,
    }
    if failed_polls:
        status["failedPolls"] = failed_polls  # polls Databricks did not answer, tolerated
    return status


__all__: Sequence[str] = [
    "ActivityRetry", "PollSchedule", "failure_outputs", "TERMINAL_LIFE_CYCLE_STATES", "is_retryable_activity_error", "poll_schedule",
    "is_success", "is_terminal", "outputs", "progress_status", "result_state", "status_retry_after",
    "run_idempotency_token", "select_task_run",
]
