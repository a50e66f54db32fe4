"""The HTTP API over real HTTP, through `devhost serve`'s server hosting the app's own functions,
with the real DurableOrchestrationClient talking to devhost's management API. The workflow runs in
virtual time: the test drives the replay host while the server answers requests."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import requests

import databricks_jobs
from devhost import ReplayHost, VirtualClock
from devhost.serve import DevServer
from jobs_emulator import Behavior, Scenario, JobsEmulator

from http_support import START, TOKEN, VALID


def start(stack, body=VALID, **kwargs):
    return requests.post(stack.base_url + START, json=body, timeout=10, **kwargs)


def status_of(stack, instance_id):
    return requests.get(f"{stack.base_url}/api/workflows/{instance_id}", timeout=10)


def test_start_answers_202_with_location_and_retry_after(stack):
    response = start(stack)
    assert response.status_code == 202
    body = response.json()
    instance_id = body["id"]
    assert response.headers["Location"] == f"{stack.base_url}/api/workflows/{instance_id}"
    assert response.headers["Retry-After"] == "10"
    assert body == {"id": instance_id, "statusQueryGetUri": response.headers["Location"],
                    "cancelPostUri": f"{stack.base_url}/api/workflows/{instance_id}/cancel"}
    assert stack.host.instance_ids() == [instance_id]


def test_location_never_carries_the_callers_function_key(stack):
    # A URL lands in run histories and request logs (issue 15): the key stays with the caller.
    response = requests.post(f"{stack.base_url}{START}?code=key123", json=VALID, timeout=10)
    assert "key123" not in response.headers["Location"] and "code=" not in response.text
    assert response.json()["cancelPostUri"].endswith("/cancel")


def test_status_is_202_with_progress_while_running_then_200_with_the_outputs(stack):
    instance_id = start(stack).json()["id"]
    stack.host.run_until_idle()
    running = status_of(stack, instance_id)
    assert running.status_code == 202
    assert running.headers["Location"].endswith(f"/api/workflows/{instance_id}") and running.headers["Retry-After"]
    progress = running.json()
    assert progress["runtimeStatus"] == "Running"
    assert progress["customStatus"]["step"] == "pollRun" and progress["customStatus"]["runId"]

    stack.host.run_until_complete(instance_id)
    done = status_of(stack, instance_id)
    assert done.status_code == 200 and "Location" not in done.headers
    outputs = done.json()
    assert outputs["resultState"] == "SUCCESS" and json.loads(outputs["notebookResult"])["status"] == "OK"
    assert TOKEN not in done.text and TOKEN not in running.text


def test_retry_after_grows_with_the_workflows_age_like_its_own_polls(stack):
    stack.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 6 * 3600),)))])
    instance_id = start(stack).json()["id"]
    stack.host.run_until_idle()
    assert status_of(stack, instance_id).headers["Retry-After"] == "10"
    target = stack.clock.now() + 1200  # drive the workflow 20 minutes on, timer by timer
    while stack.clock.now() < target:
        stack.host.run_until_idle()
        stack.clock.advance_to(min(stack.host.next_timer_at(), target))
    stack.host.run_until_idle()
    # The workflow has slept since it started (it waits for the run watcher's signal), so its
    # custom status is 20 minutes old: the age counts from the startedAt it shows.
    assert status_of(stack, instance_id).json()["customStatus"]["elapsedSeconds"] == 0
    assert status_of(stack, instance_id).headers["Retry-After"] == "120"


def test_a_run_that_did_not_succeed_answers_424_with_the_outputs(stack):
    instance_id = start(stack, dict(VALID, notebookPath="/Workspace/Users/me/fail_load")).json()["id"]
    stack.host.run_until_complete(instance_id)
    response = status_of(stack, instance_id)
    assert response.status_code == 424
    assert response.json()["resultState"] == "FAILED" and response.json()["errorTrace"]


def test_a_failed_workflow_answers_502_with_the_reason(stack, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    databricks_jobs.reset_all()
    instance_id = start(stack).json()["id"]
    stack.host.run_until_complete(instance_id)
    response = status_of(stack, instance_id)
    assert response.status_code == 502
    assert response.json()["runtimeStatus"] == "Failed" and "Databricks API error 401" in response.json()["detail"]


def test_a_terminated_workflow_answers_410(stack):
    instance_id = start(stack).json()["id"]
    stack.host.run_until_idle()
    stack.host.terminate(instance_id, "operator")
    assert status_of(stack, instance_id).status_code == 410


def test_cancel_ends_the_workflow_canceled_and_cancels_the_run(stack):
    stack.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    instance_id = start(stack).json()["id"]
    stack.host.run_until_idle()
    cancel = requests.post(f"{stack.base_url}/api/workflows/{instance_id}/cancel", timeout=10)
    assert cancel.status_code == 202 and cancel.headers["Location"].endswith(instance_id)
    stack.host.run_until_complete(instance_id)
    final = status_of(stack, instance_id)
    assert final.status_code == 424 and final.json()["resultState"] == "CANCELED"
    assert any(r["path"].endswith("/runs/cancel") for r in stack.emulator.request_log)
    again = requests.post(f"{stack.base_url}/api/workflows/{instance_id}/cancel", timeout=10)
    assert again.status_code == 409 and again.json()["field"] == "instanceId"


@pytest.mark.parametrize("method, path", [("GET", "/api/workflows/{id}"), ("POST", "/api/workflows/{id}/cancel")])
def test_unknown_and_malformed_instance_ids(stack, method, path):
    unknown = requests.request(method, stack.base_url + path.format(id="0123456789abcdef"), timeout=10)
    assert unknown.status_code == 404 and unknown.json()["field"] == "instanceId"
    malformed = requests.request(method, stack.base_url + path.format(id="-bad%20id"), timeout=10)
    assert malformed.status_code == 400 and malformed.json()["field"] == "instanceId"


def test_idempotency_key_starts_one_workflow(stack):
    first = start(stack, headers={"Idempotency-Key": "order-42"})
    second = start(stack, headers={"Idempotency-Key": "order-42"})
    other = start(stack, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json()["id"] == second.json()["id"] != other.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert sorted(stack.host.instance_ids()) == sorted({first.json()["id"], other.json()["id"]})


BAD_REQUESTS = [
    ("malformed JSON", b"{\"jobName\": ", {}, 400, None),
    ("empty body", b"", {}, 400, None),
    ("not an object", b"[1, 2]", {}, 400, None),
    ("missing field", json.dumps({k: v for k, v in VALID.items() if k != "notebookPath"}).encode(), {}, 400, "notebookPath"),
    ("mistyped field", json.dumps(dict(VALID, taskKey=7)).encode(), {}, 400, "taskKey"),
    ("relative notebook path", json.dumps(dict(VALID, notebookPath="Users/me/nb")).encode(), {}, 400, "notebookPath"),
    ("odd notebook path", json.dumps(dict(VALID, notebookPath="/Users/me/../nb")).encode(), {}, 400, "notebookPath"),
    ("unknown field", json.dumps(dict(VALID, token="dapi-should-not-be-here")).encode(), {}, 400, "token"),
    ("bad parameter value", json.dumps(dict(VALID, notebookParams={"n": 1})).encode(), {}, 400, "notebookParams.n"),
    ("timeout too short", json.dumps(dict(VALID, timeoutSeconds=1)).encode(), {}, 400, "timeoutSeconds"),
    # Issue 15 §4: tag keys the app uses for itself (a forged definition tag would plant a job).
    ("forged definition tag", json.dumps(dict(VALID, tags={"team": "a", "durable_job_definition": "f00"})).encode(),
     {}, 400, "tags.durable_job_definition"),
    ("body over the cap", json.dumps(dict(VALID, jobName="x" * 70000)).encode(), {}, 413, None),
    ("bad idempotency key", json.dumps(VALID).encode(), {"Idempotency-Key": "k" * 300}, 400, "Idempotency-Key"),
    # hostile and mistyped bodies: still a 4xx, said in JSON terms
    ("deeply nested", b"[" * 5000 + b"]" * 5000, {}, 400, None),
    ("nested past the limit", b'{"jobName": ' + b"[" * 40 + b"]" * 40 + b"}", {}, 400, None),
    ("duplicate key", b'{"jobName": "a", "jobName": "b"}', {}, 400, "jobName"),
    ("boolean as integer", json.dumps(dict(VALID, timeoutSeconds=True)).encode(), {}, 400, "timeoutSeconds"),
    ("text/plain", json.dumps(VALID).encode(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("form", b"jobName=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
]


@pytest.mark.parametrize("name, raw, headers, code, field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_naming_the_field_and_starts_nothing(stack, name, raw, headers, code, field):
    response = requests.post(stack.base_url + START, data=raw,
                             headers={"Content-Type": "application/json", **headers}, timeout=10)
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"error", "field"} and body["field"] == field and body["error"]
    assert "True" not in body["error"] and "Traceback" not in response.text  # JSON's words, not Python's
    assert stack.host.instance_ids() == []
    assert stack.emulator.request_log == []


class _StubClient:
    """Answers get_status with a fixed runtime status: for statuses devhost cannot produce."""

    def __init__(self, runtime_status):
        self.status = SimpleNamespace(runtime_status=runtime_status, output=None, custom_status=None,
                                      created_time=None, last_updated_time=None)
        self.raised = []

    async def get_status(self, instance_id):
        return self.status

    async def raise_event(self, instance_id, name, data):
        self.raised.append((instance_id, name))


def _call(function, client, method="GET", route="workflows/abc123"):
    import asyncio

    import azure.functions as func

    req = func.HttpRequest(method, f"http://127.0.0.1/api/{route}", body=b"",
                           route_params={"instanceId": "abc123"})
    return asyncio.run(function.build().get_user_function().client_function(req, client))


def test_a_canceled_instance_answers_410_like_a_terminated_one():
    import azure.durable_functions as df
    from triggers.http_api import get_workflow_status

    response = _call(get_workflow_status, _StubClient(df.OrchestrationRuntimeStatus.Canceled))
    assert response.status_code == 410


def test_a_suspended_workflow_can_be_cancelled():
    import azure.durable_functions as df
    from triggers.http_api import cancel_workflow

    client = _StubClient(df.OrchestrationRuntimeStatus.Suspended)
    response = _call(cancel_workflow, client, "POST", "workflows/abc123/cancel")
    assert response.status_code == 202 and client.raised == [("abc123", "cancel")]




def test_a_body_without_a_content_type_gets_415(stack):
    response = requests.post(stack.base_url + START, data=json.dumps(VALID), timeout=10)
    assert response.status_code == 415 and response.json()["field"] == "Content-Type"


@pytest.mark.parametrize("method, path, allow", [
    ("GET", START, "POST"), ("DELETE", START, "POST"), ("PUT", "/api/workflows/abc", "GET"),
    ("POST", "/api/workflows/abc", "GET"), ("GET", "/api/workflows/abc/cancel", "POST"),
])
def test_a_wrong_method_gets_405_with_allow(stack, method, path, allow):
    response = requests.request(method, stack.base_url + path, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == allow
    assert response.json()["error"]


def test_an_idempotency_key_reused_for_a_different_request_gets_422(stack):
    first = start(stack, headers={"Idempotency-Key": "order-7"})
    again = start(stack, dict(VALID, jobName="another-job"), headers={"Idempotency-Key": "order-7"})
    assert first.status_code == 202 and again.status_code == 422
    assert again.json()["field"] == "Idempotency-Key"
    assert stack.host.instance_ids() == [first.json()["id"]]
    assert start(stack, headers={"Idempotency-Key": "order-7"}).status_code == 202  # the same request replays


@pytest.mark.parametrize("name, value, fragment", [
    ("WORKFLOW_POLL_INTERVAL_SECONDS", "abc", "must be an integer from 5 to 3600"),
    ("WORKFLOW_MAX_BODY_BYTES", "-5", "must be an integer from 1024 to 10485760"),
    ("DATABRICKS_AUTH", "bogus", "unknown auth mode"),
    ("DATABRICKS_JOBS_API_VERSION", "3.0", "3.0"),
    ("DATABRICKS_HOST", "http://adb-1.azuredatabricks.net", "https"),
])
def test_a_misconfigured_app_answers_503_naming_the_setting_and_starts_nothing(stack, monkeypatch, name, value,
                                                                               fragment):
    monkeypatch.setenv(name, value)
    response = start(stack)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["setting"] == name and fragment in body["error"] and body["error"].startswith("Configuration error")
    assert response.headers["Retry-After"]
    assert stack.host.instance_ids() == []


def test_pat_auth_without_a_token_is_refused_at_the_start(stack, monkeypatch):
    monkeypatch.delenv("DATABRICKS_TOKEN")
    response = start(stack)
    assert response.status_code == 503 and response.json()["setting"] == "DATABRICKS_TOKEN"


def test_a_failed_workflow_tells_the_caller_the_error_not_a_stack_trace(stack, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    databricks_jobs.reset_all()
    instance_id = start(stack).json()["id"]
    stack.host.run_until_complete(instance_id)
    detail = status_of(stack, instance_id).json()["detail"]
    assert "Databricks API error 401" in detail
    assert "Traceback" not in detail and ".py" not in detail and "\n" not in detail and len(detail) <= 2000


def test_cancels_sent_at_the_same_moment_each_answer_202_or_409(stack):
    from concurrent.futures import ThreadPoolExecutor

    stack.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    instance_id = start(stack).json()["id"]
    stack.host.run_until_idle()
    url = f"{stack.base_url}/api/workflows/{instance_id}/cancel"
    with ThreadPoolExecutor(max_workers=12) as pool:
        # The workflow acts on the first cancels and ends while later ones are still arriving.
        pending = [pool.submit(lambda: requests.post(url, timeout=10).status_code) for _ in range(48)]
        assert pending[0].result() == 202  # a cancel is in before the clock moves
        stack.host.run_until_complete(instance_id)
        answers = [f.result() for f in pending]
    assert set(answers) <= {202, 409} and 202 in answers, answers
    assert status_of(stack, instance_id).json()["resultState"] == "CANCELED"


def test_validating_a_body_does_not_block_the_event_loop(monkeypatch):
    """Parsing and schema validation are CPU work (tens of ms for a large body): they run on a
    worker thread, so another request on the same loop is served meanwhile (here the only one
    that can release the validator)."""
    import asyncio
    import threading

    import azure.functions as func

    from triggers import http_api
    from workflow.inputs import InputError

    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1234567890123456.7.azuredatabricks.net")
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    released = threading.Event()

    def slow_validated_body(*args, **kwargs):
        assert released.wait(timeout=5), "the event loop was blocked by validation"
        raise InputError("'jobName' is required", "jobName")

    monkeypatch.setattr(http_api, "validated_body", slow_validated_body)
    request = func.HttpRequest("POST", "http://localhost/api/" + http_api.START_ROUTE, body=b"{}",
                               headers={"Content-Type": "application/json"})

    async def scenario():
        async def other_request():
            await asyncio.sleep(0)
            released.set()
        fn = http_api.start_workflow.build().get_user_function().client_function
        response, _ = await asyncio.gather(fn(request, None), other_request())
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 400 and json.loads(response.get_body())["field"] == "jobName"
