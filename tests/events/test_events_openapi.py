"""The OpenAPI document: valid (3.1 and the 2.0 form for custom connectors), in step with the
registered routes, and true about every status and body the handlers answer."""
import asyncio
import base64
import json
import re

import azure.functions as func
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from events_support import VALID_INPUT, app_functions
from triggers import databricks_webhook, openapi
from triggers.databricks_webhook import databricks_notification
from triggers.http_api import cancel_workflow, get_workflow_status, start_workflow
from triggers.openapi import openapi_document

BASE = "https://jobs-app.azurewebsites.net"
DOC = openapi.load_document()
HOST_LEVEL = {"401"}  # answered by the Functions host for a missing key, not by our code


def test_vendored_document_is_valid_openapi_3_1():
    assert DOC["openapi"] == "3.1.0"
    validate(DOC)
    validate(openapi.document_for(BASE))


def test_swagger2_form_is_valid_and_fit_for_a_custom_connector():
    doc = openapi.document_for(BASE, "swagger2")
    validate(doc)
    assert doc["swagger"] == "2.0" and doc["host"] == "jobs-app.azurewebsites.net" and doc["basePath"] == "/api"
    assert doc["schemes"] == ["https"]
    assert len(json.dumps(doc).encode()) < 1_000_000  # connector definitions are limited to 1 MB
    for path, item in doc["paths"].items():
        for method, op in item.items():
            # Connector conventions: PascalCase operationId, a summary for the action's title.
            assert re.fullmatch(r"[A-Z][A-Za-z]+", op["operationId"]), op["operationId"]
            assert op["summary"]
    start = doc["paths"]["/workflows/create-job-and-run"]["post"]
    body = next(p for p in start["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/WorkflowInput"}
    assert "propertyNames" not in json.dumps(doc["definitions"])  # not a 2.0 keyword
    assert doc["securityDefinitions"]["functionKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "x-functions-key", "description": "A function or host key of the function app."}


def test_request_body_schema_is_the_workflow_input_schema():
    # Refresh with: python -m triggers.openapi
    for name, schema in openapi.input_schema_for_openapi().items():
        assert DOC["components"]["schemas"][name] == schema, name


def test_instance_id_parameters_document_the_pattern_the_routes_enforce():
    from triggers.starter import INSTANCE_ID_PATTERN

    params = openapi.instance_id_parameters(DOC)
    assert len(params) >= 2  # status and cancel
    assert {p["schema"]["pattern"] for p in params} == {INSTANCE_ID_PATTERN.pattern}


def _documented_routes():
    return {(method.upper(), "/api" + path) for path, item in DOC["paths"].items() for method in item}


def _registered_routes():
    import function_app

    registered = set()
    for fn in app_functions(function_app.app):
        trigger = fn.get_trigger()
        if trigger.type == "httpTrigger":
            registered |= {(getattr(m, "value", str(m)).upper(), "/api/" + trigger.route) for m in trigger.methods}
    return registered


def test_document_covers_exactly_the_registered_http_routes():
    # Every documented operation is served, and every served route is documented. The workflow
    # routes take every method so that a wrong one gets 405 + Allow; those are not operations.
    registered, documented = _registered_routes(), _documented_routes()
    assert documented <= registered
    assert {path for _, path in registered} == {path for _, path in documented}


def test_auth_levels_match_the_security_requirements():
    import function_app

    for fn in app_functions(function_app.app):
        trigger = fn.get_trigger()
        if trigger.type != "httpTrigger":
            continue
        item = DOC["paths"]["/" + trigger.route]
        op = item[next(iter(item))]
        security = op.get("security", DOC["security"])
        anonymous = trigger.auth_level == func.AuthLevel.ANONYMOUS
        assert anonymous == (not any("functionKey" in name for req in security for name in req)), trigger.route


def test_served_document_names_the_configured_host_never_the_requests(monkeypatch):
    """The server URL comes from WEBSITE_HOSTNAME: a client that sends its own Host header (here
    evil.example) must not choose where a connector imported from the document sends its key."""
    monkeypatch.setenv("WEBSITE_HOSTNAME", "jobs-app.azurewebsites.net")
    fn = openapi_document.build().get_user_function()
    req = func.HttpRequest("GET", "https://evil.example/api/openapi.json", body=b"", headers={"Host": "evil.example"})
    response = fn(req)
    assert response.status_code == 200
    assert json.loads(response.get_body())["servers"] == [{"url": "https://jobs-app.azurewebsites.net/api"}]
    assert response.headers["Cache-Control"].startswith("private") and "public" not in response.headers["Cache-Control"]
    req = func.HttpRequest("GET", "https://evil.example/api/openapi.json?format=swagger2", params={"format": "swagger2"},
                           body=b"", headers={"Host": "evil.example"})
    swagger = json.loads(fn(req).get_body())
    assert swagger["swagger"] == "2.0" and swagger["host"] == "jobs-app.azurewebsites.net"
    assert swagger["schemes"] == ["https"] and "evil" not in json.dumps(swagger)


@pytest.mark.parametrize("hostname, server", [
    ("localhost:7071", "http://localhost:7071/api"),  # Core Tools
    ("JOBS-APP.azurewebsites.net", "https://jobs-app.azurewebsites.net/api"),
    (None, "/api"),                                   # unset: relative to wherever it was fetched
    ("evil.example/x?y", "/api"), ("a@evil.example", "/api"), ("host:notaport", "/api"),
])
def test_server_url_without_a_plain_configured_host_is_relative(hostname, server, monkeypatch):
    if hostname is None:
        monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    else:
        monkeypatch.setenv("WEBSITE_HOSTNAME", hostname)
    req = func.HttpRequest("GET", "https://evil.example/api/openapi.json", body=b"")
    assert json.loads(openapi_document.build().get_user_function()(req).get_body())["servers"] == [{"url": server}]
    if server == "/api":
        req = func.HttpRequest("GET", "https://evil.example/api/openapi.json", params={"format": "swagger2"}, body=b"")
        swagger = json.loads(openapi_document.build().get_user_function()(req).get_body())
        assert "host" not in swagger and "schemes" not in swagger  # 2.0: the host that served it


# -- every status each handler answers is documented, with its body schema and headers -----------

SEEN: dict = {}


def _schema_of(response_doc):
    content = (response_doc.get("content") or {}).get("application/json")
    if not content:
        return None
    return {**content["schema"], "components": DOC["components"]}


def check(path, method, response):
    op = DOC["paths"][path][method]
    code = str(response.status_code)
    assert code in op["responses"], f"{method.upper()} {path} answered undocumented {code}"
    documented = op["responses"][code]
    schema = _schema_of(documented)
    if schema is not None:
        Draft202012Validator(schema).validate(json.loads(response.get_body()))
    for header in documented.get("headers", {}):
        if header != "Idempotent-Replayed":
            assert header in response.headers, f"{code} lacks documented header {header}"
    SEEN.setdefault((path, method), set()).add(code)


def http(method, route, body=b"", headers=None, route_params=None, params=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return func.HttpRequest(method, f"{BASE}/api/{route}?code=k", headers=headers, body=raw,
                            route_params=route_params or {}, params=params or {"code": "k"})


def call(fn, req, client):
    return asyncio.run(fn.build().get_user_function().client_function(req, client))


OUTPUTS = {"jobId": 1, "runId": 2, "resultState": "SUCCESS", "notebookResult": "ok", "lifeCycleState": "TERMINATED",
           "stateMessage": "", "runPageUrl": "https://adb/#run/2"}


def test_start_statuses(client):
    path = "/workflows/create-job-and-run"
    check(path, "post", call(start_workflow, http("POST", path[1:], VALID_INPUT), client))
    check(path, "post", call(start_workflow, http("POST", path[1:], VALID_INPUT, {"Idempotency-Key": "k1"}), client))
    check(path, "post", call(start_workflow, http("POST", path[1:], {"jobName": 5}), client))
    check(path, "post", call(start_workflow, http("POST", path[1:], b"x" * 70_000), client))
    check(path, "post", call(start_workflow, http("POST", path[1:], VALID_INPUT, {"Content-Type": "text/plain"}), client))
    check(path, "post", call(start_workflow, http("POST", path[1:], dict(VALID_INPUT, jobName="other"),
                                                  {"Idempotency-Key": "k1"}), client))


def test_start_on_a_misconfigured_app_is_503(client, monkeypatch):
    path = "/workflows/create-job-and-run"
    monkeypatch.setenv("DATABRICKS_AUTH", "bogus")
    check(path, "post", call(start_workflow, http("POST", path[1:], VALID_INPUT), client))


def test_status_statuses(client):
    path = "/workflows/{instanceId}"
    progress = {"step": "pollRun", "jobId": 1, "runId": 2, "lifeCycleState": "RUNNING", "runPageUrl": None,
                "polls": 3, "elapsedSeconds": 20}
    client.set_status("running", "Running", custom=progress)
    client.set_status("ok", "Completed", output=OUTPUTS)
    client.set_status("failed-run", "Completed", output={**OUTPUTS, "resultState": "FAILED", "error": "boom",
                                                          "errorTrace": "Traceback"})
    client.set_status("terminated", "Terminated", output="operator")
    client.set_status("broken", "Failed", output="Databricks API error 403 PERMISSION_DENIED: no")
    for instance in ("running", "ok", "failed-run", "terminated", "broken", "unknown", "bad id!"):
        check(path, "get", call(get_workflow_status, http("GET", f"workflows/{instance}",
                                                           route_params={"instanceId": instance}), client))


def test_cancel_statuses(client):
    path = "/workflows/{instanceId}/cancel"
    client.set_status("running", "Running")
    client.set_status("done", "Completed", output=OUTPUTS)
    for instance in ("running", "done", "unknown", "bad id!"):
        check(path, "post", call(cancel_workflow, http("POST", f"workflows/{instance}/cancel",
                                                        route_params={"instanceId": instance}), client))

    async def unreachable(*args, **kwargs):
        raise Exception("the task hub is not answering")
    client.set_status("flaky", "Running")
    client.raise_event = unreachable
    check(path, "post", call(cancel_workflow, http("POST", "workflows/flaky/cancel",
                                                    route_params={"instanceId": "flaky"}), client))


def test_notification_statuses(client, monkeypatch):
    path = "/databricks/notifications"
    monkeypatch.setenv("DATABRICKS_WEBHOOK_USERNAME", "u")
    monkeypatch.setenv("DATABRICKS_WEBHOOK_PASSWORD", "p")
    auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    client.register_run(9, "i1", 7)
    client.set_running("i1", runId=9)
    note = lambda run: {"event_type": "jobs.on_success", "job": {"job_id": 7}, "run": {"run_id": run}}
    for req in (http("POST", path[1:], note(9), auth), http("POST", path[1:], note(10), auth),
                http("POST", path[1:], note(9)), http("POST", path[1:], {"run": {}}, auth),
                http("POST", path[1:], b"x" * 20_000, auth)):
        check(path, "post", call(databricks_notification, req, client))

    async def down(*args, **kwargs):
        raise Exception("the task hub is not answering")
    client.read_entity_state = down
    check(path, "post", call(databricks_notification, http("POST", path[1:], note(9), auth), client))


def test_results_statuses(client, monkeypatch):
    from triggers.results_api import get_task_result

    path = "/workflows/{instanceId}/results/{taskKey}"
    whole = {"taskKey": "main", "runId": 3, "notebookResult": "ok", "notebookResultBytes": 2,
             "notebookResultTruncated": False}
    cut = {"taskKey": "big", "runId": 4, "notebookResult": "x", "notebookResultBytes": 9, "notebookResultTruncated": True,
           "resultPath": "/api/workflows/ok/results/big"}
    client.set_status("ok", "Completed", output={**OUTPUTS, "tasks": [whole, cut]})
    client.set_status("running", "Running")
    # The kept copy's storage is not configured: 503 naming the setting.
    monkeypatch.setenv("WORKFLOW_RESULTS_CONNECTION", "RESULTS_STORAGE_NOT_SET")
    monkeypatch.delenv("RESULTS_STORAGE_NOT_SET", raising=False)
    from messaging import result_blobs
    result_blobs.reset_cache()
    for instance, task, headers in (("ok", "main", None), ("ok", "main", {"Range": "bytes=0-3"}),
                                    ("ok", "main", {"Range": "bytes=999-"}), ("ok", "nope", None),
                                    ("ok", "bad key!", None), ("running", "main", None), ("unknown", "main", None),
                                    ("ok", "big", None)):
        req = http("GET", f"workflows/{instance}/results/{task}", headers=headers,
                   route_params={"instanceId": instance, "taskKey": task})
        response = call(get_task_result, req, client)
        check(path, "get", response)
        if response.status_code == 503:
            assert json.loads(response.get_body())["setting"] == "WORKFLOW_RESULTS_CONNECTION"


def test_openapi_statuses():
    fn = openapi_document.build().get_user_function()
    check("/openapi.json", "get", fn(http("GET", "openapi.json", params={})))
    check("/openapi.json", "get", fn(http("GET", "openapi.json", params={"format": "yaml"})))


def test_every_documented_status_was_answered():
    """Runs last in this module: the status tests above must have produced each documented code."""
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            documented = set(op["responses"]) - HOST_LEVEL
            if path == "/databricks/notifications":
                documented = set(op["responses"])  # our code answers its 401 itself
            assert SEEN.get((path, method), set()) == documented, f"{method.upper()} {path}"
