"""runs/submit (one-time runs) and runs/repair."""

import pytest

NB = "/Workspace/Users/dev@example.com/"
CLUSTER = "0923-164208-meows279"


def notebook(key, path="etl", **extra):
    return {"task_key": key, "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": NB + path}, **extra}


def error(response):
    assert response.status_code == 400, response.text
    return response.json()["error_code"], response.json()["message"]


def by_key(run):
    return {t["task_key"]: t for t in run["tasks"]}


# -- runs/submit -------------------------------------------------------------------------------------

def test_submit_runs_once_without_a_saved_job(api, clock):
    body = {"run_name": "one-off", "tasks": [notebook("main")], "timeout_seconds": 3600,
            "queue": {"enabled": True}, "webhook_notifications": {},
            "access_control_list": [{"user_name": "a@b.c", "permission_level": "CAN_MANAGE"}]}
    submitted = api.ok(api.post("runs/submit", {**body, "idempotency_token": "one-off-1"}))
    assert set(submitted) == {"run_id"}
    again = api.ok(api.post("runs/submit", {**body, "idempotency_token": "one-off-1"}))
    assert again == submitted  # same token, same run
    run = api.run(submitted["run_id"])
    assert run["run_type"] == "SUBMIT_RUN" and run["run_name"] == "one-off" and run["trigger"] == "ONE_TIME"
    # A one-time run carries the id of a job nobody can see (databricks/databricks-sdk-py#375).
    job_id = run["job_id"]
    assert f"#job/{job_id}/run/{run['run_id']}" in run["run_page_url"]
    assert error(api.get("get", job_id=job_id)) == ("INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
    assert "jobs" not in api.ok(api.get("list"))
    clock.advance(10)
    assert api.life(run["run_id"]) == ("TERMINATED", "SUCCESS")
    assert error(api.get("runs/get-output", run_id=run["run_id"]))[1].startswith("Retrieving the output of runs")
    out = api.ok(api.get("runs/get-output", run_id=run["tasks"][0]["run_id"]))
    assert out["notebook_output"]["result"] and out["metadata"]["run_type"] == "SUBMIT_RUN"
    assert api.run(run["run_id"])["run_name"] == "one-off"


def test_submit_defaults_and_errors(api):
    run = api.run(api.ok(api.post("runs/submit", {"tasks": [notebook("t")]}))["run_id"])
    assert run["run_name"] == "Untitled"
    for body, text in [
        ({"tasks": [notebook("t")], "idempotency_token": "x" * 65},
         "idempotency_token must be a string of at most 64 characters."),
        ({}, "Missing required field: tasks"),
        ({"tasks": [{"task_key": "s", "spark_python_task": {"python_file": "/f.py"}}]}, None),
        ({"tasks": [notebook("t")], "job_clusters": [{"job_cluster_key": "c"}]}, None),
        ({"tasks": [notebook("t", job_cluster_key="c", existing_cluster_id=None)]},
         "Job cluster 'c' is not defined in field 'job_clusters'."),
    ]:
        code, message = error(api.post("runs/submit", body))
        assert code == "INVALID_PARAMETER_VALUE" and (text is None or message == text)
    assert api.session.post(api.url("runs/submit"), data="[]", timeout=5).json()["error_code"] == "MALFORMED_REQUEST"


def test_submit_serverless_python_task_with_an_environment(api, clock):
    run_id = api.ok(api.post("runs/submit", {
        "tasks": [{"task_key": "score", "environment_key": "default",
                   "spark_python_task": {"python_file": "/Workspace/jobs/score.py", "parameters": ["x"]}}],
        "environments": [{"environment_key": "default", "spec": {"environment_version": "2",
                                                                 "dependencies": ["requests"]}}]}))["run_id"]
    clock.advance(10)
    task = api.run(run_id)["tasks"][0]
    assert task["environment_key"] == "default" and task["state"]["result_state"] == "SUCCESS"
    assert '["x"]' in api.ok(api.get("runs/get-output", run_id=task["run_id"]))["logs"]


# -- runs/repair ---------------------------------------------------------------------------------------

@pytest.fixture
def failed_run(api, clock):
    """extract ok -> flaky_transform fails its first attempt -> publish skipped (UPSTREAM_FAILED)."""
    job_id = api.ok(api.post("create", {"name": "repairable", "parameters": [{"name": "day", "default": "mon"}],
                                        "tasks": [notebook("extract"),
                                                  notebook("flaky_transform", depends_on=[{"task_key": "extract"}]),
                                                  notebook("publish", depends_on=[{"task_key": "flaky_transform"}])]}))
    run_id = api.run_now(job_id["job_id"])
    clock.advance(60)
    assert api.life(run_id) == ("INTERNAL_ERROR", "FAILED")
    return run_id


def test_repair_reruns_the_failed_tasks_and_the_run_ends_again(api, clock, failed_run):
    before = by_key(api.run(failed_run))
    repair = api.ok(api.post("runs/repair", {"run_id": failed_run, "rerun_all_failed_tasks": True}))
    assert set(repair) == {"repair_id"}
    run = api.run(failed_run)
    assert run["state"]["life_cycle_state"] == "PENDING" and run["end_time"] == 0  # back to non-terminal
    assert [t["task_key"] for t in run["tasks"]] == ["extract", "flaky_transform", "publish",
                                                     "flaky_transform", "publish"]
    rerun = run["tasks"][3]
    assert rerun["run_id"] not in {t["run_id"] for t in before.values()}
    assert rerun["attempt_number"] == 1 and run["tasks"][4]["state"]["life_cycle_state"] == "BLOCKED"
    clock.advance(60)
    run = api.run(failed_run, include_history="true")
    assert (run["state"]["life_cycle_state"], run["state"]["result_state"]) == ("TERMINATED", "SUCCESS")
    history = run["repair_history"]
    assert [h["type"] for h in history] == ["ORIGINAL", "REPAIR"]
    assert history[1]["id"] == repair["repair_id"]
    assert history[0]["state"]["result_state"] == "FAILED" and history[1]["state"]["result_state"] == "SUCCESS"
    assert history[0]["task_run_ids"] == [t["run_id"] for t in before.values()]
    assert history[1]["task_run_ids"] == [t["run_id"] for t in run["tasks"][3:]]
    assert history[1]["start_time"] >= history[0]["end_time"] > history[0]["start_time"]
    assert history[1]["status"]["termination_details"]["code"] == "SUCCESS"
    assert "repair_history" not in api.run(failed_run)  # only with include_history
    assert api.run(failed_run)["run_duration"] == run["end_time"] - run["start_time"]


def test_repair_is_refused_while_the_run_is_active(api):
    run_id = api.run_now(api.create_job())
    code, message = error(api.post("runs/repair", {"run_id": run_id, "rerun_all_failed_tasks": True}))
    assert code == "INVALID_STATE" and "still in progress" in message


def test_a_second_repair_needs_the_latest_repair_id(api, clock, failed_run):
    first = api.ok(api.post("runs/repair", {"run_id": failed_run, "rerun_tasks": ["publish"]}))["repair_id"]
    clock.advance(60)
    needs = "The latest repair ID needs to be provided in order to create a new repair"
    for latest in (None, first - 1):
        body = {"run_id": failed_run, "rerun_tasks": ["extract"]}
        if latest is not None:
            body["latest_repair_id"] = latest
        assert error(api.post("runs/repair", body)) == ("INVALID_PARAMETER_VALUE", needs)
    second = api.ok(api.post("runs/repair", {"run_id": failed_run, "rerun_tasks": ["extract"],
                                             "latest_repair_id": first}))["repair_id"]
    clock.advance(60)
    # A retried request with the now stale id is refused: how a client tells its repair went through.
    assert error(api.post("runs/repair", {"run_id": failed_run, "rerun_tasks": ["extract"],
                                          "latest_repair_id": first}))[1] == needs
    history = api.run(failed_run, include_history="true")["repair_history"]
    assert [h["id"] for h in history[1:]] == [first, second]


def test_rerun_dependent_tasks_reruns_the_downstream_too(api, clock, failed_run):
    api.ok(api.post("runs/repair", {"run_id": failed_run, "rerun_tasks": ["extract"], "rerun_dependent_tasks": True}))
    clock.advance(60)
    run = api.run(failed_run)
    assert [t["task_key"] for t in run["tasks"][3:]] == ["extract", "flaky_transform", "publish"]
    assert run["state"]["result_state"] == "SUCCESS"


def test_repair_with_new_job_parameters(api, clock, failed_run):
    api.ok(api.post("runs/repair", {"run_id": failed_run, "rerun_all_failed_tasks": True,
                                    "job_parameters": {"day": "fri"}}))
    run = api.run(failed_run)
    assert run["job_parameters"] == [{"name": "day", "default": "mon", "value": "fri"}]
    assert run["tasks"][3]["notebook_task"]["base_parameters"] == {"day": "fri"}


@pytest.mark.parametrize("body, code, message", [
    ({}, "INVALID_PARAMETER_VALUE", "One of rerun_tasks or rerun_all_failed_tasks must be specified."),
    ({"rerun_tasks": ["publish"], "rerun_all_failed_tasks": True}, "INVALID_PARAMETER_VALUE",
     "Only one of rerun_tasks or rerun_all_failed_tasks can be used."),
    ({"rerun_tasks": ["ghost"]}, "INVALID_PARAMETER_VALUE", None),
    ({"rerun_tasks": ["publish"], "job_parameters": {"ghost": "1"}}, "INVALID_PARAMETER_VALUE",
     "Job parameter ghost is not defined in the job's settings.parameters."),
])
def test_repair_request_errors(api, failed_run, body, code, message):
    got_code, got_message = error(api.post("runs/repair", {"run_id": failed_run, **body}))
    assert got_code == code and (message is None or got_message == message)


def test_repair_of_an_unknown_or_a_task_run_id(api, failed_run):
    assert error(api.post("runs/repair", {"run_id": 7, "rerun_all_failed_tasks": True}))[1] == "Run 7 does not exist"
    task_run = api.run(failed_run)["tasks"][0]["run_id"]
    assert error(api.post("runs/repair", {"run_id": task_run, "rerun_all_failed_tasks": True}))[1] == \
        f"Run {task_run} does not exist"


def test_repair_of_a_successful_run_has_nothing_to_rerun(api, clock):
    run_id = api.run_now(api.create_job())
    clock.advance(10)
    assert error(api.post("runs/repair", {"run_id": run_id, "rerun_all_failed_tasks": True}))[1] == \
        f"Run {run_id} has no failed tasks to repair."
    assert api.ok(api.post("runs/repair", {"run_id": run_id, "rerun_tasks": ["main"]}))["repair_id"]


def test_repair_of_a_one_time_run(api, clock):
    run_id = api.ok(api.post("runs/submit", {"tasks": [notebook("flaky_once")]}))["run_id"]
    clock.advance(10)
    assert api.life(run_id) == ("INTERNAL_ERROR", "FAILED")
    api.ok(api.post("runs/repair", {"run_id": run_id, "rerun_all_failed_tasks": True}))
    clock.advance(10)
    assert api.life(run_id) == ("TERMINATED", "SUCCESS")


def test_repair_ends_with_a_webhook_of_its_own(make_emulator, webhook_receiver, clock):
    emu, api = make_emulator(notification_destinations={"d": {"url": webhook_receiver.url}})
    hooks = {"on_success": [{"id": "d"}], "on_failure": [{"id": "d"}]}
    job_id = api.ok(api.post("create", {"tasks": [notebook("flaky_x")], "webhook_notifications": hooks}))["job_id"]
    run_id = api.run_now(job_id)
    clock.on_advance(emu.tick)
    clock.advance(10)
    api.ok(api.post("runs/repair", {"run_id": run_id, "rerun_all_failed_tasks": True}))
    clock.advance(10)
    assert [r["json"]["event_type"] for r in webhook_receiver.received] == ["jobs.on_failure", "jobs.on_success"]


def test_a_run_skipped_for_concurrency_can_be_repaired(api, clock):
    job_id = api.create_job(version="2.1")
    api.run_now(job_id)
    skipped = api.run_now(job_id)
    assert api.life(skipped) == ("SKIPPED", "MAXIMUM_CONCURRENT_RUNS_REACHED") and api.run(skipped)["tasks"] == []
    assert api.post("runs/repair", {"run_id": skipped, "rerun_all_failed_tasks": True}).status_code == 400
    clock.advance(10)
    api.ok(api.post("runs/repair", {"run_id": skipped, "rerun_tasks": ["main"]}))
    clock.advance(10)
    assert api.life(skipped) == ("TERMINATED", "SUCCESS")
