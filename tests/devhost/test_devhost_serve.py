"""devhost serve: HTTP functions, Event Grid deliveries and admin invocations over real HTTP."""
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import azure.durable_functions as df
import pytest
import requests

import devhost_toyapp as toy
from devhost import RealClock, ReplayHost
from devhost.functions import run_coroutine
from devhost.serve import DevServer, Route


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


# ---------------------------------------------------------------- Event Grid answers (A7)

EG_NOTIFY = {"aeg-event-type": "Notification", "Content-Type": "application/json"}
EG_VALIDATE = {"aeg-event-type": "SubscriptionValidation", "Content-Type": "application/json"}


@pytest.mark.parametrize("headers, body, status", [
    # What the Event Grid extension's HttpRequestProcessor throws on, the host answers with 500.
    (EG_NOTIFY, b"{not json", 500),
    (EG_NOTIFY, b"42", 500),                       # neither an array nor an object
    (EG_NOTIFY, b"", 500),
    (EG_VALIDATE, b"[]", 500),                     # events[0] of nothing
    (EG_VALIDATE, b'[{"id": "1", "data": {}}]', 500),  # no validationCode
    (EG_VALIDATE, b'{"not": "an event"}', 500),
    (EG_VALIDATE, b'[{"id": "1", "data": "code"}]', 500),    # data not an object
    (EG_VALIDATE, b'{"id": "1", "data": 5}', 500),           # CloudEvent-shaped, data not an object
    (EG_VALIDATE, b'[{"id": "1", "data": {"validationCode": null}}]', 500),
    (EG_NOTIFY, b'[' * 65 + b']' * 65, 500),                 # past Newtonsoft's MaxDepth of 64
    (EG_NOTIFY, b'[{"id": "1", "data": ' + b'[' * 70 + b']' * 70 + b'}]', 500),
    (EG_VALIDATE, b'[{"id": "1", "data": {"validationCode": "c", "x": ' + b'[' * 70 + b']' * 70 + b'}}]', 500),
    # Answered without throwing.
    (EG_NOTIFY, b"[]", 202),                       # a delivery of no events
    ({"aeg-event-type": "Unsubscribe"}, b"[]", 202),
    ({"aeg-event-type": "Something"}, b"[]", 400),
    ({}, b"[]", 400),
])
def test_eventgrid_answers_as_the_host_does(server, headers, body, status):
    url = f"{server.base_url}/runtime/webhooks/eventgrid?functionName=on_event"
    r = requests.post(url, data=body, headers=headers, timeout=5)
    assert r.status_code == status
    if status == 500:
        assert r.content == b""  # the host's ExceptionMiddleware writes no body
    assert toy.EVENTGRID_SEEN == []


def test_eventgrid_runs_every_event_then_reports_the_first_failure(server):
    url = f"{server.base_url}/runtime/webhooks/eventgrid?functionName=on_event"
    good = {"id": "g1", "topic": "t", "subject": "s", "eventType": "x", "eventTime":
            "2024-01-01T00:00:00Z", "dataVersion": "1", "data": {"n": 1}}
    bad = "not an event object"
    later = dict(good, id="g2")
    r = requests.post(url, json=[good, bad, later], headers=EG_NOTIFY, timeout=5)
    assert r.status_code == 500 and r.text
    assert [e["id"] for e in toy.EVENTGRID_SEEN] == ["g1", "g2"]


# ----------------------------------------------------- binding from the listen address (A8)

def test_client_binding_ignores_the_host_header(server):
    # A Host header naming another (closed, loopback) address must not redirect the app's own
    # management calls: the binding is built from where devhost listens.
    r = requests.post(f"{server.base_url}/api/start/sequence", json=["x"], timeout=10,
                      headers={"Host": "127.0.0.2:9"})
    assert r.status_code == 202
    iid = r.json()["id"]
    assert server.host.get_status(iid) is not None
    links = server.management.management_urls(server.base_url, iid)
    status = requests.get(links["statusQueryGetUri"], headers={"Host": "evil.example:1"},
                          timeout=5)
    assert status.headers.get("Location", server.base_url).startswith(server.base_url)
    direct = requests.post(f"{server.base_url}/runtime/webhooks/durabletask/orchestrators/"
                           f"sequence", json=["y"], headers={"Host": "evil.example:1"}, timeout=5)
    assert direct.status_code == 202
    assert direct.headers["Location"].startswith(server.base_url)
    assert all(v.startswith(server.base_url) for k, v in direct.json().items() if k != "id")


# ----------------------------------------------------------------- listen backlog (A9)

def test_a_burst_of_50_connections_is_queued_not_dropped(app):
    dev = DevServer(app, ReplayHost(app, RealClock()))
    dev.start()
    port = dev._httpd.server_address[1]
    # Stop accepting (the socket keeps listening): every connection must wait in the backlog.
    dev._httpd.shutdown()
    sockets = []
    try:
        def connect(_):
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            sockets.append(s)
            return True

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda i: _try(connect, i), range(50)))
        assert results.count(True) == 50, results
    finally:
        for s in sockets:
            s.close()
        dev._httpd.server_close()
        dev._httpd = None
        dev.stop()


def _try(fn, arg):
    try:
        return fn(arg)
    except OSError as exc:
        return type(exc).__name__


def test_status_of_a_long_instance_id_and_refused_ids_over_http(server):
    client = df.DurableOrchestrationClient(server.management.binding_json(server.base_url))
    with pytest.raises(Exception, match=r"must not start with @"):
        run_coroutine(client.start_new("sequence", "@bad", ["x"]), timeout=10)
    with pytest.raises(Exception, match=r"must not exceed 256 characters"):
        run_coroutine(client.start_new("sequence", "y" * 300, ["x"]), timeout=10)
    # The client does not encode ids: "/" adds a path segment, which matches no route (404).
    with pytest.raises(Exception):
        run_coroutine(client.start_new("sequence", "a/b", ["x"]), timeout=10)
    assert server.host.instance_ids() == []
    url = f"{server.base_url}/runtime/webhooks/durabletask/orchestrators/sequence/a%0Ab"
    r = requests.post(url, json=["x"], timeout=5)
    assert r.status_code == 400 and "control characters" in r.json()["ExceptionMessage"]
