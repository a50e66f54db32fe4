"""Storage queue entry point: one message starts one workflow; malformed messages raise naming the field."""
import asyncio
import json

from azure.functions.queue import QueueMessage
import pytest

from events_support import VALID_INPUT, queue_message
from triggers import queue_trigger
from triggers.queue_trigger import QueueMessageError, start_workflow_from_queue
from triggers.starter import derived_instance_id, queue_instance_key


def deliver(msg, client):
    fn = start_workflow_from_queue.build().get_user_function().client_function
    return asyncio.run(fn(msg, client))


def test_trigger_binding_reads_the_configured_queue():
    trigger = start_workflow_from_queue.build().get_trigger()
    assert trigger.type == "queueTrigger"
    assert trigger.queue_name == queue_trigger.REQUEST_QUEUE == "workflow-requests"
    assert trigger.connection == "AzureWebJobsStorage"


def test_message_starts_a_workflow_keyed_by_message_id(client):
    deliver(queue_message(VALID_INPUT, message_id="m-1"), client)
    [(name, instance_id, envelope)] = client.started
    assert instance_id == derived_instance_id("queue", "m-1")
    assert envelope["request"]["jobName"] == "nightly-load" and envelope["options"]["notify"] is True


def test_redelivered_message_starts_nothing_new(client):
    deliver(queue_message(VALID_INPUT, message_id="m-1"), client)
    # Visibility timeout expired after the start: the host hands the same message over again.
    deliver(queue_message(VALID_INPUT, message_id="m-1", dequeue_count=2), client)
    assert len(client.started) == 1


def test_caller_instance_id_dedupes_a_resent_request(client):
    body = dict(VALID_INPUT, instanceId="order-4711")
    deliver(queue_message(body, message_id="m-1"), client)
    deliver(queue_message(body, message_id="m-2"), client)  # the client sent it twice
    # Namespaced to the queue (issue 15): a sender cannot squat another entry point's id.
    assert [iid for _, iid, _ in client.started] == [
        derived_instance_id("queue", queue_instance_key("workflow-requests", "order-4711"))]
    assert "instanceId" not in client.started[0][2]["request"]


@pytest.mark.parametrize("body, field, text", [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (json.dumps(["a"]), None, "JSON object"),
    (json.dumps({k: v for k, v in VALID_INPUT.items() if k != "jobName"}), "jobName", "'jobName' is required"),
    (json.dumps({**VALID_INPUT, "notebookParams": {"a": 1}}), "notebookParams.a", "must be a string, not an integer"),
    (json.dumps({**VALID_INPUT, "instanceId": "has space"}), "instanceId", "instanceId"),
    (json.dumps({**VALID_INPUT, "instanceId": 7}), "instanceId", "instanceId"),
    # Over 64 characters it could no longer be the run-now idempotency token and job tag itself.
    (json.dumps({**VALID_INPUT, "instanceId": "a" * 65}), "instanceId", "instanceId"),
], ids=["json", "empty", "array", "missing", "param-type", "instance-id", "instance-id-type", "instance-id-length"])
def test_malformed_message_raises_naming_the_field_and_starts_nothing(body, field, text, client):
    with pytest.raises(QueueMessageError) as raised:
        deliver(queue_message(body, message_id="bad-1"), client)
    assert raised.value.field == field
    assert text in str(raised.value) and "bad-1" in str(raised.value)
    assert client.started == []


def test_message_through_a_real_queue_round_trip(client, storage):
    """What a producer writes with azure-storage-queue (base64, the Functions default) is what the
    trigger reads: receive it from Azurite, decode as the host does, start once per message id."""
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    queue = storage.queue_name("workflow-requests")
    producer = QueueClient.from_connection_string(storage.connection_string, queue,
                                                  message_encode_policy=TextBase64EncodePolicy())
    producer.create_queue()
    producer.send_message(json.dumps(VALID_INPUT))
    consumer = storage.client_for(queue)

    import base64
    [message] = list(consumer.receive_messages(visibility_timeout=1))
    as_host = QueueMessage(id=message.id, body=base64.b64decode(message.content),
                                dequeue_count=message.dequeue_count)
    deliver(as_host, client)
    # Not deleted (say the worker died): after the visibility timeout the same message comes back.
    import time
    deadline = time.monotonic() + 5
    again = []
    while not again and time.monotonic() < deadline:
        time.sleep(0.2)
        again = list(consumer.receive_messages(visibility_timeout=30))
    [redelivered] = again
    assert redelivered.id == message.id and redelivered.dequeue_count == 2
    deliver(QueueMessage(id=redelivered.id, body=base64.b64decode(redelivered.content),
                              dequeue_count=redelivered.dequeue_count), client)
    assert len(client.started) == 1


def test_validating_a_message_does_not_block_the_event_loop(client, monkeypatch):
    """Schema validation is CPU work: it runs on a worker thread, so a coroutine on the same loop
    runs meanwhile (here the only one that can release the validator)."""
    import threading

    released = threading.Event()
    real = queue_trigger.validate_request

    def slow_validate(*args, **kwargs):
        assert released.wait(timeout=5), "the event loop was blocked by validation"
        return real(*args, **kwargs)

    monkeypatch.setattr(queue_trigger, "validate_request", slow_validate)

    async def scenario():
        async def other_message():
            await asyncio.sleep(0)
            released.set()
        fn = start_workflow_from_queue.build().get_user_function().client_function
        await asyncio.gather(fn(queue_message(VALID_INPUT, message_id="m-slow"), client), other_message())

    asyncio.run(scenario())
    assert [instance for _, instance, _ in client.started] == [derived_instance_id("queue", "m-slow")]
