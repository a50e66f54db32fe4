"""What a request runs: one normalizer from a validated request to the plan the orchestrator follows.

Pure (no Azure imports, no I/O). Every shape becomes the same few pieces:
- `jobSource`: `create` (a saved job, created once per definition and reused), `existing` (a job
  defined in Databricks, by id or by name) or `oneTime` (runs/submit, no saved job);
- `job`: the Databricks job settings to create (create), or `submit`: the runs/submit body (oneTime);
- what differs per run: `notebookParams` / `jobParameters` (run-now), the run queue, the deadline.
The single-notebook request of the seed workflow is a one-task job like any other.

JSON Schema (input.schema.json + schemas/databricks.schema.json) checks each field; `check_references`
checks what a schema cannot: that names used in one place are defined in another, and that the task
graph has no cycle. Errors carry a JSON path (`tasks[2].depends_on[0].task_key`).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

CREATE, EXISTING, ONE_TIME = "create", "existing", "oneTime"
# The workflow's own deadline cancels the run; the job's timeout, a little later, is the backstop
# that stops the run even if the workflow is gone (terminated, purged, its app deleted).
JOB_TIMEOUT_MARGIN_SECONDS = 300
# Concurrent workflows of one definition share its job: each must get its own run, not SKIPPED.
DEFAULT_MAX_CONCURRENT_RUNS = 1000
DEFINITION_TAG = "durable_job_definition"  # the fingerprint of a shared job's settings
RUN_KEY_TAG = "durable_run_key"  # a private job (deleteJobOnCompletion) belongs to one workflow run
TASK_DEFINITION_FIELDS = ("notebookPath", "tasks")
_TASK_TYPES = ("notebook_task", "spark_python_task", "python_wheel_task", "sql_task", "run_job_task")


class PlanError(ValueError):
    """A request whose fields are each valid but do not fit together; `field` is a JSON path."""

    def __init__(self, message: str, field: Optional[str]):
        super().__init__(message)
        self.message = message
        self.field = field


def job_source(body: Mapping[str, Any]) -> str:
    """The request's job source, explicit or implied by the fields given."""
    if body.get("jobSource"):
        return body["jobSource"]
    if "jobId" in body or not any(f in body for f in TASK_DEFINITION_FIELDS):
        return EXISTING
    return CREATE


def tasks_of(body: Mapping[str, Any]) -> List[dict]:
    """The request's tasks in Databricks' shape; the single-notebook fields make a one-task list."""
    if "tasks" in body:
        return [dict(t) for t in body["tasks"]]
    if "notebookPath" not in body:
        return []
    task: Dict[str, Any] = {"task_key": body["taskKey"], "notebook_task": {"notebook_path": body["notebookPath"]}}
    if body.get("existingClusterId"):
        task["existing_cluster_id"] = body["existingClusterId"]
    if body.get("newCluster"):
        task["new_cluster"] = dict(body["newCluster"])
    if body.get("libraries"):
        task["libraries"] = list(body["libraries"])
    return [task]


def _shared_settings(body: Mapping[str, Any], tasks: List[dict]) -> Dict[str, Any]:
    """The parts a saved job and a one-time run are both made of."""
    out: Dict[str, Any] = {"tasks": tasks}
    for field, key in (("jobClusters", "job_clusters"), ("environments", "environments"), ("gitSource", "git_source")):
        if body.get(field):
            out[key] = body[field]
    out["queue"] = dict(body.get("queue") or {"enabled": True})
    out["timeout_seconds"] = int(body["timeoutSeconds"]) + JOB_TIMEOUT_MARGIN_SECONDS
    return out


def plan_of(body: Mapping[str, Any]) -> dict:
    """The orchestrator's plan for a validated request whose defaults are resolved."""
    source = job_source(body)
    tasks = tasks_of(body)
    plan: Dict[str, Any] = {
        "jobSource": source,
        "jobName": body.get("jobName"),
        "jobId": body.get("jobId"),
        "taskKey": body.get("taskKey") or (tasks[0]["task_key"] if len(tasks) == 1 else None),
        "notebookParams": dict(body.get("notebookParams") or {}),
        "jobParameters": dict(body.get("jobParameters") or {}),
        "timeoutSeconds": body["timeoutSeconds"],
        "pollIntervalSeconds": body["pollIntervalSeconds"],
        "deleteJobOnCompletion": bool(body.get("deleteJobOnCompletion")),
        "repair": {"maxAttempts": int((body.get("repair") or {}).get("maxAttempts", 0))},
        "job": None,
        "submit": None,
    }
    if source == CREATE:
        job = {"name": body["jobName"], **_shared_settings(body, tasks),
               "max_concurrent_runs": body.get("maxConcurrentRuns", DEFAULT_MAX_CONCURRENT_RUNS)}
        for field, key in (("parameters", "parameters"), ("tags", "tags")):
            if body.get(field):
                job[key] = body[field]
        plan["job"] = job
    elif source == ONE_TIME:
        submit = {"run_name": body.get("jobName") or "create-job-and-run", **_shared_settings(body, tasks)}
        params = plan.pop("notebookParams")
        plan["notebookParams"] = {}
        if params:  # runs/submit has no notebook_params: they become the notebook tasks' base parameters
            for task in submit["tasks"]:
                if "notebook_task" in task:
                    task["notebook_task"] = {**task["notebook_task"],
                                             "base_parameters": {**task["notebook_task"].get("base_parameters", {}),
                                                                 **params}}
        plan["submit"] = submit
    else:
        plan["runQueue"] = dict(body.get("queue") or {"enabled": True})
    return plan


# -- what JSON Schema cannot check ------------------------------------------------------------------

def _path(*parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_references(body: Mapping[str, Any]) -> None:
    """Names used in one place are defined in another, and the task graph has no cycle."""
    if "tasks" not in body:
        return
    tasks = body["tasks"]
    keys: Dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task["task_key"] in keys:
            raise PlanError(f"'{_path('tasks', i, 'task_key')}' repeats the task key {json.dumps(task['task_key'])} "
                            f"of tasks[{keys[task['task_key']]}]; task keys must be unique", _path("tasks", i, "task_key"))
        keys[task["task_key"]] = i
    clusters = {c["job_cluster_key"] for c in body.get("jobClusters") or ()}
    environments = {e["environment_key"] for e in body.get("environments") or ()}
    for i, task in enumerate(tasks):
        for j, dep in enumerate(task.get("depends_on") or ()):
            if dep["task_key"] not in keys:
                field = _path("tasks", i, "depends_on", j, "task_key")
                raise PlanError(f"'{field}' names no task of this job ({json.dumps(dep['task_key'])})", field)
            if dep["task_key"] == task["task_key"]:
                field = _path("tasks", i, "depends_on", j, "task_key")
                raise PlanError(f"'{field}' makes the task depend on itself", field)
        for name, defined, where in (("job_cluster_key", clusters, "jobClusters"),
                                     ("environment_key", environments, "environments")):
            if name in task and task[name] not in defined:
                field = _path("tasks", i, name)
                raise PlanError(f"'{field}' names no entry of '{where}' ({json.dumps(task[name])})", field)
        for kind in _TASK_TYPES:
            spec = task.get(kind)
            if isinstance(spec, Mapping) and spec.get("source") == "GIT" and not body.get("gitSource"):
                field = _path("tasks", i, kind, "source")
                raise PlanError(f"'{field}' is GIT but the request has no gitSource", field)
    cycle = _cycle(tasks)
    if cycle:
        field = _path("tasks", keys[cycle[0]], "depends_on")
        raise PlanError(f"'{field}' closes a dependency cycle ({' -> '.join(cycle + [cycle[0]])})", field)
    if body.get("taskKey") and body["taskKey"] not in keys:
        raise PlanError(f"'taskKey' names no task of this job ({json.dumps(body['taskKey'])})", "taskKey")


def _cycle(tasks: Iterable[Mapping[str, Any]]) -> Optional[List[str]]:
    """A dependency cycle as a list of task keys, or None (iterative depth-first search)."""
    graph = {t["task_key"]: [d["task_key"] for d in t.get("depends_on") or ()] for t in tasks}
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in graph:
        if state.get(start):
            continue
        path: List[str] = []
        stack: List[Tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            children = graph.get(node, [])
            if index < len(children):
                stack.append((node, index + 1))
                child = children[index]
                if state.get(child) == 1:
                    return path[path.index(child):]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


# -- shared jobs ------------------------------------------------------------------------------------

def fingerprint(settings: Mapping[str, Any]) -> str:
    """Names one job definition: the same settings always give the same value, any difference a
    different one. Key order does not matter; the tags this app adds are left out."""
    own = {k: v for k, v in settings.items() if k != "tags"}
    tags = {k: v for k, v in (settings.get("tags") or {}).items() if k not in (DEFINITION_TAG, RUN_KEY_TAG)}
    if tags:
        own["tags"] = tags
    canonical = json.dumps(own, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
