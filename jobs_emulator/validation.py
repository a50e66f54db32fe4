"""Validation of job settings and one-time runs, with the errors Databricks answers.

Messages marked REAL were seen in responses of the service (the source is named next to them);
the others were not found in any public source, so they follow the shape of the nearest real
message and use the code Databricks uses for the same kind of mistake (400
INVALID_PARAMETER_VALUE).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable

from .errors import ApiError, invalid

MALFORMED = "Invalid JSON given in the body of the request - expected a map"

# Task types the emulator runs. Others exist (pipeline_task, dbt_task, condition_task, …); they
# are refused loudly rather than pretended, so a test never passes on a type nobody emulates.
TASK_TYPES = ("notebook_task", "spark_python_task", "python_wheel_task", "sql_task", "run_job_task",
              "spark_jar_task")
OTHER_TASK_TYPES = ("spark_submit_task", "pipeline_task", "dbt_task", "condition_task", "for_each_task",
                    "dashboard_task", "alert_task", "power_bi_task", "clean_rooms_notebook_task",
                    "gen_ai_compute_task", "dbt_cloud_task", "dbt_platform_task", "ai_function_task",
                    "ai_runtime_task", "python_operator_task")
# Serverless runs notebooks and SQL as they are; scripts and wheels need an environment, JARs a cluster.
NEEDS_ENVIRONMENT = ("spark_python_task", "python_wheel_task")
NO_COMPUTE = ("sql_task", "run_job_task")
COMPUTE_FIELDS = ("existing_cluster_id", "new_cluster", "job_cluster_key")
RUN_IF = ("ALL_SUCCESS", "AT_LEAST_ONE_SUCCESS", "NONE_FAILED", "ALL_DONE", "AT_LEAST_ONE_FAILED", "ALL_FAILED")
GIT_PROVIDERS = ("github", "gitlab", "bitbucketcloud", "gitlabenterpriseedition", "bitbucketserver",
                 "azuredevopsservices", "githubenterprise", "awscodecommit")
# Job parameter keys "can only contain _ - . or alphanumeric characters" (docs: jobs/job-parameters).
PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MAX_TASKS = 1000
MAX_TAGS = 25
MAX_WEBHOOKS_PER_EVENT = 3
MAX_PARAMS_JSON_BYTES = 10_000  # notebook_params / job_parameters JSON (SDK run_now docstring)


def missing(path: str) -> ApiError:
    # REAL shape: "Missing required field: settings.tasks.depends_on.task_key"
    # (databricks/terraform-provider-databricks#1527).
    return invalid(f"Missing required field: {path}")


def require_map(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "MALFORMED_REQUEST", MALFORMED)
    return body


def idempotency_token(body: dict) -> str | None:
    token = body.get("idempotency_token")
    if token is not None and (not isinstance(token, str) or len(token) > 64):
        raise invalid("idempotency_token must be a string of at most 64 characters.")
    return token


def job_settings(body: dict, *, job_exists: Callable[[int], bool], default_queue: bool) -> dict:
    """Settings as jobs/create stores them: validated, write-only fields dropped, defaults set."""
    settings = copy.deepcopy(require_map(body))
    settings.pop("access_control_list", None)  # write-only
    settings.setdefault("name", "Untitled")
    settings.setdefault("max_concurrent_runs", 1)
    settings.setdefault("timeout_seconds", 0)
    settings.setdefault("email_notifications", {})
    settings.setdefault("webhook_notifications", {})
    settings["format"] = "MULTI_TASK"  # always, for jobs created with 2.1+
    if "queue" not in settings and default_queue:
        settings["queue"] = {"enabled": True}  # jobs created (or reset) with 2.2 are queued by default
    for task in settings.get("tasks") or []:
        if isinstance(task, dict):
            # Server-side defaults the API returns on jobs/get (databricks/cli testserver jobFixUps).
            task.setdefault("run_if", "ALL_SUCCESS")
            task.setdefault("timeout_seconds", 0)
            task.setdefault("email_notifications", {})
    validate(settings, job_exists=job_exists)
    _as_returned(settings)
    return settings


def _as_returned(settings: dict) -> None:
    """What else the service changes between jobs/create and jobs/get (databricks/cli testserver,
    which mirrors the cloud): depends_on comes back in an order of its own (by task key), a notebook
    or Python script task's `source` is filled in (GIT with a git_source, WORKSPACE otherwise), and
    `apply_policy_default_values` is consumed, never returned."""
    source = "GIT" if settings.get("git_source") else "WORKSPACE"
    clusters = [c.get("new_cluster") for c in settings.get("job_clusters") or [] if isinstance(c, dict)]
    for task in settings.get("tasks") or []:
        if not isinstance(task, dict):
            continue
        if isinstance(task.get("depends_on"), list):
            task["depends_on"] = sorted(task["depends_on"], key=lambda d: str(d.get("task_key")))
        for kind in ("notebook_task", "spark_python_task"):
            if isinstance(task.get(kind), dict):
                task[kind].setdefault("source", source)
        clusters.append(task.get("new_cluster"))
    for cluster in clusters:
        if isinstance(cluster, dict):
            cluster.pop("apply_policy_default_values", None)


def submit_settings(body: dict, *, job_exists: Callable[[int], bool]) -> dict:
    """The run settings of runs/submit (which has no job_clusters: SubmitRun/SubmitTask lack them)."""
    settings = copy.deepcopy(require_map(body))
    for write_only in ("access_control_list", "idempotency_token"):
        settings.pop(write_only, None)
    settings.setdefault("run_name", "Untitled")
    if not settings.get("tasks"):
        raise missing("tasks")
    if "job_clusters" in settings:
        raise invalid("job_clusters is not supported by runs/submit; use new_cluster on each task.")
    for task in settings.get("tasks") or []:
        if isinstance(task, dict):
            task.setdefault("run_if", "ALL_SUCCESS")
            task.setdefault("timeout_seconds", 0)
    validate(settings, job_exists=job_exists, name_field="run_name")
    return settings


def validate(settings: dict, *, job_exists: Callable[[int], bool], name_field: str = "name") -> None:
    name = settings.get(name_field)
    if not isinstance(name, str) or len(name.encode()) > 4096:
        raise invalid("Job name must be a string of at most 4096 bytes.")
    tags = settings.get("tags")
    if tags is not None and (not isinstance(tags, dict) or len(tags) > MAX_TAGS):
        raise invalid("tags must be a map of at most 25 tags.")
    hooks = settings.get("webhook_notifications") or {}
    if not isinstance(hooks, dict):
        raise invalid("webhook_notifications must be an object.")
    for event, destinations in hooks.items():
        if isinstance(destinations, list) and len(destinations) > MAX_WEBHOOKS_PER_EVENT:
            raise invalid(f"At most 3 webhook destinations are allowed for {event}.")
    max_runs = settings.get("max_concurrent_runs", 1)
    if not isinstance(max_runs, int) or isinstance(max_runs, bool) or not 0 <= max_runs <= 1000:
        raise invalid("max_concurrent_runs must be between 0 and 1000.")
    _non_negative_int(settings.get("timeout_seconds", 0), "timeout_seconds")
    _git_source(settings.get("git_source"))
    _parameters(settings.get("parameters"))
    clusters = _job_clusters(settings.get("job_clusters"))
    environments = _environments(settings.get("environments"))
    tasks = settings.get("tasks") or []
    if not isinstance(tasks, list) or len(tasks) > MAX_TASKS:
        raise invalid("A job can have at most 1000 tasks.")
    keys: list[str] = []
    for task in tasks:
        key = task.get("task_key") if isinstance(task, dict) else None
        if not key or not isinstance(key, str):
            raise missing("task_key")
        if key in keys:
            raise invalid(f"Task key {key} is not unique.")
        keys.append(key)
    for task in tasks:
        _task(task, clusters, environments, job_exists)
    topological_order(tasks)  # refuses unknown keys and cycles


def _non_negative_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid(f"{name} must be a non-negative integer.")


def _git_source(git: Any) -> None:
    if git is None:
        return
    if not isinstance(git, dict) or git.get("git_provider") not in GIT_PROVIDERS:
        # REAL: databricks/cli libs/testserver/jobs.go mirrors the Jobs API's message.
        raise invalid("git_source.git_provider must be one of: " + ",".join(GIT_PROVIDERS))


def _parameters(parameters: Any) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, list):
        raise invalid("parameters must be a list of {name, default}.")
    seen = set()
    for p in parameters:
        if not isinstance(p, dict) or not p.get("name"):
            raise missing("settings.parameters.name")
        name = p["name"]
        if not isinstance(name, str) or not PARAMETER_NAME.match(name):
            raise invalid(f"Invalid job parameter name '{name}': it can only contain _ - . or alphanumeric "
                          "characters.")
        if name in seen:
            raise invalid(f"Job parameter name '{name}' is not unique.")
        seen.add(name)
        if "default" not in p:
            raise missing("settings.parameters.default")


def _job_clusters(clusters: Any) -> set[str]:
    if clusters is None:
        return set()
    if not isinstance(clusters, list):
        raise invalid("job_clusters must be a list.")
    keys = set()
    for cluster in clusters:
        key = cluster.get("job_cluster_key") if isinstance(cluster, dict) else None
        if not key:
            raise missing("settings.job_clusters.job_cluster_key")
        if key in keys:
            raise invalid(f"Job cluster key {key} is not unique.")
        keys.add(key)
        if not isinstance(cluster.get("new_cluster"), dict):
            raise missing("settings.job_clusters.new_cluster")
        new_cluster(cluster["new_cluster"], "settings.job_clusters.new_cluster")
    return keys


def new_cluster(spec: dict, path: str) -> None:
    """The minimum a cluster spec needs; a cluster policy may supply the rest."""
    if spec.get("policy_id"):
        return
    if not spec.get("spark_version"):
        raise missing(f"{path}.spark_version")
    if not spec.get("node_type_id") and not spec.get("instance_pool_id"):
        raise missing(f"{path}.node_type_id")
    autoscale = spec.get("autoscale")
    if "num_workers" not in spec and not isinstance(autoscale, dict):
        # REAL shape: "Missing required field: settings.cluster_spec.new_cluster.size" is what the
        # service says without a size (databricks/terraform-provider-databricks#25).
        raise missing(f"{path}.size")
    if isinstance(autoscale, dict) and not ("min_workers" in autoscale and "max_workers" in autoscale):
        raise missing(f"{path}.autoscale.max_workers")


def _environments(environments: Any) -> set[str]:
    if environments is None:
        return set()
    if not isinstance(environments, list):
        raise invalid("environments must be a list.")
    keys = set()
    for env in environments:
        key = env.get("environment_key") if isinstance(env, dict) else None
        if not key:
            raise missing("settings.environments.environment_key")
        if key in keys:
            raise invalid(f"Environment key {key} is not unique.")
        keys.add(key)
        spec = env.get("spec")
        if not isinstance(spec, dict) or not any(spec.get(f) for f in ("environment_version", "client",
                                                                        "base_environment")):
            raise missing("settings.environments.spec.environment_version")
    return keys


def task_type(task: dict) -> str:
    kinds = [t for t in TASK_TYPES + OTHER_TASK_TYPES if task.get(t) is not None]
    if not kinds:
        raise invalid(f"Task {task.get('task_key')} must specify one task type, e.g. notebook_task.")
    if len(kinds) > 1:
        raise invalid(f"Task {task.get('task_key')} specifies more than one task type: {', '.join(kinds)}.")
    if kinds[0] not in TASK_TYPES:
        raise invalid(f"{kinds[0]} is not supported by the Jobs API emulator (supported: {', '.join(TASK_TYPES)}).")
    if not isinstance(task[kinds[0]], dict):
        raise invalid(f"{kinds[0]} must be an object.")
    return kinds[0]


def _task(task: dict, clusters: set[str], environments: set[str], job_exists: Callable[[int], bool]) -> None:
    key = task["task_key"]
    kind = task_type(task)
    body = task[kind]
    required = {"notebook_task": ("notebook_path",), "spark_python_task": ("python_file",),
                "python_wheel_task": ("package_name", "entry_point"), "sql_task": ("warehouse_id",),
                "run_job_task": ("job_id",), "spark_jar_task": ("main_class_name",)}[kind]
    for field_name in required:
        if body.get(field_name) in (None, ""):
            raise missing(f"settings.tasks.{kind}.{field_name}")
    if kind == "sql_task" and not any(isinstance(body.get(k), dict) for k in ("query", "file", "alert", "dashboard")):
        raise invalid(f"Task {key}: sql_task needs one of query, file, alert or dashboard.")
    if kind == "run_job_task":
        try:
            child = int(body["job_id"])
        except (TypeError, ValueError):
            raise invalid(f"Invalid value for run_job_task.job_id: {body['job_id']}") from None
        if not job_exists(child):
            raise invalid(f"Job {child} does not exist.")
    compute = [f for f in COMPUTE_FIELDS if task.get(f)]
    if len(compute) > 1:
        raise invalid(f"Task {key} can use only one of job_cluster_key, new_cluster or existing_cluster_id, "
                      f"got {', '.join(compute)}.")
    if task.get("job_cluster_key") and task["job_cluster_key"] not in clusters:
        # REAL: databrickslabs/lakebridge#2132.
        raise invalid(f"Job cluster '{task['job_cluster_key']}' is not defined in field 'job_clusters'.")
    if isinstance(task.get("new_cluster"), dict):
        new_cluster(task["new_cluster"], "settings.tasks.new_cluster")
    env_key = task.get("environment_key")
    if env_key and env_key not in environments:
        raise invalid(f"Environment '{env_key}' is not defined in field 'environments'.")
    if not compute and kind not in NO_COMPUTE:  # serverless
        if kind == "spark_jar_task":
            # REAL: Azure/azure-databricks-client#105, databricks/cli#1039.
            raise invalid("One of job_cluster_key, new_cluster, or existing_cluster_id must be specified.")
        if kind in NEEDS_ENVIRONMENT and not env_key:
            # REAL: databricks/databricks-sdk-py#1228 (the tail of the link was cut off there).
            raise invalid(f"An environment is required for serverless task {key}. Please define one using "
                          "`environments` and `environment_key`. For more details, please refer to the API "
                          "documentation at https://docs.databricks.com/api/workspace/jobs/create")
        if task.get("libraries"):
            # REAL: seen by several bundles on serverless (400 INVALID_PARAMETER_VALUE).
            raise invalid("Libraries field is not supported for serverless task, please specify libraries in "
                          "environment.")
    run_if = task.get("run_if", "ALL_SUCCESS")
    if run_if not in RUN_IF:
        raise invalid(f"Invalid run_if value {run_if}; expected one of {', '.join(RUN_IF)}.")
    retries = task.get("max_retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < -1:
        raise invalid("max_retries must be -1 (retry indefinitely) or a non-negative integer.")
    _non_negative_int(task.get("min_retry_interval_millis", 0), "min_retry_interval_millis")
    _non_negative_int(task.get("timeout_seconds", 0), "timeout_seconds")
    deps = task.get("depends_on") or []
    if not isinstance(deps, list) or not all(isinstance(d, dict) for d in deps):
        raise invalid("depends_on must be a list of {task_key}.")
    for dep in deps:
        if not dep.get("task_key"):
            raise missing("settings.tasks.depends_on.task_key")  # REAL (terraform-provider-databricks#1527)
        if dep["task_key"] == key:
            # REAL: apache/airflow#47983.
            raise invalid(f"Invalid dependency graph, task '{key}' can not reference itself.")


def topological_order(tasks: list[dict]) -> list[str]:
    """Task keys so that every task follows the tasks it depends on (definition order otherwise)."""
    keys = [t["task_key"] for t in tasks]
    known = set(keys)
    deps = {t["task_key"]: [d["task_key"] for d in t.get("depends_on") or []] for t in tasks}
    for key, upstream in deps.items():
        for dep in upstream:
            if dep not in known:
                raise invalid(f"Invalid dependency graph, task '{key}' depends on task '{dep}' which does not "
                              "exist.")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str) -> None:
        # Iterative depth-first search: a 1,000-task chain must not hit the recursion limit.
        stack = [(key, iter(deps[key]))]
        state[key] = 1
        path = [key]
        while stack:
            node, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    cycle = path[path.index(child):] + [child]
                    raise invalid("Invalid dependency graph, the tasks form a cycle: " + " -> ".join(cycle) + ".")
                if state.get(child) is None:
                    state[child] = 1
                    stack.append((child, iter(deps[child])))
                    path.append(child)
                    break
            else:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)

    for key in keys:
        if key not in state:
            visit(key)
    return order


def params_size(name: str, value: Any) -> None:
    if value and len(json.dumps({name: value}, separators=(",", ":")).encode()) > MAX_PARAMS_JSON_BYTES:
        raise invalid(f"The JSON representation of {name} cannot exceed 10,000 bytes.")
