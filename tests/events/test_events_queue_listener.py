"""devhost's Storage queue listener runs the app's queue trigger against a real queue service (Azurite):
valid messages start one workflow and are deleted; malformed ones are tried maxDequeueCount times and
then moved, byte for byte, to `<queue>-poison`.

The app's trigger reads `workflow-requests` (fixed when the worker indexes the functions), so each test
empties that queue and its poison queue first. host.json's 30 s visibilityTimeout is overridden to 0 s
(the host's own default) and the idle poll cap to 0.2 s, to keep the tests fast."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError

from events_support import VALID_INPUT
from messaging import storage_queues
from triggers import queue_trigger
from triggers.starter import derived_instance_id, queue_instance_key

ROOT = Path(__file__).resolve().parents[2]
QUEUE = queue_trigger.REQUEST_QUEUE
POISON = f"{QUEUE}-poison"
FUNCTION = "start_workflow_from_queue"


@pytest.fixture
def devhost(storage):
    """The real app on devhost with its queue listener on Azurite; the replay worker is stopped,
    so started workflows stay Pending and can be counted."""
    from devhost import ReplayHost, VirtualClock
    from devhost.serve import DevServer

    import function_app

    for name in (QUEUE, POISON):
        qc = storage.client_for(name)
        try:
            qc.create_queue()
        except ResourceExistsError:
            pass
        qc.clear_messages()
    app = function_app.app
    server = DevServer(app, ReplayHost(app, VirtualClock(datetime(2026, 1, 5, tzinfo=timezone.utc))),
                       queue_options={"visibility_timeout": 0, "max_polling_interval": 0.2})
    server.start()
    server.host.stop()
    try:
        yield server
    finally:
        server.stop()


def listener_of(server):
    [listener] = [q for q in server.queue_listeners if q.info.name == FUNCTION]
    return listener


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def attempts(server):
    return [r for r in server.invocations if r["function"] == FUNCTION]


def queue_length(storage, name: str) -> int:
    """Messages in the queue, visible or not (a released or in-flight message still counts)."""
    return storage.client_for(name).get_queue_properties().approximate_message_count


def send(text: str) -> str:
    """What a producer does: base64 text, through the app's own queue writer."""
    return storage_queues.send_text(QUEUE, text, "AzureWebJobsStorage")


def test_listener_reads_the_binding_and_host_json(devhost):
    listener = listener_of(devhost)
    host = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["queues"]
    assert listener.queue_name == "workflow-requests" and listener.poison_queue_name == POISON
    assert listener.options.max_dequeue_count == host["maxDequeueCount"] == 5
    assert listener.options.message_encoding == "base64"
    assert listener.options.visibility_timeout == 0  # the test override of host.json's 00:00:30


def test_valid_message_starts_one_workflow_and_is_deleted(devhost, storage):
    message_id = send(json.dumps(VALID_INPUT))
    assert wait_for(lambda: listener_of(devhost).deliveries), "the listener never received the message"
    [delivery] = listener_of(devhost).deliveries
    assert delivery["outcome"] == "deleted" and delivery["dequeueCount"] == 1, delivery
    assert [r["ok"] for r in attempts(devhost)] == [True]
    assert devhost.host.instance_ids() == [derived_instance_id("queue", message_id)]
    status = devhost.host.get_status(derived_instance_id("queue", message_id))
    assert json.loads(status["input"])["request"]["jobName"] == "nightly-load"
    assert queue_length(storage, QUEUE) == 0
    assert queue_length(storage, POISON) == 0


def test_same_request_sent_twice_with_an_instance_id_starts_one_workflow(devhost, storage):
    body = json.dumps(dict(VALID_INPUT, instanceId="order-4711"))
    first, second = send(body), send(body)
    assert first != second  # two messages, as a producer retrying its own send makes
    assert wait_for(lambda: len(listener_of(devhost).deliveries) == 2)
    assert [d["outcome"] for d in listener_of(devhost).deliveries] == ["deleted", "deleted"]
    assert [r["ok"] for r in attempts(devhost)] == [True, True]
    assert devhost.host.instance_ids() == [derived_instance_id("queue", queue_instance_key(QUEUE, "order-4711"))]
    assert queue_length(storage, QUEUE) == 0


@pytest.mark.parametrize("body, field", [
    ("{not json", "None"),
    (json.dumps({**VALID_INPUT, "notebookPath": "Users/a@b.c/load"}), "'notebookPath'"),
], ids=["bad-json", "relative-notebook-path"])
def test_malformed_message_is_tried_max_dequeue_count_times_then_poisoned_unchanged(devhost, storage, body, field):
    listener = listener_of(devhost)
    max_count = listener.options.max_dequeue_count
    send(body)
    sent_text = base64.b64encode(body.encode("utf-8")).decode("ascii")
    assert wait_for(lambda: any(d["outcome"] == "poisoned" for d in listener.deliveries)), listener.deliveries
    time.sleep(0.3)  # more than one poll: nothing may come after the move

    assert [d["dequeueCount"] for d in listener.deliveries] == list(range(1, max_count + 1))
    assert [d["outcome"] for d in listener.deliveries] == ["released"] * (max_count - 1) + ["poisoned"]
    tries = attempts(devhost)
    assert len(tries) == max_count == 5
    for record in tries:
        assert not record["ok"]
        assert record["error"].startswith("QueueMessageError: queue message ")
        assert f"field {field}:" in record["error"]

    [poisoned] = storage.client_for(POISON).peek_messages(max_messages=32)
    assert poisoned.content == sent_text  # byte-identical to what the producer put on the queue
    assert base64.b64decode(poisoned.content).decode("utf-8") == body
    assert queue_length(storage, QUEUE) == 0
    assert devhost.host.instance_ids() == []


def test_text_that_is_not_base64_is_poisoned_without_invoking(devhost, storage):
    """The host's default messageEncoding is base64: plain JSON written without encoding never
    reaches the function and goes straight to the poison queue, as the real extension does it."""
    text = json.dumps(VALID_INPUT)
    storage.client_for(QUEUE).send_message(text)  # no TextBase64EncodePolicy
    listener = listener_of(devhost)
    assert wait_for(lambda: listener.deliveries), "the listener never received the message"
    assert [(d["outcome"], d["dequeueCount"]) for d in listener.deliveries] == [("undecodable", 1)]
    assert attempts(devhost) == []
    assert [m.content for m in storage.client_for(POISON).peek_messages(max_messages=32)] == [text]
    assert queue_length(storage, QUEUE) == 0
    assert devhost.host.instance_ids() == []


def test_without_a_connection_setting_no_listener_starts(monkeypatch):
    from devhost import ReplayHost, VirtualClock
    from devhost.serve import DevServer

    import function_app

    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    app = function_app.app
    server = DevServer(app, ReplayHost(app, VirtualClock(datetime(2026, 1, 5, tzinfo=timezone.utc))))
    server.start()
    try:
        assert server.queue_listeners == []
    finally:
        server.stop()


def test_an_unreachable_queue_service_is_skipped(monkeypatch):
    import socket

    from devhost import ReplayHost, VirtualClock
    from devhost.serve import DevServer

    import function_app

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AzureWebJobsStorage",
                       f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                       f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    app = function_app.app
    server = DevServer(app, ReplayHost(app, VirtualClock(datetime(2026, 1, 5, tzinfo=timezone.utc))))
    started = time.monotonic()
    server.start()
    try:
        assert server.queue_listeners == []
        assert time.monotonic() - started < 5
    finally:
        server.stop()
