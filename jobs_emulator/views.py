"""The JSON shapes of runs, task runs and outputs, as runs/get, runs/list and get-output send them."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from .errors import invalid
from .runs import DEP_WAIT, SUCCESS_RESULTS, Attempt, Outcome, Run
from .scenario import DEFAULT_RESULT

PAGE_SIZE_22 = 100  # 2.2 returns at most 100 array elements per response
RUN_ARRAYS = ("tasks", "job_clusters", "job_parameters", "repair_history")
JOB_ARRAYS = ("tasks", "job_clusters", "parameters", "environments")
_V2_STATE = {"WAITING_FOR_RETRY": "WAITING", "SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED",
             DEP_WAIT: "BLOCKED"}
_SHOWN = {DEP_WAIT: "BLOCKED"}
_TASK_MESSAGES = {"PENDING": "Waiting for cluster", DEP_WAIT: "Waiting for upstream tasks to complete.",
                  "WAITING_FOR_RETRY": "Waiting for the next retry attempt."}


def ms(seconds: float) -> int:
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


def page_arrays(container: dict, names: tuple, offset: int) -> bool:
    """Cut each array to the page at `offset` (arrays already exhausted come back empty); more left?"""
    more = False
    for name in names:
        values = container.get(name)
        if isinstance(values, list):
            container[name] = values[offset:offset + PAGE_SIZE_22]
            more = more or len(values) > offset + PAGE_SIZE_22
    return more


# -- states ----------------------------------------------------------------------------------------

def _ended_state(life: str, outcome: Outcome) -> dict:
    state = {"life_cycle_state": life, "state_message": outcome.state_message,
             "user_cancelled_or_timedout": outcome.user_cancelled_or_timedout}
    if outcome.result_state is not None:
        state["result_state"] = outcome.result_state
    return state


def job_state(store, run: Run, now: float) -> tuple[dict, dict, Outcome | None]:
    """(state, status, outcome if terminal) of the job run."""
    life, outcome = run.state_at(now)
    queue_code = None
    if outcome is not None:
        state = _ended_state(life, outcome)
    else:
        message = ""
        if life == "QUEUED" and now < run.queue_until:
            job = store.jobs.get(run.job_id)
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
        elif life == "WAITING_FOR_RETRY":
            message = _TASK_MESSAGES[life]
        state = {"life_cycle_state": life, "state_message": message, "user_cancelled_or_timedout": False}
        if life == "QUEUED":
            state["queue_reason"] = message
    status: dict = {"state": _V2_STATE.get(life, life)}
    if outcome is None and queue_code:
        status["queue_details"] = {"code": queue_code, "message": state["state_message"]}
    final = outcome or (run.round_at(now).outcome if life == "TERMINATING" else None)
    if final is not None:
        status["termination_details"] = {"code": final.termination_code, "type": final.termination_type,
                                         "message": final.state_message}
    return state, status, outcome


def task_state(attempt: Attempt, now: float) -> tuple[dict, dict, Outcome | None]:
    life, outcome = attempt.state_at(now)
    shown = _SHOWN.get(life, life)
    if outcome is not None:
        state = _ended_state(shown, outcome)
    else:
        state = {"life_cycle_state": shown, "state_message": _TASK_MESSAGES.get(life, ""),
                 "user_cancelled_or_timedout": False}
    status: dict = {"state": _V2_STATE.get(life, life)}
    final = outcome or (attempt.outcome if life == "TERMINATING" else None)
    if final is not None:
        status["termination_details"] = {"code": final.termination_code, "type": final.termination_type,
                                         "message": final.state_message}
    return state, status, outcome


# -- task runs ---------------------------------------------------------------------------------------

def task_json(store, run: Run, attempt: Attempt, now: float, version: str) -> dict:
    out = copy.deepcopy(attempt.task)
    state, status, outcome = task_state(attempt, now)
    started = attempt.started
    out.update({
        "run_id": attempt.run_id,
        "task_key": attempt.key,
        "attempt_number": attempt.number,
        "state": state,
        "run_page_url": store.run_page_url(run.job_id, attempt.run_id),
        "start_time": ms(started) if started is not None and started <= now else 0,
        "end_time": ms(attempt.end) if outcome is not None else 0,
        "setup_duration": ms(attempt.time_in({"PENDING"}, now)),
        "execution_duration": ms(attempt.time_in({"RUNNING"}, now)),
        "cleanup_duration": ms(attempt.time_in({"TERMINATING"}, now)),
        "queue_duration": ms(attempt.time_in({"QUEUED"}, now)),
        "run_if": attempt.task.get("run_if", "ALL_SUCCESS"),
    })
    if version == "2.2":
        out["status"] = status
    return out


def task_run_as_run_json(store, run: Run, attempt: Attempt, now: float, version: str) -> dict:
    """runs/get with a task run id, and the `metadata` of get-output."""
    out = task_json(store, run, attempt, now, version)
    out.pop("queue_duration", None)
    started = attempt.started
    _, outcome = attempt.state_at(now)
    out.update({
        "job_id": run.job_id,
        "job_run_id": run.run_id,
        "number_in_job": attempt.run_id,
        "original_attempt_run_id": attempt.original_run_id,
        "creator_user_name": store.user_name,
        "run_name": attempt.key,
        "run_duration": ms(((attempt.end if outcome is not None else now) - started)
                           if started is not None and started <= now else 0),
        "trigger": run.trigger,
        "run_type": run.run_type,
        "format": "MULTI_TASK",
    })
    return out


# runs/get-output: "Databricks restricts this API to returning the first 5 MB of the output".
MAX_NOTEBOOK_RESULT_BYTES = 5 * 1024 * 1024


def output_json(store, run: Run, attempt: Attempt, now: float, version: str) -> dict:
    """runs/get-output of a task run, by task type, as Databricks returns it (SDK RunOutput)."""
    out: dict = {"metadata": task_run_as_run_json(store, run, attempt, now, version)}
    task = attempt.task
    if attempt.child is not None and attempt.child.created_at <= now:
        out["run_job_output"] = {"run_id": attempt.child.run_id}
    _, outcome = attempt.state_at(now)
    if outcome is None:
        return out  # nothing to report before the task ends
    succeeded = outcome.result_state in SUCCESS_RESULTS
    result = outcome.notebook_result
    if result is DEFAULT_RESULT:
        result = _default_result(run, attempt) if succeeded and isinstance(task.get("notebook_task"), dict) else None
    if isinstance(task.get("notebook_task"), dict):
        notebook_output: dict = {"truncated": bool(outcome.truncated)}
        if result is not None:
            # Databricks returns the first 5 MB of an exit value and says it cut it.
            raw = result.encode("utf-8") if isinstance(result, str) else None
            if raw is not None and len(raw) > MAX_NOTEBOOK_RESULT_BYTES:
                result = raw[:MAX_NOTEBOOK_RESULT_BYTES].decode("utf-8", errors="ignore")
                notebook_output["truncated"] = True
            notebook_output["result"] = result
        out["notebook_output"] = notebook_output
    elif any(isinstance(task.get(t), dict) for t in ("spark_python_task", "python_wheel_task", "spark_jar_task")):
        if attempt.behavior is not None:  # ran: its standard streams (absent for a skipped task)
            out["logs"] = result if isinstance(result, str) else _default_logs(attempt, succeeded)
            out["logs_truncated"] = bool(outcome.truncated)
    elif isinstance(task.get("sql_task"), dict) and attempt.behavior is not None:
        out["sql_output"] = _sql_output(store, run, attempt)
    error = outcome.error
    if error is None and not succeeded and outcome.result_state not in (None, "EXCLUDED", "DISABLED"):
        error = outcome.state_message or None
    if error:
        out["error"] = error
    if outcome.error_trace:
        out["error_trace"] = outcome.error_trace
    return out


def _default_result(run: Run, attempt: Attempt) -> str:
    nb = attempt.task.get("notebook_task") or {}
    return json.dumps({
        "status": "OK",
        "notebook_path": nb.get("notebook_path"),
        "task_key": attempt.key,
        "job_run_id": run.run_id,
        "parameters": nb.get("base_parameters") or {},
    }, sort_keys=True)


def _default_logs(attempt: Attempt, succeeded: bool) -> str:
    task = attempt.task
    if isinstance(task.get("spark_python_task"), dict):
        what, args = task["spark_python_task"].get("python_file"), task["spark_python_task"].get("parameters") or []
    elif isinstance(task.get("python_wheel_task"), dict):
        wheel = task["python_wheel_task"]
        what = f"{wheel.get('package_name')}:{wheel.get('entry_point')}"
        args = wheel.get("parameters") or [f"--{k}={v}" for k, v in (wheel.get("named_parameters") or {}).items()]
    else:
        what, args = task["spark_jar_task"].get("main_class_name"), task["spark_jar_task"].get("parameters") or []
    lines = [f"emulated run of {what} with arguments {json.dumps(list(args))}"]
    lines.append("done" if succeeded else "Traceback (most recent call last):\nException: emulated task failure")
    return "\n".join(lines) + "\n"


def _sql_output(store, run: Run, attempt: Attempt) -> dict:
    sql = attempt.task["sql_task"]
    warehouse = sql.get("warehouse_id")
    statements = [{"lookup_key": f"emulated-{attempt.run_id}"}]
    if isinstance(sql.get("file"), dict):
        return {"file_output": {"warehouse_id": warehouse, "sql_statements": statements,
                                "output_link": store.run_page_url(run.job_id, attempt.run_id)}}
    if isinstance(sql.get("query"), dict):
        return {"query_output": {"warehouse_id": warehouse, "endpoint_id": warehouse, "sql_statements": statements,
                                 "output_link": store.run_page_url(run.job_id, attempt.run_id)}}
    if isinstance(sql.get("alert"), dict):
        return {"alert_output": {"alert_state": "OK", "warehouse_id": warehouse,
                                 "output_link": store.run_page_url(run.job_id, attempt.run_id)}}
    return {"dashboard_output": {"warehouse_id": warehouse, "widgets": []}}


# -- job runs ----------------------------------------------------------------------------------------

def repair_history(store, run: Run, now: float) -> list[dict]:
    items = []
    for rp in run.plan().rounds:
        if rp.visible_from > now:
            continue
        outcome = rp.outcome if now >= rp.end else None
        if outcome is not None:
            state = {"life_cycle_state": outcome.life_cycle_state, "state_message": outcome.state_message,
                     "user_cancelled_or_timedout": outcome.user_cancelled_or_timedout}
            if outcome.result_state is not None:
                state["result_state"] = outcome.result_state
            status = {"state": _V2_STATE.get(outcome.life_cycle_state, outcome.life_cycle_state),
                      "termination_details": {"code": outcome.termination_code, "type": outcome.termination_type,
                                              "message": outcome.state_message}}
        else:
            state, status, _ = job_state(store, run, now)
        rnd = run.rounds[rp.index]
        items.append({
            "id": run.original_id if rp.index == 0 else rnd.repair_id,
            "type": "ORIGINAL" if rp.index == 0 else "REPAIR",
            "start_time": ms(run.created_at if rp.index == 0 else rp.start),
            "end_time": ms(rp.end) if outcome is not None else 0,
            "state": state,
            "status": status,
            "task_run_ids": [a.run_id for a in rp.attempts if a.visible_from <= now],
        })
    return items


def _run_as(store, run: Run) -> str:
    """Who the run runs as: its job's (or one-time run's) run_as, else the creator."""
    job = store.jobs.get(run.job_id) or store.hidden_jobs.get(run.job_id)
    return store.run_as_name(job.settings, job.creator) if job is not None else store.user_name


def run_json(store, run: Run, now: float, version: str, *, page_token: str | None = None,
             include_history: bool = False, expand_tasks: bool = True, all_pages: bool = False) -> dict:
    state, status, outcome = job_state(store, run, now)
    plan = run.plan()
    end = plan.end
    out: dict = {
        "job_id": run.job_id,
        "run_id": run.run_id,
        "job_run_id": run.run_id,
        "number_in_job": run.run_id,
        "original_attempt_run_id": run.run_id,
        "creator_user_name": store.user_name,
        "run_as_user_name": _run_as(store, run),
        "run_name": run.run_name,
        "state": state,
        "run_page_url": store.run_page_url(run.job_id, run.run_id),
        "start_time": ms(run.created_at),
        "end_time": ms(end) if outcome is not None else 0,
        # For multi-task runs the per-phase durations live on the tasks; the job level reports 0.
        "setup_duration": 0,
        "execution_duration": 0,
        "cleanup_duration": 0,
        "run_duration": ms((end if outcome is not None else now) - run.created_at),
        "trigger": run.trigger,
        "run_type": run.run_type,
        "format": "MULTI_TASK",
        "attempt_number": 0,
    }
    if expand_tasks:
        out["tasks"] = [task_json(store, run, a, now, version) for a in plan.attempts if a.visible_from <= now]
        if run.job_clusters:
            out["job_clusters"] = copy.deepcopy(run.job_clusters)
    if run.trigger_info:
        out["trigger_info"] = dict(run.trigger_info)
    if run.git_source:
        out["git_source"] = copy.deepcopy(run.git_source)
    if run.job_parameters:
        out["job_parameters"] = copy.deepcopy(run.job_parameters)
    if run.overriding_parameters:
        out["overriding_parameters"] = copy.deepcopy(run.overriding_parameters)
    if include_history:
        out["repair_history"] = repair_history(store, run, now)
    if version == "2.2":
        out["status"] = status
        out["queue_duration"] = ms(run.time_in({"QUEUED"}, now))
        if all_pages:
            out["has_more"] = False
            return out
        offset = decode_token(page_token)[0] if page_token else 0
        more = page_arrays(out, RUN_ARRAYS, offset)
        out["has_more"] = more
        if more:
            out["next_page_token"] = encode_token(offset + PAGE_SIZE_22)
        if offset:
            out["prev_page_token"] = encode_token(max(0, offset - PAGE_SIZE_22))
    return out
