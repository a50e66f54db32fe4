"""Endpoints, errors, idempotency, pagination and the request log."""

import pytest
import requests

from jobs_emulator import MULTI_TASK_OUTPUT_MESSAGE

from .conftest import TOKEN, Api


@pytest.mark.parametrize("headers, message", [
    ({}, "Credential was not sent or was of an unsupported type for this API."),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "Credential was not sent or was of an unsupported type for this API."),
    ({"Authorization": "Bearer "}, "Credential was not sent or was of an unsupported type for this API."),
])
def test_missing_bearer_token_is_401_in_the_databricks_shape(emulator, headers, message):
    r = requests.get(f"{emulator.base_url}/api/2.1/jobs/list", headers=headers, timeout=5)
    assert r.status_code == 401
    body = r.json()
    assert body["error_code"] == "UNAUTHENTICATED" and body["message"] == message
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.RequestInfo"


def test_only_configured_tokens_are_accepted_when_given(make_emulator):
    emu, api = make_emulator(tokens={TOKEN})
    assert api.get("list").status_code == 200
    bad = Api(emu.base_url, token="stale")
    r = bad.get("list")
    assert r.status_code == 401 and r.json()["message"] == "Invalid access token."


def test_unknown_run_is_400_invalid_parameter_value(api):
    for path in ("runs/get", "runs/get-output"):
        r = api.get(path, run_id=123)
        assert r.status_code == 400
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert r.json()["message"] == "Run 123 does not exist"
    r = api.post("runs/cancel", {"run_id": 123})
    assert (r.status_code, r.json()["message"]) == (400, "Run 123 does not exist")


def test_job_id_is_not_a_run_id(api):
    job_id = api.create_job()
    r = api.get("runs/get", run_id=job_id)
    assert r.status_code == 400 and r.json()["message"] == f"Run {job_id} does not exist"


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_get_output_of_the_job_run_is_refused_even_with_one_task(api, version):
    run_id = api.run_now(api.create_job(version=version), version=version)
    r = api.get("runs/get-output", version=version, run_id=run_id)
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert r.json()["message"] == MULTI_TASK_OUTPUT_MESSAGE == (
        "Retrieving the output of runs with multiple tasks is not supported. "
        "Please retrieve the output of each individual task run instead.")


def test_runs_get_with_a_task_run_id_returns_that_task_run(api):
    run_id = api.run_now(api.create_job())
    task_run_id = api.run(run_id)["tasks"][0]["run_id"]
    task_run = api.run(task_run_id)
    assert task_run["run_id"] == task_run_id and task_run["job_run_id"] == run_id
    assert task_run["task_key"] == "main"


def test_idempotency_token_returns_the_same_run(api):
    job_id = api.create_job()
    first = api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": "instance-1"}))
    again = api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": "instance-1"}))
    other = api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": "instance-2"}))
    assert first == again and first["number_in_job"] == first["run_id"]
    assert other["run_id"] != first["run_id"]
    r = api.post("run-now", {"job_id": job_id, "idempotency_token": "x" * 65})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_jobs_get_returns_stored_settings_tags_and_webhooks(api):
    hooks = {"on_start": [{"id": "dest-1"}], "on_success": [{"id": "dest-1"}], "on_failure": [{"id": "dest-1"}]}
    job_id = api.create_job(tags={"durable_instance_id": "abc"}, webhook_notifications=hooks, version="2.1")
    job = api.ok(api.get("get", job_id=job_id))
    settings = job["settings"]
    assert job["job_id"] == job_id and isinstance(job["created_time"], int)
    assert settings["tags"] == {"durable_instance_id": "abc"}
    assert settings["webhook_notifications"] == hooks
    assert settings["format"] == "MULTI_TASK" and settings["max_concurrent_runs"] == 1
    assert "queue" not in settings  # 2.1-created jobs are not queued unless asked
    assert api.ok(api.get("get", job_id=api.create_job(version="2.2")))["settings"]["queue"] == {"enabled": True}
    r = api.get("get", job_id=1)
    assert (r.status_code, r.json()["message"]) == (400, "Job 1 does not exist.")


def test_list_filters_by_exact_case_insensitive_name_and_paginates(api):
    ids = [api.create_job(name="Nightly-ETL") for _ in range(5)]
    api.create_job(name="Nightly-ETL-2")
    assert "jobs" not in api.ok(api.get("list", name="nobody"))  # omitted when empty
    seen, token = [], None
    while True:
        params = {"name": "nightly-etl", "limit": 2, **({"page_token": token} if token else {})}
        page = api.ok(api.get("list", **params))
        seen += [j["job_id"] for j in page["jobs"]]
        assert "tasks" not in page["jobs"][0]["settings"]  # only with expand_tasks
        token = page.get("next_page_token")
        assert page["has_more"] == bool(token)
        if not token:
            break
    assert seen == ids[::-1]  # newest first: offset counts "relative to the most recently created job"
    expanded = api.ok(api.get("list", name="Nightly-ETL-2", expand_tasks="true"))
    assert expanded["jobs"][0]["settings"]["tasks"][0]["task_key"] == "main"
    for bad in (0, 101):
        assert api.get("list", limit=bad).status_code == 400
    # The page size Databricks allows: 25 in 2.1, 100 in 2.2.
    assert api.get("list", limit=26, version="2.1").status_code == 400
    assert api.get("list", limit=25, version="2.1").status_code == 200
    assert api.get("list", limit=100, version="2.2").status_code == 200
    assert api.get("list", page_token="garbage!").status_code == 400


def test_runs_get_paginates_tasks_by_100_in_2_2_only(api):
    job_id = api.create_job(tasks=250)
    run_id = api.run_now(job_id)
    everything = api.run(run_id, version="2.1")
    assert len(everything["tasks"]) == 250 and "next_page_token" not in everything
    pages, token = [], None
    while True:
        page = api.run(run_id, version="2.2", **({"page_token": token} if token else {}))
        pages.append(page["tasks"])
        token = page.get("next_page_token")
        if not token:
            break
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [t["run_id"] for p in pages for t in p] == [t["run_id"] for t in everything["tasks"]]
    job = api.ok(api.get("get", job_id=job_id))
    assert len(job["settings"]["tasks"]) == 100 and job["next_page_token"]


def test_delete_job(api):
    job_id = api.create_job()
    assert api.ok(api.post("delete", {"job_id": job_id})) == {}
    assert api.get("get", job_id=job_id).status_code == 400
    assert api.post("delete", {"job_id": job_id}).status_code == 200  # no action if already removed
    assert api.post("run-now", {"job_id": job_id}).status_code == 400


def test_request_validation_errors(api):
    r = api.session.post(api.url("create"), data="{not json", timeout=5)
    assert (r.status_code, r.json()["error_code"]) == (400, "MALFORMED_REQUEST")
    r = api.post("create", {"tasks": [{"task_key": "a"}, {"task_key": "a"}]})
    assert r.status_code == 400
    r = api.get("runs/get")
    assert r.status_code == 400 and "run_id" in r.json()["message"]
    r = api.get("runs/get", run_id="abc")
    assert r.status_code == 400


def test_unknown_endpoints_and_the_sdk_config_probe(emulator, api):
    r = requests.get(f"{emulator.base_url}/.well-known/databricks-config", timeout=5)
    assert r.status_code == 404
    r = api.get("runs/submit-everything")
    assert (r.status_code, r.json()["error_code"]) == (404, "ENDPOINT_NOT_FOUND")
    r = api.session.get(f"{emulator.base_url}/api/2.0/jobs/list", timeout=5)
    assert r.status_code == 404
    r = api.post("runs/get", {"run_id": 1})  # wrong method
    assert r.status_code == 404


def test_request_log_records_calls_without_credentials(emulator, api):
    job_id = api.create_job()
    api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": "tok-1"}))
    api.get("runs/get", run_id=1)
    requests.get(f"{emulator.base_url}/api/2.2/jobs/list", timeout=5)
    log = emulator.request_log
    assert [(e["method"], e["path"], e["status"], e["error_code"]) for e in log] == [
        ("POST", "/api/2.2/jobs/create", 200, None),
        ("POST", "/api/2.2/jobs/run-now", 200, None),
        ("GET", "/api/2.2/jobs/runs/get", 400, "INVALID_PARAMETER_VALUE"),
        ("GET", "/api/2.2/jobs/list", 401, "UNAUTHENTICATED"),
    ]
    assert log[1]["body"]["idempotency_token"] == "tok-1"
    assert log[2]["query"] == {"run_id": "1"} and log[2]["time"] == pytest.approx(1_700_000_000.0)
    assert TOKEN not in repr(log) and "Bearer" not in repr(log)
    emulator.clear_request_log()
    assert emulator.request_log == []


def test_keep_alive_connection_is_reused(emulator, api):
    for _ in range(3):
        api.get("list")
    assert len({e["client_port"] for e in emulator.request_log}) == 1


def test_inspection_helpers(emulator, api, clock):
    job_id = api.create_job()
    run_id = api.run_now(job_id)
    clock.advance(10)
    assert emulator.jobs[job_id]["settings"]["name"] == "emulated-job"
    assert emulator.runs[run_id]["state"]["result_state"] == "SUCCESS"
    assert emulator.run(run_id)["status"]["state"] == "TERMINATED"


def test_post_body_must_be_a_json_object(api):
    r = api.session.post(api.url("runs/cancel"), json=[1, 2], timeout=5)
    assert (r.status_code, r.json()["error_code"]) == (400, "MALFORMED_REQUEST")


def test_concurrent_run_now_with_one_token_launches_one_run(emulator, api):
    from concurrent.futures import ThreadPoolExecutor
    job_id = api.create_job()

    def trigger(_):
        client = Api(emulator.base_url)
        try:
            return client.ok(client.post("run-now", {"job_id": job_id, "idempotency_token": "same"}))["run_id"]
        finally:
            client.session.close()

    with ThreadPoolExecutor(8) as pool:
        run_ids = set(pool.map(trigger, range(16)))
    assert len(run_ids) == 1 and list(emulator.runs) == list(run_ids)
