"""Pure policy for the create-job-and-run workflow: run-state classification, poll schedule,
task selection and error classification. No Azure imports, no I/O, no clock: the orchestrator
passes everything in, so this module is deterministic and unit-testable on its own."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence

# Databricks documents these three life-cycle states as terminal; everything else (QUEUED,
# PENDING, RUNNING, TERMINATING, BLOCKED, WAITING_FOR_RETRY and any state added later) keeps
# polling, bounded by the workflow deadline.
TERMINAL_LIFE_CYCLE_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
# Jobs API 2.2 `status.state`: only TERMINATED is terminal.
TERMINAL_STATUS_STATES = frozenset({"TERMINATED"})

MAX_IDEMPOTENCY_TOKEN_LENGTH = 64


def is_terminal(run: Mapping[str, Any]) -> bool:
    """True once the run summary says Databricks will not change the run any more."""
    if run.get("lifeCycleState") in TERMINAL_LIFE_CYCLE_STATES:
        return True
    status = run.get("status") or {}
    return status.get("state") in TERMINAL_STATUS_STATES


# The result states a caller can see, one vocabulary for every way a workflow ends (a Logic App
# writes its conditions on these). Databricks' own detail is reported beside it, never instead.
SUCCESS = "SUCCESS"
SUCCESS_WITH_FAILURES = "SUCCESS_WITH_FAILURES"  # the job succeeded; some non-leaf tasks failed
FAILED = "FAILED"
TIMEDOUT = "TIMEDOUT"  # the workflow's deadline, or the job's own timeout
CANCELED = "CANCELED"  # cancelled through the app, or by someone on Databricks
SKIPPED = "SKIPPED"  # Databricks did not run it (concurrency limit, excluded, disabled)
RESULT_STATES = (SUCCESS, SUCCESS_WITH_FAILURES, FAILED, TIMEDOUT, CANCELED, SKIPPED)
SUCCESS_STATES = frozenset({SUCCESS, SUCCESS_WITH_FAILURES})

# Databricks `state.result_state` -> ours. Anything not listed is a failure: an unknown outcome is
# never reported as a success.
_RESULT_STATE_OF = {
    "SUCCESS": SUCCESS, "SUCCESS_WITH_FAILURES": SUCCESS_WITH_FAILURES,
    "FAILED": FAILED, "UPSTREAM_FAILED": FAILED,
    "TIMEDOUT": TIMEDOUT,
    "CANCELED": CANCELED, "UPSTREAM_CANCELED": CANCELED,
    "MAXIMUM_CONCURRENT_RUNS_REACHED": SKIPPED, "EXCLUDED": SKIPPED, "DISABLED": SKIPPED,
}
# 2.2 `status.termination_details.code` -> ours, for terminal runs that carry no result_state.
_TERMINATION_CODE_OF = {
    "SUCCESS": SUCCESS, "SUCCESS_WITH_FAILURES": SUCCESS_WITH_FAILURES,
    "USER_CANCELED": CANCELED, "CANCELED": CANCELED, "CLUSTER_TERMINATED_BY_USER": CANCELED,
    "SKIPPED": SKIPPED, "MAX_CONCURRENT_RUNS_EXCEEDED": SKIPPED, "DISABLED": SKIPPED,
    "MAX_JOB_QUEUE_SIZE_EXCEEDED": SKIPPED,
}


def termination_code(run: Mapping[str, Any]) -> Optional[str]:
    return ((run.get("status") or {}).get("termination_details") or {}).get("code")


def databricks_result_state(run: Mapping[str, Any]) -> Optional[str]:
    """Databricks' own name for a terminal run's outcome: `result_state`, else the 2.2 termination
    code, else the life-cycle state (SKIPPED, INTERNAL_ERROR carry no result_state)."""
    if not is_terminal(run):
        return None
    return run.get("resultState") or termination_code(run) or run.get("lifeCycleState") or "UNKNOWN"


def result_state(run: Mapping[str, Any]) -> Optional[str]:
    """The caller-facing outcome (one of RESULT_STATES) of a terminal run; None while it runs."""
    if not is_terminal(run):
        return None
    if run.get("lifeCycleState") == "SKIPPED":
        return SKIPPED
    if run.get("lifeCycleState") == "INTERNAL_ERROR":
        return FAILED
    if run.get("resultState"):
        return _RESULT_STATE_OF.get(run["resultState"], FAILED)
    return _TERMINATION_CODE_OF.get(termination_code(run) or "", FAILED)


def is_success(state: Optional[str]) -> bool:
    return state in SUCCESS_STATES


def select_task_run(run: Mapping[str, Any], task_key: str) -> Optional[Mapping[str, Any]]:
    """The latest attempt of the task named `task_key`: get-output needs a task run id,
    and a retried task leaves one entry per attempt."""
    attempts = [t for t in run.get("tasks") or () if t.get("taskKey") == task_key]
    if not attempts:
        return None
    return max(attempts, key=lambda t: (t.get("attemptNumber") or 0, t.get("startTime") or 0))


@dataclass(frozen=True)
class PollSchedule:
    """How long to wait before the next look at a run that has been going `age` seconds.

    The wait grows with the age from `first_seconds` to `steady_seconds`, stays there until
    `steady_until`, then is `fraction` of the age, never longer than `max_seconds`. A run that ends
    after t seconds is noticed within about max(steady, t * fraction), and a day-long run costs a
    few hundred looks instead of thousands: each look is an activity (or a share of a watcher list),
    a Jobs API call and an orchestration replay.

    `spread` lengthens each wait by up to that share, by `phase` (0 to 1, fixed per workflow), so
    that workflows started together do not all look at the same second."""

    first_seconds: float = 30
    steady_seconds: float = 30
    steady_until: float = 900
    fraction: float = 0.1
    max_seconds: float = 300
    spread: float = 0.0
    phase: float = 0.0

    def delay_at(self, age_seconds: float) -> int:
        ramp = max(self.first_seconds, min(age_seconds, self.steady_seconds))
        grown = self.fraction * age_seconds if age_seconds >= self.steady_until else 0
        return max(1, int(min(self.max_seconds, max(ramp, grown) * (1 + self.spread * self.phase))))


# A run's own polls: Airflow's fixed 30 s for the first quarter hour (the lag of a fixed poll for
# short runs, and no look at age 0, when no run has ended), then a tenth of the age up to the
# WORKFLOW_POLL_INTERVAL_SECONDS ceiling: a day-long run costs about a tenth of a fixed poll's calls.
OWN_SCHEDULE = PollSchedule()
# With a run watcher or webhooks a signal ends the wait, so polls are only a safety net against a
# stopped watcher or a lost notification: the first after an hour, then each at four times the age
# (1 h, 5 h, 25 h), so that even a day-long run costs at most two of them. Lag does not hang on
# them, so each workflow's are spread over a quarter of the wait: 1,000 workflows started together
# make their first safety polls over 15 minutes, not in one second.
SAFETY_SCHEDULE = PollSchedule(first_seconds=3600, steady_seconds=3600, steady_until=0, fraction=4.0,
                               max_seconds=86400, spread=0.25)


def poll_schedule(*, signals: bool, max_seconds: int, workflow_key: str = "") -> PollSchedule:
    """The schedule a workflow polls on: its own, or the safety net when signals can come.
    `workflow_key` (the instance id) fixes the workflow's phase in the spread, the same on every
    replay."""
    base = SAFETY_SCHEDULE if signals else OWN_SCHEDULE
    return dataclasses.replace(base, max_seconds=max_seconds, phase=zlib.crc32(workflow_key.encode()) / 2 ** 32)


def own_check_interval(age_seconds: float) -> float:
    """How often one run would be looked at on its own at this age: the rate at which an awaited
    run earns the watcher list calls, and how soon a run that left the active list without ending
    is pointed out to its workflow again."""
    return OWN_SCHEDULE.delay_at(age_seconds)


def workflow_age_seconds(progress: Mapping[str, Any], now: datetime) -> float:
    """How long a running workflow has been going, from its custom status: since `startedAt` when
    shown (the status itself may be an hour old while the workflow waits for a signal), else the
    `elapsedSeconds` it last showed."""
    try:
        return max(0.0, (now - datetime.fromisoformat(progress["startedAt"])).total_seconds())
    except (KeyError, TypeError, ValueError):
        return float(progress.get("elapsedSeconds") or 0)


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


# How an activity failure reads when it reaches the orchestrator. Durable Functions Python carries
# only text across the activity boundary (the host's "Activity function 'X' failed: <Type>: <message>"
# layout), so every error our activities raise states its kind in a fixed message prefix
# (databricks_jobs.errors, activities.notifications); the orchestrator classifies by that kind and,
# for Databricks, by HTTP status and error code. An error of no known kind is NOT retried: retrying
# cannot fix a bug or a misconfiguration, and waiting it out would only hide it.
TRANSIENT = "transient"
PERMANENT = "permanent"

_API_ERROR = re.compile(r"Databricks API error (\d{1,3}) ([A-Z_]*)")
# Throttling and server-side failures are worth another attempt; other 4xx will not change.
_RETRYABLE_ERROR_CODES = frozenset({"COULD_NOT_ACQUIRE_LOCK", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
_TRANSIENT_KINDS = (
    "Credential temporarily unavailable:",      # token endpoint or Key Vault throttled / down
    "Notification target temporarily unavailable:",
    "Result store temporarily unavailable:",      # the blob storage that keeps large task outputs
    # The Functions host's own FunctionTimeoutException ("Timeout value of 00:05:00 was exceeded by
    # function: Functions.getJobRun"): the activity ran too long this time.
    "Timeout value of ",
)
_PERMANENT_KINDS = ("Configuration error:", "Credential error:", "Notification refused:", "Result store refused:",
                    "Invalid activity input:")
_KIND_PREFIXES = ("Databricks API error ",) + _TRANSIENT_KINDS + _PERMANENT_KINDS
MAX_ERROR_CHARS = 2000


def failure_kind(text: str) -> str:
    """TRANSIENT or PERMANENT for an activity failure's text (see the note above)."""
    text = text or ""
    match = _API_ERROR.search(text)
    if match:
        status, code = int(match.group(1)), match.group(2)
        # status 0: a transport failure that outlived the client's own retries.
        transient = status == 0 or status == 429 or status >= 500 or code in _RETRYABLE_ERROR_CODES
        return TRANSIENT if transient else PERMANENT
    if any(kind in text for kind in _TRANSIENT_KINDS):
        return TRANSIENT
    return PERMANENT


def error_message(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The error itself out of an activity failure's text: from the first known kind prefix (or the
    start) to the end of that line, without the host's wrapping or a stack trace, at most `limit`."""
    text = (text or "").strip()
    starts = [i for i in (text.find(p) for p in _KIND_PREFIXES) if i >= 0]
    line = text[min(starts):] if starts else text
    line = line.split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


_HOST_WRAPPERS = re.compile(r"^(?:Orchestrator function '[^']*' failed: |Activity function '[^']*' failed: |"
                            r"(?:Exception|WorkflowFailed|[A-Za-z_.]+Error): )+")


def failure_detail(output: Any, limit: int = MAX_ERROR_CHARS) -> str:
    """What a caller is told about a failed workflow: its error without the host's wrapping, any
    stack trace or serialized state (they stay in the logs), at most `limit` characters."""
    text = output if isinstance(output, str) else ("" if output is None else json.dumps(output))
    line = _HOST_WRAPPERS.sub("", text.strip()).split("\n", 1)[0].split("$OutOfProcData$", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


# Task results that mean the task never ran (so it has no output to fetch).
_NOT_RUN = frozenset({"EXCLUDED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED", "DISABLED"})


def latest_attempts(run: Mapping[str, Any]) -> list:
    """The latest attempt of each task, in the order the run lists them."""
    latest: dict = {}
    for task in run.get("tasks") or ():
        key = task.get("taskKey")
        best = latest.get(key)
        if best is None or (task.get("attemptNumber") or 0, task.get("startTime") or 0) >= \
                (best.get("attemptNumber") or 0, best.get("startTime") or 0):
            latest[key] = task
    return list(latest.values())


def tasks_that_ran(run: Mapping[str, Any]) -> list:
    """Latest attempts that started, so get-output has something to return."""
    return [t for t in latest_attempts(run)
            if t.get("runId") and (t.get("startTime") or 0) > 0 and t.get("resultState") not in _NOT_RUN]


def task_result_state(task: Mapping[str, Any]) -> Optional[str]:
    """A task's outcome in the caller's vocabulary (RESULT_STATES)."""
    raw = task.get("resultState")
    if raw is None:
        return None
    return _RESULT_STATE_OF.get(raw, FAILED)


def failed_task_keys(run: Mapping[str, Any]) -> list:
    """Tasks that failed themselves (not those skipped because an upstream task failed)."""
    return [t["taskKey"] for t in latest_attempts(run) if t.get("resultState") in ("FAILED", "TIMEDOUT")]


def should_repair(run: Mapping[str, Any], repairs_done: int, max_attempts: int) -> bool:
    """Repair (rerun the failed tasks) when the run failed because tasks failed and attempts remain."""
    return repairs_done < max_attempts and result_state(run) == FAILED and bool(failed_task_keys(run))


# Set by getJobRunOutput when a task's output was cut to its inline share (activities/results_store.py).
_KEPT_ASIDE_FIELDS = ("notebookResultTruncatedAtSource", "errorTruncated", "errorTraceTruncated", "resultPath")


def _task_entry(task: Mapping[str, Any], output: Mapping[str, Any]) -> dict:
    entry = {
        "taskKey": task.get("taskKey"),
        "runId": task.get("runId"),
        "lifeCycleState": task.get("lifeCycleState"),
        "resultState": task_result_state(task),
        "databricksResultState": task.get("resultState"),
        "notebookResult": output.get("notebookResult"),
        "runPageUrl": task.get("runPageUrl"),
    }
    # Every task says how big its result is and whether the inline copy is all of it
    # (workflow/results.py); the whole is at `resultPath` when it is not.
    entry["notebookResultBytes"] = int(output.get("notebookResultBytes") or 0)
    entry["notebookResultTruncated"] = bool(output.get("truncated") or output.get("notebookResultTruncated"))
    for key in ("error", "errorTrace"):
        if output.get(key):
            entry[key] = output[key]
    for key in _KEPT_ASIDE_FIELDS:
        if output.get(key):
            entry[key] = output[key]
    if output.get("outputError"):
        entry["outputError"] = output["outputError"]  # this task's output could not be fetched
    elif output.get("noNotebookOutput") or not output:
        # A Python, SQL or run-job task (or one that never ran) has no dbutils.notebook.exit() value.
        entry["noNotebookOutput"] = True
    return entry


def outputs(
    *,
    job_id: Optional[int],
    run_id: Optional[int],
    result: Optional[str],
    run: Optional[Mapping[str, Any]] = None,
    task_output: Optional[Mapping[str, Any]] = None,
    task_outputs: Optional[Mapping[str, Any]] = None,
    output_task_key: Optional[str] = None,
    repairs: Optional[list] = None,
) -> dict:
    """The workflow outputs: the Arazzo names first, then what an operator needs to act.
    `resultState` is one of RESULT_STATES; `databricksResultState` is Databricks' own detail.
    `notebookResult` is the output of `output_task_key`'s task, or of the only task; `tasks` has
    one entry per task (latest attempt)."""
    run = run or {}
    task_outputs = dict(task_outputs or {})
    problem = task_outputs.pop("outputError", None)
    tasks = latest_attempts(run)
    key = output_task_key or (tasks[0]["taskKey"] if len(tasks) == 1 else None)
    main = task_output if task_output is not None else task_outputs.get(key, {}) if key else {}
    out: dict = {
        "jobId": job_id,
        "runId": run_id,
        "resultState": result,
        "notebookResult": main.get("notebookResult"),
        "lifeCycleState": run.get("lifeCycleState"),
        "databricksResultState": databricks_result_state(run),
        "stateMessage": run.get("stateMessage"),
        "runPageUrl": run.get("runPageUrl"),
    }
    if main.get("truncated") or main.get("notebookResultTruncated"):
        out["notebookResultTruncated"] = True
    if main.get("resultPath"):
        out["resultPath"] = main["resultPath"]  # the whole of the main task's output
    if not is_success(result):
        source = main if main.get("error") else next(
            (task_outputs[t["taskKey"]] for t in tasks
             if task_result_state(t) in (FAILED, TIMEDOUT) and task_outputs.get(t["taskKey"], {}).get("error")), {})
        for field in ("error", "errorTrace", "errorTruncated", "errorTraceTruncated"):
            if source.get(field):
                out[field] = source[field]
    if tasks:
        out["tasks"] = [_task_entry(t, task_outputs.get(t["taskKey"], {})) for t in tasks]
    if repairs:
        out["repairs"] = list(repairs)
    # On top too when it is the output `notebookResult` stands for (the other tasks' are on their entries).
    if problem or main.get("outputError"):
        out["outputError"] = problem or main["outputError"]
    return out


def failure_outputs(*, job_id: Optional[int], run_id: Optional[int], error: str) -> dict:
    """What a completion notification carries when the workflow itself failed (e.g. Databricks
    refused a call): the Arazzo names, no result state, and the reason."""
    return {"jobId": job_id, "runId": run_id, "resultState": None, "notebookResult": None,
            "workflowFailed": True, "error": error[:4000]}


def progress_status(
    *, step: str, run: Optional[Mapping[str, Any]], polls: int, elapsed_seconds: int,
    job_id: Optional[int] = None, run_id: Optional[int] = None, failed_polls: int = 0,
    started_at: Optional[str] = None, repairs: int = 0,
) -> dict:
    """Custom status shown while the workflow runs (kept well under the 16 KB limit). It changes
    only when the workflow wakes, so `startedAt` lets a reader work out the age since."""
    run = run or {}
    status = {
        "step": step,
        "jobId": job_id,
        "runId": run_id,
        "lifeCycleState": run.get("lifeCycleState"),
        "runPageUrl": run.get("runPageUrl"),
        "polls": polls,
        "startedAt": started_at,
        "elapsedSeconds": elapsed_seconds,
    }
    if failed_polls:
        status["failedPolls"] = failed_polls  # polls Databricks did not answer, tolerated
    if repairs:
        status["repairs"] = repairs  # runs/repair calls so far; the run is being waited for again
    return status


__all__: Sequence[str] = [
    "ActivityRetry", "PollSchedule", "failure_outputs", "TERMINAL_LIFE_CYCLE_STATES", "failure_kind", "error_message", "poll_schedule",
    "is_success", "is_terminal", "outputs", "progress_status", "result_state", "status_retry_after",
    "workflow_age_seconds",
    "run_idempotency_token", "select_task_run",
]
