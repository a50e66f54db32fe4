"""notifyCompletion: a CloudEvent with id = instance id to a real queue and/or an Event Grid topic."""
import json
import logging

import pytest
import requests
import responses

from activities import notifications
from activities.notifications import COMPLETED_EVENT_TYPE, notifyCompletion
from messaging import settings as caller_settings

OUTPUTS = {"jobId": 11, "runId": 22, "resultState": "SUCCESS", "notebookResult": "42", "lifeCycleState": "TERMINATED",
           "stateMessage": "", "runPageUrl": "https://adb.example/#job/11/run/22"}
TOPIC = "https://jobs-topic.westeurope-1.eventgrid.azure.net/api/events"
TOPIC_KEY = "topic-key-SECRET-0123456789"


def call(payload):
    """Through the registered activity function, as the worker calls it."""
    return notifyCompletion.build().get_user_function()(payload)


def test_activity_is_registered_under_the_contract_name():
    built = notifyCompletion.build()
    assert built.get_function_name() == "notifyCompletion"
    assert built.get_trigger().type == "activityTrigger"


def test_completion_goes_to_a_real_queue_as_a_cloudevent(storage, monkeypatch):
    queue = storage.queue_name("workflow-completions")
    monkeypatch.setenv("WORKFLOW_COMPLETION_QUEUE", queue)
    result = call({"instanceId": "eventgrid-abc", "outputs": OUTPUTS})
    assert result["queueMessageId"] and result["topic"] is False
    [text] = storage.drain(queue)  # base64 on the wire, as a queue-triggered consumer expects
    event = json.loads(text)
    assert event["specversion"] == "1.0" and event["type"] == COMPLETED_EVENT_TYPE
    assert event["id"] == "eventgrid-abc" and event["subject"] == "workflows/eventgrid-abc"
    assert event["source"] == "/workflows/create-job-and-run"
    assert event["data"] == OUTPUTS


def test_a_repeated_activity_sends_the_same_event_id_so_consumers_can_dedupe(storage, monkeypatch):
    queue = storage.queue_name("completions")
    monkeypatch.setenv("WORKFLOW_COMPLETION_QUEUE", queue)
    call({"instanceId": "queue-1", "outputs": OUTPUTS})
    call(json.dumps({"instanceId": "queue-1", "outputs": OUTPUTS}))  # activity re-run (input as JSON text)
    ids = {json.loads(t)["id"] for t in storage.drain(queue)}
    assert ids == {"queue-1"}


def test_oversize_outputs_are_trimmed_and_flagged(storage, monkeypatch):
    queue = storage.queue_name("completions")
    monkeypatch.setenv("WORKFLOW_COMPLETION_QUEUE", queue)
    big = dict(OUTPUTS, notebookResult="x" * 100_000)
    call({"instanceId": "i-big", "outputs": big})
    [text] = storage.drain(queue)
    data = json.loads(text)["data"]
    assert data["notificationTruncated"] is True and "notebookResult" not in data
    assert data["resultState"] == "SUCCESS" and data["runId"] == 22


@responses.activate
def test_completion_goes_to_an_event_grid_topic_with_the_key_header(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", TOPIC_KEY)
    responses.post(TOPIC, status=200)
    result = call({"instanceId": "eventgrid-abc", "outputs": OUTPUTS})
    assert result == {"instanceId": "eventgrid-abc", "queueMessageId": None, "topic": True}
    [sent] = responses.calls
    assert sent.request.headers["aeg-sas-key"] == TOPIC_KEY
    assert sent.request.headers["Content-Type"].startswith("application/cloudevents-batch+json")
    [event] = json.loads(sent.request.body)
    assert event["id"] == "eventgrid-abc" and event["type"] == COMPLETED_EVENT_TYPE and event["data"] == OUTPUTS
    # The key never leaves the header: not in the result, not in logs, not in the settings' repr.
    assert TOPIC_KEY not in json.dumps(result) and TOPIC_KEY not in caplog.text
    assert TOPIC_KEY not in repr(caller_settings.CompletionTargets.from_env())


@responses.activate
def test_topic_without_key_uses_a_bearer_token_from_the_identity():
    responses.post(TOPIC, status=200)
    notifications.publish_to_topic({"id": "x"}, TOPIC, "", token_provider=lambda: "aad-token")
    assert responses.calls[0].request.headers["Authorization"] == "Bearer aad-token"
    assert "aeg-sas-key" not in responses.calls[0].request.headers


@responses.activate
def test_topic_refusal_fails_the_activity_without_echoing_the_key(monkeypatch):
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", TOPIC_KEY)
    responses.post(TOPIC, status=401, body="Unauthorized: invalid key")
    with pytest.raises(notifications.NotificationError) as raised:
        call({"instanceId": "i", "outputs": OUTPUTS})
    # A refusal is not worth retrying; the text says so for the orchestrator, and never holds the key.
    assert str(raised.value).startswith("Notification refused: Event Grid topic answered 401")
    assert TOPIC_KEY not in str(raised.value)


@responses.activate
@pytest.mark.parametrize("answer", [{"status": 503}, {"status": 429}, {"body": requests.ConnectionError("refused")}])
def test_a_topic_that_is_down_or_throttling_is_worth_another_attempt(monkeypatch, answer):
    from workflow.policy import failure_kind

    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", TOPIC_KEY)
    responses.post(TOPIC, **answer)
    with pytest.raises(notifications.NotificationError) as raised:
        call({"instanceId": "i", "outputs": OUTPUTS})
    assert failure_kind(str(raised.value)) == "transient" and TOPIC_KEY not in str(raised.value)


def test_the_event_id_names_the_workflow_run_not_the_instance(storage, monkeypatch):
    queue = storage.queue_name("completions")
    monkeypatch.setenv("WORKFLOW_COMPLETION_QUEUE", queue)
    call({"instanceId": "queue-1", "eventId": "run-key-1", "outputs": OUTPUTS})
    call({"instanceId": "queue-1", "eventId": "run-key-2", "outputs": OUTPUTS})  # the id started again
    assert [json.loads(t)["id"] for t in storage.drain(queue)] == ["run-key-1", "run-key-2"]


def test_no_target_is_a_logged_no_op(caplog):
    result = call({"instanceId": "i", "outputs": OUTPUTS})
    assert result == {"instanceId": "i", "queueMessageId": None, "topic": False}
    assert "no completion target" in caplog.text


def test_plain_http_topic_endpoints_are_refused(monkeypatch):
    from databricks_jobs.errors import ConfigurationError

    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", "http://topic.example/api/events")
    with pytest.raises(ConfigurationError, match="^Configuration error: WORKFLOW_COMPLETION_TOPIC_ENDPOINT"):
        call({"instanceId": "i", "outputs": OUTPUTS})


def test_an_unresolved_key_vault_reference_is_refused_as_the_topic_key(monkeypatch):
    from databricks_jobs.errors import ConfigurationError

    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    reference = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/topic-key/)"
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", reference)
    with pytest.raises(ConfigurationError) as raised:
        call({"instanceId": "i", "outputs": OUTPUTS})
    assert str(raised.value).startswith("Configuration error: WORKFLOW_COMPLETION_TOPIC_KEY: is an unresolved Key Vault")


@pytest.mark.parametrize("endpoint", [
    "http://localhost.evil.com/api/events",      # a prefix check passed these two
    "http://127.0.0.1.evil.com/api/events",
    "http://topic.example/api/events",
    "http://[::2]/api/events",
    "ftp://topic.example/api/events",
    "https:///api/events",                       # no host
    "https://user:pw@topic.example/api/events",  # credentials belong in the key setting
    "https://topic.example:99999/api/events",    # no such port
])
def test_the_topic_url_is_parsed_and_plain_http_only_reaches_a_loopback_host(endpoint, monkeypatch):
    from databricks_jobs.errors import ConfigurationError

    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", endpoint)
    with pytest.raises(ConfigurationError, match="^Configuration error: WORKFLOW_COMPLETION_TOPIC_ENDPOINT: ") as raised:
        call({"instanceId": "i", "outputs": OUTPUTS})
    assert "pw" not in str(raised.value)


@pytest.mark.parametrize("endpoint", [
    TOPIC, "HTTPS://Jobs-Topic.westeurope-1.eventgrid.azure.net/api/events", "http://localhost:7071/api/events",
    "http://127.0.0.2:8080/api/events", "http://[::1]:9000/api/events", "http://LOCALHOST/api/events",
])
def test_https_and_loopback_topic_urls_are_accepted(endpoint):
    targets = caller_settings.CompletionTargets.from_env({"WORKFLOW_COMPLETION_TOPIC_ENDPOINT": endpoint})
    assert targets.topic_endpoint == endpoint


@responses.activate
def test_the_topic_is_posted_without_reading_netrc_or_proxy_settings(monkeypatch, tmp_path):
    """requests' module-level calls read ~/.netrc (and $NETRC) and add its login as Basic auth:
    the topic session does not trust the environment (CVE-2024-47081)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine jobs-topic.westeurope-1.eventgrid.azure.net login me password netrc-SECRET\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    notifications.topic_session.reset()
    assert requests.Session().trust_env and requests.utils.get_netrc_auth(TOPIC)  # the trap is armed
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", TOPIC_KEY)
    responses.post(TOPIC, status=200)
    call({"instanceId": "i-netrc", "outputs": OUTPUTS})
    [sent] = responses.calls
    assert "Authorization" not in sent.request.headers and sent.request.headers["aeg-sas-key"] == TOPIC_KEY
    assert notifications.topic_session.get().trust_env is False
    notifications.topic_session.reset()


def test_no_module_of_the_app_calls_requests_without_a_session():
    """Module-level requests.get/post/... read .netrc and proxy variables; every outbound call
    goes through a session with trust_env off (an offline scan of the app's own code)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in root.rglob("*.py"):
        if any(part in (".venv", "tests", "node_modules", ".tools") for part in path.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "requests"
                    and node.func.attr in ("get", "post", "put", "patch", "delete", "head", "options", "request")):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
    # Every session the deployed app makes turns trust_env off (development tools talk to loopback).
    deployed = ("activities", "databricks_jobs", "messaging", "triggers", "workflow", "orchestrators", "entities",
                "telemetry")
    sessions = [path for package in deployed for path in (root / package).rglob("*.py")
                if "requests.Session()" in path.read_text("utf-8")]
    assert {path.parent.name for path in sessions} == {"activities", "databricks_jobs"}
    for path in sessions:
        assert "trust_env = False" in path.read_text("utf-8"), path


# -- large outputs: the event fits its transport, dropping per-task bulk first (issue 17) ---------

def _task(i: int, result_bytes: int, *, failed: bool = False) -> dict:
    entry = {"taskKey": f"t{i:04d}", "runId": 1000 + i, "lifeCycleState": "TERMINATED",
             "resultState": "FAILED" if failed else "SUCCESS", "databricksResultState": None,
             "notebookResult": "r" * result_bytes, "notebookResultBytes": result_bytes,
             "notebookResultTruncated": False, "runPageUrl": f"https://adb.example/#job/11/run/{1000 + i}"}
    if failed:
        entry.update(error="E" * 200, errorTrace="T" * 2000)
    return entry


def _outputs(tasks: list) -> dict:
    return dict(OUTPUTS, notebookResult=tasks[0]["notebookResult"], tasks=tasks)


ONE_60_KB_TASK = _outputs([_task(0, 60 * 1024)])
THOUSAND_TASKS = _outputs([_task(i, 1200, failed=i % 10 == 0) for i in range(1000)])


def _check_fitted(data: dict, sent_bytes: int, limit: int, instance_id: str, tasks_kept: bool) -> None:
    assert sent_bytes <= limit
    assert data["notificationTruncated"] is True
    assert data["outputsPath"] == f"/api/workflows/{instance_id}"
    assert data["resultsPath"] == f"/api/workflows/{instance_id}/results/{{taskKey}}"
    assert data["resultState"] == "SUCCESS" and data["runId"] == 22 and data["jobId"] == 11
    if tasks_kept:  # the bulk went first: every task is still listed, with its state and size
        assert all(set(t) >= {"taskKey", "runId", "resultState", "notebookResultBytes"} for t in data["tasks"])
        assert not any({"notebookResult", "error", "errorTrace"} & set(t) for t in data["tasks"])
    else:
        assert "tasks" not in data and data["taskCount"] == 1000


@pytest.mark.parametrize("outputs,tasks_kept", [(ONE_60_KB_TASK, True), (THOUSAND_TASKS, False)],
                         ids=["one-60KB-task", "1000-tasks"])
def test_a_large_completion_still_reaches_the_queue_cut_to_fit(storage, monkeypatch, outputs, tasks_kept):
    from messaging.storage_queues import MAX_MESSAGE_TEXT_BYTES

    queue = storage.queue_name("completions")
    monkeypatch.setenv("WORKFLOW_COMPLETION_QUEUE", queue)
    assert len(json.dumps(outputs)) > MAX_MESSAGE_TEXT_BYTES  # one task of 60 KB alone overflows a message
    result = call({"instanceId": "i-large", "outputs": outputs})
    assert result["queueMessageId"]
    [text] = storage.drain(queue)
    _check_fitted(json.loads(text)["data"], len(text.encode("utf-8")), MAX_MESSAGE_TEXT_BYTES, "i-large", tasks_kept)


@responses.activate
@pytest.mark.parametrize("outputs,limit,tasks_kept", [
    (ONE_60_KB_TASK, 50_000, True),  # a topic with a smaller limit than Event Grid's: the same cut
    (THOUSAND_TASKS, notifications.MAX_TOPIC_EVENT_BYTES, True),
], ids=["one-60KB-task", "1000-tasks"])
def test_a_large_completion_still_reaches_the_topic_cut_to_fit(monkeypatch, outputs, limit, tasks_kept):
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", TOPIC_KEY)
    monkeypatch.setattr(notifications, "MAX_TOPIC_EVENT_BYTES", limit)
    assert len(json.dumps(outputs)) > limit
    responses.post(TOPIC, status=200)
    assert call({"instanceId": "i-large", "outputs": outputs})["topic"] is True
    [sent] = responses.calls
    [event] = json.loads(sent.request.body)
    _check_fitted(event["data"], len(json.dumps(event).encode("utf-8")), limit, "i-large", tasks_kept)


def test_fit_never_fails_for_size_however_large_the_outputs():
    event = notifications.completion_event("i", dict(THOUSAND_TASKS, stateMessage="s" * 10 ** 6,
                                                     repairs=[{"x": "y" * 1000}] * 100), "/src")
    fitted = notifications.fit(event, 4096)
    assert len(json.dumps(fitted).encode("utf-8")) <= 4096
    assert fitted["data"]["resultState"] == "SUCCESS" and fitted["data"]["notificationTruncated"] is True
    small = notifications.completion_event("i", OUTPUTS, "/src")
    assert notifications.fit(small, 4096) is small  # what fits is sent as it is
