"""devhost serve: HTTP functions, Event Grid deliveries and admin invocations over real HTTP."""
import json
import time

import requests

import devhost_toyapp as toy
from devhost.serve import Route


def test_route_templates():
    route = Route("workflows/{instanceId}")
    assert route.match("/workflows/abc") == {"instanceId": "abc"}
    assert route.match("/Workflows/abc/") == {"instanceId": "abc"}
    assert route.match("/workflows/abc/cancel") is None
    assert Route("workflows/{instanceId}/cancel").match("/workflows/a b/cancel") == {
        "instanceId": "a b"}
    assert Route("items/{id:int}").match("/items/x") is None
    assert Route("items/{id?}").match("/items") == {}
    assert Route("files/{*rest}").match("/files/a/b/c") == {"rest": "a/b/c"}
    literal, param = Route("workflows/create-job-and-run"), Route("workflows/{instanceId}")
    assert sorted([param, literal], key=lambda r: r.precedence)[0] is literal


def test_http_starter_with_durable_client(server):
    r = requests.post(f"{server.base_url}/api/start/sequence", json=["Oslo", "Lima"], timeout=10)
    assert r.status_code == 202
    payload = r.json()
    iid = payload["id"]
    assert r.headers["Location"] == payload["statusQueryGetUri"]
    assert r.headers["Retry-After"] == "10"
    assert payload["statusQueryGetUri"].startswith(
        f"{server.base_url}/runtime/webhooks/durabletask/instances/{iid}")

    # Follow Location as Logic Apps would.
    for _ in range(100):
        status = requests.get(r.headers["Location"], timeout=5)
        if status.status_code != 202:
            break
        time.sleep(0.02)
    assert status.status_code == 200
    assert status.json()["output"] == ["Hello Oslo!", "Hello Lima!"]

    own = requests.get(f"{server.base_url}/api/status/{iid}", timeout=10)
    assert own.status_code == 200
    assert own.headers["X-Runtime-Status"] == "Completed"
    assert own.json()["output"] == ["Hello Oslo!", "Hello Lima!"]
    assert requests.get(f"{server.base_url}/api/status/missing", timeout=10).status_code == 404


def test_http_function_request_mapping(server):
    r = requests.put(f"{server.base_url}/api/echo/a/b?x=1&code=ignored", data=b"payload",
                     headers={"x-test": "yes"}, timeout=5)
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"method": "PUT", "route": {"rest": "a/b"},
                        "params": {"x": "1", "code": "ignored"}, "body": "payload",
                        "header": "yes"}
    assert requests.post(f"{server.base_url}/api/echo/a", timeout=5).status_code == 404
    assert requests.get(f"{server.base_url}/api/nothing-here", timeout=5).status_code == 404


def test_eventgrid_validation_handshake(server):
    url = f"{server.base_url}/runtime/webhooks/eventgrid?functionName=on_event"
    validation = [{"id": "1", "topic": "t", "subject": "", "eventType":
                   "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime":
                   "2024-01-01T00:00:00Z", "dataVersion": "2", "metadataVersion": "1",
                   "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}}]
    r = requests.post(url, json=validation, headers={"aeg-event-type": "SubscriptionValidation"},
                      timeout=5)
    assert r.status_code == 200
    assert r.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}

    r = requests.options(url, headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
                         timeout=5)
    assert r.status_code == 200 and r.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"

    assert requests.post(url, json=validation, timeout=5).status_code == 400  # no aeg-event-type
    missing = f"{server.base_url}/runtime/webhooks/eventgrid?functionName=nope"
    assert requests.post(missing, json=[], headers={"aeg-event-type": "Notification"},
                         timeout=5).status_code == 404


def test_eventgrid_delivery_both_schemas(server):
    url = f"{server.base_url}/runtime/webhooks/eventgrid?functionName=on_event"
    events = [{"id": f"e{i}", "topic": "/subscriptions/x", "subject": "s",
               "eventType": "Databricks.JobRun.Requested", "eventTime": "2024-01-01T00:00:00Z",
               "dataVersion": "1", "data": {"n": i}} for i in range(2)]
    r = requests.post(url, json=events, headers={"aeg-event-type": "Notification"}, timeout=5)
    assert r.status_code == 202
    cloud = {"specversion": "1.0", "id": "c1", "source": "/src", "type":
             "Databricks.JobRun.Requested", "time": "2024-01-01T00:00:00Z", "data": {"n": 9}}
    r = requests.post(url, data=json.dumps(cloud), headers={
        "aeg-event-type": "Notification", "Content-Type": "application/cloudevents+json"},
        timeout=5)
    assert r.status_code == 202
    assert [(e["id"], e["type"], e["data"], e["cls"]) for e in toy.EVENTGRID_SEEN] == [
        ("e0", "Databricks.JobRun.Requested", {"n": 0}, "EventGridEvent"),
        ("e1", "Databricks.JobRun.Requested", {"n": 1}, "EventGridEvent"),
        ("c1", "Databricks.JobRun.Requested", {"n": 9}, "CloudEvent")]


def test_admin_invokes_queue_trigger(server):
    r = requests.post(f"{server.base_url}/admin/functions/on_queue",
                      json={"input": '{"jobName": "x"}'}, timeout=5)
    assert r.status_code == 202
    assert len(toy.QUEUE_SEEN) == 1
    assert toy.QUEUE_SEEN[0]["body"] == '{"jobName": "x"}'
    assert toy.QUEUE_SEEN[0]["dequeue_count"] == 1 and toy.QUEUE_SEEN[0]["id"]
    assert server.invocations[-1] == {"function": "on_queue", "ok": True, "error": None}
    assert requests.post(f"{server.base_url}/admin/functions/nope", json={"input": ""},
                         timeout=5).status_code == 404
