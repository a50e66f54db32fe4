"""JobsClient against `responses`: operations, retry decisions, error mapping, pagination, 401.

`responses` replays urllib3's Retry decisions (is_retry/increment) without sleeping, so these tests
count attempts; the waits themselves are covered against a loopback server in test_dbx_transport."""
import json

import pytest
from responses import matchers

from databricks_jobs.client import JobsClient
from databricks_jobs.errors import DatabricksApiError
from dbx_emulator_support import error

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
API = HOST + "/api/2.1/jobs"
API22 = HOST + "/api/2.2/jobs"


@pytest.fixture
def client(stub_tokens, sleeps):
    client = JobsClient(HOST, stub_tokens, sleep_func=sleeps, clock=sleeps.clock)
    yield client
    client.close()


def test_create_job_posts_settings_with_bearer_token(client, mocked):
    call = mocked.post(API + "/create", json={"job_id": 11223344},
                       match=[matchers.json_params_matcher({"name": "nb", "tasks": []})])
    assert client.create_job({"name": "nb", "tasks": []}) == 11223344
    sent = call.calls[0].request
    assert sent.headers["Authorization"] == "Bearer stub-token-1"
    assert sent.headers["User-Agent"].startswith("durable-databricks-jobs/")


def test_run_now_sends_idempotency_token_and_params(client, mocked):
    mocked.post(API + "/run-now", json={"run_id": 5, "number_in_job": 5}, match=[matchers.json_params_matcher(
        {"job_id": 7, "idempotency_token": "inst-1", "notebook_params": {"a": "b"}})])
    assert client.run_now(7, "inst-1", {"a": "b"}) == 5


def test_run_now_refuses_a_token_over_64_characters(client):
    with pytest.raises(ValueError):
        client.run_now(7, "x" * 65)


def test_get_output_cancel_and_delete(client, mocked):
    mocked.get(API + "/runs/get-output", json={"notebook_output": {"result": "42", "truncated": False}},
               match=[matchers.query_param_matcher({"run_id": "9"})])
    cancel = mocked.post(API + "/runs/cancel", json={}, match=[matchers.json_params_matcher({"run_id": 9})])
    delete = mocked.post(API + "/delete", body="", match=[matchers.json_params_matcher({"job_id": 3})])
    assert client.get_run_output(9)["notebook_output"]["result"] == "42"
    assert client.cancel_run(9) is None and client.delete_job(3) is None
    assert cancel.call_count == 1 and delete.call_count == 1


def test_get_is_retried_on_5xx_until_it_succeeds(client, mocked):
    mocked.get(API + "/runs/get", status=500, json=error("INTERNAL_ERROR", "boom"))
    mocked.get(API + "/runs/get", status=502, body="<html><title>Bad Gateway</title></html>")
    mocked.get(API + "/runs/get", json={"run_id": 1, "state": {"life_cycle_state": "RUNNING"}})
    assert client.get_run(1)["run_id"] == 1
    assert len(mocked.calls) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_with_retry_after_is_retried(client, mocked, status):
    mocked.get(API + "/runs/get", status=status, headers={"Retry-After": "2"}, json=error("REQUEST_LIMIT_EXCEEDED", "slow down"))
    mocked.get(API + "/runs/get", json={"run_id": 1})
    assert client.get_run(1) == {"run_id": 1}
    assert len(mocked.calls) == 2


@pytest.mark.parametrize("status, code", [
    (400, "INVALID_PARAMETER_VALUE"), (403, "PERMISSION_DENIED"), (404, "RESOURCE_DOES_NOT_EXIST"), (409, "RESOURCE_CONFLICT"),
])
def test_4xx_is_never_retried(client, mocked, status, code):
    mocked.get(API + "/runs/get", status=status, json=error(code, "Run 5 does not exist"))
    with pytest.raises(DatabricksApiError) as raised:
        client.get_run(5)
    assert (raised.value.status, raised.value.error_code, raised.value.message) == (status, code, "Run 5 does not exist")
    assert str(raised.value) == f"Databricks API error {status} {code}: Run 5 does not exist"
    assert len(mocked.calls) == 1


def test_413_with_retry_after_is_not_retried(client, mocked):
    mocked.post(API + "/run-now", status=413, headers={"Retry-After": "1"}, json=error("REQUEST_TOO_LARGE", "too big"))
    with pytest.raises(DatabricksApiError, match="413"):
        client.run_now(1, "tok")
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_create_is_not_retried_on_5xx(client, mocked, status):
    mocked.post(API + "/create", status=status, json=error("INTERNAL_ERROR", "maybe created"))
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job({"name": "nb"})
    assert raised.value.status == status
    assert len(mocked.calls) == 1


def test_create_is_retried_on_429_which_is_refused_before_any_work(client, mocked):
    mocked.post(API + "/create", status=429, json=error("REQUEST_LIMIT_EXCEEDED", "slow down"))
    mocked.post(API + "/create", json={"job_id": 4})
    assert client.create_job({"name": "nb"}) == 4
    assert len(mocked.calls) == 2


@pytest.mark.parametrize("path, call", [
    ("/run-now", lambda c: c.run_now(1, "instance-1")),
    ("/runs/cancel", lambda c: c.cancel_run(1)),
    ("/delete", lambda c: c.delete_job(1)),
])
def test_idempotent_posts_are_retried_on_5xx_with_the_same_body(client, mocked, path, call):
    mocked.post(API + path, status=503, json=error("TEMPORARILY_UNAVAILABLE", "busy"))
    mocked.post(API + path, status=500, json=error("INTERNAL_ERROR", "oops"))
    mocked.post(API + path, json={"run_id": 8})
    call(client)
    bodies = [c.request.body for c in mocked.calls]
    assert len(bodies) == 3 and len(set(bodies)) == 1


def test_retries_stop_at_the_attempt_limit_and_report_the_last_error(stub_tokens, sleeps, mocked):
    client = JobsClient(HOST, stub_tokens, retry_max_seconds=1000, sleep_func=sleeps, clock=sleeps.clock)
    mocked.get(API + "/runs/get", status=503, json=error("TEMPORARILY_UNAVAILABLE", "still busy"))
    with pytest.raises(DatabricksApiError) as raised:
        client.get_run(1)
    assert (raised.value.status, raised.value.error_code) == (503, "TEMPORARILY_UNAVAILABLE")
    assert len(mocked.calls) == 11  # the first attempt and 10 retries
    assert len(sleeps.sleeps) == 9  # urllib3 retries the first failure at once


def test_retries_stop_at_the_time_budget_before_the_attempt_limit(client, mocked, sleeps):
    mocked.get(API + "/runs/get", status=503, json=error("TEMPORARILY_UNAVAILABLE", "still busy"))
    with pytest.raises(DatabricksApiError, match="^Databricks API error 503 TEMPORARILY_UNAVAILABLE"):
        client.get_run(1)
    # 0.5 s x 2^n waits capped at 30 s: the next one would pass the default 120 s budget.
    assert sum(sleeps.sleeps) <= 120 < sum(sleeps.sleeps) + 30
    assert len(mocked.calls) == len(sleeps.sleeps) + 2 < 11  # the first retry is immediate


def test_retry_after_beyond_the_time_budget_gives_up_at_once(stub_tokens, sleeps, mocked):
    client = JobsClient(HOST, stub_tokens, retry_max_seconds=30, sleep_func=sleeps, clock=sleeps.clock)
    mocked.get(API + "/runs/get", status=429, headers={"Retry-After": "3600"}, json=error("REQUEST_LIMIT_EXCEEDED", "later"))
    with pytest.raises(DatabricksApiError, match="^Databricks API error 429 REQUEST_LIMIT_EXCEEDED: later"):
        client.get_run(1)
    assert len(mocked.calls) == 1


def test_a_redirect_is_an_error_not_followed(client, mocked):
    mocked.get(API + "/runs/get", status=302, headers={"Location": "https://login.microsoftonline.com/x"}, body="")
    with pytest.raises(DatabricksApiError, match="^Databricks API error 302"):
        client.get_run(1)
    assert len(mocked.calls) == 1


def test_non_json_success_is_reported(client, mocked):
    mocked.get(API + "/runs/get", body="<html>login</html>", content_type="text/html")
    with pytest.raises(DatabricksApiError, match="INVALID_RESPONSE"):
        client.get_run(1)


def test_401_drops_the_token_once_and_retries_once(client, mocked, stub_tokens):
    first = mocked.get(API + "/runs/get", status=401, json=error("UNAUTHENTICATED", "expired token"))
    mocked.get(API + "/runs/get", json={"run_id": 1})
    assert client.get_run(1) == {"run_id": 1}
    assert stub_tokens.invalidations == 1
    assert [c.request.headers["Authorization"] for c in mocked.calls] == ["Bearer stub-token-1", "Bearer stub-token-2"]
    assert first.call_count >= 1


def test_a_second_401_is_reported(client, mocked, stub_tokens):
    mocked.get(API + "/runs/get", status=401, json=error("UNAUTHENTICATED", "Invalid access token"))
    with pytest.raises(DatabricksApiError, match="^Databricks API error 401 UNAUTHENTICATED"):
        client.get_run(1)
    assert len(mocked.calls) == 2 and stub_tokens.invalidations == 1


def test_provider_headers_are_sent(stub_tokens, mocked):
    stub_tokens._headers = {"X-Databricks-Azure-Workspace-Resource-Id": "/subscriptions/s/rg/ws"}
    client = JobsClient(HOST, stub_tokens)
    mocked.get(API + "/runs/get", json={"run_id": 1})
    client.get_run(1)
    assert mocked.calls[0].request.headers["X-Databricks-Azure-Workspace-Resource-Id"] == "/subscriptions/s/rg/ws"


def test_find_jobs_by_name_follows_pages_and_keeps_exact_names(client, mocked):
    def job(job_id, name):
        return {"job_id": job_id, "settings": {"name": name}}

    mocked.get(API22 + "/list", json={"jobs": [job(1, "nightly"), job(2, "NIGHTLY")], "has_more": True, "next_page_token": "p2"},
               match=[matchers.query_param_matcher({"name": "nightly", "limit": "100"})])
    mocked.get(API22 + "/list", json={"jobs": [job(3, "nightly")], "has_more": True, "next_page_token": "p3"},
               match=[matchers.query_param_matcher({"name": "nightly", "limit": "100", "page_token": "p2"})])
    mocked.get(API22 + "/list", json={"has_more": False},
               match=[matchers.query_param_matcher({"name": "nightly", "limit": "100", "page_token": "p3"})])
    assert [j["job_id"] for j in client.find_jobs_by_name("nightly")] == [1, 3]
    assert len(mocked.calls) == 3


def test_get_run_on_2_2_merges_task_pages(stub_tokens, mocked):
    client = JobsClient(HOST, stub_tokens, api_version="2.2")
    tasks = [{"task_key": f"t{i}", "run_id": 100 + i} for i in range(150)]
    mocked.get(API22 + "/runs/get", json={"run_id": 1, "tasks": tasks[:100], "job_parameters": [{"name": "p"}],
                                           "next_page_token": "page-2", "has_more": True},
               match=[matchers.query_param_matcher({"run_id": "1"})])
    mocked.get(API22 + "/runs/get", json={"run_id": 1, "tasks": tasks[100:], "job_parameters": []},
               match=[matchers.query_param_matcher({"run_id": "1", "page_token": "page-2"})])
    run = client.get_run(1)
    assert [t["run_id"] for t in run["tasks"]] == [t["run_id"] for t in tasks]
    assert run["job_parameters"] == [{"name": "p"}]
    assert "next_page_token" not in run
    assert len(mocked.calls) == 2


def test_a_repeated_page_token_does_not_loop(client, mocked):
    mocked.get(API22 + "/list", json={"jobs": [], "next_page_token": "same"})
    client.find_jobs_by_name("x")
    assert len(mocked.calls) == 2


def test_http_host_off_loopback_is_refused(stub_tokens):
    with pytest.raises(Exception, match="DATABRICKS_HOST"):
        JobsClient("http://adb-1.azuredatabricks.net", stub_tokens)


def test_bodies_are_json(client, mocked):
    call = mocked.post(API + "/runs/cancel", json={})
    client.cancel_run(12)
    assert json.loads(call.calls[0].request.body) == {"run_id": 12}
    assert call.calls[0].request.headers["Content-Type"] == "application/json"


def test_get_job_on_2_2_merges_task_pages(stub_tokens, mocked):
    client = JobsClient(HOST, stub_tokens, api_version="2.2")
    settings = {"name": "nb", "tags": {"durable_instance_id": "i-1"}}
    mocked.get(API22 + "/get", json={"job_id": 4, "settings": {**settings, "tasks": [{"task_key": "a"}]},
                                      "next_page_token": "t2", "has_more": True},
               match=[matchers.query_param_matcher({"job_id": "4"})])
    mocked.get(API22 + "/get", json={"job_id": 4, "settings": {"tasks": [{"task_key": "b"}]}},
               match=[matchers.query_param_matcher({"job_id": "4", "page_token": "t2"})])
    job = client.get_job(4)
    assert [t["task_key"] for t in job["settings"]["tasks"]] == ["a", "b"]
    assert job["settings"]["tags"] == {"durable_instance_id": "i-1"} and "next_page_token" not in job


def test_get_job_of_a_deleted_job(client, mocked):
    mocked.get(API + "/get", status=400, json=error("INVALID_PARAMETER_VALUE", "Job 4 does not exist."))
    with pytest.raises(DatabricksApiError, match="^Databricks API error 400 INVALID_PARAMETER_VALUE: Job 4"):
        client.get_job(4)
    assert len(mocked.calls) == 1
