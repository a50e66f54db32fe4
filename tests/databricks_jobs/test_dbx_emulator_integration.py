"""The real JobsClient, built from DATABRICKS_* settings, against the real Jobs API emulator on
loopback, for Jobs API 2.1 and 2.2: the operations the workflow uses, the errors Databricks sends,
and the retry policy meeting injected faults (429, 500, dropped connections, lost replies).

Retry waits go through the client's injectable sleep (recorded, not slept) and the emulator runs on
a virtual clock, so every test takes milliseconds of wall time. The emulator fixtures are in
conftest.py; the activities against the emulator are in test_dbx_activities_emulator.py."""
from __future__ import annotations

import json

import pytest

import databricks_jobs
from databricks_jobs import DatabricksApiError
from databricks_jobs.client import LIST_PAGE_SIZE, get_jobs_client, newest_repair_id
from databricks_jobs.errors import TRANSPORT_ERROR_CODE, TRANSPORT_ERROR_STATUS
from dbx_emulator_support import RETRY_AFTER, TOKEN, calls, notebook_job
from jobs_emulator import MULTI_TASK_OUTPUT_MESSAGE, Behavior, Scenario


@pytest.fixture
def client(emulator_client):
    return emulator_client


# -- the settings-built client ---------------------------------------------------------------

def test_the_process_wide_client_is_built_from_settings_and_speaks_the_configured_version(
        monkeypatch, emulator, api_version):
    databricks_jobs.reset_all()
    monkeypatch.setenv("DATABRICKS_HOST", emulator.base_url)
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_JOBS_API_VERSION", api_version)
    try:
        job_id = get_jobs_client().create_job(notebook_job("from-settings"))
        assert get_jobs_client().get_job(job_id)["settings"]["name"] == "from-settings"
    finally:
        databricks_jobs.reset_all()
    # The emulator accepts only TOKEN (401 otherwise): every call carried the PAT, to this version.
    assert [(r["path"], r["status"]) for r in emulator.request_log] == [
        (f"/api/{api_version}/jobs/create", 200), (f"/api/{api_version}/jobs/get", 200)]


# -- jobs ------------------------------------------------------------------------------------

def test_find_jobs_by_name_follows_every_page_and_keeps_exact_names_only(client, emulator, api_version):
    wanted = {client.create_job(notebook_job("nightly-load")) for _ in range(2 * LIST_PAGE_SIZE + 5)}
    # Databricks (and the emulator) match names case-insensitively; the client must filter exactly.
    other_case = client.create_job(notebook_job("Nightly-Load"))
    client.create_job(notebook_job("something-else"))
    emulator.clear_request_log()

    found = client.find_jobs_by_name("nightly-load")

    assert sorted(j["job_id"] for j in found) == sorted(wanted)  # each exactly once
    assert other_case not in {j["job_id"] for j in found}
    pages = calls(emulator, "/jobs/list")
    # 2 pages and a bit of case-insensitive matches: three pages, the later ones by page token,
    # 100 a page, asked through 2.2 whatever the app's version (2.1 allows at most 25).
    assert [p["query"]["limit"] for p in pages] == [str(LIST_PAGE_SIZE)] * 3 and LIST_PAGE_SIZE == 100
    assert all(p["path"] == "/api/2.2/jobs/list" for p in pages)
    assert [("page_token" in p["query"]) for p in pages] == [False, True, True]
    assert all(p["query"]["name"] == "nightly-load" and p["status"] == 200 for p in pages)


def test_delete_job_then_get_job_fails(client, emulator):
    job_id = client.create_job(notebook_job("short-lived"))
    assert client.get_job(job_id)["job_id"] == job_id
    client.delete_job(job_id)
    with pytest.raises(DatabricksApiError) as raised:
        client.get_job(job_id)
    assert (raised.value.status, raised.value.error_code) == (400, "INVALID_PARAMETER_VALUE")
    assert raised.value.message == f"Job {job_id} does not exist."
    assert client.find_jobs_by_name("short-lived") == []
    assert emulator.jobs == {}


def test_get_job_merges_2_2_task_pages(client, emulator, api_version):
    job_id = client.create_job(notebook_job("wide", tasks=130))
    emulator.clear_request_log()
    job = client.get_job(job_id)
    keys = [t["task_key"] for t in job["settings"]["tasks"]]
    assert sorted(keys) == [f"t{i:03d}" for i in range(130)]
    assert "next_page_token" not in job and "has_more" not in job
    assert len(calls(emulator, "/jobs/get")) == (2 if api_version == "2.2" else 1)


# -- runs ------------------------------------------------------------------------------------

def test_run_now_with_the_same_idempotency_token_returns_the_same_run(client, emulator):
    job_id = client.create_job(notebook_job("idempotent"))
    first = client.run_now(job_id, "instance-1", {"day": "mon"})
    second = client.run_now(job_id, "instance-1", {"day": "mon"})
    assert first == second
    assert list(emulator.runs) == [first]
    # A different token is a different run: the dedupe above is the token's doing.
    third = client.run_now(job_id, "instance-2")
    assert third != first and sorted(emulator.runs) == sorted([first, third])
    assert [r["body"]["idempotency_token"] for r in calls(emulator, "/jobs/run-now")] == [
        "instance-1", "instance-1", "instance-2"]


def test_get_run_merges_2_2_task_pages_so_every_task_appears_once(client, emulator, api_version):
    job_id = client.create_job(notebook_job("wide", tasks=130))
    run_id = client.run_now(job_id, "wide-run")
    emulator.clear_request_log()

    run = client.get_run(run_id)

    task_keys = [t["task_key"] for t in run["tasks"]]
    task_run_ids = [t["run_id"] for t in run["tasks"]]
    assert sorted(task_keys) == [f"t{i:03d}" for i in range(130)]
    assert len(set(task_run_ids)) == 130
    assert set(task_run_ids) == {t["run_id"] for t in emulator.run(run_id)["tasks"]}
    assert not {"next_page_token", "prev_page_token", "has_more"} & set(run)
    gets = calls(emulator, "/jobs/runs/get")
    assert len(gets) == (2 if api_version == "2.2" else 1)  # 2.2 pages tasks by 100


def test_get_run_output_needs_the_task_run_id(client, emulator, vclock):
    job_id = client.create_job(notebook_job("output"))
    run_id = client.run_now(job_id, "output-run", {"day": "mon"})
    vclock.advance(60)  # past the default 3 s life cycle
    run = client.get_run(run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    task_run_id = run["tasks"][0]["run_id"]
    assert task_run_id != run_id

    output = client.get_run_output(task_run_id)
    result = json.loads(output["notebook_output"]["result"])
    assert (result["job_run_id"], result["task_key"], result["parameters"]) == (run_id, "main", {"day": "mon"})

    with pytest.raises(DatabricksApiError) as raised:
        client.get_run_output(run_id)
    assert (raised.value.status, raised.value.error_code) == (400, "INVALID_PARAMETER_VALUE")
    assert raised.value.message == MULTI_TASK_OUTPUT_MESSAGE
    assert str(raised.value).startswith("Databricks API error 400 INVALID_PARAMETER_VALUE: Retrieving the output")


@pytest.mark.parametrize("call", ["get_run", "get_run_output"])
def test_an_unknown_run_is_a_400_that_says_it_does_not_exist(client, emulator, sleeps, call):
    with pytest.raises(DatabricksApiError) as raised:
        getattr(client, call)(123)
    assert (raised.value.status, raised.value.error_code) == (400, "INVALID_PARAMETER_VALUE")
    assert "does not exist" in raised.value.message and "123" in raised.value.message
    assert raised.value.request_id  # carried over from the error body's details
    assert len(emulator.request_log) == 1 and sleeps.sleeps == []  # a 4xx is final


def test_cancel_run_ends_the_run_canceled(client, emulator, vclock):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    run_id = client.run_now(client.create_job(notebook_job("long")), "long-run")
    vclock.advance(10)
    assert client.get_run(run_id)["state"]["life_cycle_state"] == "RUNNING"
    client.cancel_run(run_id)
    vclock.advance(5)  # past the emulator's cancel_seconds
    state = client.get_run(run_id)["state"]
    assert (state["life_cycle_state"], state["result_state"]) == ("TERMINATED", "CANCELED")


# -- faults through the client ---------------------------------------------------------------

def test_a_429_is_waited_out_for_its_retry_after_then_the_call_succeeds(client, emulator, sleeps):
    job_id = client.create_job(notebook_job("throttled"))
    run_id = client.run_now(job_id, "throttled-run")
    emulator.clear_request_log()
    emulator.faults.script("429", path="*/runs/get")
    assert client.get_run(run_id)["run_id"] == run_id
    assert sleeps.sleeps == [RETRY_AFTER]  # the server's Retry-After, not the backoff
    assert [(r["status"], r["fault"]) for r in emulator.request_log] == [(429, "429"), (200, None)]


def test_a_429_on_jobs_create_is_retried_and_creates_one_job(client, emulator, sleeps):
    # A throttled create was refused before any work, so retrying it cannot duplicate the job.
    emulator.faults.script("429", path="*/jobs/create")
    job_id = client.create_job(notebook_job("throttled-create"))
    assert list(emulator.jobs) == [job_id]
    assert sleeps.sleeps == [RETRY_AFTER]
    assert [r["status"] for r in calls(emulator, "/jobs/create")] == [429, 200]


def test_a_lost_run_now_reply_is_retried_with_the_same_token_and_makes_one_run(client, emulator):
    job_id = client.create_job(notebook_job("lost-reply"))
    emulator.faults.script("drop_after", path="*/run-now")
    run_id = client.run_now(job_id, "lost-reply-run")
    assert list(emulator.runs) == [run_id]
    attempts = calls(emulator, "/jobs/run-now")
    assert [a["fault"] for a in attempts] == ["drop_after", None]
    assert {a["body"]["idempotency_token"] for a in attempts} == {"lost-reply-run"}


def test_a_500_on_jobs_create_is_not_retried(client, emulator, sleeps):
    # No idempotency token on jobs/create: a 5xx may follow a created job, so the client reports it.
    emulator.faults.script("500", path="*/jobs/create")
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job(notebook_job("unlucky"))
    assert (raised.value.status, raised.value.error_code) == (500, "INTERNAL_ERROR")
    assert "(emulated)" in raised.value.message  # the server's own message, not a generic one
    assert len(calls(emulator, "/jobs/create")) == 1 and sleeps.sleeps == []


@pytest.mark.parametrize("kind, jobs_left", [("drop", 0), ("drop_after", 1)])
def test_a_dropped_jobs_create_is_reported_not_retried(client, emulator, sleeps, kind, jobs_left):
    """The client cannot tell a connection closed before processing from one closed after (the
    emulator's `drop_after` shows the job may exist), so, as client.py documents, a read error on
    jobs/create is final: a transport error, one request. createJob's find-before-create repairs it."""
    emulator.faults.script(kind, path="*/jobs/create")
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job(notebook_job("dropped"))
    assert raised.value.status == TRANSPORT_ERROR_STATUS and raised.value.error_code == TRANSPORT_ERROR_CODE
    assert raised.value.is_transport_error
    assert str(raised.value).startswith("Databricks API error 0 TRANSPORT_ERROR: POST jobs/create failed")
    assert len(calls(emulator, "/jobs/create")) == 1 and sleeps.sleeps == []
    assert len(emulator.jobs) == jobs_left


@pytest.mark.parametrize("kind", ["500", "503", "drop", "drop_after"])
def test_transient_failures_of_a_get_are_retried(client, emulator, kind):
    job_id = client.create_job(notebook_job("flaky-get"))
    emulator.faults.script(kind, kind, path="*/jobs/get")
    assert client.get_job(job_id)["job_id"] == job_id
    assert [r["fault"] for r in calls(emulator, "/jobs/get")] == [kind, kind, None]


# -- the operations of issues 9 and 10 against the emulator ------------------------------------

FAILING_PATH = "/Workspace/Users/me@contoso.com/fail-load"


def test_submit_run_with_the_same_token_is_one_one_time_run(client, emulator, vclock):
    body = {"run_name": "one-off", "tasks": notebook_job("one-off")["tasks"]}
    first = client.submit_run(body, "submit-1")
    assert client.submit_run(body, "submit-1") == first
    assert client.submit_run(body, "submit-2") != first
    vclock.advance(60)
    run = client.get_run(first)
    assert (run["run_type"], run["state"]["result_state"]) == ("SUBMIT_RUN", "SUCCESS")
    output = client.get_run_output(run["tasks"][0]["run_id"])
    assert json.loads(output["notebook_output"]["result"])["job_run_id"] == first


def test_a_lost_submit_reply_is_retried_and_makes_one_run(client, emulator):
    emulator.faults.script("drop_after", path="*/runs/submit")
    run_id = client.submit_run({"run_name": "lost", "tasks": notebook_job("lost")["tasks"]}, "submit-lost")
    assert [r["fault"] for r in calls(emulator, "/runs/submit")] == ["drop_after", None]
    assert client.get_run(run_id)["run_id"] == run_id


def failed_run(client, vclock, name="repairable"):
    run_id = client.run_now(client.create_job(notebook_job(name, path=FAILING_PATH)), f"{name}-run")
    vclock.advance(60)
    assert client.get_run(run_id)["state"]["result_state"] == "FAILED"
    return run_id


def test_repair_run_then_a_second_repair_with_the_latest_id(client, emulator, vclock):
    run_id = failed_run(client, vclock)
    first = client.repair_run(run_id)
    assert newest_repair_id(client.get_run(run_id, include_history=True)) == first
    vclock.advance(60)
    second = client.repair_run(run_id, latest_repair_id=first)
    assert second != first
    history = client.get_run(run_id, include_history=True)["repair_history"]
    assert [h["type"] for h in history] == ["ORIGINAL", "REPAIR", "REPAIR"]
    assert newest_repair_id({"repair_history": history}) == second


def test_a_repeated_repair_returns_the_repair_already_made(client, emulator, vclock):
    run_id = failed_run(client, vclock, "repeat")
    first = client.repair_run(run_id)
    # The same request again (an activity that ran twice): Databricks refuses it, the client finds the repair.
    assert client.repair_run(run_id) == first
    vclock.advance(60)
    assert client.repair_run(run_id) == first  # refused for the missing latest_repair_id now
    refusals = [r for r in calls(emulator, "/runs/repair") if r["status"] != 200]
    assert len(refusals) == 2 and all(r["status"] == 400 for r in refusals)
    history = client.get_run(run_id, include_history=True)["repair_history"]
    assert [h["type"] for h in history] == ["ORIGINAL", "REPAIR"]


def test_a_lost_repair_reply_is_retried_and_makes_one_repair(client, emulator, vclock):
    run_id = failed_run(client, vclock, "lost-repair")
    emulator.faults.script("drop_after", path="*/runs/repair")
    repair_id = client.repair_run(run_id)
    history = client.get_run(run_id, include_history=True)["repair_history"]
    assert [h["type"] for h in history] == ["ORIGINAL", "REPAIR"] and history[-1]["id"] == repair_id


def test_repairing_a_run_that_never_ended_is_refused(client, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    run_id = client.run_now(client.create_job(notebook_job("busy")), "busy-run")
    with pytest.raises(DatabricksApiError) as raised:
        client.repair_run(run_id)
    assert raised.value.status == 400 and not raised.value.transient


def test_list_runs_pages_through_a_job_s_runs_newest_first(client, emulator, vclock):
    job_id = client.create_job(notebook_job("listed"))
    other = client.create_job(notebook_job("other"))
    client.run_now(other, "other-run")
    started = []
    for i in range(30):
        started.append(client.run_now(job_id, f"listed-{i}"))
        vclock.advance(1)
    emulator.clear_request_log()
    listed = [r["run_id"] for r in client.list_runs(job_id=job_id)]
    assert listed == list(reversed(started))
    pages = calls(emulator, "/runs/list")
    assert len(pages) == 2 and all(p["status"] == 200 for p in pages)
    assert [len(p) for p in client.list_runs_pages(job_id=job_id)] == [25, 5]
    assert [r["run_id"] for r in client.list_runs(job_id=job_id, limit=3)] == list(reversed(started))[:3]


def test_list_runs_active_and_completed(client, emulator, vclock):
    emulator.scenario = Scenario(rules=[("*/long", Behavior(phases=(("RUNNING", 3600),)))])
    done = client.run_now(client.create_job(notebook_job("short")), "short-run")
    vclock.advance(60)
    running = client.run_now(client.create_job(notebook_job("long", path="/Workspace/long")), "long-run")
    vclock.advance(10)
    assert [r["run_id"] for r in client.list_runs(active_only=True)] == [running]
    assert [r["run_id"] for r in client.list_runs(completed_only=True)] == [done]
    since = client.get_run(running)["start_time"]
    assert [r["run_id"] for r in client.list_runs(start_time_from_ms=since)] == [running]


def test_reset_and_update_job(client, emulator):
    job_id = client.create_job(notebook_job("before", tags={"team": "a"}))
    client.reset_job(job_id, notebook_job("after"))
    settings = client.get_job(job_id)["settings"]
    assert settings["name"] == "after" and "team" not in (settings.get("tags") or {})
    client.update_job(job_id, {"timeout_seconds": 600, "tags": {"team": "b"}})
    settings = client.get_job(job_id)["settings"]
    assert (settings["name"], settings["timeout_seconds"], settings["tags"]) == ("after", 600, {"team": "b"})
    client.update_job(job_id, {}, fields_to_remove=["tags"])
    assert "tags" not in client.get_job(job_id)["settings"]


def test_run_now_with_job_parameters(client, emulator, vclock):
    settings = {**notebook_job("parametrised"), "parameters": [{"name": "day", "default": "mon"}]}
    job_id = client.create_job(settings)
    run_id = client.run_now(job_id, "param-run", job_parameters={"day": "tue"})
    run = client.get_run(run_id)
    assert {p["name"]: p.get("value") for p in run["job_parameters"]} == {"day": "tue"}
    assert calls(emulator, "/jobs/run-now")[-1]["body"]["job_parameters"] == {"day": "tue"}


def test_find_jobs_by_tag(client, emulator):
    mine = client.create_job(notebook_job("tagged", tags={"durable_run_key": "k-1"}))
    client.create_job(notebook_job("tagged", tags={"durable_run_key": "k-2"}))
    assert [j["job_id"] for j in client.find_jobs("tagged", tag=("durable_run_key", "k-1"))] == [mine]
