"""Activity functions over `databricks_jobs.client.JobsClient` (names and shapes: docs/design.md).

Activities run at least once, so each is safe to repeat: createJob finds the job an earlier
attempt created (by name and `durable_run_key` tag) and runJobNow sends the run key as its
idempotency token. The run key is drawn once per workflow run by the orchestrator
(`context.new_uuid()`, deterministic on replay), not the instance id itself: an instance id can be
used again once its history is purged, and must then not find the old job and run. Inputs and outputs are small camelCase dicts and never carry a secret;
errors propagate as `DatabricksApiError`, whose text the orchestrator classifies."""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Mapping, Optional

import azure.durable_functions as df

from databricks_jobs.client import get_jobs_client
from databricks_jobs.errors import DatabricksApiError
from databricks_jobs.settings import get_settings
from workflow.policy import run_idempotency_token

log = logging.getLogger(__name__)

bp = df.Blueprint()

INSTANCE_TAG = "durable_instance_id"  # maps a webhook notification back to its instance
RUN_KEY_TAG = "durable_run_key"  # identifies the job of one workflow run (an instance id can be reused)
WEBHOOK_EVENTS = ("on_start", "on_success", "on_failure")
# The workflow's own deadline cancels the run; the job's timeout, a little later, is the backstop
# that stops the run even if the workflow is gone (terminated, purged, its app deleted).
JOB_TIMEOUT_MARGIN_SECONDS = 300


def instance_tag_value(instance_id: str) -> str:
    """Tag value naming the orchestration instance: the id itself, or its sha256 when longer than
    64 characters. The same rule as the run-now token keeps it within Databricks' tag value limit
    (tags follow cluster-tag limits) and makes both identifiers recognisable together."""
    return run_idempotency_token(instance_id)


def job_settings(request: Mapping[str, Any], notification_destination_id: Optional[str]) -> Dict[str, Any]:
    """jobs/create body: one notebook task on an existing cluster, tagged with the instance."""
    notebook_task: Dict[str, Any] = {"notebook_path": _required(request, "notebookPath", "createJob")}
    if request.get("notebookParams"):
        notebook_task["base_parameters"] = dict(request["notebookParams"])
    settings: Dict[str, Any] = {
        "name": _required(request, "jobName", "createJob"),
        "tasks": [{
            "task_key": _required(request, "taskKey", "createJob"),
            "existing_cluster_id": _required(request, "existingClusterId", "createJob"),
            "notebook_task": notebook_task,
        }],
        "tags": {INSTANCE_TAG: instance_tag_value(_required(request, "instanceId", "createJob")),
                 RUN_KEY_TAG: run_idempotency_token(_required(request, "runKey", "createJob"))},
    }
    if request.get("timeoutSeconds"):
        settings["timeout_seconds"] = int(request["timeoutSeconds"]) + JOB_TIMEOUT_MARGIN_SECONDS
    if notification_destination_id:
        settings["webhook_notifications"] = {
            event: [{"id": notification_destination_id}] for event in WEBHOOK_EVENTS
        }
    return settings


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
    return summary


def _task_summary(task: Mapping[str, Any]) -> Dict[str, Any]:
    state = task.get("state") or {}
    return {
        "taskKey": task.get("task_key"),
        "runId": task.get("run_id"),
        "attemptNumber": task.get("attempt_number") or 0,
        "lifeCycleState": state.get("life_cycle_state"),
        "resultState": state.get("result_state"),
        "startTime": task.get("start_time") or 0,
    }


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
    return summary


@bp.activity_trigger(input_name="request", activity="createJob")
def createJob(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    destination = get_settings().notification_destination_id
    settings = job_settings(request, destination)
    client = get_jobs_client()
    run_key = settings["tags"][RUN_KEY_TAG]
    for job in client.find_jobs_by_name(settings["name"]):
        if ((job.get("settings") or {}).get("tags") or {}).get(RUN_KEY_TAG) == run_key:
            log.info("createJob: instance %s reuses job %s created by an earlier attempt",
                     request["instanceId"], job["job_id"])
            return {"jobId": int(job["job_id"]), "created": False, "webhooks": bool(destination)}
    job_id = client.create_job(settings)
    log.info("createJob: instance %s created job %s", request["instanceId"], job_id)
    return {"jobId": job_id, "created": True, "webhooks": bool(destination)}


@bp.activity_trigger(input_name="request", activity="runJobNow")
def runJobNow(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    token = run_idempotency_token(_required(request, "runKey", "runJobNow"))
    run_id = get_jobs_client().run_now(
        int(_required(request, "jobId", "runJobNow")), token, request.get("notebookParams") or None)
    log.info("runJobNow: job %s runs as run %s", request["jobId"], run_id)
    return {"runId": run_id}


@bp.activity_trigger(input_name="request", activity="getJobRun")
def getJobRun(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    return run_summary(get_jobs_client().get_run(int(_required(request, "runId", "getJobRun"))))


@bp.activity_trigger(input_name="request", activity="getJobRunOutput")
def getJobRunOutput(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    task_run_id = int(_required(request, "runId", "getJobRunOutput"))
    return output_summary(task_run_id, get_jobs_client().get_run_output(task_run_id))


@bp.activity_trigger(input_name="request", activity="cancelRun")
def cancelRun(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    run_id = int(_required(request, "runId", "cancelRun"))
    get_jobs_client().cancel_run(run_id)
    log.info("cancelRun: cancellation of run %s requested", run_id)
    return {"runId": run_id, "canceled": True}


@bp.activity_trigger(input_name="request", activity="deleteJob")
def deleteJob(request: Any) -> Dict[str, Any]:
    request = activity_input(request)
    job_id = int(_required(request, "jobId", "deleteJob"))
    try:
        get_jobs_client().delete_job(job_id)
    except DatabricksApiError as error:
        # Already gone (an earlier attempt of this activity, or someone else): the goal is met.
        if not (error.status in (400, 404) and "does not exist" in (error.message or "")):
            raise
    log.info("deleteJob: job %s deleted", job_id)
    return {"jobId": job_id, "deleted": True}


def activity_input(request: Any) -> Dict[str, Any]:
    # The host may hand the activity input over as its JSON text.
    if isinstance(request, (str, bytes)):
        request = json.loads(request)
    if not isinstance(request, dict):
        raise ValueError(f"activity input must be a JSON object, got {type(request).__name__}")
    return request


def _required(request: Mapping[str, Any], name: str, activity: str) -> Any:
    value = request.get(name)
    if value is None or value == "":
        raise ValueError(f"Invalid activity input: {activity} input is missing '{name}'")
    return value
