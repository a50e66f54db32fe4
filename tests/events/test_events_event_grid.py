"""Event Grid entry point: both schemas, blob-created mapping, exactly-once starts, invalid events kept."""
import asyncio
import json
import logging

import pytest

from events_support import VALID_INPUT, cloud_event, eventgrid_event
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from triggers import event_grid
from triggers.event_grid import ReceivedEvent, handle_event, instance_id_for, start_workflow_from_event


def run(coro):
    return asyncio.run(coro)


def deliver(event, client):
    """Through the registered function, as the worker calls it (the durable client middleware unwrapped)."""
    fn = start_workflow_from_event.build().get_user_function().client_function
    return run(fn(event, client))


def test_function_is_named_for_the_subscription_endpoint():
    built = start_workflow_from_event.build()
    assert built.get_function_name() == event_grid.FUNCTION_NAME
    assert built.get_trigger().type == "eventGridTrigger"


@pytest.mark.parametrize("make", [eventgrid_event, cloud_event], ids=["eventgrid-schema", "cloudevents"])
def test_requested_event_starts_one_workflow_with_notify(make, client):
    event = make(dict(VALID_INPUT, notebookParams={"day": "2026-01-02"}))
    deliver(event, client)
    assert len(client.started) == 1
    name, instance_id, envelope = client.started[0]
    assert name == ORCHESTRATOR_NAME
    assert instance_id == instance_id_for(ReceivedEvent.of(event)) and instance_id.startswith("eventgrid-")
    assert envelope["request"]["jobName"] == "nightly-load"
    assert envelope["request"]["notebookParams"] == {"day": "2026-01-02"}
    assert envelope["options"]["notify"] is True


@pytest.mark.parametrize("make", [eventgrid_event, cloud_event], ids=["eventgrid-schema", "cloudevents"])
def test_redelivery_starts_nothing_new_and_is_acknowledged(make, client, caplog):
    caplog.set_level(logging.INFO)
    event = make(dict(VALID_INPUT))
    deliver(event, client)
    deliver(make(dict(VALID_INPUT)), client)  # Event Grid's redelivery: same source + id
    assert len(client.started) == 1
    assert "already existed (redelivery)" in caplog.text
    # A different event id is a different request.
    deliver(make(dict(VALID_INPUT), event_id="other"), client)
    assert len(client.started) == 2


def test_same_id_from_another_source_is_another_request(client):
    deliver(cloud_event(dict(VALID_INPUT), source="/a"), client)
    deliver(cloud_event(dict(VALID_INPUT), source="/b"), client)
    assert len({iid for _, iid, _ in client.started}) == 2


def test_data_as_json_text_is_accepted(client):
    deliver(cloud_event(json.dumps(VALID_INPUT)), client)
    assert len(client.started) == 1


def blob_event(url="https://acct.blob.core.windows.net/landing/2026/01/sales.csv",
               subject="/blobServices/default/containers/landing/blobs/2026/01/sales.csv", api="PutBlob",
               event_id="blob-1"):
    return eventgrid_event({"api": api, "url": url, "contentType": "text/csv", "blobType": "BlockBlob"},
                           event_type="Microsoft.Storage.BlobCreated", event_id=event_id, subject=subject,
                           topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct")


BLOB_MAPPING = {"jobName": "ingest", "taskKey": "main", "notebookPath": "/Workspace/ingest",
                "existingClusterId": "0923-164208-meows279", "blobUrlParameter": "input_path",
                "notebookParams": {"mode": "append"},
                "subjectBeginsWith": "/blobServices/default/containers/landing/", "subjectEndsWith": ".csv"}


def test_blob_created_maps_to_the_configured_notebook(client, monkeypatch):
    monkeypatch.setenv("EVENTGRID_BLOB_CREATED_WORKFLOW", json.dumps(BLOB_MAPPING))
    deliver(blob_event(), client)
    deliver(blob_event(), client)  # redelivered
    assert len(client.started) == 1
    request = client.started[0][2]["request"]
    assert request["job"]["tasks"][0]["notebook_task"]["notebook_path"] == "/Workspace/ingest"
    assert request["notebookParams"] == {"mode": "append",
                                         "input_path": "https://acct.blob.core.windows.net/landing/2026/01/sales.csv"}


def test_blob_events_outside_the_filter_or_incomplete_are_ignored(client, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("EVENTGRID_BLOB_CREATED_WORKFLOW", json.dumps(BLOB_MAPPING))
    deliver(blob_event(subject="/blobServices/default/containers/other/blobs/x.csv"), client)
    deliver(blob_event(subject="/blobServices/default/containers/landing/blobs/x.json"), client)
    deliver(blob_event(api="CreateFile"), client)  # ADLS Gen2: empty file, data follows with FlushWithClose
    assert client.started == []
    assert caplog.text.count("ignored") == 3


def test_invalid_event_is_refused_logged_with_field_and_kept_on_the_invalid_queue(client, storage, monkeypatch, caplog):
    queue = storage.queue_name("workflow-requests-invalid")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    bad = {k: v for k, v in VALID_INPUT.items() if k != "notebookPath"}
    event = cloud_event(bad, event_id="bad-1", traceparent="00-abc-def-01")
    deliver(event, client)  # returns normally: Event Grid must not retry it for a day
    assert client.started == []
    assert "field data.notebookPath" in caplog.text
    [text] = storage.drain(queue)
    record = json.loads(text)
    assert record["field"] == "data.notebookPath" and "required" in record["error"]
    assert record["event"] == {"specversion": "1.0", "id": "bad-1", "source": "/apps/scheduler",
                               "type": "Databricks.JobRun.Requested", "time": "2026-01-02T03:04:05+00:00",
                               "datacontenttype": "application/json", "traceparent": "00-abc-def-01", "data": bad}
    assert record["instanceId"] == instance_id_for(ReceivedEvent.of(event))


@pytest.mark.parametrize("event, field", [
    (eventgrid_event({**VALID_INPUT, "timeoutSeconds": 5}), "data.timeoutSeconds"),
    (eventgrid_event({**VALID_INPUT, "token": "dapi-secret"}), "data.token"),
    (eventgrid_event(["not", "an", "object"]), "data"),
    (eventgrid_event("not json"), "data"),
    (eventgrid_event(VALID_INPUT, event_type="Contoso.Unknown"), "type"),
    (blob_event(), "EVENTGRID_BLOB_CREATED_WORKFLOW"),  # blob events without a mapping
], ids=["range", "unknown-field", "array", "text", "type", "blob-unmapped"])
def test_invalid_events_name_the_field(event, field, client, storage, monkeypatch):
    queue = storage.queue_name("invalid")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    assert run(handle_event(ReceivedEvent.of(event), client)) is None
    assert client.started == []
    [text] = storage.drain(queue)
    assert json.loads(text)["field"] == field


def test_invalid_event_that_cannot_be_kept_raises_so_event_grid_retries(client, monkeypatch):
    # No storage connection: the copy cannot be written, so the delivery fails and Event Grid
    # retries, then dead-letters to its own container. Nothing is lost silently.
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", "workflow-requests-invalid")
    with pytest.raises(Exception, match="AzureWebJobsStorage"):
        deliver(eventgrid_event({"jobName": 5}), client)
    assert client.started == []


def test_invalid_event_without_a_queue_is_only_logged(client, monkeypatch, caplog):
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", "")
    deliver(eventgrid_event({"jobName": 5}), client)
    assert client.started == [] and "not kept (no queue)" in caplog.text


def test_a_bad_blob_mapping_names_the_setting(client, monkeypatch, caplog):
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", "")
    monkeypatch.setenv("EVENTGRID_BLOB_CREATED_WORKFLOW", json.dumps({**BLOB_MAPPING, "notebookPath": "relative/nb"}))
    deliver(blob_event(), client)
    assert client.started == [] and "field EVENTGRID_BLOB_CREATED_WORKFLOW.notebookPath" in caplog.text
    monkeypatch.setenv("EVENTGRID_BLOB_CREATED_WORKFLOW", json.dumps({**BLOB_MAPPING, "blobUrlParameter": ""}))
    deliver(blob_event(), client)
    assert client.started == [] and "blobUrlParameter must be a non-empty string" in caplog.text


def test_a_cloudevent_with_data_base64_starts_the_workflow(client):
    import base64

    from azure.functions import meta
    from azure.functions.eventgrid import EventGridEventInConverter

    wire = {"specversion": "1.0", "id": "ce-b64", "source": "/apps/scheduler", "type": "Databricks.JobRun.Requested",
            "datacontenttype": "application/json",
            "data_base64": base64.b64encode(json.dumps(VALID_INPUT).encode()).decode()}
    # Decoded by the worker's own converter, as the host hands it over.
    event = EventGridEventInConverter.decode(meta.Datum(json.dumps(wire), "json"), trigger_metadata={})
    deliver(event, client)
    [(_, _, envelope)] = client.started
    assert envelope["request"]["jobName"] == VALID_INPUT["jobName"]


def test_keeping_an_invalid_event_does_not_block_the_event_loop(client, monkeypatch):
    """The invalid-event queue write is blocking I/O: it must run off the loop, so other requests
    (here a coroutine that releases it) keep being served meanwhile."""
    import threading

    released = threading.Event()

    def slow_send(*args, **kwargs):
        # Only a coroutine running on the loop WHILE we block can set this.
        assert released.wait(timeout=5), "the event loop was blocked by the queue write"
        return "msg"

    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", "invalid-events")
    monkeypatch.setattr(event_grid.storage_queues, "send_text", slow_send)

    async def scenario():
        async def other_request():
            await asyncio.sleep(0)
            released.set()
        fn = start_workflow_from_event.build().get_user_function().client_function
        await asyncio.gather(fn(eventgrid_event({"jobName": 5}), client), other_request())

    run(scenario())
    assert client.started == []


# -- issue 17: event data held to the HTTP body's limits; the kept copy scrubbed and cut to fit --------

def _deep(levels: int):
    value = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


def _big_params(size: int) -> dict:
    """A request of about `size` bytes that is valid in every other way (many tasks)."""
    tasks = [{"task_key": f"t{i}", "notebook_task": {"notebook_path": "/Workspace/" + "n" * 900}}
             for i in range(size // 960)]
    return {"jobName": "big", "tasks": tasks}


@pytest.mark.parametrize("make", [eventgrid_event, cloud_event], ids=["eventgrid", "cloudevents"])
@pytest.mark.parametrize("data, words", [
    (_big_params(100_000), "bytes as JSON; the limit is 65536"),
    (json.dumps(_big_params(100_000)), "bytes; the limit is 65536"),  # JSON sent as text: measured as sent
    ({**VALID_INPUT, "notebookParams": {"p": "x"}, "x": _deep(40)}, "nested more than 32 levels"),
    (json.dumps({**VALID_INPUT, "x": _deep(40)}), "nested more than 32 levels"),
    ('{"jobName": "a", "jobName": "b"}', "twice in one object"),
], ids=["over-64KiB", "text-over-64KiB", "too-deep", "text-too-deep", "duplicate-key"])
def test_event_data_gets_the_http_body_limits_and_is_kept_not_validated(make, data, words, client, storage,
                                                                          monkeypatch):
    import workflow.inputs

    queue = storage.queue_name("invalid-limits")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    monkeypatch.setattr(workflow.inputs, "validate_request",
                        lambda *a, **k: pytest.fail("the schema must not see data over the limits"))
    monkeypatch.setattr(event_grid, "validate_request", workflow.inputs.validate_request)
    deliver(make(data), client)
    assert client.started == []
    [text] = storage.drain(queue)
    record = json.loads(text)
    assert record["field"] == "data" and words in record["error"], record["error"]


def test_event_data_at_the_limit_still_starts_a_workflow(client, monkeypatch):
    data = _big_params(60_000)
    assert 50_000 < len(json.dumps(data, separators=(",", ":"))) <= 65536
    deliver(eventgrid_event(data), client)
    assert len(client.started) == 1


JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiIyZmY4MTRhNiJ9.c2lnbmF0dXJlLXBhcnQ"
GITHUB_TOKEN = "ghp_" + "a1B2" * 9


@pytest.mark.parametrize("make", [eventgrid_event, cloud_event], ids=["eventgrid", "cloudevents"])
def test_the_kept_copy_holds_no_token_the_schema_refused(make, client, storage, monkeypatch, caplog):
    queue = storage.queue_name("invalid-tokens")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    data = {**VALID_INPUT, "notebookParams": {"day": "today", "auth": f"Bearer {JWT}", "gh": GITHUB_TOKEN},
            JWT: "a token as a key", "note": f"url https://me:hunter2hunter2@example.com/x"}
    deliver(make(data, event_id="tok-1"), client)
    assert client.started == []
    [text] = storage.drain(queue)
    for secret in (JWT, GITHUB_TOKEN, "hunter2hunter2", "eyJ0eXAi"):
        assert secret not in text and secret not in caplog.text
    record = json.loads(text)
    assert record["event"]["id"] == "tok-1"
    assert record["event"]["data"]["notebookParams"]["day"] == "today"  # the rest is kept as it was
    assert record["event"]["data"]["notebookParams"]["gh"] == "***"


@pytest.mark.parametrize("make", [eventgrid_event, cloud_event], ids=["eventgrid", "cloudevents"])
def test_a_copy_too_big_for_its_queue_is_cut_with_a_note_and_never_raises(make, client, storage, monkeypatch):
    """240 KB of data (Event Grid takes events up to 1 MB): refused for its size and kept cut to one
    queue message, so the delivery is acknowledged instead of retried for 24 hours."""
    from messaging.storage_queues import MAX_MESSAGE_TEXT_BYTES

    queue = storage.queue_name("invalid-big")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    data = {**VALID_INPUT, "notebookParams": {f"p{i}": '"é\\' * 300 for i in range(260)},
            "k" * 5000: "long key", "auth": f"Bearer {JWT}"}
    deliver(make(data, event_id="big-1"), client)
    [text] = storage.drain(queue)
    assert len(text.encode("utf-8")) <= MAX_MESSAGE_TEXT_BYTES
    record = json.loads(text)
    assert record["eventTruncated"] is True and record["eventBytes"] > 240_000 and record["event"] is None
    assert record["eventText"].startswith("{") and '"big-1"' in record["eventText"]
    assert len(text.encode("utf-8")) > MAX_MESSAGE_TEXT_BYTES - 64  # as much of the event as fits
    assert record["field"] == "data" and JWT not in text


def test_a_refusal_with_a_huge_field_name_still_fits_its_message(client, storage, monkeypatch):
    from messaging.storage_queues import MAX_MESSAGE_TEXT_BYTES

    queue = storage.queue_name("invalid-field")
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", queue)
    deliver(eventgrid_event({**VALID_INPUT, "x" * 60_000: 1}), client)
    [text] = storage.drain(queue)
    record = json.loads(text)
    assert len(text.encode("utf-8")) <= MAX_MESSAGE_TEXT_BYTES and record["field"].startswith("data.xxx")
    assert len(record["field"]) <= event_grid.MAX_KEPT_TEXT_CHARS and record["eventTruncated"] is True


def test_validating_an_event_does_not_block_the_event_loop(client, monkeypatch):
    """Schema validation is CPU work: it runs on a worker thread, so a coroutine on the same loop
    runs meanwhile (here the only one that can release the validator)."""
    import threading

    released = threading.Event()
    real = event_grid.validate_request

    def slow_validate(*args, **kwargs):
        assert released.wait(timeout=5), "the event loop was blocked by validation"
        return real(*args, **kwargs)

    monkeypatch.setattr(event_grid, "validate_request", slow_validate)

    async def scenario():
        async def other_request():
            await asyncio.sleep(0)
            released.set()
        await asyncio.gather(handle_event(ReceivedEvent.of(eventgrid_event(VALID_INPUT)), client), other_request())

    run(scenario())
    assert len(client.started) == 1


def test_the_invalid_event_record_fits_any_budget_it_is_given():
    from workflow.inputs import InputError

    event = ReceivedEvent.of(eventgrid_event({**VALID_INPUT, "x": "\u0001" * 20_000}, event_id="tight"))
    for budget in (49_152, 4_096, 1_024):
        text = event_grid.invalid_event_record(event, InputError("'x' is bad", "data.x"), "i", max_bytes=budget)
        record = json.loads(text)
        assert len(text.encode("utf-8")) <= budget and record["eventTruncated"] is True
        assert record["eventText"].startswith('{"id": "tight"')
