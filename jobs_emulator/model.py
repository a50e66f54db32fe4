"""Jobs and runs of one emulated workspace, and the Jobs API operations on them; no HTTP here.

Runs are planned once (see :mod:`.runs`) and read at the clock's current time, so lookups stay
O(1) and state is computed lazily even with thousands of concurrent runs.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable

from . import validation as check
from . import views
from .errors import ApiError, invalid, invalid_state
from .runs import MAX_RUN_JOB_DEPTH, Attempt, Outcome, Round, Run, classify
from .scenario import Scenario
from .views import PAGE_SIZE_22, decode_token, encode_token  # noqa: F401  (re-exported names)

MULTI_TASK_OUTPUT_MESSAGE = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)
# Real ids are 13-16 digit integers; distinct ranges make a job id passed as a run id fail loudly.
# Both stay below 2**53 so JavaScript clients and JSON tools keep them exact.
JOB_ID_BASE = 481_000_000_000_000
RUN_ID_BASE = 790_000_000_000_000
# runs/list: "greater than 0 and less than 25 ... If a request specifies a limit of 0, the service
# instead uses the maximum limit" (SDK list_runs). The service once accepted 26 ("Invalid limit 27 -
# it has to be no more than 26.", databricks/databricks-cli#464); the documented 25 is enforced.
RUNS_LIST_MAX = 25
RUNS_LIST_DEFAULT = 20
ACTIVE_STATES = frozenset({"QUEUED", "PENDING", "RUNNING", "TERMINATING"})  # active_only, as documented
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
# run-now and repair "task parameters" (deprecated): they cannot be mixed with job parameters.
TASK_PARAMETER_FIELDS = ("notebook_params", "python_params", "python_named_params", "jar_params",
                         "spark_submit_params", "sql_params", "dbt_commands")
MERGED_ARRAYS = {"tasks": "task_key", "job_clusters": "job_cluster_key", "environments": "environment_key",
                 "parameters": "name"}


@dataclass
class Job:
    job_id: int
    settings: dict
    created_time: float
    creator: str


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


def _as_map(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "MALFORMED_REQUEST", f"Could not parse request object: Expected object for field {name}")
    return {str(k): v for k, v in value.items()}


class Store:
    """All jobs and runs of one emulated workspace. Thread-safe; every public method locks."""

    def __init__(self, clock: Callable[[], float], scenario: Scenario, *, base_url: Callable[[], str],
                 workspace_id: int, user_name: str, cancel_seconds: float, max_jobs: int = 10_000,
                 job_creation_rate_limit: int = 10_000, job_creation_rate_window: float = 3600.0,
                 keep_runs_of_deleted_jobs: bool = False, job_ids: str = "ascending",
                 max_concurrent_task_runs: int | None = 2000):
        self.clock = clock
        self.max_concurrent_task_runs = max_concurrent_task_runs
        self.scenario = scenario
        self._base_url = base_url
        self.workspace_id = workspace_id
        self.user_name = user_name
        self.cancel_seconds = cancel_seconds
        self.max_jobs = max_jobs
        self.job_creation_rate_limit = job_creation_rate_limit
        self.job_creation_rate_window = job_creation_rate_window
        self.keep_runs_of_deleted_jobs = keep_runs_of_deleted_jobs
        self.lock = threading.RLock()
        # Service principals of the workspace by application id: True when the emulator's identity has
        # "Service principal: User" on it (servicePrincipal/user), which setting run_as to it requires.
        self.service_principals: dict[str, bool] = {}
        self.jobs: dict[int, Job] = {}  # saved jobs (jobs/create)
        self.hidden_jobs: dict[int, Job] = {}  # the unsaved jobs behind runs/submit runs
        self.deleted_jobs: set[int] = set()
        self.runs: dict[int, Run] = {}  # job runs by run id (including submit and run_job_task runs)
        self.runs_by_job: dict[int, list[Run]] = defaultdict(list)
        self.task_runs: dict[int, tuple[Run, int, str, int]] = {}  # task run id -> (run, round, key, attempt)
        self.idempotency: dict[str, int] = {}
        self.watched: dict[int, Run] = {}  # runs whose job has webhook notifications still to send
        self._order: list[tuple[int, int]] = []  # (start_time ms, run_id), sorted: runs/list order
        self._maybe_active: dict[int, Run] = {}  # runs not yet seen terminal: active_only scans these
        self._creations: deque = deque()  # times of job creations inside the rate window
        self._creation_order: dict[int, int] = {}  # job id -> creation sequence (ties of created_time)
        self._creations_seen = itertools.count()
        if job_ids not in ("ascending", "descending"):
            raise ValueError("job_ids must be 'ascending' or 'descending'")
        # Descending: ids still in the same 15-digit range, each below the last.
        self._job_ids = (itertools.count(JOB_ID_BASE + 1) if job_ids == "ascending"
                         else itertools.count(JOB_ID_BASE + 999_999_999, -1))
        self._run_ids = itertools.count(RUN_ID_BASE + 1)

    # -- planner host ---------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def task_run_id(self, run: Run, round_index: int, key: str, number: int) -> int:
        slot = (round_index, key, number)
        rid = run.ids.get(slot)
        if rid is None:
            rid = next(self._run_ids)
            run.ids[slot] = rid
            self.task_runs[rid] = (run, round_index, key, number)
        return rid

    def spawn_child(self, parent: Run, slot: tuple, start: float, task: dict, parent_task_run_id: int) -> Run | None:
        """The job run a run_job_task starts at `start` (created once, then moved if the plan moves)."""
        child = parent.children.get(slot)
        if child is not None:
            if child.created_at != start and child.created_at > self.clock():
                self._unlist(child)
                child.created_at = child.queue_until = start
                child.invalidate()
                self._list(child)
            return child
        job = self.jobs.get(int(task["run_job_task"]["job_id"]))
        if job is None or parent.depth >= MAX_RUN_JOB_DEPTH:
            return None
        settings = job.settings
        defined = {p["name"] for p in settings.get("parameters") or []}
        # Job parameters are pushed down to Run Job tasks (docs: jobs/job-parameters), for the names the
        # triggered job defines.
        pushed = {k: v for k, v in parent.rounds[slot[0]].values.items() if k in defined}
        pushed.update(task["run_job_task"].get("job_parameters") or {})
        values = {p["name"]: str(p.get("default", "")) for p in settings.get("parameters") or []}
        values.update({k: v for k, v in pushed.items() if k in defined})
        child = self._new_run(job.job_id, settings, start, parent.api_version, values=values,
                              notebook_params=task["run_job_task"].get("notebook_params") or {},
                              trigger="RUN_JOB_TASK", trigger_info={"run_id": parent_task_run_id},
                              depth=parent.depth + 1)
        parent.children[slot] = child
        self._register(child)
        return child

    def _replan(self, run: Run) -> None:
        """Plan a changed run again at once, so the runs it starts or no longer starts follow now."""
        run.invalidate()
        run.plan()

    def abandon(self, child: Run) -> None:
        """A planned run_job_task run whose task will not start after all: it never existed."""
        child.abandoned = True
        self._maybe_active.pop(child.run_id, None)
        self.watched.pop(child.run_id, None)

    # -- jobs -------------------------------------------------------------------------------------
    def _job_exists(self, job_id: int) -> bool:
        return job_id in self.jobs

    def _check_run_as(self, settings: dict, caller: str | None = None) -> None:
        """`run_as` as Databricks takes it: exactly one of user_name (only the caller itself, unless an
        admin: the emulator's identity is not one) or service_principal_name, an application id of a
        service principal the caller holds "Service principal: User" on."""
        run_as = settings.get("run_as")
        if run_as is None:
            return
        caller = caller or self.user_name
        if not isinstance(run_as, dict) or len(run_as) != 1 or not set(run_as) <= {"user_name",
                                                                                   "service_principal_name"}:
            raise invalid("run_as must set exactly one of user_name or service_principal_name.")
        if "user_name" in run_as:
            if run_as["user_name"] != caller:
                raise ApiError(403, "PERMISSION_DENIED", f"{caller} cannot set run_as to user "
                                                         f"{run_as['user_name']}: only admins may run as another user.")
            return
        name = run_as["service_principal_name"]
        if not isinstance(name, str) or name not in self.service_principals:
            raise invalid(f"Service principal {name} does not exist in the workspace.")
        if not self.service_principals[name]:
            raise ApiError(403, "PERMISSION_DENIED", f"{caller} does not have the Service principal: User "
                                                     f"role on service principal {name} and cannot set it as run_as.")

    @staticmethod
    def run_as_name(settings: dict, creator: str) -> str:
        run_as = settings.get("run_as") or {}
        return run_as.get("service_principal_name") or run_as.get("user_name") or creator

    def create_job(self, body: dict, version: str, creator: str | None = None) -> dict:
        with self.lock:
            settings = check.job_settings(body, job_exists=self._job_exists, default_queue=version == "2.2")
            self._check_run_as(settings, creator)
            now = self.clock()
            if len(self.jobs) >= self.max_jobs:
                # REAL text: KB "job-rate-limit" (docs.azure.cn/zh-cn/databricks/kb/jobs/job-rate-limit).
                raise ApiError(400, "QUOTA_EXCEEDED",
                               f"The quota for the number of jobs has been reached. The current quota is "
                               f"{self.max_jobs}. This quota is only applied to jobs created through the UI or "
                               "through the /jobs/create endpoint, which are displayed in the Jobs UI")
            self._count_creation(now)
            job_id = next(self._job_ids)
            self._creation_order[job_id] = next(self._creations_seen)
            self.jobs[job_id] = Job(job_id, settings, now, creator or self.user_name)
        return {"job_id": job_id}

    def _count_creation(self, now: float) -> None:
        """The workspace's job creation rate limit; runs/submit counts too (its runs are jobs)."""
        window, limit = self.job_creation_rate_window, self.job_creation_rate_limit
        while self._creations and self._creations[0] <= now - window:
            self._creations.popleft()
        if len(self._creations) >= limit:
            seconds = int(window) if float(window).is_integer() else window
            # REAL text and code: KB "job-rate-limit" and Azure Data Factory error 3202.
            raise invalid_state(f"There were already {limit} jobs created in past {seconds} seconds, exceeding "
                                f"rate limit: {limit} job creations per {seconds} seconds.")
        self._creations.append(now)

    def _job(self, job_id: Any) -> Job:
        job_id = _as_int(job_id, "job_id")
        job = self.jobs.get(job_id)
        if job is None:
            raise invalid(f"Job {job_id} does not exist.")
        return job

    def job_json(self, job: Job, version: str, *, expand_tasks: bool = True, page_token: str | None = None,
                 listed: bool = False) -> dict:
        settings = copy.deepcopy(job.settings)
        out: dict = {
            "job_id": job.job_id,
            "creator_user_name": job.creator,
            "run_as_user_name": self.run_as_name(job.settings, job.creator),
            "run_as_owner": "run_as" not in job.settings,
            "created_time": views.ms(job.created_time),
            "settings": settings,
        }
        if not expand_tasks:
            settings.pop("tasks", None)
            settings.pop("job_clusters", None)
        elif version == "2.2":
            offset = decode_token(page_token)[0] if page_token else 0
            if views.page_arrays(settings, views.JOB_ARRAYS, offset):
                out["has_more"] = True
                if not listed:
                    out["next_page_token"] = encode_token(offset + PAGE_SIZE_22)
        return out

    def get_job(self, query: dict, version: str) -> dict:
        with self.lock:
            return self.job_json(self._job(query.get("job_id")), version, page_token=query.get("page_token"))

    def list_jobs(self, query: dict, version: str) -> dict:
        limit = _as_int(query.get("limit", 20), "limit")
        # 2.2: "greater than 0 and less or equal to 100" (SDK list); 2.1: "less or equal to 25".
        most = 100 if version == "2.2" else 25
        if not 0 < limit <= most:
            raise invalid(f"The limit must be greater than 0 and at most {most}, got {limit}.")
        name = query.get("name")
        offset = 0
        if query.get("page_token"):
            offset = decode_token(query["page_token"])[0]
        elif query.get("offset"):  # deprecated but still accepted
            offset = _as_int(query["offset"], "offset")
        expand = _as_bool(query.get("expand_tasks", False))
        with self.lock:
            # Newest first: offset is documented "relative to the most recently created job".
            jobs = sorted((j for j in self.jobs.values()
                           if name is None or str(j.settings.get("name", "")).casefold() == name.casefold()),
                          key=lambda j: (-j.created_time, -self._creation_order[j.job_id]))
            page = jobs[offset:offset + limit]
            out: dict = {}
            if page:  # "Only included in the response if there are jobs to list"
                out["jobs"] = [self.job_json(j, version, expand_tasks=expand, listed=True) for j in page]
        more = offset + limit < len(jobs)
        out["has_more"] = more
        if more:
            out["next_page_token"] = encode_token(offset + limit)
        if offset > 0:
            out["prev_page_token"] = encode_token(max(0, offset - limit))
        return out

    def reset_job(self, body: dict, version: str) -> dict:
        body = check.require_map(body)
        with self.lock:
            job = self._job(body.get("job_id"))
            new = body.get("new_settings")
            if not isinstance(new, dict):
                raise check.missing("new_settings")
            settings = check.job_settings(new, job_exists=self._job_exists, default_queue=version == "2.2")
            self._check_run_as(settings)
            self._replace_settings(job, settings)
        return {}

    def update_job(self, body: dict, version: str) -> dict:
        body = check.require_map(body)
        with self.lock:
            job = self._job(body.get("job_id"))
            settings = copy.deepcopy(job.settings)
            removals = body.get("fields_to_remove") or []
            if not isinstance(removals, list):
                raise invalid("fields_to_remove must be a list of field names.")
            for path in removals:
                self._remove_field(settings, str(path))
            new = body.get("new_settings") or {}
            if not isinstance(new, dict):
                raise invalid("new_settings must be an object.")
            for name, value in new.items():
                key_field = MERGED_ARRAYS.get(name)
                if key_field and isinstance(value, list) and isinstance(settings.get(name), list):
                    # "arrays are merged": entries with the same key are replaced, others kept.
                    merged = {e.get(key_field): e for e in settings[name] if isinstance(e, dict)}
                    for entry in value:
                        merged[entry.get(key_field) if isinstance(entry, dict) else None] = copy.deepcopy(entry)
                    settings[name] = list(merged.values())
                else:
                    settings[name] = copy.deepcopy(value)
            settings = check.job_settings(settings, job_exists=self._job_exists, default_queue=False)
            self._check_run_as(settings)
            self._replace_settings(job, settings)
        return {}

    @staticmethod
    def _remove_field(settings: dict, path: str) -> None:
        array, sep, key = path.partition("/")
        if not sep:
            if path == "tasks":
                raise invalid("Removing the whole tasks field is not supported; remove tasks by key (tasks/<key>).")
            settings.pop(path, None)
            return
        key_field = MERGED_ARRAYS.get(array)
        if key_field not in ("task_key", "job_cluster_key"):
            # "Removing nested fields is not supported, except for tasks and job clusters" (SDK update).
            raise invalid(f"Cannot remove nested field {path}: only tasks/<task_key> and "
                          "job_clusters/<job_cluster_key> can be removed.")
        entries = settings.get(array) or []
        kept = [e for e in entries if e.get(key_field) != key]
        if len(kept) == len(entries):
            raise invalid(f"Cannot remove {path}: no entry with {key_field} '{key}'.")
        settings[array] = kept

    def _replace_settings(self, job: Job, settings: dict) -> None:
        old_timeout = job.settings.get("timeout_seconds") or 0
        job.settings = settings
        new_timeout = settings.get("timeout_seconds") or 0
        if new_timeout != old_timeout:
            # "Changes to timeout_seconds are applied to active runs" (SDK reset/update docstrings).
            now = self.clock()
            for run in self.runs_by_job.get(job.job_id, []):
                if not run.is_terminal(now):
                    run.timeout_seconds = float(new_timeout)
                    self._replan(run)

    def delete_job(self, body: dict) -> dict:
        job_id = _as_int(check.require_map(body).get("job_id"), "job_id")
        with self.lock:
            job = self.jobs.pop(job_id, None)
            if job is None and job_id not in self.deleted_jobs:
                raise invalid(f"Job {job_id} does not exist.")
            self.deleted_jobs.add(job_id)
            if job is not None and not self.keep_runs_of_deleted_jobs:
                # Jobs API 2.0 doc of jobs/delete: "After the job is removed, neither its details nor its
                # run history is visible via the Jobs UI or API ... runs that were active before the
                # receipt of this request may still be active. They will be terminated asynchronously."
                now = self.clock()
                for run in self.runs_by_job.get(job_id, []):
                    self._cancel(run, now)
                    run.hidden = True
                    self.watched.pop(run.run_id, None)
                    self._maybe_active.pop(run.run_id, None)
        return {}

    # -- starting runs -------------------------------------------------------------------------------
    def _effective_tasks(self, settings: dict, values: dict, notebook_params: dict, extra: dict) -> dict:
        """Task settings with parameters pushed down (job parameters win over task parameters)."""
        tasks = {}
        for task in settings.get("tasks") or []:
            task = copy.deepcopy(task)
            nb = task.get("notebook_task")
            merged = {**notebook_params, **values}
            if isinstance(nb, dict) and merged:
                nb["base_parameters"] = {**(nb.get("base_parameters") or {}), **merged}
            wheel = task.get("python_wheel_task")
            if isinstance(wheel, dict):
                if isinstance(wheel.get("named_parameters"), dict) and values:
                    wheel["named_parameters"] = {**wheel["named_parameters"], **values}
                if extra.get("python_named_params"):
                    wheel["named_parameters"] = {**(wheel.get("named_parameters") or {}),
                                                 **extra["python_named_params"]}
                if extra.get("python_params"):
                    wheel["parameters"] = list(extra["python_params"])
            script = task.get("spark_python_task")
            if isinstance(script, dict) and extra.get("python_params"):
                script["parameters"] = list(extra["python_params"])
            sql = task.get("sql_task")
            if isinstance(sql, dict) and (values or extra.get("sql_params")):
                sql["parameters"] = {**(sql.get("parameters") or {}), **(extra.get("sql_params") or {}), **values}
            tasks[task["task_key"]] = task
        return tasks

    def _new_run(self, job_id: int, settings: dict, now: float, version: str, *, values: dict,
                 notebook_params: dict | None = None, extra: dict | None = None, overriding: dict | None = None,
                 only: list | None = None, token: str | None = None, run_type: str = "JOB_RUN",
                 trigger: str = "ONE_TIME", trigger_info: dict | None = None, depth: int = 0) -> Run:
        all_tasks = settings.get("tasks") or []
        keys = [t["task_key"] for t in all_tasks]
        chosen = set(only) if only else set(keys)
        # With `only`, dependencies on tasks left out of the run are not waited for.
        tasks = [{**t, "depends_on": [d for d in t.get("depends_on") or [] if d.get("task_key") in chosen]}
                 for t in all_tasks if t["task_key"] in chosen]
        order = check.topological_order(tasks)
        downstream: dict = {k: [] for k in order}
        for t in tasks:
            for dep in t.get("depends_on") or []:
                if dep.get("task_key") in downstream:
                    downstream[dep["task_key"]].append(t["task_key"])
        effective = self._effective_tasks(settings, values, notebook_params or {}, extra or {})
        defined = settings.get("parameters") or []
        run = Run(
            run_id=next(self._run_ids), job_id=job_id,
            run_name=settings.get("run_name") or settings.get("name") or "Untitled",
            created_at=now, queue_until=now, display_order=[k for k in keys if k in chosen], task_order=order,
            downstream=downstream, rounds=[Round(0, None, {k: effective[k] for k in order}, values=dict(values))],
            scenario=self.scenario, host=self, run_type=run_type,
            job_name=settings.get("name") or settings.get("run_name") or "Untitled",
            timeout_seconds=float(settings.get("timeout_seconds") or 0),
            cancel_seconds=self.cancel_seconds * self.scenario.time_scale,
            overriding_parameters=overriding,
            job_parameters=[{"name": p["name"], "default": p.get("default"), "value": values.get(p["name"])}
                            for p in defined] or None,
            job_clusters=copy.deepcopy(settings.get("job_clusters")) or None,
            git_source=copy.deepcopy(settings.get("git_source")) or None,
            notifications=copy.deepcopy(settings.get("webhook_notifications") or {}),
            notification_settings=copy.deepcopy(settings.get("notification_settings") or {}),
            idempotency_token=token, api_version=version, trigger=trigger, trigger_info=trigger_info,
            depth=depth,
        )
        run.original_id = next(self._run_ids)
        return run

    def _register(self, run: Run) -> None:
        """Index a new run, then plan it at once: behaviors are fixed by the scenario of the moment."""
        self.runs[run.run_id] = run
        self.runs_by_job[run.job_id].append(run)
        self._list(run)
        self._maybe_active[run.run_id] = run
        if run.idempotency_token is not None:
            self.idempotency[run.idempotency_token] = run.run_id
        if any(run.notifications.get(k) for k in ("on_start", "on_success", "on_failure")):
            self.watched[run.run_id] = run
        for key in run.task_order:  # first attempts get their ids in task order, like the service
            self.task_run_id(run, 0, key, 0)
        run.plan()

    def _list(self, run: Run) -> None:
        bisect.insort(self._order, (views.ms(run.created_at), run.run_id))

    def _unlist(self, run: Run) -> None:
        key = (views.ms(run.created_at), run.run_id)
        i = bisect.bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]

    def _existing_run(self, token: str | None) -> dict | None:
        if token is None or token not in self.idempotency:
            return None
        run = self.runs[self.idempotency[token]]
        if run.hidden:
            raise invalid(f"Job {run.job_id} does not exist.")
        return {"run_id": run.run_id, "number_in_job": run.run_id}

    def run_now(self, body: dict, version: str) -> dict:
        body = check.require_map(body)
        token = check.idempotency_token(body)
        notebook_params = _as_map(body.get("notebook_params"), "notebook_params")
        job_parameters = {k: str(v) for k, v in _as_map(body.get("job_parameters"), "job_parameters").items()}
        if notebook_params and job_parameters:
            raise invalid("job_parameters cannot be used together with notebook_params.")
        check.params_size("notebook_params", notebook_params)
        check.params_size("job_parameters", job_parameters)
        with self.lock:
            existing = self._existing_run(token)
            if existing is not None:
                return existing
            job = self._job(body.get("job_id"))
            now = self.clock()
            values = self._parameter_values(job.settings, job_parameters, body)
            only = body.get("only")
            if only is not None:
                keys = {t["task_key"] for t in job.settings.get("tasks") or []}
                if not isinstance(only, list) or not only:
                    raise invalid("only must be a non-empty list of task keys.")
                unknown = [k for k in only if k not in keys]
                if unknown:
                    raise invalid(f"Task key {unknown[0]} does not exist in job {job.job_id}.")
            extra = {k: body[k] for k in TASK_PARAMETER_FIELDS if body.get(k)}
            # overriding_parameters holds task parameters only (SDK RunParameters has no job_parameters,
            # and databricks/cli's testserver, checked against real runs, echoes task parameters only);
            # job parameter values show in the run's job_parameters.
            overriding = {k: copy.deepcopy(v) for k, v in extra.items()}
            run = self._new_run(job.job_id, job.settings, now, version, values=values, notebook_params=notebook_params,
                                extra=extra, overriding=overriding or None, only=only, token=token)
            self._admit(run, job, body, now)
            self._admit_in_workspace(run, job, body, now)
            self._register(run)
        return {"run_id": run.run_id, "number_in_job": run.run_id}

    @staticmethod
    def _parameter_values(settings: dict, job_parameters: dict, body: dict) -> dict:
        defined = settings.get("parameters") or []
        names = [p["name"] for p in defined]
        task_params = [k for k in TASK_PARAMETER_FIELDS if body.get(k)]
        if job_parameters and not defined:
            # The parameter rules are documented ("If a job uses job parameters, it cannot use task
            # parameters", databricks/cli bundle/run/job_options.go); these messages are not.
            raise invalid("job_parameters can only be used with a job that defines job parameters "
                          "(settings.parameters).")
        unknown = sorted(set(job_parameters) - set(names))
        if unknown:
            raise invalid(f"Job parameter {unknown[0]} is not defined in the job's settings.parameters.")
        if defined and task_params:
            raise invalid(f"{task_params[0]} cannot be used with a job that defines job parameters; use "
                          "job_parameters.")
        values = {p["name"]: str(p.get("default", "")) for p in defined}
        values.update(job_parameters)
        return values

    def submit_run(self, body: dict, version: str) -> dict:
        body = check.require_map(body)
        token = check.idempotency_token(body)
        with self.lock:
            existing = self._existing_run(token)
            if existing is not None:
                return {"run_id": existing["run_id"]}
            settings = check.submit_settings(body, job_exists=self._job_exists)
            self._check_run_as(settings)
            now = self.clock()
            self._count_creation(now)
            job_id = next(self._job_ids)  # a one-time run belongs to a job no one can see (SUBMIT_RUN runs
            # carry a job_id and a #job/<id>/run/<id> page: databricks/databricks-sdk-py#375)
            self.hidden_jobs[job_id] = Job(job_id, settings, now, self.user_name)
            run = self._new_run(job_id, settings, now, version, values={}, token=token, run_type="SUBMIT_RUN")
            self._register(run)
        return {"run_id": run.run_id}

    def _active_runs(self, job_id: int, now: float, before: int | None = None) -> list[Run]:
        return [r for r in self.runs_by_job.get(job_id, [])
                if r.created_at <= now and not r.hidden and not r.abandoned and not r.is_terminal(now)
                and (before is None or r.run_id < before)]

    def _admit(self, run: Run, job: Job, body: dict, now: float) -> None:
        """Apply max_concurrent_runs: skip the run, or queue it until a slot frees."""
        limit = job.settings.get("max_concurrent_runs", 1)
        active = self._active_runs(job.job_id, now)
        if len(active) < limit:
            return
        queue = body.get("queue") if isinstance(body.get("queue"), dict) else job.settings.get("queue") or {}
        if queue.get("enabled") and limit > 0:
            run.queue_until = _slot_time([r.end_time for r in active], limit, now)
            run.invalidate()  # not registered yet: _register plans it
        else:
            run.skipped_outcome = Outcome(
                "SKIPPED", "MAXIMUM_CONCURRENT_RUNS_REACHED",
                f"Skipping this run because the limit of {limit} maximum concurrent runs has been reached.",
                False, "MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR")

    def _admit_in_workspace(self, run: Run, job: Job, body: dict, now: float) -> None:
        """The workspace's concurrent task-run limit (2,000 on Azure Databricks): a run whose tasks
        do not fit is queued until enough active runs end where queueing is on, and refused with 429
        otherwise ("a run that cannot start at once gets 429, or is queued"). Stricter than the
        service where it cannot know better: every task of an active or queued run counts from
        run-now to the run's end, not only the task runs that are running."""
        limit = self.max_concurrent_task_runs
        if limit is None or run.skipped_outcome is not None:
            return
        need = max(len(run.task_order), 1)
        active = []
        for other in list(self._maybe_active.values()):
            if other.is_terminal(now):
                continue
            if other.hidden or other.abandoned or other.skipped_outcome is not None:
                continue
            active.append(other)
        used = sum(max(len(r.task_order), 1) for r in active)
        if used + need <= limit:
            return
        queue = body.get("queue") if isinstance(body.get("queue"), dict) else job.settings.get("queue") or {}
        if not queue.get("enabled"):
            raise ApiError(429, "REQUEST_LIMIT_EXCEEDED",
                           f"The run cannot start: the workspace is at its limit of {limit} concurrent task runs. "
                           "Enable queueing on the job to queue runs instead.")
        free, start = limit - used, now
        for other in sorted(active, key=lambda r: r.end_time):
            free += max(len(other.task_order), 1)
            start = other.end_time
            if free >= need:
                break
        if start > run.queue_until:
            run.queue_until = start
            run.invalidate()

    def _replan_queue(self, job_id: int, now: float) -> None:
        """After a cancel, queued runs of the job may start earlier (FIFO)."""
        job = self.jobs.get(job_id)
        limit = job.settings.get("max_concurrent_runs", 1) if job else 1
        for run in sorted(self.runs_by_job.get(job_id, []), key=lambda r: r.run_id):
            if run.queue_until > now and run.canceled_at is None and run.skipped_outcome is None:
                ahead = [r.end_time for r in self._active_runs(job_id, now, before=run.run_id)]
                start = _slot_time(ahead, limit, now)
                if start < run.queue_until:
                    run.queue_until = start
                    self._replan(run)

    # -- repair ------------------------------------------------------------------------------------------
    def repair_run(self, body: dict, version: str) -> dict:
        body = check.require_map(body)
        job_parameters = {k: str(v) for k, v in _as_map(body.get("job_parameters"), "job_parameters").items()}
        notebook_params = _as_map(body.get("notebook_params"), "notebook_params")
        if notebook_params and job_parameters:
            raise invalid("job_parameters cannot be used together with notebook_params.")
        with self.lock:
            now = self.clock()
            run = self._visible_job_run(body.get("run_id"), now)
            if not run.is_terminal(now):
                # Not found in public sources: the docs say "The run must not be in progress".
                raise invalid_state(f"Run {run.run_id} is still in progress and cannot be repaired. Repair it "
                                    "once it has ended.")
            latest_repair = run.rounds[-1].repair_id
            given = body.get("latest_repair_id")
            given = _as_int(given, "latest_repair_id") if given not in (None, "") else None
            if given != latest_repair:
                # REAL text: databricks/databricks-sdk-py#157 (repairing twice without it). A stale id gets
                # the same answer here: no other text was found.
                raise invalid("The latest repair ID needs to be provided in order to create a new repair")
            rerun_tasks = body.get("rerun_tasks")
            rerun_all = _as_bool(body.get("rerun_all_failed_tasks", False))
            if rerun_tasks and rerun_all:
                raise invalid("Only one of rerun_tasks or rerun_all_failed_tasks can be used.")  # SDK repair_run doc
            plan = run.plan()
            if rerun_tasks:
                if not isinstance(rerun_tasks, list):
                    raise invalid("rerun_tasks must be a list of task keys.")
                unknown = [k for k in rerun_tasks if k not in run.downstream]
                if unknown:
                    raise invalid(f"Task key {unknown[0]} does not exist in run {run.run_id}.")
                chosen = set(rerun_tasks)
            elif rerun_all:
                chosen = {k for k, a in plan.latest.items() if classify(a.outcome) in ("failed", "canceled")}
                if not chosen:
                    raise invalid(f"Run {run.run_id} has no failed tasks to repair.")
            else:
                raise invalid("One of rerun_tasks or rerun_all_failed_tasks must be specified.")
            if _as_bool(body.get("rerun_dependent_tasks", False)):
                stack = list(chosen)
                while stack:
                    for child in run.downstream.get(stack.pop(), []):
                        if child not in chosen:
                            chosen.add(child)
                            stack.append(child)
            settings = self._settings_of(run)
            defined_names = [p["name"] for p in settings.get("parameters") or []]
            if job_parameters:
                self._parameter_values(settings, job_parameters, body)  # same rules as run-now
            values = {p["name"]: p.get("value") for p in run.job_parameters or []}
            values.update({k: v for k, v in job_parameters.items() if k in defined_names})
            # Without overrides the rerun tasks keep the parameters the run started with.
            notebook_params = notebook_params or (run.overriding_parameters or {}).get("notebook_params") or {}
            effective = self._effective_tasks(settings, values, notebook_params, {})
            missing = [k for k in chosen if k not in effective]
            if missing:
                raise invalid(f"Task key {missing[0]} no longer exists in job {run.job_id}.")
            repair_id = next(self._run_ids)
            run.rounds.append(Round(len(run.rounds), now, {k: effective[k] for k in run.task_order if k in chosen},
                                    repair_id=repair_id, values=dict(values)))
            if run.job_parameters:
                for p in run.job_parameters:
                    p["value"] = values.get(p["name"], p.get("value"))
            if body.get("notebook_params"):
                run.overriding_parameters = {**(run.overriding_parameters or {}), "notebook_params": notebook_params}
            run.timeout_seconds = float(settings.get("timeout_seconds") or 0)
            run.invalidate()
            for key in run.task_order:
                if key in chosen:
                    number = plan.latest[key].number + 1 if key in plan.latest else 0
                    self.task_run_id(run, len(run.rounds) - 1, key, number)
            run.plan()
            self._maybe_active[run.run_id] = run
            if any(run.notifications.get(k) for k in ("on_start", "on_success", "on_failure")):
                self.watched[run.run_id] = run
        return {"repair_id": repair_id}

    def _settings_of(self, run: Run) -> dict:
        """Repairs "use the current job and task settings" (SDK repair_run); one-time runs their own."""
        job = self.jobs.get(run.job_id) or self.hidden_jobs.get(run.job_id)
        if job is None:
            raise invalid(f"Job {run.job_id} does not exist.")
        return job.settings

    # -- reading runs ------------------------------------------------------------------------------------
    def visible(self, run: Run, now: float) -> bool:
        return not run.hidden and not run.abandoned and run.created_at <= now

    def _visible_job_run(self, run_id: Any, now: float) -> Run:
        run_id = _as_int(run_id, "run_id")
        run = self.runs.get(run_id)
        if run is None or not self.visible(run, now):
            raise invalid(f"Run {run_id} does not exist")
        return run

    def _lookup(self, run_id: Any, now: float) -> tuple[Run, Attempt | None]:
        run_id = _as_int(run_id, "run_id")
        run = self.runs.get(run_id)
        if run is not None:
            if not self.visible(run, now):
                raise invalid(f"Run {run_id} does not exist")
            return run, None
        hit = self.task_runs.get(run_id)
        if hit is not None:
            run = hit[0]
            attempt = run.plan().by_id.get(run_id)
            if attempt is not None and attempt.visible_from <= now and self.visible(run, now):
                return run, attempt
        raise invalid(f"Run {run_id} does not exist")

    def get_run(self, query: dict, version: str) -> dict:
        with self.lock:
            now = self.clock()
            run, attempt = self._lookup(query.get("run_id"), now)
            if attempt is not None:
                return views.task_run_as_run_json(self, run, attempt, now, version)
            return views.run_json(self, run, now, version, page_token=query.get("page_token"),
                                  include_history=_as_bool(query.get("include_history", False)))

    def get_output(self, query: dict, version: str) -> dict:
        with self.lock:
            now = self.clock()
            run, attempt = self._lookup(query.get("run_id"), now)
            if attempt is None:
                # Every job created through jobs/create is MULTI_TASK, even with a single task.
                raise invalid(MULTI_TASK_OUTPUT_MESSAGE)
            return views.output_json(self, run, attempt, now, version)

    def list_runs(self, query: dict, version: str) -> dict:
        active_only = _as_bool(query.get("active_only", False))
        completed_only = _as_bool(query.get("completed_only", False))
        if active_only and completed_only:
            # Documented rule ("This field cannot be true when completed_only is true"); text not found.
            raise invalid("active_only and completed_only cannot both be true.")
        limit = _as_int(query.get("limit", RUNS_LIST_DEFAULT), "limit")
        if limit == 0:
            limit = RUNS_LIST_MAX
        if not 0 < limit <= RUNS_LIST_MAX:
            raise invalid(f"Invalid limit {limit} - it has to be no more than {RUNS_LIST_MAX}.")
        job_id = _as_int(query["job_id"], "job_id") if query.get("job_id") not in (None, "") else None
        run_type = query.get("run_type")
        if run_type is not None and run_type not in ("JOB_RUN", "SUBMIT_RUN", "WORKFLOW_RUN"):
            raise invalid(f"Invalid run_type {run_type}.")
        start_from = _as_int(query["start_time_from"], "start_time_from") if query.get("start_time_from") else None
        start_to = _as_int(query["start_time_to"], "start_time_to") if query.get("start_time_to") else None
        expand = _as_bool(query.get("expand_tasks", False))
        cursor, direction, offset = None, "next", 0
        if query.get("page_token"):
            token = decode_token(query["page_token"])
            if len(token) != 3 or token[2] not in ("next", "prev"):
                raise invalid(f"Invalid page token: {query['page_token']}")
            cursor, direction = (token[0], token[1]), token[2]
        elif query.get("offset"):  # deprecated but still accepted
            offset = _as_int(query["offset"], "offset")
        with self.lock:
            now = self.clock()
            if job_id is not None and job_id not in self.jobs and not (
                    self.keep_runs_of_deleted_jobs and self.runs_by_job.get(job_id)):
                # As jobs/get answers: listing the runs of a job that does not exist (or was deleted) is refused.
                raise invalid(f"Job {job_id} does not exist.")

            def wanted(run: Run) -> bool:
                if not self.visible(run, now):
                    return False
                if job_id is not None and run.job_id != job_id:
                    return False
                if run_type is not None and run.run_type != run_type:
                    return False
                started = views.ms(run.created_at)
                if (start_from is not None and started < start_from) or (start_to is not None and started > start_to):
                    return False
                if active_only or completed_only:
                    life, _ = run.state_at(now)
                    if completed_only:
                        return life in TERMINAL_STATES
                    if run.is_terminal(now):
                        self._maybe_active.pop(run.run_id, None)  # a terminal run is never active again
                    return life in ACTIVE_STATES  # not BLOCKED or WAITING_FOR_RETRY, as documented
                return True

            if active_only:
                keys = sorted(((views.ms(r.created_at), r.run_id) for r in self._maybe_active.values()), reverse=True)
            elif job_id is not None:
                keys = sorted(((views.ms(r.created_at), r.run_id) for r in self.runs_by_job.get(job_id, [])),
                              reverse=True)
            else:
                keys = self._order[::-1]
            if direction == "next":
                if cursor is not None:
                    keys = keys[_first_below(keys, tuple(cursor)):]
                page, more = [], False
                skipped = 0
                for k in keys:
                    run = self.runs[k[1]]
                    if not wanted(run):
                        continue
                    if skipped < offset:
                        skipped += 1
                        continue
                    if len(page) == limit:
                        more = True
                        break
                    page.append(run)
                has_prev = cursor is not None or offset > 0
            else:  # the page before the cursor: walk towards newer runs, then restore newest-first order
                newer = [k for k in keys if k > tuple(cursor)]
                page, has_prev = [], False
                for k in reversed(newer):
                    run = self.runs[k[1]]
                    if not wanted(run):
                        continue
                    if len(page) == limit:
                        has_prev = True
                        break
                    page.append(run)
                page.reverse()
                more = True
            out: dict = {}
            if page:
                out["runs"] = [self._listed_run(r, now, version, expand) for r in page]
            out["has_more"] = more
            if page and more:
                last = page[-1]
                out["next_page_token"] = encode_token(views.ms(last.created_at), last.run_id, "next")
            if page and has_prev:
                first = page[0]
                out["prev_page_token"] = encode_token(views.ms(first.created_at), first.run_id, "prev")
        return out

    def _listed_run(self, run: Run, now: float, version: str, expand: bool) -> dict:
        out = views.run_json(self, run, now, version, expand_tasks=expand, all_pages=True)
        if version == "2.2":
            more = views.page_arrays(out, views.RUN_ARRAYS, 0) if expand else False
            out["has_more"] = more
        return out

    # -- cancel --------------------------------------------------------------------------------------------
    def cancel(self, body: dict) -> dict:
        with self.lock:
            now = self.clock()
            run, attempt = self._lookup(check.require_map(body).get("run_id"), now)
            if attempt is None:
                self._cancel(run, now)
            else:
                self._cancel_task(run, attempt, now)
        return {}

    def cancel_all(self, body: dict) -> dict:
        with self.lock:
            job = self._job(check.require_map(body).get("job_id"))
            now = self.clock()
            for run in list(self.runs_by_job.get(job.job_id, [])):
                if self.visible(run, now):
                    self._cancel(run, now)
        return {}

    def _cancel(self, run: Run, now: float) -> None:
        state, outcome = run.state_at(now)
        # Cancelling a finished run or one already cleaning up changes nothing.
        if outcome is not None or state == "TERMINATING" or run.canceled_at is not None or run.created_at > now:
            return
        run.rounds[-1].canceled_at = now
        self._replan(run)
        for child in list(run.children.values()):
            if child.created_at <= now:
                self._cancel(child, now)
        self._replan_queue(run.job_id, now)

    def _cancel_task(self, run: Run, attempt: Attempt, now: float) -> None:
        if attempt.state_at(now)[1] is not None or attempt.round != len(run.rounds) - 1:
            return
        life, _ = attempt.state_at(now)
        rnd = run.rounds[attempt.round]
        if life == "TERMINATING" or attempt.key in rnd.task_cancels or rnd.canceled_at is not None:
            return
        rnd.task_cancels[attempt.key] = now
        self._replan(run)
        if attempt.child is not None and attempt.child.created_at <= now:
            self._cancel(attempt.child, now)
        self._replan_queue(run.job_id, now)

    # -- JSON helpers ----------------------------------------------------------------------------------------
    def run_page_url(self, job_id: int, run_id: int) -> str:
        return f"{self._base_url()}/?o={self.workspace_id}#job/{job_id}/run/{run_id}"


def _first_below(keys: list, cursor: tuple) -> int:
    """Index of the first key below `cursor` in a newest-first (descending) list."""
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid] < cursor:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _slot_time(end_times: list[float], limit: int, now: float) -> float:
    """Earliest time fewer than `limit` of these runs are still active."""
    if len(end_times) < limit:
        return now
    ends = sorted(end_times)
    return max(now, ends[len(ends) - limit])

