"""The Jobs API operations of issues 9 and 10 against `responses`: request shapes, caller errors,
which calls are retried, paging, the repair idempotency rule, and the per-attempt hook of _send."""
import json

import pytest
from responses import matchers

from databricks_jobs.client import IDEMPOTENT_POSTS, RUNS_PAGE_SIZE, HttpAttempt, JobsClient, newest_repair_id
from databricks_jobs.errors import DatabricksApiError
from dbx_emulator_support import error

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
API = HOST + "/api/2.1/jobs"
API22 = HOST + "/api/2.2/jobs"


@pytest.fixture
def attempts():
    return []


@pytest.fixture
def client(stub_tokens, sleeps, attempts):
    client = JobsClient(HOST, stub_tokens, sleep_func=sleeps, clock=sleeps.clock, attempt_observer=attempts.append)
    yield client
    client.close()


def sent(call):
    return json.loads(call.request.body)


# -- run-now ------------------------------------------------------------------------------------

def test_run_now_with_job_parameters_queue_and_only(client, mocked):
    call = mocked.post(API + "/run-now", json={"run_id": 9, "number_in_job": 9})
    assert client.run_now(7, "tok-1", job_parameters={"day": "mon"}, queue=True, only=["main", "report"]) == 9
    assert sent(call.calls[0]) == {"job_id": 7, "idempotency_token": "tok-1", "job_parameters": {"day": "mon"},
                                   "queue": {"enabled": True}, "only": ["main", "report"]}


def test_run_now_with_notebook_params_by_keyword(client, mocked):
    call = mocked.post(API + "/run-now", json={"run_id": 9})
    client.run_now(7, "tok-1", notebook_params={"a": "b"}, queue=False)
    assert sent(call.calls[0]) == {"job_id": 7, "idempotency_token": "tok-1", "notebook_params": {"a": "b"},
                                   "queue": {"enabled": False}}


@pytest.mark.parametrize("kwargs", [
    {"idempotency_token": ""},
    {"idempotency_token": "x" * 65},
    {"idempotency_token": "t", "notebook_params": {"a": "1"}, "job_parameters": {"b": "2"}},
])
def test_run_now_refuses_caller_errors_before_sending(client, mocked, kwargs):
    with pytest.raises(ValueError):
        client.run_now(7, **kwargs)
    assert len(mocked.calls) == 0


# -- runs/submit --------------------------------------------------------------------------------

SUBMIT_BODY = {"run_name": "one-off", "tasks": [{"task_key": "main", "existing_cluster_id": "0923-164208-meows279",
                                                 "notebook_task": {"notebook_path": "/Workspace/nb"}}]}


def test_submit_run_sends_the_body_with_its_token_and_is_retried_with_the_same_body(client, mocked, sleeps):
    mocked.post(API + "/runs/submit", status=503, json=error("TEMPORARILY_UNAVAILABLE", "busy"))
    mocked.post(API + "/runs/submit", status=502, body="<html><title>Bad Gateway</title></html>")
    mocked.post(API + "/runs/submit", json={"run_id": 55})
    assert client.submit_run(SUBMIT_BODY, "submit-key-1") == 55
    bodies = [sent(c) for c in mocked.calls]
    assert bodies == [{**SUBMIT_BODY, "idempotency_token": "submit-key-1"}] * 3
    assert "idempotency_token" not in SUBMIT_BODY  # the caller's mapping is not modified


@pytest.mark.parametrize("body, token", [({**SUBMIT_BODY, "idempotency_token": "other"}, "submit-key-1"),
                                         (SUBMIT_BODY, ""), (SUBMIT_BODY, "k" * 65)])
def test_submit_run_refuses_token_mistakes(client, mocked, body, token):
    with pytest.raises(ValueError):
        client.submit_run(body, token)
    assert len(mocked.calls) == 0


# -- runs/repair --------------------------------------------------------------------------------

def run_with_history(*repair_ids):
    history = [{"type": "ORIGINAL", "start_time": 1, "task_run_ids": [11]}]
    history += [{"type": "REPAIR", "id": rid, "start_time": 2 + i, "task_run_ids": [20 + i]} for i, rid in enumerate(repair_ids)]
    return {"run_id": 5, "state": {"life_cycle_state": "RUNNING"}, "repair_history": history}


@pytest.mark.parametrize("kwargs, body", [
    ({}, {"run_id": 5, "rerun_all_failed_tasks": True}),
    ({"latest_repair_id": 700, "job_parameters": {"day": "tue"}},
     {"run_id": 5, "latest_repair_id": 700, "rerun_all_failed_tasks": True, "job_parameters": {"day": "tue"}}),
    ({"rerun_tasks": ["load", "report"]}, {"run_id": 5, "rerun_tasks": ["load", "report"]}),
    ({"rerun_all_failed_tasks": False, "rerun_tasks": ["load"]}, {"run_id": 5, "rerun_tasks": ["load"]}),
])
def test_repair_run_request_shapes(client, mocked, kwargs, body):
    call = mocked.post(API + "/runs/repair", json={"repair_id": 701})
    assert client.repair_run(5, **kwargs) == 701
    assert sent(call.calls[0]) == body


def test_a_repair_whose_reply_was_lost_is_not_repeated_and_returns_its_id(client, mocked):
    # The first attempt went through (the gateway lost the reply); Databricks refuses the retry.
    mocked.post(API + "/runs/repair", status=504, body="")
    mocked.post(API + "/runs/repair", status=400, json=error(
        "INVALID_PARAMETER_VALUE", "The latest repair ID needs to be provided in order to create a new repair"))
    history = mocked.get(API + "/runs/get", json=run_with_history(701),
                         match=[matchers.query_param_matcher({"run_id": "5", "include_history": "true"})])
    assert client.repair_run(5) == 701
    assert [c.request.url.rsplit("/", 1)[-1].split("?")[0] for c in mocked.calls] == ["repair", "repair", "get"]
    assert history.call_count == 1


def test_a_repeated_repair_with_the_same_latest_repair_id_returns_the_repair_it_made(client, mocked):
    # E.g. the activity ran twice: the second POST carries the id the first one superseded.
    mocked.post(API + "/runs/repair", status=400, json=error("INVALID_PARAMETER_VALUE", "stale latest_repair_id"))
    mocked.get(API + "/runs/get", json=run_with_history(700, 702))
    assert client.repair_run(5, latest_repair_id=700) == 702


@pytest.mark.parametrize("history", [run_with_history(), run_with_history(700)])
def test_a_refused_repair_with_no_newer_repair_is_reported(client, mocked, history):
    mocked.post(API + "/runs/repair", status=400, json=error("INVALID_PARAMETER_VALUE", "Run 5 is still running"))
    mocked.get(API + "/runs/get", json=history)
    with pytest.raises(DatabricksApiError, match="^Databricks API error 400 INVALID_PARAMETER_VALUE: Run 5 is still"):
        client.repair_run(5, latest_repair_id=newest_repair_id(history))


def test_a_refused_repair_whose_history_cannot_be_read_reports_the_refusal(client, mocked):
    mocked.post(API + "/runs/repair", status=400, json=error("INVALID_PARAMETER_VALUE", "Run 5 does not exist"))
    mocked.get(API + "/runs/get", status=400, json=error("INVALID_PARAMETER_VALUE", "Run 5 does not exist"))
    with pytest.raises(DatabricksApiError, match="Run 5 does not exist"):
        client.repair_run(5)


def test_newest_repair_id():
    assert newest_repair_id({}) is None
    assert newest_repair_id(run_with_history()) is None
    assert newest_repair_id(run_with_history(3, 9)) == 9


# -- runs/get with history ----------------------------------------------------------------------

def test_get_run_with_history_merges_2_2_repair_history_pages(stub_tokens, sleeps, mocked):
    client = JobsClient(HOST, stub_tokens, api_version="2.2", sleep_func=sleeps, clock=sleeps.clock)
    first = run_with_history(*range(1, 100))
    mocked.get(API22 + "/runs/get", json={**first, "next_page_token": "p2"},
               match=[matchers.query_param_matcher({"run_id": "5", "include_history": "true"})])
    mocked.get(API22 + "/runs/get", json={"run_id": 5, "repair_history": [{"type": "REPAIR", "id": 100}]},
               match=[matchers.query_param_matcher({"run_id": "5", "include_history": "true", "page_token": "p2"})])
    run = client.get_run(5, include_history=True)
    assert newest_repair_id(run) == 100 and len(run["repair_history"]) == 101


# -- runs/list ----------------------------------------------------------------------------------

def runs(*ids):
    return [{"run_id": i, "state": {"life_cycle_state": "RUNNING"}} for i in ids]


def test_list_runs_follows_every_page_with_its_filters(client, mocked):
    base = {"limit": str(RUNS_PAGE_SIZE), "active_only": "true", "job_id": "7", "expand_tasks": "true",
            "start_time_from": "1700000000000"}
    mocked.get(API + "/runs/list", json={"runs": runs(3, 2), "has_more": True, "next_page_token": "n1"},
               match=[matchers.query_param_matcher(base)])
    mocked.get(API + "/runs/list", json={"runs": runs(1), "has_more": False},
               match=[matchers.query_param_matcher({**base, "page_token": "n1"})])
    found = client.list_runs(active_only=True, job_id=7, expand_tasks=True, start_time_from_ms=1_700_000_000_000)
    assert [r["run_id"] for r in found] == [3, 2, 1]
    assert len(mocked.calls) == 2


def test_list_runs_pages_counts_pages_and_an_empty_list_is_one_page(client, mocked):
    mocked.get(API + "/runs/list", json={"runs": runs(*range(25)), "next_page_token": "n1", "has_more": True},
               match=[matchers.query_param_matcher({"limit": "25", "completed_only": "true"})])
    mocked.get(API + "/runs/list", json={"has_more": False},  # "runs" is omitted when there are none
               match=[matchers.query_param_matcher({"limit": "25", "completed_only": "true", "page_token": "n1"})])
    pages = list(client.list_runs_pages(completed_only=True))
    assert [len(p) for p in pages] == [25, 0]


def test_list_runs_limit_caps_the_total_and_stops_fetching(client, mocked):
    mocked.get(API + "/runs/list", json={"runs": runs(*range(10)), "next_page_token": "n1", "has_more": True},
               match=[matchers.query_param_matcher({"limit": "10"})])
    assert [r["run_id"] for r in client.list_runs(limit=10)] == list(range(10))
    assert len(mocked.calls) == 1
    mocked.get(API + "/runs/list", json={"runs": runs(*range(25)), "next_page_token": "n2", "has_more": True},
               match=[matchers.query_param_matcher({"limit": "25"})])
    mocked.get(API + "/runs/list", json={"runs": runs(*range(25, 50)), "next_page_token": "n3", "has_more": True},
               match=[matchers.query_param_matcher({"limit": "25", "page_token": "n2"})])
    assert len(list(client.list_runs(limit=30))) == 30
    assert len(mocked.calls) == 3  # the third page was never asked for


@pytest.mark.parametrize("kwargs", [{"active_only": True, "completed_only": True}, {"limit": 0}])
def test_list_runs_refuses_caller_errors(client, mocked, kwargs):
    with pytest.raises(ValueError):
        list(client.list_runs(**kwargs))
    assert len(mocked.calls) == 0


def test_list_runs_on_2_2(stub_tokens, sleeps, mocked):
    client = JobsClient(HOST, stub_tokens, api_version="2.2", sleep_func=sleeps, clock=sleeps.clock)
    mocked.get(API22 + "/runs/list", json={"runs": runs(1), "next_page_token": "x"})
    mocked.get(API22 + "/runs/list", json={"runs": runs(2)})
    assert [r["run_id"] for r in client.list_runs()] == [1, 2]


# -- jobs/reset, jobs/update, find_jobs ----------------------------------------------------------

def test_reset_and_update_job_bodies(client, mocked):
    reset = mocked.post(API + "/reset", json={})
    update = mocked.post(API + "/update", json={})
    client.reset_job(4, {"name": "nb", "tasks": []})
    client.update_job(4, {"timeout_seconds": 600}, fields_to_remove=["libraries", "tasks/main/libraries"])
    client.update_job(4, {"max_concurrent_runs": 2})
    assert sent(reset.calls[0]) == {"job_id": 4, "new_settings": {"name": "nb", "tasks": []}}
    assert sent(update.calls[0]) == {"job_id": 4, "new_settings": {"timeout_seconds": 600},
                                     "fields_to_remove": ["libraries", "tasks/main/libraries"]}
    assert sent(update.calls[1]) == {"job_id": 4, "new_settings": {"max_concurrent_runs": 2}}


@pytest.mark.parametrize("path, call", [
    ("/reset", lambda c: c.reset_job(4, {"name": "nb"})),
    ("/update", lambda c: c.update_job(4, {"name": "nb"})),
    ("/runs/repair", lambda c: c.repair_run(5)),
])
def test_the_new_idempotent_posts_are_retried_on_5xx(client, mocked, path, call):
    mocked.post(API + path, status=500, json=error("INTERNAL_ERROR", "oops"))
    mocked.post(API + path, json={"repair_id": 1})
    call(client)
    assert len(mocked.calls) == 2 and mocked.calls[0].request.body == mocked.calls[1].request.body


def test_every_post_but_create_is_known_to_be_idempotent():
    posts = {"jobs/run-now", "jobs/runs/submit", "jobs/runs/repair", "jobs/runs/cancel", "jobs/delete",
             "jobs/reset", "jobs/update"}
    assert IDEMPOTENT_POSTS == posts and "jobs/create" not in IDEMPOTENT_POSTS


def test_find_jobs_filters_by_exact_name_and_tag(client, mocked):
    def job(job_id, name, tags=None):
        return {"job_id": job_id, "settings": {"name": name, **({"tags": tags} if tags is not None else {})}}

    mocked.get(HOST + "/api/2.2/jobs/list", json={"jobs": [job(1, "nightly", {"durable_run_key": "k1"}), job(2, "NIGHTLY", {"durable_run_key": "k1"}),
                                             job(3, "nightly", {"durable_run_key": "k2"}), job(4, "nightly")]})
    assert [j["job_id"] for j in client.find_jobs("nightly")] == [1, 3, 4]
    assert [j["job_id"] for j in client.find_jobs("nightly", tag=("durable_run_key", "k1"))] == [1]
    assert [j["job_id"] for j in client.find_jobs_by_name("nightly")] == [1, 3, 4]


# -- the per-attempt hook ---------------------------------------------------------------------

def test_every_attempt_is_seen_once_with_status_wait_and_request_id(client, mocked, attempts, sleeps):
    mocked.get(API + "/runs/get", status=503, headers={"Retry-After": "4", "x-request-id": "r-1"},
               json=error("TEMPORARILY_UNAVAILABLE", "busy"))
    mocked.get(API + "/runs/get", status=500, headers={"x-request-id": "r-2"}, json=error("INTERNAL_ERROR", "oops"))
    mocked.get(API + "/runs/get", headers={"x-request-id": "r-3"}, json={"run_id": 1})
    client.get_run(1)
    assert [(a.method, a.path, a.attempt, a.status, a.request_id) for a in attempts] == [
        ("GET", "jobs/runs/get", 1, 503, "r-1"), ("GET", "jobs/runs/get", 2, 500, "r-2"),
        ("GET", "jobs/runs/get", 3, 200, "r-3")]
    assert [a.retry_wait for a in attempts][0] == 4 and attempts[-1].retry_wait is None
    assert attempts[1].retry_wait == sleeps.sleeps[-1]  # what was announced is what was waited
    assert all(isinstance(a, HttpAttempt) and a.error_type is None and a.elapsed_seconds >= 0 for a in attempts)


def test_a_failing_observer_does_not_break_the_call(stub_tokens, sleeps, mocked):
    def broken(attempt):
        raise RuntimeError("exporter down")

    client = JobsClient(HOST, stub_tokens, sleep_func=sleeps, clock=sleeps.clock, attempt_observer=broken)
    mocked.get(API + "/runs/get", json={"run_id": 1})
    assert client.get_run(1) == {"run_id": 1}
