"""FROZEN copy of release 1.0's orchestrator body (see orchestrators/v1/__init__.py).

The create-job-and-run workflow as a durable orchestrator.

Steps are named after the Arazzo stepIds (spec/azure-databricks-create-job-and-run-workflow.yml):
createJob -> runJobNow -> pollRun (durable timers, no compute held) -> fetchOutput.
Where the document breaks against real Databricks we follow its intent instead (README,
"Departures from the Arazzo document"). Deterministic: the only clock is
`context.current_utc_datetime`; all I/O happens in activities; all policy is in workflow.policy.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Optional

import azure.durable_functions as df

from orchestrators.v1 import policy

CANCEL_EVENT = "cancel"
RUN_FINISHED_EVENT = "runFinished"

ACTIVITY_RETRY = policy.ActivityRetry()

log = logging.getLogger(__name__)

def _call(context: df.DurableOrchestrationContext, activity: str, payload: dict):
    """Call an activity, retrying transient failures on durable timers with exponential backoff."""
    attempt = 1
    while True:
        try:
            return (yield context.call_activity(activity, payload))
        except Exception as exc:  # the engine re-raises activity failures as plain Exception
            if attempt >= ACTIVITY_RETRY.max_attempts or not policy.is_retryable_activity_error(str(exc)):
                raise
            attempt += 1
            delay = timedelta(seconds=ACTIVITY_RETRY.delay_before(attempt))
            yield context.create_timer(context.current_utc_datetime + delay)


def _show(context: df.DurableOrchestrationContext, step: str, progress: dict) -> None:
    elapsed = context.current_utc_datetime - datetime.fromisoformat(progress["startedAt"])
    context.set_custom_status(policy.progress_status(
        step=step, run=progress.get("run"), polls=progress["polls"],
        elapsed_seconds=int(elapsed.total_seconds()), job_id=progress.get("jobId"), run_id=progress.get("runId"),
        failed_polls=progress.get("failedPolls", 0),
    ))


def _create_job_and_run_now(context: df.DurableOrchestrationContext, request: dict, progress: dict):
    _show(context, "createJob", progress)
    job = yield from _call(context, "createJob", {
        "instanceId": context.instance_id,
        "runKey": progress["runKey"],
        "jobName": request["jobName"],
        "taskKey": request["taskKey"],
        "notebookPath": request["notebookPath"],
        "existingClusterId": request["existingClusterId"],
        "notebookParams": request.get("notebookParams") or {},
        "timeoutSeconds": request["timeoutSeconds"],
    })
    progress["jobId"], progress["webhooks"] = job["jobId"], bool(job.get("webhooks"))

    _show(context, "runJobNow", progress)
    run = yield from _call(context, "runJobNow", {"runKey": progress["runKey"], "jobId": progress["jobId"]})
    progress["runId"] = run["runId"]


def _poll_run(context: df.DurableOrchestrationContext, request: dict, options: dict, progress: dict):
    """pollRun: returns ("terminal" | "CANCELED" | "TIMEDOUT" | "continue", last run summary)."""
    ceiling = options["webhookPollIntervalSeconds"] if progress["webhooks"] else request["pollIntervalSeconds"]
    schedule = policy.poll_schedule(webhooks=progress["webhooks"], max_seconds=ceiling)
    deadline = datetime.fromisoformat(progress["deadline"])
    polls_this_execution = 0
    # ONE waiter per event name for the whole execution, reused by every wait. SDK 1.7 hands a
    # raised event to the newest waiter of its name even when that waiter's task_any is over, so a
    # fresh waiter per iteration would swallow a cancel that arrives while a poll runs; and an
    # event that came before any waiter is re-applied to every later waiter of the name, so
    # runFinished is waited for at most once per execution (the schedule's timers remain).
    cancel = context.wait_for_external_event(CANCEL_EVENT)
    finished = context.wait_for_external_event(RUN_FINISHED_EVENT) if progress["webhooks"] else None
    while True:
        polled = yield from _get_run(context, progress, deadline)
        progress["polls"] += 1
        polls_this_execution += 1
        if polled is not None:
            progress["run"] = polled
        run = progress["run"]
        _show(context, "pollRun", progress)
        if polled is not None and policy.is_terminal(polled):
            return "terminal", polled
        if cancel.is_completed:  # raised while the poll ran
            yield from _cancel_run(context, progress)
            return policy.CANCELED, run

        now = context.current_utc_datetime
        if now >= deadline:
            yield from _cancel_run(context, progress)
            return policy.TIMEDOUT, run

        # A webhook (runFinished) only makes the next poll early: runs/get stays the source of truth.
        if finished is not None and finished.is_completed:
            finished = None  # it came while the poll ran: poll again at once, and only once
        else:
            elapsed = (now - datetime.fromisoformat(progress["startedAt"])).total_seconds()
            delay = timedelta(seconds=schedule.delay_after(progress["polls"], elapsed))
            timer = context.create_timer(min(now + delay, deadline))
            waits = [timer, cancel] + ([finished] if finished is not None else [])
            winner = yield context.task_any(waits)
            if winner is not timer:
                timer.cancel()  # or the instance stays Running until it fires
            if winner is cancel:
                yield from _cancel_run(context, progress)
                return policy.CANCELED, run
            if winner is finished:
                finished = None  # waited for once per execution; see above
        if polls_this_execution >= options["pollsPerExecution"]:
            return "continue", run


def _cancel_run(context: df.DurableOrchestrationContext, progress: dict):
    yield from _call(context, "cancelRun", {"runId": progress["runId"]})


def _get_run(context: df.DurableOrchestrationContext, progress: dict, deadline: datetime):
    """One poll; None when it failed transiently. A long run should outlive a Databricks outage
    (Databricks advises retrying 5xx for up to 10 minutes), so until the deadline a failed poll
    just waits for the next one; an error retrying cannot fix (a 4xx) still ends the workflow."""
    try:
        return (yield from _call(context, "getJobRun", {"runId": progress["runId"]}))
    except Exception as exc:
        if not policy.is_retryable_activity_error(str(exc)) or context.current_utc_datetime >= deadline:
            raise
        progress["failedPolls"] = progress.get("failedPolls", 0) + 1
        return None


def _fetch_output(context: df.DurableOrchestrationContext, request: dict, run: dict, result: Optional[str]):
    """fetchOutput: get-output needs the TASK run id (the job run id is refused for multi-task
    runs, which is every job made by jobs/create). Failed runs are fetched for error and trace."""
    task = policy.select_task_run(run, request["taskKey"])
    if task is None or not task.get("runId"):
        return None
    try:
        return (yield from _call(context, "getJobRunOutput", {"runId": task["runId"]}))
    except Exception:
        if policy.is_success(result):
            raise
        return None  # the run's own outcome matters more than its missing error text


def _new_progress(context: df.DurableOrchestrationContext, request: dict) -> dict:
    now = context.current_utc_datetime
    return {
        "startedAt": now.isoformat(),
        "deadline": (now + timedelta(seconds=request["timeoutSeconds"])).isoformat(),
        "polls": 0, "jobId": None, "runId": None, "webhooks": False, "run": None,
        # Names this workflow run's job and run-now token; deterministic on replay.
        "runKey": context.new_uuid(),
    }


def _workflow(context: df.DurableOrchestrationContext, envelope: dict, progress: dict):
    """The steps; returns the outputs, or None after continue_as_new."""
    request, options = envelope["request"], envelope["options"]
    if progress["runId"] is None:
        yield from _create_job_and_run_now(context, request, progress)

    try:
        outcome, run = yield from _poll_run(context, request, options, progress)
    except Exception:
        # Leave nothing running on Databricks when we give up on it.
        try:
            yield context.call_activity("cancelRun", {"runId": progress["runId"]})
        except Exception:
            pass
        raise

    if outcome == "continue":
        # Bounded history: a fresh execution of the same instance carries the progress on.
        context.continue_as_new({**envelope, "progress": progress})
        return None

    result = policy.result_state(run) if outcome == "terminal" else outcome
    task_output = None
    if outcome == "terminal":
        _show(context, "fetchOutput", progress)
        task_output = yield from _fetch_output(context, request, run, result)
    outputs = policy.outputs(job_id=progress["jobId"], run_id=progress["runId"], result=result,
                             run=run, task_output=task_output)
    if request.get("deleteJobOnCompletion"):
        _show(context, "deleteJob", progress)
        try:
            yield from _call(context, "deleteJob", {"jobId": progress["jobId"]})
            outputs["jobDeleted"] = True
        except Exception:
            outputs["jobDeleted"] = False  # the run's outcome stands; a leftover job is only clutter
    return outputs


def orchestrate(context: df.DurableOrchestrationContext):
    envelope = context.get_input()
    notify = envelope["options"].get("notify")
    progress = envelope.get("progress") or _new_progress(context, envelope["request"])
    try:
        outputs = yield from _workflow(context, envelope, progress)
    except Exception as exc:
        if notify:
            # A caller that started us by event or message learns of a failed workflow too.
            failure = policy.failure_outputs(job_id=progress["jobId"], run_id=progress["runId"], error=str(exc))
            try:
                yield from _call(context, "notifyCompletion", {"instanceId": context.instance_id, "outputs": failure})
            except Exception:
                pass  # the workflow's own failure is what its status reports
        raise
    if outputs is None:
        return None  # continued as new
    if notify:
        # Event- and queue-started workflows have no caller polling them: report the end.
        _show(context, "notifyCompletion", progress)
        yield from _call(context, "notifyCompletion", {"instanceId": context.instance_id, "outputs": outputs})
    _show(context, "done", progress)
    if not context.is_replaying:  # once per workflow, not once per replay
        log.info("workflow %s: job %s run %s ended %s after %s polls", context.instance_id, progress["jobId"],
                 progress["runId"], outputs["resultState"], progress["polls"])
    return outputs
