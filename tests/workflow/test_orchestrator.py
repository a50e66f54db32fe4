"""The create-job-and-run workflow end to end, in virtual time: real replay engine, real activities,
real HTTP to the Jobs API emulator. Each test states an outcome a caller would rely on."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from jobs_emulator import Behavior, Scenario
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

from workflow_support import REQUEST, SECRET_TOKEN


def _requests(emulator, suffix):
    return [r for r in emulator.request_log if r["path"].endswith(suffix)]


def _times(host) -> int:
    """How often each activity runs: twice under the at-least-once host mode."""
    return 2 if host.activities_twice else 1


def _get_run_states(host, instance_id):
    """life-cycle states the orchestrator observed, in order, across all executions."""
    states = []
    for execution in host.executions(instance_id):
        for event in execution["history"]:
            if event["EventType"] == 5:  # TaskCompleted
                result = json.loads(event["Result"]) if event.get("Result") else None
                if isinstance(result, dict) and "lifeCycleState" in result:
                    states.append(result["lifeCycleState"])
    return states


def test_success_returns_the_notebook_exit_value_fetched_with_the_task_run_id(run_workflow, emulator):
    status = run_workflow()
    assert status["runtimeStatus"] == "Completed"
    out = status["output"]
    assert out["resultState"] == "SUCCESS" and out["lifeCycleState"] == "TERMINATED"
    assert json.loads(out["notebookResult"])["status"] == "OK"
    assert out["runPageUrl"].startswith(emulator.base_url)

    run = emulator.run(out["runId"])
    task_run_id = run["tasks"][0]["run_id"]
    fetched = [r["query"] for r in _requests(emulator, "/runs/get-output")]
    assert fetched and all(str(task_run_id) in json.dumps(q) for q in fetched)
    assert not any(str(out["runId"]) in json.dumps(q) for q in fetched)  # never the job run id
    assert out["jobId"] == run["job_id"]


def test_the_end_of_a_workflow_is_logged_once_not_once_per_replay(run_workflow, all_logs):
    status = run_workflow()
    ended = [r.getMessage() for r in all_logs.records if "ended SUCCESS" in r.getMessage()]
    assert ended == [f"workflow {status['instanceId']}: job {status['output']['jobId']} run "
                     f"{status['output']['runId']} ended SUCCESS after {status['customStatus']['polls']} polls"]


def test_failed_run_ends_with_error_and_trace(run_workflow):
    out = run_workflow(notebookPath="/Workspace/Users/me/fail_load")["output"]
    assert out["resultState"] == "FAILED"
    assert out["error"] == "Exception: emulated notebook failure"
    assert "Traceback" in out["errorTrace"]
    assert out["notebookResult"] is None


def test_skipped_run_is_terminal_and_fetches_no_output(run_workflow, emulator):
    out = run_workflow(notebookPath="/Workspace/Users/me/skip_me")["output"]
    # One caller-facing vocabulary; Databricks' own detail beside it.
    assert (out["resultState"], out["lifeCycleState"], out["databricksResultState"]) == \
        ("SKIPPED", "SKIPPED", "MAXIMUM_CONCURRENT_RUNS_REACHED")
    assert "notebookResult" in out and out["notebookResult"] is None


def test_internal_error_is_a_failure_with_the_databricks_detail_beside_it(run_workflow):
    out = run_workflow(notebookPath="/Workspace/Users/me/crash_it")["output"]
    assert (out["resultState"], out["lifeCycleState"], out["databricksResultState"]) == \
        ("FAILED", "INTERNAL_ERROR", "FAILED")


@pytest.mark.parametrize("notebook", ["load", "fail_load", "skip_me", "crash_it", "timeout_load", "slow_load"])
def test_every_result_state_a_caller_sees_is_in_the_documented_list(run_workflow, notebook):
    from workflow.policy import RESULT_STATES

    out = run_workflow(notebookPath=f"/Workspace/Users/me/{notebook}", timeoutSeconds=600)["output"]
    assert out["resultState"] in RESULT_STATES


def test_queued_and_blocked_runs_keep_polling_until_they_finish(run_workflow, host, emulator, own_polls):
    # The built-in queued scenario, slowed so that every phase outlasts a poll interval.
    emulator.scenario = Scenario(time_scale=30)
    status = run_workflow(own_polls, notebookPath="/Workspace/Users/me/queued_load", pollIntervalSeconds=10)
    assert status["output"]["resultState"] == "SUCCESS"
    seen = _get_run_states(host, status["instanceId"])
    assert seen.index("QUEUED") < seen.index("BLOCKED") < seen.index("RUNNING") < seen.index("TERMINATED")


def test_cancel_event_cancels_the_databricks_run(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    request = validate_request(dict(REQUEST), WorkflowSettings())
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, WorkflowSettings()))
    host.run_until_idle()
    clock.advance(60)
    host.run_until_idle()
    assert host.get_status(iid)["runtimeStatus"] == "Running"
    host.raise_event(iid, "cancel", {"reason": "test"})
    status = host.run_until_complete(iid)
    out = status["output"]
    assert out["resultState"] == "CANCELED"
    assert _requests(emulator, "/runs/cancel")
    clock.advance(5)
    assert emulator.run(out["runId"])["state"]["result_state"] == "CANCELED"


def test_deadline_cancels_the_run_and_ends_timedout(run_workflow, emulator, clock, host):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 7200),)))])
    started = clock.now()
    out = run_workflow(timeoutSeconds=600)["output"]
    assert out["resultState"] == "TIMEDOUT" and out["deadlineExceeded"] is True
    # The run's state AFTER cancelling it, not the last poll's.
    assert (out["lifeCycleState"], out["databricksResultState"]) == ("TERMINATED", "CANCELED")
    assert 600 <= clock.now() - started < 700
    assert len(_requests(emulator, "/runs/cancel")) == _times(host)


def test_workflows_with_their_own_deadlines_share_one_saved_job(run_workflow, emulator):
    """Issue 14 cause 3: the deadline is the workflow's, not the definition's. A caller computing
    "finish by 06:00" used to get a new, never-deleted saved job per workflow."""
    outs = [run_workflow(timeoutSeconds=t)["output"] for t in (3600, 3599, 7200)]
    assert len({o["jobId"] for o in outs}) == 1 and all(o["resultState"] == "SUCCESS" for o in outs)
    assert len(_requests(emulator, "/jobs/create")) == 1 and list(emulator.jobs) == [outs[0]["jobId"]]
    # One Me and one list on the cold first start; the later starts know the job (no call at all).
    assert len(_requests(emulator, "/jobs/list")) == 2 and not _requests(emulator, "/jobs/delete")
    # The shared job's own backstop is one fixed ceiling (the longest deadline a request may ask).
    assert emulator.jobs[outs[0]["jobId"]]["settings"]["timeout_seconds"] == 2_592_000 + 300


def test_a_private_job_times_out_on_databricks_too_shortly_after_the_workflow_deadline(run_workflow, emulator):
    run_workflow(timeoutSeconds=3600, deleteJobOnCompletion=True)
    created = _requests(emulator, "/jobs/create")[-1]["body"]
    assert created["timeout_seconds"] == 3600 + 300


def test_a_lost_workflow_still_leaves_no_run_going_past_the_job_timeout(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 7200),)))])
    settings = WorkflowSettings()
    # A run of its own (private job) carries the request's deadline + 300 s as the job's timeout.
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(
        validate_request(dict(REQUEST, timeoutSeconds=600, deleteJobOnCompletion=True), settings), settings))
    host.run_until_idle()
    host.terminate(iid, "operator used terminate instead of cancel")
    run_id = host.get_status(iid)["customStatus"]["runId"]
    clock.advance(900 + 60)
    state = emulator.run(run_id)["state"]
    assert (state["life_cycle_state"], state["result_state"]) == ("TERMINATED", "TIMEDOUT")


def test_non_retryable_activity_failure_fails_the_workflow_with_the_databricks_error(run_workflow, monkeypatch):
    import databricks_jobs

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-the-right-one")
    databricks_jobs.reset_all()
    status = run_workflow()
    assert status["runtimeStatus"] == "Failed"
    assert "Databricks API error 401" in json.dumps(status["output"])


def test_transient_activity_failures_are_retried_on_durable_timers(run_workflow, emulator, monkeypatch, host):
    import databricks_jobs

    if host.activities_twice:
        pytest.skip("counts each failed attempt's faults: the duplicate execution would consume them")

    # A 503's Retry-After (1 s) is over the client's own budget, so each one fails the activity.
    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.5")
    databricks_jobs.reset_all()
    emulator.faults.script("503", "503", path="*/runs/get")
    status = run_workflow()
    assert status["runtimeStatus"] == "Completed" and status["output"]["resultState"] == "SUCCESS"
    history = host.executions(status["instanceId"])[0]["history"]
    failed = [e for e in history if e["EventType"] == 6]
    assert len(failed) == 2 and all("Databricks API error 503" in e["Reason"] for e in failed)
    # Retried after 10 s, then 20 s: exponential backoff on durable timers, no compute held.
    first_failure = datetime.fromisoformat(failed[0]["Timestamp"].replace("Z", "+00:00"))
    fired = [datetime.fromisoformat(e["Timestamp"].replace("Z", "+00:00")) for e in history if e["EventType"] == 11]
    assert [(t - first_failure).total_seconds() for t in fired if t > first_failure][:2] == [10, 30]


def test_a_databricks_outage_while_polling_does_not_end_the_workflow(run_workflow, emulator, monkeypatch, host):
    import databricks_jobs

    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.5")
    databricks_jobs.reset_all()
    # More failures than one poll's activity attempts (4): that poll is given up, the next one works.
    emulator.faults.script(*["503"] * 6, path="*/runs/get")
    status = run_workflow()
    assert status["runtimeStatus"] == "Completed" and status["output"]["resultState"] == "SUCCESS"
    # Every unanswered attempt is counted (a duplicated execution consumes two faults per attempt).
    assert status["customStatus"]["failedPolls"] == 6 // _times(host)
    assert not _requests(emulator, "/runs/cancel")


def test_polls_failing_until_the_deadline_end_timedout_with_the_run_cancelled(host, clock, emulator, monkeypatch,
                                                                             own_polls):
    import databricks_jobs
    from jobs_emulator import Faults

    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.5")
    databricks_jobs.reset_all()
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 7200),)))])
    emulator.faults = Faults(rate=1.0, kinds=("503",), paths=["*/runs/get"], retry_after=1)
    request = validate_request(dict(REQUEST, timeoutSeconds=60), own_polls)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, own_polls))
    started = clock.now()
    host.run_until_idle()
    clock.advance(35)  # inside the first poll's (at 30 s) retry waits
    host.run_until_idle()
    waiting = host.get_status(iid)["customStatus"]
    assert waiting["runId"] and waiting["step"] == "pollRun" and waiting["failedPolls"] >= 1
    status = host.run_until_complete(iid)
    out = status["output"]
    assert status["runtimeStatus"] == "Completed" and out["resultState"] == "TIMEDOUT"
    assert status["customStatus"]["failedPolls"] >= 1
    # The retry waits were cut at the deadline, not carried past it.
    assert clock.now() - started < 60 + 5 * 60
    assert len(_requests(emulator, "/runs/cancel")) == _times(host)  # nothing left running on Databricks
    emulator.faults = Faults()
    clock.advance(5)
    assert emulator.run(out["runId"])["state"]["result_state"] == "CANCELED"


@pytest.mark.parametrize("watcher", [True, False], ids=["watcher", "own-polls"])
def test_an_error_retrying_cannot_fix_ends_the_workflow_at_once(host, clock, emulator, watcher):
    settings = WorkflowSettings(run_watcher_interval_seconds=15 if watcher else 0)
    host.timer_triggers = watcher
    request = validate_request(dict(REQUEST), settings)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
    host.run_until_idle()
    emulator.tokens = {"a-rotated-token"}  # our credential stops working mid-run: 401, not transient
    started = clock.now()
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Failed" and "Databricks API error 401" in json.dumps(status["output"])
    # At the next poll (or the watcher's next tick, which tells the workflow), not the deadline.
    assert clock.now() - started < 60


def test_continue_as_new_bounds_history_across_a_long_run(run_workflow, emulator, host, own_polls):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 4 * 3600),)))])
    settings = WorkflowSettings(polls_per_execution=10, run_watcher_interval_seconds=0)
    status = run_workflow(settings, pollIntervalSeconds=30)
    out = status["output"]
    assert out["resultState"] == "SUCCESS"
    executions = host.executions(status["instanceId"])
    assert len(executions) >= 40  # ~480 polls of 30 s over 4 h, 10 per execution
    longest = max(len(x["history"]) for x in executions)
    assert longest <= 100, longest  # bounded, not by run length
    assert status["customStatus"]["polls"] >= 400  # progress carried across executions


def test_a_24_hour_run_finishes_in_seconds_of_wall_time(run_workflow, emulator, clock, own_polls, host):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("PENDING", 300), ("RUNNING", 86400)),
                                                        notebook_result="done"))])
    started_wall, started_virtual = time.monotonic(), clock.now()
    status = run_workflow(own_polls, timeoutSeconds=2 * 86400)
    assert status["output"]["notebookResult"] == "done"
    # History stays small however long the run: at most 100 events per orchestration execution.
    assert max(len(x["history"]) for x in host.executions(status["instanceId"])) <= 100
    assert clock.now() - started_virtual >= 86700
    assert time.monotonic() - started_wall < 30


def test_custom_status_reports_progress(host, clock, emulator, own_polls):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("PENDING", 45), ("RUNNING", 600))))])
    request = validate_request(dict(REQUEST), own_polls)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, own_polls))
    host.run_until_idle()
    progress = host.get_status(iid)["customStatus"]
    # Waiting for the first poll: no look at age 0, when the run cannot have ended; the run's page
    # is linked already (the emulator's loopback host carries no workspace id for `?o=`, an Azure
    # workspace's does: tests/databricks_jobs/test_dbx_settings.py).
    assert progress["step"] == "pollRun" and progress["polls"] == 0 and progress["runId"]
    reported = emulator.run(progress["runId"])["run_page_url"]
    assert progress["runPageUrl"].split("#") == [reported.split("?")[0], reported.split("#")[1]]
    clock.advance(30)
    host.run_until_idle()
    progress = host.get_status(iid)["customStatus"]
    assert progress["polls"] == 1 and progress["elapsedSeconds"] == 30
    assert progress["lifeCycleState"] == "PENDING" and progress["runPageUrl"]
    clock.advance(30)
    host.run_until_idle()
    progress = host.get_status(iid)["customStatus"]
    assert progress["polls"] == 2 and progress["lifeCycleState"] == "RUNNING"


def test_an_instance_id_used_again_gets_a_new_run_of_the_same_shared_job(run_workflow, emulator):
    """Once an instance's history is purged its id can start again (a repeated Idempotency-Key, an
    event redelivered weeks later): that is a new workflow run, so a new run, on the one saved job
    of the same definition."""
    first = run_workflow(instance_id="fixed-instance")["output"]
    second = run_workflow(instance_id="fixed-instance")["output"]
    assert first["jobId"] == second["jobId"] and first["runId"] != second["runId"]
    assert len(_requests(emulator, "/jobs/create")) == 1


def test_a_private_job_is_never_reused_by_an_instance_id_used_again(run_workflow, emulator):
    first = run_workflow(instance_id="fixed-instance", deleteJobOnCompletion=True)["output"]
    second = run_workflow(instance_id="fixed-instance", deleteJobOnCompletion=True)["output"]
    assert first["jobId"] != second["jobId"] and first["runId"] != second["runId"]
    assert first["jobDeleted"] and second["jobDeleted"] and not emulator.jobs


def test_job_is_deleted_after_the_output_is_fetched_when_asked(run_workflow, emulator):
    out = run_workflow(deleteJobOnCompletion=True)["output"]
    assert out["resultState"] == "SUCCESS" and json.loads(out["notebookResult"])["status"] == "OK"
    assert out["jobDeleted"] is True
    assert out["jobId"] not in emulator.jobs
    paths = [r["path"] for r in emulator.request_log]
    assert paths.index(next(p for p in paths if p.endswith("/runs/get-output"))) < paths.index(
        next(p for p in paths if p.endswith("/jobs/delete")))


def test_jobs_are_kept_by_default(run_workflow, emulator):
    out = run_workflow()["output"]
    assert "jobDeleted" not in out and out["jobId"] in emulator.jobs


def test_no_secret_in_history_status_output_or_logs(run_workflow, host, all_logs, emulator):
    status = run_workflow(notebookPath="/Workspace/Users/me/fail_load")
    everything = json.dumps([host.executions(status["instanceId"]), host.get_status(status["instanceId"], show_history=True)])
    assert SECRET_TOKEN not in everything
    assert SECRET_TOKEN not in all_logs.text
    assert SECRET_TOKEN not in json.dumps(emulator.request_log)
    assert all_logs.records, "the check is only meaningful if something was logged"


@pytest.fixture
def sent_notifications(monkeypatch):
    from activities import notifications

    sent = []
    monkeypatch.setattr(notifications, "notify", lambda payload: sent.append(payload) or {"instanceId": payload["instanceId"]})
    return sent


def _start_notifying(host, **overrides):
    settings = WorkflowSettings()
    request = validate_request({**REQUEST, **overrides}, settings)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings, notify=True))
    return host.run_until_complete(iid)


def test_an_event_started_workflow_reports_its_outputs_when_it_ends(host, sent_notifications):
    status = _start_notifying(host)
    # Once per execution of the activity, every time the same event (consumers dedupe on its id).
    assert len(sent_notifications) == _times(host)
    sent = sent_notifications[0]
    assert all(s == sent for s in sent_notifications)
    assert sent["instanceId"] == status["instanceId"] and sent["outputs"] == status["output"]
    # The CloudEvent id names this workflow RUN: an instance id can start again after a purge.
    assert sent["eventId"] and sent["eventId"] != status["instanceId"]


def test_an_event_started_workflow_reports_its_failure_too(host, sent_notifications, monkeypatch):
    import databricks_jobs

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-the-right-one")
    databricks_jobs.reset_all()
    status = _start_notifying(host)
    assert status["runtimeStatus"] == "Failed"
    assert len(sent_notifications) == _times(host)
    sent = sent_notifications[0]
    assert sent["instanceId"] == status["instanceId"]
    assert sent["outputs"]["workflowFailed"] is True and sent["outputs"]["resultState"] is None
    assert "Databricks API error 401" in sent["outputs"]["error"]


@pytest.mark.parametrize("transient", [True, False], ids=["topic down", "topic refuses"])
def test_a_notification_that_keeps_failing_leaves_a_successful_run_successful(host, monkeypatch, transient):
    from activities import notifications

    attempts = []

    def down(payload):
        attempts.append(payload)
        raise notifications.NotificationError("Event Grid topic answered 503: unavailable", transient=transient)

    monkeypatch.setattr(notifications, "notify", down)
    status = _start_notifying(host)
    # The run's outcome stands, with its notebook result; the notification failure is beside it.
    assert status["runtimeStatus"] == "Completed"
    outputs = status["output"]
    assert outputs["resultState"] == "SUCCESS" and outputs["notebookResult"]
    assert outputs["notificationFailed"] is True and "503" in outputs["notificationError"]
    # A topic that is down is tried again on durable timers; one that refuses is not.
    assert (len(attempts) > _times(host)) == transient


def test_a_workflow_started_over_http_sends_no_notification(run_workflow, sent_notifications):
    assert run_workflow()["runtimeStatus"] == "Completed"
    assert sent_notifications == []


def test_with_the_run_watcher_a_long_run_keeps_each_execution_under_100_history_events(run_workflow, emulator, host):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("PENDING", 60), ("RUNNING", 3 * 3600)),
                                                        notebook_result="done"))])
    status = run_workflow(timeoutSeconds=86400)
    assert status["output"]["notebookResult"] == "done"
    assert max(len(x["history"]) for x in host.executions(status["instanceId"])) <= 100
