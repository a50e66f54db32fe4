"""POST /api/databricks/notifications: Basic auth in constant time, job tag -> instance, runFinished."""
import asyncio
import base64
import hmac
import json

import azure.functions as func
import pytest

from databricks_jobs.errors import DatabricksApiError
from orchestrators.create_job_and_run import RUN_FINISHED_EVENT
from triggers import databricks_webhook
from triggers.databricks_webhook import databricks_notification

USER, PASSWORD = "databricks", "s3cret-webhook-password"
INSTANCE = "eventgrid-0123456789abcdef0123456789abcdef"
JOB_ID, RUN_ID = 770000000001, 880000000001


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("DATABRICKS_WEBHOOK_USERNAME", USER)
    monkeypatch.setenv("DATABRICKS_WEBHOOK_PASSWORD", PASSWORD)


@pytest.fixture
def jobs(monkeypatch):
    """Jobs by id as jobs/get answers them; lookups are counted."""
    known = {JOB_ID: {"job_id": JOB_ID, "settings": {"name": "nightly", "tags": {"durable_instance_id": INSTANCE}}}}
    calls = []

    def fetch(job_id):
        calls.append(job_id)
        if job_id not in known:
            raise DatabricksApiError(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
        return known[job_id]

    monkeypatch.setattr(databricks_webhook, "fetch_job", fetch)
    return {"known": known, "calls": calls}


def basic(user=USER, password=PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def payload(event_type="jobs.on_success", job_id=JOB_ID, run_id=RUN_ID, **extra):
    return {"event_type": event_type, "workspace_id": 1234567890123456,
            "run": {"run_id": run_id}, "job": {"job_id": job_id, "name": "nightly"}, **extra}


def post(client, body, authorization=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if authorization is not False:
        headers["Authorization"] = authorization or basic()
    req = func.HttpRequest("POST", "https://app.example/api/databricks/notifications", headers=headers, body=raw)
    fn = databricks_notification.build().get_user_function().client_function
    response = asyncio.run(fn(req, client))
    return response, (json.loads(response.get_body()) if response.get_body() else None)


def test_route_is_anonymous_because_basic_auth_is_the_gate():
    trigger = databricks_notification.build().get_trigger()
    assert trigger.route == "databricks/notifications" and trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_run_end_raises_run_finished_on_the_waiting_instance(client, jobs):
    client.set_running(INSTANCE, step="pollRun", jobId=JOB_ID, runId=RUN_ID)
    response, body = post(client, payload())
    assert response.status_code == 202 and body == {"status": "delivered", "instanceId": INSTANCE}
    assert client.events == [(INSTANCE, RUN_FINISHED_EVENT,
                              {"runId": RUN_ID, "jobId": JOB_ID, "eventType": "jobs.on_success"})]
    assert client.started == []


def test_string_ids_as_in_the_documented_example(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    response, body = post(client, payload("jobs.on_failure", job_id=str(JOB_ID), run_id=str(RUN_ID)))
    assert body["status"] == "delivered" and client.events[0][2]["runId"] == RUN_ID


def test_task_level_notification_uses_the_parent_run(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    body = payload(run_id=990000000001, task={"task_key": "main"})
    body["run"]["parent_run_id"] = RUN_ID
    assert post(client, body)[1]["status"] == "delivered"


def test_job_lookups_are_cached(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    post(client, payload())
    post(client, payload("jobs.on_failure"))
    assert jobs["calls"] == [JOB_ID]


@pytest.mark.parametrize("authorization", [
    False, "Bearer abc", basic(password="wrong"), basic(user="other"), "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(), basic(password=PASSWORD + "x"),
], ids=["missing", "bearer", "wrong-password", "wrong-user", "bad-base64", "no-colon", "longer-password"])
def test_unauthenticated_calls_get_401_with_a_challenge_and_do_nothing(authorization, client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    response, body = post(client, payload(), authorization)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="databricks-notifications"')
    assert client.events == [] and jobs["calls"] == []
    assert PASSWORD not in json.dumps(body)


def test_unconfigured_credentials_refuse_everything(client, jobs, monkeypatch):
    monkeypatch.setenv("DATABRICKS_WEBHOOK_PASSWORD", "")
    client.set_running(INSTANCE, runId=RUN_ID)
    assert post(client, payload(), basic(password=""))[0].status_code == 401
    assert client.events == []


def test_credentials_are_compared_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(databricks_webhook.hmac, "compare_digest", spy)
    assert databricks_webhook.authenticated(basic(user="x")) is False
    assert len(compared) == 2  # both parts, even when the user name is already wrong


@pytest.mark.parametrize("body, field", [
    (b"{oops", None),
    (b"", None),
    ([1, 2], None),
    ({"job": {"job_id": JOB_ID}, "run": {"run_id": RUN_ID}}, "event_type"),
    (payload(job_id=None), "job.job_id"),
    (payload(run_id="12ab"), "run.run_id"),
    (payload(run_id=True), "run.run_id"),
    (payload(job_id=-4), "job.job_id"),
    ({"event_type": "jobs.on_success", "job": 5, "run": {"run_id": 1}}, "job"),
    ({"event_type": "jobs.on_success", "job": {"job_id": 5}}, "run"),
], ids=["json", "empty", "array", "event-type", "job-id", "run-id", "bool", "negative", "job-shape", "run-missing"])
def test_malformed_notifications_are_400_naming_the_field(body, field, client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    response, answer = post(client, body)
    assert response.status_code == 400 and answer["field"] == field
    assert client.events == [] and jobs["calls"] == []


def test_oversize_notification_is_413(client, jobs):
    response, _ = post(client, payload(padding="x" * 20_000))
    assert response.status_code == 413 and client.events == []


@pytest.mark.parametrize("setup, note, reason", [
    (lambda c: c.set_running(INSTANCE, runId=RUN_ID), payload("jobs.on_start"), "does not end a run"),
    (lambda c: c.set_running(INSTANCE, runId=RUN_ID), payload(job_id=123), "unknown job"),
    (lambda c: None, payload(), "no waiting workflow"),
    (lambda c: c.set_running(INSTANCE, runId=RUN_ID + 1), payload(), "not the one"),
    (lambda c: c.set_running(INSTANCE, runId=None), payload(), "not the one"),
], ids=["on-start", "unknown-job", "no-instance", "other-run", "run-not-recorded"])
def test_notifications_that_match_no_waiting_run_are_acknowledged_and_ignored(setup, note, reason, client, jobs):
    setup(client)
    response, body = post(client, note)
    assert response.status_code == 202 and body["status"] == "ignored" and reason in body["reason"]
    assert client.events == [] and client.started == []


def test_job_without_the_instance_tag_is_ignored(client, jobs):
    jobs["known"][5] = {"job_id": 5, "settings": {"name": "manual", "tags": {}}}
    response, body = post(client, payload(job_id=5))
    assert body == {"status": "ignored", "reason": "job has no durable_instance_id tag", "jobId": 5}


def test_finished_instance_is_ignored(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    client.instances[INSTANCE]["status"] = "Completed"
    response, body = post(client, payload())
    assert body["status"] == "ignored" and "Completed" in body["reason"] and client.events == []


def test_databricks_unreachable_is_503_with_retry_after(client, monkeypatch):
    def down(job_id):
        raise DatabricksApiError(0, "TRANSPORT_ERROR", "connection refused")

    monkeypatch.setattr(databricks_webhook, "fetch_job", down)
    response, body = post(client, payload())
    assert response.status_code == 503 and response.headers["Retry-After"] == "30" and client.events == []


@pytest.mark.parametrize("password", [
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/webhook/)",  # App Service could not resolve it
    "two words",
])
def test_an_unusable_password_setting_refuses_every_call_even_one_that_sends_that_text(
        monkeypatch, password, caplog, client, jobs):
    monkeypatch.setenv("DATABRICKS_WEBHOOK_PASSWORD", password)
    client.set_running(INSTANCE, runId=RUN_ID)
    response, _ = post(client, payload(), authorization=basic(password=password))
    assert response.status_code == 401 and client.events == []
    assert "DATABRICKS_WEBHOOK_PASSWORD" in caplog.text and password not in caplog.text


def test_looking_up_the_job_does_not_block_the_event_loop(client, monkeypatch):
    import threading

    released = threading.Event()

    def slow_fetch(job_id):
        assert released.wait(timeout=5), "the event loop was blocked by the Jobs API call"
        return {"settings": {"tags": {"durable_instance_id": INSTANCE}}}

    monkeypatch.setattr(databricks_webhook, "fetch_job", slow_fetch)
    databricks_webhook.job_instances.clear()
    client.set_running(INSTANCE, runId=RUN_ID)

    async def scenario():
        async def other_request():
            await asyncio.sleep(0)
            released.set()
        req = func.HttpRequest("POST", "https://app.example/api/databricks/notifications",
                               headers={"Content-Type": "application/json", "Authorization": basic()},
                               body=json.dumps(payload()).encode())
        fn = databricks_notification.build().get_user_function().client_function
        response, _ = await asyncio.gather(fn(req, client), other_request())
        return response

    assert asyncio.run(scenario()).status_code == 202
