"""POST /api/databricks/notifications: Basic auth in constant time, run -> instance through the
registry of awaited runs (no Jobs API call), runFinished; a notification for a run not registered
yet is remembered until it is; release-1.0 workflows found through their job's tag."""
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
def jobs(monkeypatch, client):
    """The waiting workflow's run is in the registry; any Jobs API call would fail the test."""
    calls = []

    def no_jobs_api(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the webhook endpoint must not call the Jobs API")

    import databricks_jobs.client
    monkeypatch.setattr(databricks_jobs.client, "get_jobs_client", no_jobs_api)
    client.register_run(RUN_ID, INSTANCE, JOB_ID)
    return {"calls": calls}


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


def test_each_notification_reads_one_registry_shard_and_calls_no_jobs_api(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    post(client, payload())
    post(client, payload("jobs.on_failure"))
    assert len(client.entity_reads) == 2 and jobs["calls"] == []


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
    (lambda c: None, payload(), "no waiting workflow"),
], ids=["on-start", "no-instance"])
def test_notifications_that_match_no_waiting_run_are_acknowledged_and_ignored(setup, note, reason, client, jobs):
    setup(client)
    response, body = post(client, note)
    assert response.status_code == 202 and body["status"] == "ignored" and reason in body["reason"]
    assert client.events == [] and client.started == []


def test_a_run_of_a_shared_job_reaches_the_workflow_waiting_for_that_run_only(client, jobs):
    other = "queue-0123456789abcdef0123456789abcdef"
    client.register_run(RUN_ID + 4, other, JOB_ID)  # another workflow's run of the same shared job
    client.set_running(INSTANCE)
    client.set_running(other)
    response, body = post(client, payload(run_id=RUN_ID + 4))
    assert body == {"status": "delivered", "instanceId": other}
    assert [e[0] for e in client.events] == [other]


def test_a_suspended_workflow_is_waiting_and_gets_the_event(client, jobs):
    # The extension holds a raised event until the instance is resumed (issue 14, cause 7).
    client.set_running(INSTANCE, runId=RUN_ID)
    client.instances[INSTANCE]["status"] = "Suspended"
    response, body = post(client, payload())
    assert body == {"status": "delivered", "instanceId": INSTANCE}
    assert [e[:2] for e in client.events] == [(INSTANCE, RUN_FINISHED_EVENT)]


@pytest.fixture
def no_release_1_jobs(monkeypatch):
    """jobs/get answers for the release-1.0 lookup: a 2.0 shared job has no instance tag."""
    fetched = []

    def fetch(job_id):
        fetched.append(job_id)
        return {"job_id": job_id, "settings": {"name": "nightly", "tags": {"durable_job_definition": "f" * 16}}}

    monkeypatch.setattr(databricks_webhook, "_fetch_job", fetch)
    databricks_webhook.release_1_tags.clear()
    yield fetched
    databricks_webhook.release_1_tags.clear()


def test_a_run_end_before_the_run_is_registered_is_remembered_and_told_when_it_registers(
        client, no_release_1_jobs, monkeypatch):
    from triggers import run_watcher
    from workflow import early_ends, watch

    early_run = RUN_ID + 8  # its workflow's "watch" signal is still on its way
    client.set_running(INSTANCE, runId=early_run)
    response, body = post(client, payload(run_id=early_run))
    assert response.status_code == 202 and body == {"status": "remembered", "runId": early_run}
    assert client.events == []
    shard = (watch.REGISTRY_ENTITY.lower(), watch.shard_of(early_run))
    assert str(early_run) in client.entities[shard][early_ends.PENDING_KEY]
    # One jobs/get for the job (is it a release-1.0 workflow's?), kept for the next notification.
    post(client, payload("jobs.on_failure", run_id=early_run))
    assert no_release_1_jobs == [JOB_ID]

    client.register_run(early_run, INSTANCE, JOB_ID, since=100.0)  # the registration arrives
    awaited = watch.merged([client.entities[shard]])
    assert early_ends.noted(awaited) == [(early_run, INSTANCE)]
    run_watcher.memory.reset()
    assert asyncio.run(run_watcher.tell_noted(client, awaited, 130.0)) == [early_run]
    assert client.events == [(INSTANCE, RUN_FINISHED_EVENT, {"runId": early_run, "source": "webhook"})]
    # Spent: the next tick tells nobody, and the watcher counts it as told.
    entry = watch.merged([client.entities[shard]])[early_run]
    assert entry["signaledAt"] == 130.0 and early_ends.noted({early_run: entry}) == []
    assert early_ends.PENDING_KEY not in client.entities[shard]


def test_a_release_1_workflow_is_found_through_its_jobs_instance_tag(client, monkeypatch):
    # Release 1.0 never registers its run (issue 14, cause 6): its job carries the instance id.
    monkeypatch.setattr(databricks_webhook, "_fetch_job", lambda job_id: {
        "job_id": job_id, "settings": {"tags": {"durable_instance_id": INSTANCE}}})
    databricks_webhook.release_1_tags.clear()
    client.set_running(INSTANCE, step="pollRun", jobId=JOB_ID, runId=RUN_ID)
    response, body = post(client, payload())
    assert body == {"status": "delivered", "instanceId": INSTANCE}
    assert client.events == [(INSTANCE, RUN_FINISHED_EVENT,
                              {"runId": RUN_ID, "jobId": JOB_ID, "eventType": "jobs.on_success"})]
    # Another run of that job (a manual one) is not the one the workflow waits for: remembered.
    assert post(client, payload(run_id=RUN_ID + 1))[1]["status"] == "remembered"
    assert len(client.events) == 1
    databricks_webhook.release_1_tags.clear()


def test_finished_instance_is_ignored(client, jobs):
    client.set_running(INSTANCE, runId=RUN_ID)
    client.instances[INSTANCE]["status"] = "Completed"
    response, body = post(client, payload())
    assert body["status"] == "ignored" and "Completed" in body["reason"] and client.events == []


def test_a_registry_that_cannot_be_read_is_503_with_retry_after(client, jobs):
    async def down(*args, **kwargs):
        raise Exception("the task hub is not answering")

    client.read_entity_state = down
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
