"""HTTP routes over real HTTP (devhost serve's server hosting the app's functions, the real
DurableOrchestrationClient), workflows driven in virtual time: route spans, the workflow.started
count, Jobs API attempts made by a route under its span, and the secret test: a planted PAT and a
planted `?code=` function key appear in no span name, attribute, event or status, and in no metric."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests

import databricks_jobs
from devhost import ReplayHost
from devhost.serve import DevServer
from telemetry_support import FUNCTION_KEY, REQUEST, SECRET_TOKEN, parent_id

START = "/api/workflows/create-job-and-run"
WRONG_TOKEN = "dapi9999999999999999999999999999999-WRONG-TELEMETRY-SECRET"


@pytest.fixture
def stack(clock, emulator, databricks_env):
    import function_app

    host = ReplayHost(function_app.app, clock)
    server = DevServer(function_app.app, host)
    base_url = server.start()
    host.stop()  # the test drives workflows in virtual time itself
    yield SimpleNamespace(base_url=base_url, host=host, emulator=emulator)
    server.stop()


def post_start(stack, body=REQUEST, headers=None):
    return requests.post(f"{stack.base_url}{START}?code={FUNCTION_KEY}", json=body, headers=headers or {}, timeout=10)


def test_an_http_start_has_a_route_span_and_counts_one_started_workflow(stack, recorded):
    first = post_start(stack, headers={"Idempotency-Key": "order-1"})
    again = post_start(stack, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"

    spans = recorded.spans("POST /api/workflows/create-job-and-run")
    assert len(spans) == 2
    assert {s.attributes["http.response.status_code"] for s in spans} == {202}
    assert spans[0].attributes["http.route"] == START and spans[0].attributes["http.request.method"] == "POST"
    # The repeat found its workflow: one start, by caller.
    assert recorded.attribute_sets("workflow.started") == [{"caller": "http"}]
    assert recorded.total("workflow.started", caller="http") == 1

    instance_id = first.json()["id"]
    stack.host.run_until_complete(instance_id)
    done = requests.get(f"{stack.base_url}/api/workflows/{instance_id}?code={FUNCTION_KEY}", timeout=10)
    assert done.status_code == 200
    (status_span,) = recorded.spans("GET /api/workflows/{instanceId}")
    assert status_span.attributes["http.response.status_code"] == 200
    assert status_span.attributes["http.route"] == "/api/workflows/{instanceId}"


def test_a_wrong_method_is_named_by_the_method_it_came_with(stack, recorded):
    assert requests.delete(f"{stack.base_url}{START}", timeout=10).status_code == 405
    (span,) = recorded.spans("DELETE /api/workflows/create-job-and-run")
    assert span.attributes["http.response.status_code"] == 405
    assert recorded.total("workflow.started") == 0


def test_a_jobs_api_call_made_by_a_route_is_a_child_of_its_span(stack, recorded):
    client = databricks_jobs.client.get_jobs_client()
    client.create_job({"name": "existing-load", "tasks": [{
        "task_key": "main", "existing_cluster_id": "0923-164208-meows279",
        "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}]})
    recorded.exporter.clear()

    assert post_start(stack, body={"jobName": "existing-load"}).status_code == 202
    (route,) = recorded.spans("POST /api/workflows/create-job-and-run")
    lookups = recorded.spans("GET /api/2.1/jobs/list")
    assert lookups and all(parent_id(s) == route.context.span_id for s in lookups)
    assert all(s.context.trace_id == route.context.trace_id for s in lookups)


def test_no_planted_token_or_function_key_reaches_a_span_or_a_metric(stack, recorded, monkeypatch):
    ok = post_start(stack, headers={"Idempotency-Key": "secret-check"}).json()["id"]
    stack.host.run_until_complete(ok)
    for path in (f"/api/workflows/{ok}", f"/api/workflows/{ok}/cancel", "/api/workflows/not-there"):
        method = requests.post if path.endswith("/cancel") else requests.get
        method(f"{stack.base_url}{path}?code={FUNCTION_KEY}", timeout=10)

    # A token Databricks refuses: error answers, a failed activity and a failed orchestration.
    monkeypatch.setenv("DATABRICKS_TOKEN", WRONG_TOKEN)
    databricks_jobs.reset_all()
    failed = post_start(stack, body={**REQUEST, "jobName": "other-load"}).json()["id"]
    status = stack.host.run_until_complete(failed)
    assert status["runtimeStatus"] == "Failed"
    assert recorded.total("workflow.ended", failed="true") == 1
    assert recorded.total("databricks.api.calls", status_code=401) >= 1

    spans, metrics = recorded.span_text(), recorded.metric_text()
    assert len(recorded.spans()) > 15 and "workflow.ended" in metrics  # there is something to search
    for secret in (SECRET_TOKEN, WRONG_TOKEN, FUNCTION_KEY, "code="):
        assert secret not in spans
        assert secret not in metrics
    for span in recorded.spans():
        assert not any("?" in str(v) for k, v in span.attributes.items() if k.startswith("url."))


def test_event_grid_and_queue_starts_are_counted_once_per_workflow_by_caller(stack, recorded):
    import json

    event = {"id": "evt-1", "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/jobs",
             "subject": "etl", "eventType": "Databricks.JobRun.Requested", "eventTime": "2026-01-01T00:00:10Z",
             "dataVersion": "1.0", "data": REQUEST}
    for _ in range(2):  # a redelivery finds its workflow
        delivered = requests.post(f"{stack.base_url}/runtime/webhooks/eventgrid?functionName=start_workflow_from_event",
                                  json=[event], headers={"aeg-event-type": "Notification"}, timeout=10)
        assert delivered.status_code == 202, delivered.text
    message = json.dumps({**REQUEST, "instanceId": "queued-order-1"})
    for _ in range(2):  # a duplicate message with the same instance id
        queued = requests.post(f"{stack.base_url}/admin/functions/start_workflow_from_queue",
                               json={"input": message}, timeout=10)
        assert queued.status_code == 202

    assert len(stack.host.instance_ids()) == 2
    assert recorded.total("workflow.started", caller="eventgrid") == 1
    assert recorded.total("workflow.started", caller="queue") == 1
    assert len(recorded.spans("eventgrid start_workflow_from_event")) == 2
    queue_spans = recorded.spans("queue start_workflow_from_queue")
    assert len(queue_spans) == 2 and all(s.attributes["workflow.caller"] == "queue" for s in queue_spans)
