"""Activity functions over `databricks_jobs.client.JobsClient` (names and shapes: docs/design.md).

Activities run at least once, so each is safe to repeat:
- createJob finds the job it would create before creating it. A shared job (the default) is found by
  name and the fingerprint of its settings, so 1,000 workflows of one definition use one saved job;
  a private job (deleteJobOnCompletion) by name and the workflow run's key;
- runJobNow and submitRun send the workflow run's key as their idempotency token;
- repairRun reads the run's repair history first, so a repeat returns the repair already made;
- cancelRun and deleteJob are idempotent on Databricks' side.
The run key is drawn once per workflow run by the orchestrator (`context.new_uuid()`, stable on
replay), not the instance id: an instance id can be used again once its history is purged, and must
then not find the old job and run. Inputs and outputs are small camelCase dicts and never carry a
secret; errors state their kind (docs/design.md, "Errors across an activity boundary")."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import azure.durable_functions as df

from telemetry.tracing import traced_activity
from workflow.jobspec import DEFINITION_TAG, RUN_KEY_TAG, canonical_settings, fingerprint
from workflow.policy import run_idempotency_token

log = logging.getLogger(__name__)

bp = df.Blueprint()

WEBHOOK_EVENTS = ("on_start", "on_success", "on_failure")
TASK_TYPES = ("notebook_task", "spark_python_task", "python_wheel_task", "sql_task", "run_job_task",
              "spark_jar_task", "spark_submit_task", "pipeline_task", "dbt_task", "for_each_task",
              "condition_task", "clean_rooms_notebook_task", "dashboard_task", "power_bi_task")


def _client():
    from databricks_jobs.client import get_jobs_client  # lazy: keeps requests out of the app's cold start
    return get_jobs_client()


def _settings():
    from databricks_jobs.settings import get_settings
    return get_settings()


# -- createJob: one saved job per definition ----------------------------------------------------

KNOWN_JOB_SECONDS = 300.0  # how long a worker trusts a job id it found, before it looks again


class _KnownJobs:
    """What this process knows about the workspace: definition fingerprint -> job id, and the app's
    own identity. A hit costs no Jobs API call; it is trusted for KNOWN_JOB_SECONDS, so a job edited
    by hand stops being used within minutes; a job deleted under us is forgotten when run-now finds
    it gone (runJobNow's `staleJobId`)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._ids: Dict[str, Tuple[int, float]] = {}
        self._identity: Dict[str, str] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, key: str) -> Optional[int]:
        with self._lock:
            hit = self._ids.get(key)
            if hit is None or self.clock() - hit[1] >= KNOWN_JOB_SECONDS:
                return None
            return hit[0]

    def put(self, key: str, job_id: int) -> None:
        with self._lock:
            self._ids[key] = (job_id, self.clock())

    def forget_job(self, job_id: int) -> None:
        with self._lock:
            for key in [k for k, v in self._ids.items() if v[0] == job_id]:
                del self._ids[key]

    def identity(self, host: str, learn) -> str:
        """The app's identity in the workspace at `host`, learnt once per process (`learn()`)."""
        with self._lock:
            known = self._identity.get(host)
        if known is None:
            known = learn()
            with self._lock:
                self._identity[host] = known
        return known

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self._identity.clear()


known_jobs = _KnownJobs()


def job_settings(job: Mapping[str, Any], *, tag: tuple, notification_destination_id: Optional[str]) -> Dict[str, Any]:
    """The jobs/create body: the plan's settings, the app's tag, and webhooks when configured."""
    settings = dict(job)
    settings["tags"] = {**(job.get("tags") or {}), tag[0]: tag[1]}
    if notification_destination_id:
        settings["webhook_notifications"] = {event: [{"id": notification_destination_id}] for event in WEBHOOK_EVENTS}
    return settings


def _release_1_request(request: Mapping[str, Any]) -> Dict[str, Any]:
    """createJob's input from a workflow still running on release 1.0's code path (orchestrators/v1):
    a job of its own, tagged with its instance and run key, notebook parameters in the task."""
    notebook_task: Dict[str, Any] = {"notebook_path": _required(request, "notebookPath", "createJob")}
    if request.get("notebookParams"):
        notebook_task["base_parameters"] = dict(request["notebookParams"])
    job: Dict[str, Any] = {
        "name": _required(request, "jobName", "createJob"),
        "tasks": [{"task_key": _required(request, "taskKey", "createJob"),
                   "existing_cluster_id": _required(request, "existingClusterId", "createJob"),
                   "notebook_task": notebook_task}],
        "tags": {"durable_instance_id": run_idempotency_token(_required(request, "instanceId", "createJob"))},
    }
    if request.get("timeoutSeconds"):
        job["timeout_seconds"] = int(request["timeoutSeconds"]) + RELEASE_1_TIMEOUT_MARGIN_SECONDS
    return {"instanceId": request["instanceId"], "runKey": request.get("runKey"), "private": True, "job": job}


RELEASE_1_TIMEOUT_MARGIN_SECONDS = 300


@bp.activity_trigger(input_name="request", activity="createJob")
@traced_activity("createJob")
def createJob(request: Any) -> Dict[str, Any]:
    """The job this workflow run uses. A job is reused only if the app created it (its
    creator_user_name is the app's identity) and, for a shared job, its settings still hash to its
    definition tag: a job planted by someone else, or edited by hand, is never run for a definition.
    `lookupOnly`: find it, never create it (jobId None when there is none)."""
    request = activity_input(request)
    if "job" not in request and "notebookPath" in request:
        request = _release_1_request(request)
    job = _required(request, "job", "createJob")
    destination = _settings().notification_destination_id
    private = bool(request.get("private"))
    if private:
        tag = (RUN_KEY_TAG, run_idempotency_token(_required(request, "runKey", "createJob")))
    else:
        # The fingerprint covers the settings as created, webhooks included.
        tag = (DEFINITION_TAG, fingerprint(job_settings(job, tag=(DEFINITION_TAG, ""), notification_destination_id=destination)))
    settings = job_settings(job, tag=tag, notification_destination_id=destination)
    host = _settings().host
    cache_key = f"{host}\x00{tag[1]}"
    if request.get("staleJobId"):
        known_jobs.forget_job(int(request["staleJobId"]))
    elif not private:
        job_id = known_jobs.get(cache_key)
        if job_id is not None:
            return {"jobId": job_id, "created": False, "webhooks": bool(destination)}
    client = _client()
    me = known_jobs.identity(host, client.current_user_name)
    exclude = request.get("staleJobId")
    found = _reusable_jobs(client, settings, tag, me, verify=not private, exclude=exclude)
    if request.get("lookupOnly"):
        return {"jobId": found[0] if found else None, "created": False, "webhooks": bool(destination)}
    if found:
        job_id, created = found[0], False
    else:
        mine = client.create_job(settings)
        # Two first starts of one definition may both have created it. Everyone uses the oldest
        # (created_time, then id: ids are not known to grow with time) and a creator whose job is
        # not the oldest deletes its own, before any run.
        found = _reusable_jobs(client, settings, tag, me, verify=not private, exclude=exclude, own=mine) or [mine]
        job_id, created = found[0], found[0] == mine
        if mine != found[0]:
            _delete_quietly(client, mine)
            log.info("createJob: job %s duplicated job %s of the same definition and was deleted", mine, found[0])
    if not private:
        known_jobs.put(cache_key, job_id)
    log.info("createJob: %s job %s for %s", "created" if created else "reused", job_id, request.get("instanceId"))
    return {"jobId": job_id, "created": created, "webhooks": bool(destination)}


def _reusable_jobs(client, settings: Mapping[str, Any], tag: tuple, me: str, *, verify: bool,
                   exclude: Any = None, own: Optional[int] = None) -> List[int]:
    """Ids of the jobs named like `settings` and carrying `tag` that this app may use, oldest first:
    created by the app's identity and (`verify`) whose settings still hash to the tag. Jobs that
    carry the tag but fail either test are logged (job id and what differs, never settings values)."""
    usable: List[Tuple[int, int]] = []
    for found in client.find_jobs(settings["name"], tag=tag, expand_tasks=verify):
        job_id = int(found["job_id"])
        if exclude is not None and job_id == int(exclude):
            continue
        if found.get("creator_user_name") != me:
            log.warning("createJob: job %s carries the tag %s of this definition but was not created by the "
                        "app's identity; it is not used", job_id, tag[0])
            continue
        if verify:
            theirs = _as_defined(found.get("settings") or {}, settings, me)
            if fingerprint(theirs, reference=settings) != tag[1]:
                if job_id == own:
                    # Our own job, just created: the service changed a field the canonical form does
                    # not know. Use it (it is the definition), but say so: other workers will not.
                    log.warning("createJob: job %s, created just now, no longer hashes to its definition as "
                                "Databricks returns it (fields: %s); other workers will not reuse it",
                                job_id, ", ".join(changed_fields(theirs, settings)) or "-")
                    usable.append((int(found.get("created_time") or 0), job_id))
                    continue
                log.warning("createJob: job %s was changed since the app created it (fields: %s); it is not "
                            "reused for its definition", job_id, ", ".join(changed_fields(theirs, settings)) or "-")
                continue
        usable.append((int(found.get("created_time") or 0), job_id))
    return [job_id for _, job_id in sorted(usable)]


def _as_defined(theirs: Mapping[str, Any], wanted: Mapping[str, Any], me: str) -> Mapping[str, Any]:
    """A job's settings as listed, without what the service fills in that depends on the job's
    creator: a `run_as` naming the creator itself, when the definition gives none (a job runs as its
    owner by default). A run_as naming anyone else stays, and is drift."""
    run_as = theirs.get("run_as")
    if "run_as" not in wanted and isinstance(run_as, Mapping) and set(run_as.values()) <= {me}:
        theirs = {k: v for k, v in theirs.items() if k != "run_as"}
    return theirs


def changed_fields(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> List[str]:
    """Names (never values) of the settings that differ in canonical form: top-level fields, and
    `tasks[<key>]` for each task that differs."""
    a, w = canonical_settings(actual, reference=wanted), canonical_settings(wanted)
    out = []
    for key in sorted(set(a) | set(w)):
        if a.get(key) == w.get(key):
            continue
        if key == "tasks" and isinstance(a.get(key), list) and isinstance(w.get(key), list):
            ta = {t.get("task_key"): t for t in a[key] if isinstance(t, Mapping)}
            tw = {t.get("task_key"): t for t in w[key] if isinstance(t, Mapping)}
            out += [f"tasks[{k}]" for k in sorted(set(ta) | set(tw), key=str) if ta.get(k) != tw.get(k)]
        else:
            out.append(key)
    return out


def _delete_quietly(client, job_id: int) -> None:
    from databricks_jobs.errors import DatabricksApiError
    try:
        client.delete_job(job_id)
    except DatabricksApiError as error:
        if not _is_gone(error):
            log.warning("createJob: could not delete duplicate job %s: %s", job_id, error)


def _is_gone(error) -> bool:
    return error.status in (400, 404) and "does not exist" in (error.message or "")


# -- starting the run ----------------------------------------------------------------------------

@bp.activity_trigger(input_name="request", activity="runJobNow")
@traced_activity("runJobNow")
def runJobNow(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    token = run_idempotency_token(_required(request, "runKey", "runJobNow"))
    job_id = int(_required(request, "jobId", "runJobNow"))
    queue = request.get("queue")
    # The start budget shared by the workers (databricks_jobs/start_budget.py): a slot more than a
    # moment away goes back to the orchestrator, which waits for it on a durable timer. A caller
    # that does not say it can (release 1.0's orchestrator) is not budgeted.
    from databricks_jobs import start_budget
    held = request.get("slot")
    not_before = start_budget.take_slot(start_budget.get(_settings().host), None if held is None else float(held),
                                        urgent=bool(request.get("urgent")),
                                        hand_back=bool(request.get("waitsForSlot")), at=request.get("at"),
                                        holder=token)
    if not_before is not None:
        return {"notBefore": not_before}
    run_id = _client().run_now(
        job_id, token, request.get("notebookParams") or None, job_parameters=request.get("jobParameters") or None,
        queue=None if queue is None else bool(queue.get("enabled", True)))
    log.info("runJobNow: job %s runs as run %s", job_id, run_id)
    # The page link now, not at the first poll (which may be an hour away when signals are expected).
    return {"runId": run_id, "runPageUrl": _settings().run_page_url(job_id, run_id)}


@bp.activity_trigger(input_name="request", activity="submitRun")
@traced_activity("submitRun")
def submitRun(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    token = run_idempotency_token(_required(request, "runKey", "submitRun"))
    body = dict(_required(request, "submit", "submitRun"))
    destination = _settings().notification_destination_id
    if destination:
        body["webhook_notifications"] = {event: [{"id": destination}] for event in WEBHOOK_EVENTS}
    run_id = _client().submit_run(body, token)
    log.info("submitRun: one-time run %s (%s)", run_id, body.get("run_name"))
    return {"runId": run_id, "webhooks": bool(destination)}


# -- the run ---------------------------------------------------------------------------------------

def run_summary(run: Mapping[str, Any]) -> Dict[str, Any]:
    """The compact getJobRun output; `resultState` and `status` only when Databricks sent them."""
    state = run.get("state") or {}
    summary: Dict[str, Any] = {
        "runId": run.get("run_id"),
        "jobId": run.get("job_id"),
        "lifeCycleState": state.get("life_cycle_state"),
    }
    if state.get("result_state") is not None:
        summary["resultState"] = state["result_state"]
    summary["stateMessage"] = state.get("state_message") or ""
    summary["runPageUrl"] = run.get("run_page_url")
    if run.get("status") is not None:
        summary["status"] = run["status"]
    summary["startTime"] = run.get("start_time") or 0
    summary["endTime"] = run.get("end_time") or 0
    summary["tasks"] = [_task_summary(task) for task in run.get("tasks") or ()]
    if run.get("repair_history") is not None:
        repairs = [item for item in run["repair_history"] if item.get("type") == "REPAIR"]
        summary["repairs"] = [int(item["id"]) for item in repairs if item.get("id") is not None]
    return summary


def _task_summary(task: Mapping[str, Any]) -> Dict[str, Any]:
    state = task.get("state") or {}
    summary = {
        "taskKey": task.get("task_key"),
        "runId": task.get("run_id"),
        "attemptNumber": task.get("attempt_number") or 0,
        "lifeCycleState": state.get("life_cycle_state"),
        "resultState": state.get("result_state"),
        "startTime": task.get("start_time") or 0,
        "runPageUrl": task.get("run_page_url"),
        "type": next((t for t in TASK_TYPES if t in task), None),
    }
    if state.get("state_message"):
        summary["stateMessage"] = state["state_message"]
    return summary


@bp.activity_trigger(input_name="request", activity="getJobRun")
@traced_activity("getJobRun")
def getJobRun(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    run_id = int(_required(request, "runId", "getJobRun"))
    return run_summary(_client().get_run(run_id, include_history=bool(request.get("includeHistory"))))


def output_summary(task_run_id: int, output: Mapping[str, Any]) -> Dict[str, Any]:
    notebook_output = output.get("notebook_output") or {}
    summary: Dict[str, Any] = {"runId": task_run_id}
    if notebook_output.get("result") is not None:
        summary["notebookResult"] = notebook_output["result"]
    summary["truncated"] = bool(notebook_output.get("truncated", False))
    if output.get("error"):
        summary["error"] = output["error"]
    if output.get("error_trace"):
        summary["errorTrace"] = output["error_trace"]
    if "notebook_output" not in output:
        summary["noNotebookOutput"] = True  # a task that is not a notebook, or that exited without a value
    return summary


@bp.activity_trigger(input_name="request", activity="getJobRunOutput")
@traced_activity("getJobRunOutput")
def getJobRunOutput(request: Any) -> Dict[str, Any]:
    """Output of one task run (`runId`), or of several (`tasks`: [{"taskKey", "runId"}]) in one call.
    With `tasks`, each task's output is fetched on its own: a task whose get-output Databricks
    refuses or does not answer gets `outputError` (the error, scrubbed) and `outputErrorKind`
    (transient: worth asking again; permanent), and the other tasks keep theirs. Only what affects
    every task (a credential or configuration error) fails the activity."""
    from databricks_jobs.errors import DatabricksApiError
    from workflow.policy import error_message, failure_kind

    request = activity_input(request)
    client = _client()
    if "tasks" not in request:
        task_run_id = int(_required(request, "runId", "getJobRunOutput"))
        return output_summary(task_run_id, client.get_run_output(task_run_id))
    from activities.results_store import bounded_output

    share = _result_share(request)
    outputs = []
    for task in request["tasks"]:
        run_id = int(task["runId"])
        try:
            summary = {"taskKey": task["taskKey"], **output_summary(run_id, client.get_run_output(run_id))}
        except DatabricksApiError as error:
            text = str(error)
            log.warning("getJobRunOutput: output of task %s (run %s) could not be fetched: %s",
                        task["taskKey"], run_id, text)
            outputs.append({"taskKey": task["taskKey"], "runId": run_id, "outputError": error_message(text),
                            "outputErrorKind": failure_kind(text)})
            continue
        # Cut to the task's inline share here, the whole kept in blob storage: nothing large is
        # returned, so nothing large enters the history (activities/results_store.py).
        outputs.append(bounded_output(summary, share, request.get("instanceId")))
    return {"tasks": outputs}


def _result_share(request: Mapping[str, Any]) -> int:
    from databricks_jobs.errors import ConfigurationError
    from workflow.results import ResultSettingError, task_share

    try:
        return task_share(int(request.get("taskCount") or len(request["tasks"])))
    except ResultSettingError as error:
        raise ConfigurationError(error.setting, str(error)[len(error.setting) + 1:]) from None


@bp.activity_trigger(input_name="request", activity="repairRun")
@traced_activity("repairRun")
def repairRun(request: Any) -> Dict[str, Any]:
    """Rerun the failed tasks of an ended run. `repairsSeen` is how many repairs the workflow has
    made: when the run's history already shows more, this activity ran before (at least once) and
    that repair is returned instead of repairing again."""
    from databricks_jobs.client import newest_repair_id

    request = activity_input(request)
    run_id = int(_required(request, "runId", "repairRun"))
    client = _client()
    run = client.get_run(run_id, include_history=True)
    done = [item for item in run.get("repair_history") or () if item.get("type") == "REPAIR"]
    if len(done) > int(request.get("repairsSeen", 0)):
        return {"runId": run_id, "repairId": int(done[-1]["id"]), "repeated": True}
    repair_id = client.repair_run(run_id, latest_repair_id=newest_repair_id(run), rerun_all_failed_tasks=True)
    log.info("repairRun: run %s repaired as repair %s", run_id, repair_id)
    return {"runId": run_id, "repairId": repair_id, "repeated": False}


@bp.activity_trigger(input_name="request", activity="cancelRun")
@traced_activity("cancelRun")
def cancelRun(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    run_id = int(_required(request, "runId", "cancelRun"))
    _client().cancel_run(run_id)
    log.info("cancelRun: cancellation of run %s requested", run_id)
    return {"runId": run_id, "canceled": True}


@bp.activity_trigger(input_name="request", activity="deleteJob")
@traced_activity("deleteJob")
def deleteJob(request: Any) -> Dict[str, Any]:
    from databricks_jobs.errors import DatabricksApiError

    request = activity_input(request)
    job_id = int(_required(request, "jobId", "deleteJob"))
    try:
        _client().delete_job(job_id)
    except DatabricksApiError as error:
        # Already gone (an earlier attempt of this activity, or someone else): the goal is met.
        if not _is_gone(error):
            raise
    log.info("deleteJob: job %s deleted", job_id)
    return {"jobId": job_id, "deleted": True}


def activity_input(request: Any) -> Dict[str, Any]:
    # The host may hand the activity input over as its JSON text.
    if isinstance(request, (str, bytes)):
        request = json.loads(request)
    if not isinstance(request, dict):
        raise ValueError(f"Invalid activity input: expected a JSON object, got {type(request).__name__}")
    return request


def _required(request: Mapping[str, Any], name: str, activity: str) -> Any:
    value = request.get(name)
    if value is None or value == "":
        raise ValueError(f"Invalid activity input: {activity} input is missing '{name}'")
    return value
