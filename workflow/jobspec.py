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
# that stops the run even if the workflow is gone (terminated, purged, its app deleted). A run of
# its own (a one-time run, a private job) gets the request's deadline plus this margin. A SHARED
# job gets one fixed ceiling instead (the longest deadline a request may ask for, plus the margin):
# a per-request value would make every deadline a definition of its own, a saved job per workflow.
JOB_TIMEOUT_MARGIN_SECONDS = 300
MAX_TIMEOUT_SECONDS = 2_592_000  # input.schema.json: timeoutSeconds maximum (30 days)
SHARED_JOB_TIMEOUT_SECONDS = MAX_TIMEOUT_SECONDS + JOB_TIMEOUT_MARGIN_SECONDS
# Concurrent workflows of one definition share its job: each must get its own run, not SKIPPED.
DEFAULT_MAX_CONCURRENT_RUNS = 1000
DEFINITION_TAG = "durable_job_definition"  # the fingerprint of a shared job's settings
RUN_KEY_TAG = "durable_run_key"  # a private job (deleteJobOnCompletion) belongs to one workflow run
# Tag keys with this prefix are the app's own: a request may not set them (a forged definition tag
# would plant a job for another caller's definition).
RESERVED_TAG_PREFIX = "durable_"
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


def _shared_settings(body: Mapping[str, Any], tasks: List[dict], *, shared_job: bool = False) -> Dict[str, Any]:
    """The parts a saved job and a one-time run are both made of."""
    out: Dict[str, Any] = {"tasks": tasks}
    for field, key in (("jobClusters", "job_clusters"), ("environments", "environments"), ("gitSource", "git_source")):
        if body.get(field):
            out[key] = body[field]
    out["queue"] = dict(body.get("queue") or {"enabled": True})
    out["timeout_seconds"] = (SHARED_JOB_TIMEOUT_SECONDS if shared_job
                              else int(body["timeoutSeconds"]) + JOB_TIMEOUT_MARGIN_SECONDS)
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
        job = {"name": body["jobName"], **_shared_settings(body, tasks, shared_job=not body.get("deleteJobOnCompletion")),
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
#
# A definition is named by the fingerprint of its settings in a canonical form, so that what
# Databricks gives back for a job (jobs/get, jobs/list?expand_tasks=true) hashes to the fingerprint
# it was created with, and the same definition written two ways is one job:
# - order carries no meaning in tasks, depends_on, job_clusters, environments, parameters or
#   webhook destinations (Databricks itself returns depends_on in an order of its own), nor in keys;
# - a field at the value Databricks takes when it is omitted counts as omitted (the service fills
#   these in on jobs/create and returns them; JobSettings and Task in the Jobs API, and databricks/cli's
#   test server, which mirrors what the service returns);
# - what the service consumes and never returns (apply_policy_default_values) is left out, and so
#   are the tags this app sets itself.
# Every other difference is a different definition: callers' tags, run_as and webhooks included.

JOB_DEFAULTS: Dict[str, Any] = {
    "max_concurrent_runs": 1, "timeout_seconds": 0, "format": "MULTI_TASK", "email_notifications": {},
    "webhook_notifications": {}, "notification_settings": {}, "tags": {}, "parameters": [], "job_clusters": [],
    "environments": [], "description": "", "edit_mode": "EDITABLE",
}
# Inside these objects an empty list and false mean "not set" (no destination, no opt-out).
_NOTIFICATION_FIELDS = ("email_notifications", "webhook_notifications", "notification_settings")
TASK_DEFAULTS: Dict[str, Any] = {
    "run_if": "ALL_SUCCESS", "timeout_seconds": 0, "email_notifications": {}, "notification_settings": {},
    "webhook_notifications": {}, "depends_on": [], "libraries": [], "max_retries": 0,
    "min_retry_interval_millis": 0, "retry_on_timeout": False, "disabled": False, "description": "",
}
# Fields Databricks accepts on a cluster spec but does not return.
_CLUSTER_WRITE_ONLY = ("apply_policy_default_values",)
# Fields Databricks fills in on a cluster spec that did not give them, with values that depend on the
# cloud and the workspace (databricks/cli's test server: aws_attributes, data_security_mode,
# enable_elastic_disk). A job's spec may carry them although the definition did not; they are
# compared only where the definition gives them (see `canonical_settings(reference=...)`).
CLUSTER_SERVER_FILLED = ("azure_attributes", "aws_attributes", "gcp_attributes", "enable_elastic_disk",
                         "data_security_mode")
_SOURCE_TASKS = ("notebook_task", "spark_python_task")
_APP_TAGS = (DEFINITION_TAG, RUN_KEY_TAG)


def _without_defaults(obj: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in obj.items() if not (k in defaults and v == defaults[k]) and v is not None}


def _cluster(spec: Any, reference: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    given = reference if isinstance(reference, Mapping) else None
    out = {}
    for key, value in spec.items():
        if key in _CLUSTER_WRITE_ONLY:
            continue
        if key in CLUSTER_SERVER_FILLED and given is not None and key not in given:
            continue  # filled in by the service: not part of a definition that did not give it
        out[key] = value
    return out


def _sorted_by(items: Any, key: str) -> Any:
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        return items
    return sorted(items, key=lambda i: json.dumps(i.get(key), sort_keys=True))


def _notifications(obj: Dict[str, Any]) -> None:
    """Notification objects without their unset entries (empty lists, false), webhook destinations
    in id order and e-mail addresses sorted; an object left empty is dropped."""
    for field in _NOTIFICATION_FIELDS:
        value = obj.get(field)
        if not isinstance(value, Mapping):
            continue
        kept = {}
        for key, entry in value.items():
            if entry in ([], False, None, {}):
                continue
            if isinstance(entry, list):
                entry = (_sorted_by(entry, "id") if all(isinstance(e, Mapping) for e in entry)
                         else sorted(entry, key=str))
            kept[key] = entry
        if kept:
            obj[field] = kept
        else:
            del obj[field]


def _task(task: Mapping[str, Any], reference: Optional[Mapping[str, Any]], git: bool) -> Dict[str, Any]:
    out = _without_defaults(task, TASK_DEFAULTS)
    if "depends_on" in out:
        out["depends_on"] = sorted((_without_defaults(d, {"outcome": None}) for d in out["depends_on"]),
                                   key=lambda d: json.dumps(d, sort_keys=True))
    _notifications(out)
    for kind in _SOURCE_TASKS:
        spec = out.get(kind)
        if isinstance(spec, Mapping):
            # `source` defaults to GIT when the job has a git_source, WORKSPACE otherwise.
            spec = _without_defaults(spec, {"source": "GIT" if git else "WORKSPACE", "base_parameters": {},
                                            "parameters": []})
            out[kind] = spec
    if "new_cluster" in out:
        out["new_cluster"] = _cluster(out["new_cluster"], None if reference is None else reference.get("new_cluster", {}))
    return out


def canonical_settings(settings: Mapping[str, Any], *, reference: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The settings in the canonical form the fingerprint hashes (see above). `reference`: the
    settings the definition asks for, when `settings` are a job's as Databricks returned them; a
    cluster field the service fills in is then compared only where the reference gives it."""
    own = _without_defaults({k: v for k, v in settings.items() if k != "tags"}, JOB_DEFAULTS)
    tags = {k: v for k, v in (settings.get("tags") or {}).items() if k not in _APP_TAGS}
    if tags:
        own["tags"] = tags
    git = bool(settings.get("git_source"))
    ref_tasks = {t.get("task_key"): t for t in (reference or {}).get("tasks") or () if isinstance(t, Mapping)}
    if isinstance(own.get("tasks"), list):
        own["tasks"] = _sorted_by([_task(t, ref_tasks.get(t.get("task_key"), {}) if reference is not None else None, git)
                                   if isinstance(t, Mapping) else t for t in own["tasks"]], "task_key")
    if isinstance(own.get("job_clusters"), list):
        ref_clusters = {c.get("job_cluster_key"): c for c in (reference or {}).get("job_clusters") or ()
                        if isinstance(c, Mapping)}
        own["job_clusters"] = _sorted_by([
            {**c, "new_cluster": _cluster(c.get("new_cluster"), (ref_clusters.get(c.get("job_cluster_key")) or {})
                                          .get("new_cluster", {}) if reference is not None else None)}
            if isinstance(c, Mapping) and "new_cluster" in c else c for c in own["job_clusters"]], "job_cluster_key")
    for field, key in (("environments", "environment_key"), ("parameters", "name")):
        if field in own:
            own[field] = _sorted_by(own[field], key)
    _notifications(own)
    return own


def fingerprint(settings: Mapping[str, Any], *, reference: Optional[Mapping[str, Any]] = None) -> str:
    """Names one job definition: the same settings in any order, with defaults spelled out or not,
    give the same value; any other difference a different one. The tags this app adds are left
    out. `reference`: see `canonical_settings`."""
    canonical = json.dumps(canonical_settings(settings, reference=reference), sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
