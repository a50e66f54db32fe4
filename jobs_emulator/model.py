"""Jobs, runs and their lazily computed state; no HTTP here.

A run stores only when it was created, how long it waits in the queue, its :class:`Behavior`
and, if cancelled, when. Its state at any instant is derived from those, so a virtual clock may
jump hours between two requests and the answer is still exact.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .scenario import DEFAULT_RESULT, Behavior, Scenario

MULTI_TASK_OUTPUT_MESSAGE = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)
PAGE_SIZE_22 = 100  # 2.2 returns at most 100 array elements per response
SUCCESS_RESULTS = frozenset({"SUCCESS", "SUCCESS_WITH_FAILURES"})
# Real ids are 13-16 digit integers; distinct ranges make a job id passed as a run id fail loudly.
# Both stay below 2**53 so JavaScript clients and JSON tools keep them exact.
JOB_ID_BASE = 481_000_000_000_000
RUN_ID_BASE = 790_000_000_000_000

_V2_STATE = {"WAITING_FOR_RETRY": "WAITING", "SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED"}
_WAITING_STATES = frozenset({"QUEUED", "BLOCKED"})


class ApiError(Exception):
    """An error response in the Databricks shape."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict | None = None):
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass(frozen=True)
class Outcome:
    life_cycle_state: str
    result_state: str | None
    state_message: str
    user_cancelled_or_timedout: bool
    termination_code: str
    termination_type: str
    error: str | None = None
    error_trace: str | None = None
    notebook_result: Any = None
    truncated: bool = False


def outcome_of(b: Behavior) -> Outcome:
    code, kind = b.termination_code, b.termination_type
    if code is None:
        code, kind = _termination_for(b.final_state, b.result_state)
    return Outcome(
        life_cycle_state=b.final_state,
        result_state=b.result_state,
        state_message=b.state_message,
        user_cancelled_or_timedout=b.result_state in ("CANCELED", "TIMEDOUT"),
        termination_code=code,
        termination_type=kind or "SUCCESS",
        error=b.error,
        error_trace=b.error_trace,
        notebook_result=b.notebook_result,
        truncated=b.truncated,
    )


def _termination_for(final_state: str, result_state: str | None) -> tuple[str, str]:
    # Codes and types as documented for the 2.2 `status.termination_details` (SDK TerminationCodeCode).
    if final_state == "INTERNAL_ERROR":
        return "INTERNAL_ERROR", "INTERNAL_ERROR"
    if final_state == "SKIPPED":
        if result_state == "MAXIMUM_CONCURRENT_RUNS_REACHED":
            return "MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR"
        return "SKIPPED", "SUCCESS"
    return {
        "SUCCESS": ("SUCCESS", "SUCCESS"),
        "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS"),
        "FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
        "TIMEDOUT": ("CANCELED", "CLIENT_ERROR"),
        "CANCELED": ("USER_CANCELED", "SUCCESS"),
        "DISABLED": ("DISABLED", "CLIENT_ERROR"),
    }.get(result_state or "", ("SUCCESS", "SUCCESS"))


CANCELED = Outcome("TERMINATED", "CANCELED", "Run cancelled.", True, "USER_CANCELED", "SUCCESS")
TIMED_OUT = Outcome("TERMINATED", "TIMEDOUT", "Run timed out.", True, "CANCELED", "CLIENT_ERROR",
                    error="Run timed out.")


@dataclass
class Job:
    job_id: int
    settings: dict
    created_time: float
    creator: str


@dataclass
class TaskRun:
    run_id: int
    task: dict  # the task settings, notebook base_parameters already merged with run-now params


@dataclass
class Run:
    run_id: int
    job_id: int
    job_name: str
    created_at: float
    queue_until: float  # waiting for a concurrency slot (QUEUED) until then
    behavior: Behavior
    tasks: list[TaskRun]
    timeout_seconds: float = 0.0
    cancel_seconds: float = 0.5
    canceled_at: float | None = None
    skipped_outcome: Outcome | None = None  # set when skipped for concurrency at run-now
    overriding_parameters: dict | None = None
    notifications: dict = field(default_factory=dict)  # webhook_notifications snapshot
    notification_settings: dict = field(default_factory=dict)
    idempotency_token: str | None = None
    api_version: str = "2.1"
    notified: set = field(default_factory=set)
    _timeline: tuple | None = None

    # -- timeline ---------------------------------------------------------------------------
    def invalidate(self) -> None:
        self._timeline = None

    def timeline(self) -> tuple[list[tuple[str, float, float]], float, Outcome]:
        """(segments [(state, start, end)], end time, final outcome)."""
        if self._timeline is None:
            self._timeline = self._compute_timeline()
        return self._timeline

    def _compute_timeline(self):
        if self.skipped_outcome is not None:
            return [], self.created_at, self.skipped_outcome
        segments = []
        if self.queue_until > self.created_at:
            segments.append(("QUEUED", self.created_at, self.queue_until))
        t = self.queue_until
        for state, duration in self.behavior.phases:
            segments.append((state, t, t + duration))
            t += duration
        outcome = outcome_of(self.behavior)
        if self.timeout_seconds > 0 and t > self.queue_until + self.timeout_seconds \
                and outcome.life_cycle_state == "TERMINATED":
            t = self.queue_until + self.timeout_seconds
            segments = _cut(segments, t)
            outcome = TIMED_OUT
        if self.canceled_at is not None and self.canceled_at < t:
            c = self.canceled_at
            started = c >= self.queue_until and not any(s == "QUEUED" and a <= c < b for s, a, b in segments)
            segments = _cut(segments, c)
            t = c
            if started and self.cancel_seconds > 0:
                segments.append(("TERMINATING", c, c + self.cancel_seconds))
                t = c + self.cancel_seconds
            outcome = CANCELED
        return [s for s in segments if s[2] > s[1]], t, outcome

    @property
    def end_time(self) -> float:
        return self.timeline()[1]

    def is_terminal(self, now: float) -> bool:
        return now >= self.end_time

    def state_at(self, now: float) -> tuple[str, Outcome | None]:
        """(life_cycle_state, outcome if terminal)."""
        segments, end, outcome = self.timeline()
        if now >= end:
            return outcome.life_cycle_state, outcome
        for state, start, stop in segments:
            if start <= now < stop:
                return state, None
        return (segments[0][0] if segments else "PENDING"), None

    def started_at(self) -> float | None:
        """When the run left the queue and any BLOCKED phase: the task start time."""
        for state, start, _ in self.timeline()[0]:
            if state not in _WAITING_STATES:
                return start
        return None

    def time_in(self, states: frozenset | set, now: float) -> float:
        return sum(max(0.0, min(b, now) - a) for s, a, b in self.timeline()[0] if s in states and a < now)

    def events(self) -> list[tuple[float, str]]:
        """Webhook events the timeline implies: [(time, event_type)]."""
        segments, end, outcome = self.timeline()
        out = []
        running = next((a for s, a, _ in segments if s == "RUNNING"), None)
        if running is not None:
            out.append((running, "jobs.on_start"))
        if outcome.result_state in SUCCESS_RESULTS:
            out.append((end, "jobs.on_success"))
        else:
            settings = self.notification_settings or {}
            quiet = (outcome.life_cycle_state == "SKIPPED" and settings.get("no_alert_for_skipped_runs")) or (
                outcome.result_state == "CANCELED" and settings.get("no_alert_for_canceled_runs"))
            if not quiet:
                out.append((end, "jobs.on_failure"))
        return out


def _cut(segments, t):
    return [(s, a, min(b, t)) for s, a, b in segments if a < t]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def encode_token(offset: int, *extra: Any) -> str:
    raw = json.dumps([offset, *extra], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> list:
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(value, list) or not value or not isinstance(value[0], int) or value[0] < 0:
            raise ValueError
        return value
    except Exception:  # any garbage token is the caller's error
        raise invalid(f"Invalid page token: {token}") from None


def _as_int(value: Any, name: str) -> int:
    if value is None or value == "":
        raise invalid(f"Missing required field: {name}")
    if isinstance(value, bool):
        raise invalid(f"Invalid value for {name}: {value}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value for {name}: {value}") from None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


class Store:
    """All jobs and runs of one emulated workspace. Thread-safe; every public method locks."""

    def __init__(self, clock: Callable[[], float], scenario: Scenario, *, base_url: Callable[[], str],
                 workspace_id: int, user_name: str, cancel_seconds: float):
        self.clock = clock
        self.scenario = scenario
        self._base_url = base_url
        self.workspace_id = workspace_id
        self.user_name = user_name
        self.cancel_seconds = cancel_seconds
        self.lock = threading.RLock()
        self.jobs: dict[int, Job] = {}
        self.deleted_jobs: set[int] = set()
        self.runs: dict[int, Run] = {}          # job runs by run id
        self.task_runs: dict[int, tuple[Run, TaskRun]] = {}
        self.idempotency: dict[str, int] = {}
        self.watched: dict[int, Run] = {}  # runs whose job has webhook notifications still to send
        self._job_ids = itertools.count(JOB_ID_BASE + 1)
        self._run_ids = itertools.count(RUN_ID_BASE + 1)

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, body: dict, version: str) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request - expected a map")
        settings = copy.deepcopy(body)
        settings.pop("access_control_list", None)  # write-only
        name = settings.setdefault("name", "Untitled")
        if not isinstance(name, str) or len(name.encode()) > 4096:
            raise invalid("Job name must be a string of at most 4096 bytes.")
        tasks = settings.get("tasks") or []
        if not isinstance(tasks, list) or len(tasks) > 1000:
            raise invalid("A job can have at most 1000 tasks.")
        keys = set()
        for task in tasks:
            key = task.get("task_key") if isinstance(task, dict) else None
            if not key:
                raise invalid("Missing required field: task_key")
            if key in keys:
                raise invalid(f"Task key {key} is not unique.")
            keys.add(key)
        tags = settings.get("tags")
        if tags is not None and (not isinstance(tags, dict) or len(tags) > 25):
            raise invalid("tags must be a map of at most 25 tags.")
        for event, hooks in (settings.get("webhook_notifications") or {}).items():
            if isinstance(hooks, list) and len(hooks) > 3:
                raise invalid(f"At most 3 webhook destinations are allowed for {event}.")
        max_runs = settings.setdefault("max_concurrent_runs", 1)
        if not isinstance(max_runs, int) or not 0 <= max_runs <= 1000:
            raise invalid("max_concurrent_runs must be between 0 and 1000.")
        settings.setdefault("timeout_seconds", 0)
        settings.setdefault("email_notifications", {})
        settings.setdefault("webhook_notifications", {})
        settings["format"] = "MULTI_TASK"  # always, for jobs created with 2.1+
        if "queue" not in settings and version == "2.2":
            settings["queue"] = {"enabled": True}  # 2.2-created jobs are queued by default
        with self.lock:
            job_id = next(self._job_ids)
            self.jobs[job_id] = Job(job_id, settings, self.clock(), self.user_name)
        return {"job_id": job_id}

    def _job(self, job_id: Any) -> Job:
        job_id = _as_int(job_id, "job_id")
        job = self.jobs.get(job_id)
        if job is None:
            raise invalid(f"Job {job_id} does not exist.")
        return job

    def job_json(self, job: Job, version: str, *, expand_tasks: bool = True, page_token: str | None = None) -> dict:
        settings = copy.deepcopy(job.settings)
        out = {
            "job_id": job.job_id,
            "creator_user_name": job.creator,
            "run_as_user_name": job.creator,
            "run_as_owner": True,
            "created_time": _ms(job.created_time),
            "settings": settings,
        }
        if not expand_tasks:
            settings.pop("tasks", None)
            settings.pop("job_clusters", None)
        elif version == "2.2":
            offset = decode_token(page_token)[0] if page_token else 0
            tasks = settings.get("tasks") or []
            settings["tasks"] = tasks[offset:offset + PAGE_SIZE_22]
            if offset + PAGE_SIZE_22 < len(tasks):
                out["next_page_token"] = encode_token(offset + PAGE_SIZE_22)
                out["has_more"] = True
        return out

    def get_job(self, query: dict, version: str) -> dict:
        with self.lock:
            return self.job_json(self._job(query.get("job_id")), version, page_token=query.get("page_token"))

    def list_jobs(self, query: dict, version: str) -> dict:
        limit = _as_int(query.get("limit", 20), "limit")
        if not 0 < limit <= 100:
            raise invalid(f"The limit must be greater than 0 and at most 100, got {limit}.")
        name = query.get("name")
        offset = 0
        if query.get("page_token"):
            offset = decode_token(query["page_token"])[0]
        elif query.get("offset"):  # deprecated but still accepted
            offset = _as_int(query["offset"], "offset")
        expand = _as_bool(query.get("expand_tasks", False))
        with self.lock:
            jobs = [j for j in self.jobs.values()
                    if name is None or str(j.settings.get("name", "")).casefold() == name.casefold()]
            page = jobs[offset:offset + limit]
            out: dict = {}
            if page:  # "Only included in the response if there are jobs to list"
                out["jobs"] = [self.job_json(j, version, expand_tasks=expand) for j in page]
        more = offset + limit < len(jobs)
        out["has_more"] = more
        if more:
            out["next_page_token"] = encode_token(offset + limit)
        if offset > 0:
            out["prev_page_token"] = encode_token(max(0, offset - limit))
        return out

    def delete_job(self, body: dict) -> dict:
        job_id = _as_int((body or {}).get("job_id"), "job_id")
        with self.lock:
            if self.jobs.pop(job_id, None) is None and job_id not in self.deleted_jobs:
                raise invalid(f"Job {job_id} does not exist.")
            self.deleted_jobs.add(job_id)
        return {}

    # -- runs -------------------------------------------------------------------------------
    def run_now(self, body: dict, version: str) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request - expected a map")
        token = body.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or len(token) > 64):
            raise invalid("idempotency_token must be a string of at most 64 characters.")
        notebook_params = body.get("notebook_params") or {}
        job_parameters = body.get("job_parameters") or {}
        if notebook_params and job_parameters:
            raise invalid("job_parameters cannot be used together with notebook_params.")
        with self.lock:
            if token is not None and token in self.idempotency:
                run_id = self.idempotency[token]
                return {"run_id": run_id, "number_in_job": run_id}
            job = self._job(body.get("job_id"))
            now = self.clock()
            settings = job.settings
            params = {**{p.get("name"): p.get("default") for p in settings.get("parameters") or []
                         if isinstance(p, dict)}, **notebook_params, **job_parameters}
            run_id = next(self._run_ids)
            tasks = []
            for task in settings.get("tasks") or []:
                task = copy.deepcopy(task)
                nb = task.get("notebook_task")
                if isinstance(nb, dict) and params:
                    nb["base_parameters"] = {**(nb.get("base_parameters") or {}), **params}
                tasks.append(TaskRun(next(self._run_ids), task))
            first_path = next((t.task.get("notebook_task", {}).get("notebook_path", "") for t in tasks
                               if isinstance(t.task.get("notebook_task"), dict)), "")
            run = Run(
                run_id=run_id, job_id=job.job_id, job_name=settings.get("name", "Untitled"),
                created_at=now, queue_until=now, behavior=self.scenario.behavior_for(first_path), tasks=tasks,
                timeout_seconds=float(settings.get("timeout_seconds") or 0),
                cancel_seconds=self.cancel_seconds * self.scenario.time_scale,
                overriding_parameters=({"notebook_params": notebook_params} if notebook_params else
                                       {"job_parameters": job_parameters} if job_parameters else None),
                notifications=copy.deepcopy(settings.get("webhook_notifications") or {}),
                notification_settings=copy.deepcopy(settings.get("notification_settings") or {}),
                idempotency_token=token, api_version=version,
            )
            self._admit(run, job, body, now)
            self.runs[run_id] = run
            for t in tasks:
                self.task_runs[t.run_id] = (run, t)
            if token is not None:
                self.idempotency[token] = run_id
            if any(run.notifications.get(k) for k in ("on_start", "on_success", "on_failure")):
                self.watched[run_id] = run
        return {"run_id": run_id, "number_in_job": run_id}

    def _active_runs(self, job_id: int, now: float, before: int | None = None) -> list[Run]:
        return [r for r in self.runs.values()
                if r.job_id == job_id and not r.is_terminal(now) and (before is None or r.run_id < before)]

    def _admit(self, run: Run, job: Job, body: dict, now: float) -> None:
        """Apply max_concurrent_runs: skip the run, or queue it until a slot frees."""
        limit = job.settings.get("max_concurrent_runs", 1)
        active = self._active_runs(job.job_id, now)
        if len(active) < limit:
            return
        queue = body.get("queue") if isinstance(body.get("queue"), dict) else job.settings.get("queue") or {}
        if queue.get("enabled") and limit > 0:
            run.queue_until = _slot_time([r.end_time for r in active], limit, now)
            run.invalidate()
        else:
            run.skipped_outcome = Outcome(
                "SKIPPED", "MAXIMUM_CONCURRENT_RUNS_REACHED",
                f"Skipping this run because the limit of {limit} maximum concurrent runs has been reached.",
                False, "MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR")

    def _replan_queue(self, job_id: int, now: float) -> None:
        """After a cancel, queued runs of the job may start earlier (FIFO)."""
        limit = self.jobs[job_id].settings.get("max_concurrent_runs", 1) if job_id in self.jobs else 1
        for run in sorted((r for r in self.runs.values() if r.job_id == job_id), key=lambda r: r.run_id):
            if run.queue_until > now and run.canceled_at is None and run.skipped_outcome is None:
                ahead = [r.end_time for r in self._active_runs(job_id, now, before=run.run_id)]
                start = _slot_time(ahead, limit, now)
                if start < run.queue_until:
                    run.queue_until = start
                    run.invalidate()

    def _lookup(self, run_id: Any) -> tuple[Run, TaskRun | None]:
        run_id = _as_int(run_id, "run_id")
        run = self.runs.get(run_id)
        if run is not None:
            return run, None
        hit = self.task_runs.get(run_id)
        if hit is None:
            raise invalid(f"Run {run_id} does not exist")
        return hit

    def get_run(self, query: dict, version: str) -> dict:
        with self.lock:
            run, task = self._lookup(query.get("run_id"))
            now = self.clock()
            if task is not None:
                return self.task_run_as_run_json(run, task, now, version)
            return self.run_json(run, now, version, query.get("page_token"))

    def get_output(self, query: dict, version: str) -> dict:
        with self.lock:
            run, task = self._lookup(query.get("run_id"))
            if task is None:
                # Every job created through jobs/create is MULTI_TASK, even with a single task.
                raise invalid(MULTI_TASK_OUTPUT_MESSAGE)
            now = self.clock()
            out: dict = {"metadata": self.task_run_as_run_json(run, task, now, version)}
            _, outcome = run.state_at(now)
        if outcome is not None:
            result = outcome.notebook_result
            if result is DEFAULT_RESULT:
                result = self._default_result(run, task) if outcome.result_state in SUCCESS_RESULTS else None
            notebook_output: dict = {"truncated": bool(outcome.truncated)}
            if result is not None:
                notebook_output["result"] = result
            out["notebook_output"] = notebook_output
            if outcome.error:
                out["error"] = outcome.error
            if outcome.error_trace:
                out["error_trace"] = outcome.error_trace
        return out

    def _default_result(self, run: Run, task: TaskRun) -> str:
        nb = task.task.get("notebook_task") or {}
        return json.dumps({
            "status": "OK",
            "notebook_path": nb.get("notebook_path"),
            "task_key": task.task.get("task_key"),
            "job_run_id": run.run_id,
            "parameters": nb.get("base_parameters") or {},
        }, sort_keys=True)

    def cancel(self, body: dict) -> dict:
        with self.lock:
            run, _ = self._lookup((body or {}).get("run_id"))
            self._cancel(run, self.clock())
        return {}

    def cancel_all(self, body: dict) -> dict:
        with self.lock:
            job = self._job((body or {}).get("job_id"))
            now = self.clock()
            for run in list(self.runs.values()):
                if run.job_id == job.job_id:
                    self._cancel(run, now)
        return {}

    def _cancel(self, run: Run, now: float) -> None:
        state, outcome = run.state_at(now)
        # Cancelling a finished run or one already cleaning up changes nothing.
        if outcome is not None or state == "TERMINATING" or run.canceled_at is not None:
            return
        run.canceled_at = now
        run.invalidate()
        self._replan_queue(run.job_id, now)

    # -- JSON views -------------------------------------------------------------------------
    def run_page_url(self, job_id: int, run_id: int) -> str:
        return f"{self._base_url()}/?o={self.workspace_id}#job/{job_id}/run/{run_id}"

    def _state_json(self, run: Run, now: float) -> tuple[dict, dict, str, Outcome | None]:
        life, outcome = run.state_at(now)
        queue_code = None
        if outcome is not None:
            state = {"life_cycle_state": life, "state_message": outcome.state_message,
                     "user_cancelled_or_timedout": outcome.user_cancelled_or_timedout}
            if outcome.result_state is not None:
                state["result_state"] = outcome.result_state
        else:
            message, queue_code = "", None
            if life == "QUEUED" and now < run.queue_until:
                job = self.jobs.get(run.job_id)
                limit = job.settings.get("max_concurrent_runs", 1) if job else 1
                message = f"Queued due to reaching maximum concurrent runs of {limit}."
                queue_code = "MAX_CONCURRENT_RUNS_REACHED"
            elif life == "QUEUED":  # a scenario phase: the workspace-wide limit, not the job's
                message = "Queued due to reaching the workspace limit of active runs."
                queue_code = "ACTIVE_RUNS_LIMIT_REACHED"
            elif life == "BLOCKED":
                message = "Waiting for the workspace's active runs limit."
            elif life == "PENDING":
                message = "Waiting for cluster"
            state = {"life_cycle_state": life, "state_message": message, "user_cancelled_or_timedout": False}
            if life == "QUEUED":
                state["queue_reason"] = message
        status: dict = {"state": _V2_STATE.get(life, life)}
        if outcome is None and queue_code:
            status["queue_details"] = {"code": queue_code, "message": message}
        final = outcome or (run.timeline()[2] if life == "TERMINATING" else None)
        if final is not None:
            status["termination_details"] = {"code": final.termination_code, "type": final.termination_type,
                                             "message": final.state_message}
        return state, status, life, outcome

    def _task_json(self, run: Run, task: TaskRun, now: float, version: str, state: dict, status: dict,
                   outcome: Outcome | None) -> dict:
        out = copy.deepcopy(task.task)
        started = run.started_at()
        out.update({
            "run_id": task.run_id,
            "task_key": task.task.get("task_key"),
            "attempt_number": 0,
            "state": dict(state),
            "run_page_url": self.run_page_url(run.job_id, task.run_id),
            "start_time": _ms(started) if started is not None and started <= now else 0,
            "end_time": _ms(run.end_time) if outcome is not None else 0,
            "setup_duration": _ms(run.time_in({"PENDING"}, now)),
            "execution_duration": _ms(run.time_in({"RUNNING"}, now)),
            "cleanup_duration": _ms(run.time_in({"TERMINATING"}, now)),
            "run_if": task.task.get("run_if", "ALL_SUCCESS"),
        })
        out["state"].pop("queue_reason", None)
        if version == "2.2":
            out["status"] = copy.deepcopy(status)
        return out

    def run_json(self, run: Run, now: float, version: str, page_token: str | None = None) -> dict:
        state, status, life, outcome = self._state_json(run, now)
        tasks = [self._task_json(run, t, now, version, state, status, outcome) for t in run.tasks]
        out = {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "job_run_id": run.run_id,
            "number_in_job": run.run_id,
            "original_attempt_run_id": run.run_id,
            "creator_user_name": self.user_name,
            "run_name": run.job_name,
            "state": state,
            "tasks": tasks,
            "run_page_url": self.run_page_url(run.job_id, run.run_id),
            "start_time": _ms(run.created_at),
            "end_time": _ms(run.end_time) if outcome is not None else 0,
            # For multi-task runs the per-phase durations live on the tasks; the job level reports 0.
            "setup_duration": 0,
            "execution_duration": 0,
            "cleanup_duration": 0,
            "run_duration": _ms((run.end_time if outcome is not None else now) - run.created_at),
            "trigger": "ONE_TIME",
            "run_type": "JOB_RUN",
            "format": "MULTI_TASK",
            "attempt_number": 0,
        }
        if run.overriding_parameters:
            out["overriding_parameters"] = copy.deepcopy(run.overriding_parameters)
        if version == "2.2":
            out["status"] = status
            out["queue_duration"] = _ms(run.time_in({"QUEUED"}, now))
            offset = decode_token(page_token)[0] if page_token else 0
            out["tasks"] = tasks[offset:offset + PAGE_SIZE_22]
            more = offset + PAGE_SIZE_22 < len(tasks)
            out["has_more"] = more
            if more:
                out["next_page_token"] = encode_token(offset + PAGE_SIZE_22)
            if offset:
                out["prev_page_token"] = encode_token(max(0, offset - PAGE_SIZE_22))
        return out

    def task_run_as_run_json(self, run: Run, task: TaskRun, now: float, version: str) -> dict:
        state, status, life, outcome = self._state_json(run, now)
        out = self._task_json(run, task, now, version, state, status, outcome)
        started = run.started_at()
        out.update({
            "job_id": run.job_id,
            "job_run_id": run.run_id,
            "number_in_job": task.run_id,
            "original_attempt_run_id": task.run_id,
            "creator_user_name": self.user_name,
            "run_name": task.task.get("task_key"),
            "run_duration": _ms(((run.end_time if outcome is not None else now) - started)
                                if started is not None and started <= now else 0),
            "trigger": "ONE_TIME",
            "run_type": "JOB_RUN",
            "format": "MULTI_TASK",
        })
        return out


def _slot_time(end_times: list[float], limit: int, now: float) -> float:
    """Earliest time fewer than `limit` of these runs are still active."""
    if len(end_times) < limit:
        return now
    ends = sorted(end_times)
    return max(now, ends[len(ends) - limit])
