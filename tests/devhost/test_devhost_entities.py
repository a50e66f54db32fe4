"""Durable entities on devhost: the real SDK entity handle, orchestrator signals (EventSent),
the management API routes the Python client uses, foreground helpers, virtual time."""
import json

import azure.durable_functions as df
import pytest
import requests

from devhost import FunctionNotFoundError
from devhost.functions import run_coroutine
from devhost.replay import EVENT_SENT


def test_foreground_signals_run_in_order_one_batch_at_a_time(host):
    assert host.read_entity_state("Counter", "k") == {"entityExists": False, "entityState": None}
    for amount in (1, 2, 3):
        host.signal_entity("Counter", "k", "add", amount)
    assert host.read_entity_state("counter", "k")["entityExists"] is False  # not yet processed
    assert host.run_until_idle() == 1  # one batch of three operations
    assert host.read_entity_state("Counter", "k") == {"entityExists": True, "entityState": 6}
    host.signal_entity("Counter", "k", "add", 4)
    host.run_until_idle()
    assert host.read_entity_state("Counter", "k")["entityState"] == 10  # state persists
    host.signal_entity("Counter", "k", "delete")
    host.run_until_idle()
    assert host.read_entity_state("Counter", "k")["entityExists"] is False


def test_a_failing_operation_is_reported_and_the_batch_goes_on(host, caplog):
    host.signal_entity("Counter", "f", "add", 5)
    host.signal_entity("Counter", "f", "fail")
    host.signal_entity("Counter", "f", "add", 1)
    host.run_until_idle()
    assert host.read_entity_state("Counter", "f")["entityState"] == 6
    assert "operation fail failed: refused" in caplog.text


def test_unknown_entity_is_refused(host):
    with pytest.raises(FunctionNotFoundError, match="known entity functions: 'counter'"):
        host.signal_entity("Nope", "k", "add", 1)


def test_orchestrator_signal_is_recorded_as_event_sent_and_delivered_after_the_episode(host):
    iid = host.start_new("signals_counter", client_input=[10, 20])
    status = host.run_until_complete(iid)
    assert status["output"] == "signalled"
    sent = [e for e in host.history(iid) if e["EventType"] == EVENT_SENT]
    assert [(e["EventId"], e["InstanceId"], e["Name"]) for e in sent] == [
        (0, "@counter@shared", "op"), (1, "@counter@shared", "op")]
    request = json.loads(sent[0]["Input"])
    assert request["op"] == "add" and request["signal"] is True and request["parent"] == iid
    assert host.read_entity_state("Counter", "shared")["entityState"] == 30
    assert [e["EventType"] for e in host.history(iid)].index(1) > 0  # completed normally


def test_management_api_routes_with_the_real_client(server):
    client = df.DurableOrchestrationClient(server.management.binding_json(server.base_url))
    entity = df.EntityId("Counter", "web")
    missing = run_coroutine(client.read_entity_state(entity), timeout=10)
    assert missing.entity_exists is False
    run_coroutine(client.signal_entity(entity, "add", 7), timeout=10)
    run_coroutine(client.signal_entity(entity, "add", 8), timeout=10)
    for _ in range(200):
        state = run_coroutine(client.read_entity_state(entity), timeout=10)
        if state.entity_exists and state.entity_state == 15:
            break
    assert (state.entity_exists, state.entity_state) == (True, 15)
    with pytest.raises(Exception, match="400"):
        run_coroutine(client.signal_entity(df.EntityId("Nope", "k"), "add", 1), timeout=10)


def test_entity_http_status_codes(server):
    base = f"{server.base_url}/runtime/webhooks/durabletask/entities"
    assert requests.get(f"{base}/counter/none", timeout=5).status_code == 404
    r = requests.post(f"{base}/counter/raw?op=add", data="{not json", timeout=5,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["Message"].startswith("Could not parse JSON content")
    assert requests.post(f"{base}/nope/k?op=add", json=1, timeout=5).status_code == 400
    assert requests.post(f"{base}/counter/a%23b?op=add", json=1, timeout=5).status_code == 400
