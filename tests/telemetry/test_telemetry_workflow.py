"""A whole workflow on devhost + the Jobs API emulator in virtual time, read back through the
OpenTelemetry SDK's in-memory exporter and metric reader: the spans (one per activity execution,
one per Jobs API attempt under it) and the workflow.* / databricks.* metrics, checked against what
the emulator saw (its request log, its run's start and end times)."""
from __future__ import annotations

import pytest

from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from telemetry_support import REQUEST, WORKFLOW_END_ATTRIBUTES, parent_id
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

TERMINAL = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")


def run_workflow(host, settings=WorkflowSettings(), **overrides):
    request = validate_request({**REQUEST, **overrides}, settings)
    instance_id = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
    status = host.run_until_complete(instance_id, max_virtual_seconds=2 * 86400)
    return instance_id, status


def api_requests(emulator, suffix):
    return [r for r in emulator.request_log if r["path"].endswith(suffix)]


def test_a_successful_workflow_has_a_span_per_activity_and_per_jobs_api_attempt_beneath_it(
        make_host, emulator, recorded):
    _, status = run_workflow(make_host())
    assert status["runtimeStatus"] == "Completed" and status["output"]["resultState"] == "SUCCESS"

    activities = recorded.spans(prefix="activity ")
    ticks = recorded.spans("timer watch_runs")
    names = [s.name for s in activities]
    for activity in ("createJob", "runJobNow", "getJobRun", "getJobRunOutput"):
        assert f"activity {activity}" in names
    assert names.count("activity getJobRun") == len(api_requests(emulator, "/jobs/runs/get"))

    attempts = recorded.spans(prefix="GET /api/2.1/") + recorded.spans(prefix="POST /api/2.1/")
    # One span per HTTP request the emulator served; none missing, none extra.
    assert len(attempts) == len(emulator.request_log)
    by_id = {s.context.span_id: s for s in activities + ticks}
    for attempt in attempts:
        # The parent context flowed: every attempt sits under the activity or watcher tick that made it.
        assert parent_id(attempt) in by_id, attempt.name
        assert (by_id[parent_id(attempt)].name == "timer watch_runs") == attempt.name.endswith("/jobs/runs/list")
        assert attempt.context.trace_id == by_id[parent_id(attempt)].context.trace_id
        attributes = attempt.attributes
        assert attributes["http.response.status_code"] == 200 and attributes["databricks.attempt"] == 1
        assert "?" not in attributes["url.full"] and attributes["url.full"].endswith(attributes["url.template"])
        assert attributes["server.address"] == "127.0.0.1"
    run_now = [s for s in attempts if s.name == "POST /api/2.1/jobs/run-now"]
    assert len(run_now) == 1 and by_id[parent_id(run_now[0])].name == "activity runJobNow"
    assert recorded.spans("workflow ended")[0].attributes["workflow.result_state"] == "SUCCESS"

    # Jobs API calls by endpoint and status: what the emulator served.
    assert recorded.total("databricks.api.calls") == len(emulator.request_log)
    assert recorded.total("databricks.api.calls", endpoint="jobs/runs/get", method="GET", status_code=200) == \
        len(api_requests(emulator, "/jobs/runs/get"))
    assert recorded.total("databricks.api.throttled") == 0
    assert recorded.total("databricks.token.fetches") == 0  # pat: read from settings, never fetched


def test_workflow_metrics_match_the_run_databricks_reports(make_host, emulator, recorded):
    instance_id, status = run_workflow(make_host())
    outputs = status["output"]
    run = emulator.run(outputs["runId"])

    assert recorded.total("workflow.ended") == 1
    assert recorded.attribute_sets("workflow.ended") == [
        {"result_state": "SUCCESS", "failed": "false", "reason": "SUCCESS"}]

    duration = recorded.histogram("workflow.run.duration", result_state="SUCCESS")
    assert duration["count"] == 1
    assert duration["sum"] == pytest.approx((run["end_time"] - run["start_time"]) / 1000)

    # The workflow noticed the end at its first runs/get after it (the watcher woke it up).
    polls = api_requests(emulator, "/jobs/runs/get")
    first_after_end = min(r["time"] for r in polls if r["time"] * 1000 >= run["end_time"])
    lag = recorded.histogram("workflow.detection.lag", result_state="SUCCESS", signals="true")
    assert lag["count"] == 1
    assert lag["sum"] == pytest.approx(first_after_end - run["end_time"] / 1000, abs=0.01)
    assert 0 <= lag["sum"] <= 30  # within a watcher tick or two of 15 s

    assert recorded.histogram("workflow.polls")["sum"] == len(polls)

    (ended,) = recorded.spans("workflow ended")
    assert WORKFLOW_END_ATTRIBUTES <= set(ended.attributes)
    assert ended.attributes["workflow.instance_id"] == instance_id
    assert ended.attributes["databricks.run_id"] == outputs["runId"]
    assert ended.attributes["workflow.detection_lag_seconds"] == pytest.approx(lag["sum"])
    assert ended.attributes["workflow.polls"] == len(polls)


def test_without_the_watcher_the_lag_is_the_workflows_own_poll_schedule(make_host, emulator, recorded):
    _, status = run_workflow(make_host(watcher=False), WorkflowSettings(run_watcher_interval_seconds=0))
    run = emulator.run(status["output"]["runId"])
    polls = api_requests(emulator, "/jobs/runs/get")
    first_after_end = min(r["time"] for r in polls if r["time"] * 1000 >= run["end_time"])
    lag = recorded.histogram("workflow.detection.lag", signals="false")
    assert lag["count"] == 1 and lag["sum"] == pytest.approx(first_after_end - run["end_time"] / 1000, abs=0.01)
    assert recorded.total("workflow.watcher.ticks") == 0


def test_the_run_watcher_reports_its_ticks_list_calls_and_signals(make_host, emulator, recorded):
    run_workflow(make_host())
    list_requests = api_requests(emulator, "/jobs/runs/list")
    assert list_requests
    assert recorded.total("workflow.watcher.list_calls") == len(list_requests)
    assert recorded.total("workflow.watcher.signals", outcome="delivered") == 1
    assert recorded.total("workflow.watcher.ticks", result="listed") >= 1
    assert recorded.total("workflow.watcher.ticks") == sum(
        recorded.total("workflow.watcher.ticks", result=r) for r in ("idle", "not_due", "listed"))
    assert max(p.value for p in recorded.points("workflow.watcher.awaited_runs")) <= 1


def test_a_workflow_end_is_counted_once_even_when_the_host_runs_activities_twice(make_host, emulator, recorded):
    _, status = run_workflow(make_host(twice=True))
    assert status["output"]["resultState"] == "SUCCESS"
    assert recorded.total("workflow.ended") == 1
    assert recorded.histogram("workflow.run.duration")["count"] == 1
    assert len(recorded.spans("workflow ended")) == 1
    # Every execution of an activity has its own span: at-least-once shows as two.
    assert len(recorded.spans("activity runJobNow")) == 2


def test_a_run_that_fails_is_counted_with_databricks_reason(make_host, emulator, recorded):
    _, status = run_workflow(make_host(), notebookPath="/Workspace/Users/me/fail_load")
    assert status["output"]["resultState"] == "FAILED"
    assert recorded.attribute_sets("workflow.ended") == [
        {"result_state": "FAILED", "failed": "false", "reason": "FAILED"}]


def test_a_failed_orchestration_is_counted_with_the_error_code_and_step(make_host, emulator, recorded, monkeypatch):
    import databricks_jobs

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-not-accepted-by-the-emulator")
    databricks_jobs.reset_all()
    _, status = run_workflow(make_host())
    assert status["runtimeStatus"] == "Failed"
    assert recorded.attribute_sets("workflow.ended") == [
        {"result_state": "none", "failed": "true", "reason": "UNAUTHENTICATED", "step": "createJob"}]
    assert recorded.total("databricks.api.calls", status_code=401, error_code="UNAUTHENTICATED") >= 1
    failed_activity = recorded.spans("activity createJob")[0]
    assert failed_activity.status.status_code.name == "ERROR"
    assert failed_activity.attributes["databricks.error_code"] == "UNAUTHENTICATED"
    assert failed_activity.attributes["databricks.status_code"] == 401
    (ended,) = recorded.spans("workflow ended")
    assert ended.status.status_code.name == "ERROR" and ended.attributes["workflow.failed"] == "true"
