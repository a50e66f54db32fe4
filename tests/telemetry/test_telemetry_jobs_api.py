"""Jobs API attempts as spans and metrics, through the process-wide client the activities use
(databricks_jobs.client.build_jobs_client, which wires the telemetry observer), against the emulator
with scripted faults. Retry waits are recorded, not slept."""
from __future__ import annotations

import pytest

from activities.jobs import getJobRun
from databricks_jobs import client as client_module
from databricks_jobs.credentials import EntraTokenProvider
from databricks_jobs.errors import DatabricksApiError
from telemetry.jobs_api import endpoint_template
from telemetry_support import parent_id


@pytest.fixture
def client(databricks_env, sleeps):
    built = client_module.build_jobs_client(sleep_func=sleeps, clock=sleeps.clock)
    client_module._client.override(built)
    return built


def start_run(client):
    job_id = client.create_job({"name": "telemetry-probe", "tasks": [{
        "task_key": "main", "existing_cluster_id": "0923-164208-meows279",
        "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}]})
    return client.run_now(job_id, "telemetry-probe-token")


def test_a_throttled_call_shows_both_attempts_the_wait_and_databricks_code(client, emulator, recorded, sleeps):
    run_id = start_run(client)
    emulator.faults.retry_after = 7
    emulator.faults.script("429", path="*/jobs/runs/get")
    recorded.exporter.clear()

    summary = getJobRun({"runId": run_id})
    assert summary["runId"] == run_id
    assert sleeps.sleeps == [7]

    (activity,) = recorded.spans("activity getJobRun")
    first, second = sorted(recorded.spans("GET /api/2.1/jobs/runs/get"), key=lambda s: s.attributes["databricks.attempt"])
    assert parent_id(first) == parent_id(second) == activity.context.span_id
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["databricks.error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert first.attributes["databricks.retry_wait_seconds"] == 7
    assert first.attributes["error.type"] == "429" and first.status.status_code.name == "ERROR"
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "databricks.retry_wait_seconds" not in second.attributes and second.status.status_code.name == "UNSET"
    assert first.end_time <= second.start_time  # back-dated to where each request really was

    assert recorded.total("databricks.api.throttled", endpoint="jobs/runs/get", status_code=429) == 1
    assert recorded.histogram("databricks.api.retry_wait", endpoint="jobs/runs/get", status_code=429) == {
        "count": 1, "sum": 7.0, "min": 7.0, "max": 7.0}
    assert recorded.total("databricks.api.calls", endpoint="jobs/runs/get", status_code=429,
                          error_code="REQUEST_LIMIT_EXCEEDED") == 1
    assert recorded.total("databricks.api.calls", endpoint="jobs/runs/get", status_code=200) == 1
    assert recorded.histogram("databricks.api.duration", endpoint="jobs/runs/get")["count"] == 2


def test_a_503_is_throttling_too_and_a_refusal_marks_the_activity_span_failed(client, emulator, recorded, sleeps):
    emulator.faults.script("503", path="*/jobs/runs/get")
    with pytest.raises(DatabricksApiError):
        getJobRun({"runId": 424242})  # after the 503, Databricks does not know the run
    assert recorded.total("databricks.api.throttled", status_code=503) == 1
    (activity,) = recorded.spans("activity getJobRun")
    assert activity.status.status_code.name == "ERROR"
    assert activity.attributes["error.type"] == "DatabricksApiError"
    assert activity.attributes["databricks.status_code"] == 400
    refused = [s for s in recorded.spans("GET /api/2.1/jobs/runs/get") if s.attributes["databricks.attempt"] == 2]
    assert refused[0].attributes["databricks.error_code"] == activity.attributes["databricks.error_code"]


def test_a_dropped_connection_is_an_attempt_without_status(client, emulator, recorded, sleeps):
    emulator.faults.script("drop", path="*/jobs/runs/get")
    run_id = start_run(client)
    client.get_run(run_id)
    dropped = [s for s in recorded.spans("GET /api/2.1/jobs/runs/get") if s.attributes["databricks.attempt"] == 1]
    assert "http.response.status_code" not in dropped[0].attributes
    assert dropped[0].attributes["error.type"] == "ConnectionError"
    assert recorded.total("databricks.api.calls", endpoint="jobs/runs/get", status_code=0) == 1


def test_paths_with_ids_become_templates():
    assert endpoint_template("jobs/runs/get") == "jobs/runs/get"
    assert endpoint_template("/jobs/123/runs/456?run_id=9") == "jobs/{id}/runs/{id}"


class _Credential:
    def __init__(self, fail: bool):
        self.fail = fail

    def get_token(self, scope):
        from azure.core.credentials import AccessToken

        if self.fail:
            raise RuntimeError("token endpoint down")
        return AccessToken("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.sig", 4102444800)


def test_token_fetches_are_counted_by_auth_mode_and_outcome(recorded):
    EntraTokenProvider(_Credential(False), auth_mode="managed_identity").token()
    with pytest.raises(Exception):
        EntraTokenProvider(_Credential(True), auth_mode="default_azure_credential").token()
    assert recorded.total("databricks.token.fetches", auth_mode="managed_identity", outcome="success") == 1
    assert recorded.total("databricks.token.fetches", auth_mode="default_azure_credential", outcome="failure") == 1
    assert "eyJ" not in recorded.metric_text()


def test_only_code_shaped_values_from_an_answer_reach_the_attempt_span(recorded):
    from databricks_jobs.client import HttpAttempt
    from telemetry.jobs_api import attempt_observer

    observe = attempt_observer("https://adb-1.7.azuredatabricks.net", "2.2")
    observe(HttpAttempt("GET", "jobs/runs/get", 1, 403, None, None, "0a1b-2c3d", 0.01, "PERMISSION_DENIED"))
    observe(HttpAttempt("GET", "jobs/runs/get", 1, 400, None, None, "id with spaces <script>", 0.01,
                        "Bearer dapi0123 leaked: text"))
    good, odd = recorded.spans("GET /api/2.2/jobs/runs/get")
    assert good.attributes["databricks.request_id"] == "0a1b-2c3d"
    assert good.attributes["databricks.error_code"] == "PERMISSION_DENIED"
    assert good.attributes["url.full"] == "https://adb-1.7.azuredatabricks.net/api/2.2/jobs/runs/get"
    assert good.attributes["server.address"] == "adb-1.7.azuredatabricks.net" and good.attributes["server.port"] == 443
    assert "databricks.request_id" not in odd.attributes
    assert odd.attributes["databricks.error_code"] == "UNKNOWN"
    assert "dapi0123" not in recorded.span_text() + recorded.metric_text()
