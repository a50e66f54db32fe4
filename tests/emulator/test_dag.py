"""Multi-task runs: dependencies, run_if, job-level results, retries, task types and their outputs."""

import json

import pytest

from jobs_emulator import Behavior, Scenario

NB = "/Workspace/Users/dev@example.com/"
CLUSTER = "0923-164208-meows279"


def notebook(key, path="etl", **extra):
    return {"task_key": key, "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": NB + path}, **extra}


def after(*keys, **extra):
    return {"depends_on": [{"task_key": k} for k in keys], **extra}


def create(api, *tasks, **settings):
    return api.ok(api.post("create", {"name": "dag", "tasks": list(tasks), **settings}))["job_id"]


def tasks_by_key(run):
    return {t["task_key"]: t for t in run["tasks"]}


def results(run):
    return {t["task_key"]: (t["state"]["life_cycle_state"], t["state"].get("result_state")) for t in run["tasks"]}


def test_downstream_tasks_are_blocked_until_their_dependencies_end(api, clock):
    run_id = api.run_now(create(api, notebook("extract"), notebook("load", **after("extract"))))
    run = api.run(run_id)
    assert results(run) == {"extract": ("PENDING", None), "load": ("BLOCKED", None)}
    load = tasks_by_key(run)["load"]
    assert load["start_time"] == 0 and load["status"]["state"] == "BLOCKED"
    clock.advance(3)  # extract ran 3 s
    run = api.run(run_id)
    assert run["state"]["life_cycle_state"] == "RUNNING"
    assert results(run) == {"extract": ("TERMINATED", "SUCCESS"), "load": ("PENDING", None)}
    assert tasks_by_key(run)["load"]["start_time"] == tasks_by_key(run)["extract"]["end_time"]
    clock.advance(3)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "SUCCESS" and run["end_time"] - run["start_time"] == 6000


def test_a_failed_task_skips_its_downstream_and_fails_the_job_run(api, clock):
    run_id = api.run_now(create(api, notebook("extract"), notebook("fail_transform", **after("extract")),
                                notebook("publish", **after("fail_transform")),
                                notebook("cleanup", **after("fail_transform", run_if="ALL_DONE"))))
    clock.advance(60)
    run = api.run(run_id)
    assert results(run) == {"extract": ("TERMINATED", "SUCCESS"), "fail_transform": ("TERMINATED", "FAILED"),
                            "publish": ("SKIPPED", "UPSTREAM_FAILED"), "cleanup": ("TERMINATED", "SUCCESS")}
    # The job run reports INTERNAL_ERROR/FAILED for a task failure, as real workspaces do.
    message = ("Task fail_transform failed with message: Workload failed, see run output for details. "
               "This caused all downstream tasks to get skipped.")
    assert run["state"] == {"life_cycle_state": "INTERNAL_ERROR", "result_state": "FAILED",
                            "state_message": message, "user_cancelled_or_timedout": False}
    assert run["status"] == {"state": "TERMINATED", "termination_details": {
        "code": "RUN_EXECUTION_ERROR", "type": "CLIENT_ERROR", "message": message}}
    publish = tasks_by_key(run)["publish"]
    assert publish["start_time"] == 0 and publish["status"]["termination_details"]["code"] == "SKIPPED"


def test_single_failed_task_message_has_no_downstream_sentence(api, clock):
    run_id = api.run_now(create(api, notebook("main", "fail_nb")))
    clock.advance(60)
    state = api.run(run_id)["state"]
    assert state["state_message"] == "Task main failed with message: Workload failed, see run output for details."


def test_success_with_failures_when_every_leaf_task_succeeds(api, clock):
    run_id = api.run_now(create(api, notebook("fail_extract"), notebook("report", **after("fail_extract",
                                                                                          run_if="ALL_DONE"))))
    clock.advance(60)
    run = api.run(run_id)
    assert (run["state"]["life_cycle_state"], run["state"]["result_state"]) == ("TERMINATED", "SUCCESS_WITH_FAILURES")
    assert run["status"]["termination_details"]["code"] == "SUCCESS_WITH_FAILURES"


@pytest.mark.parametrize("run_if, first, second, expected", [
    ("ALL_SUCCESS", "etl", "etl", ("TERMINATED", "SUCCESS")),
    ("ALL_SUCCESS", "etl", "fail_b", ("SKIPPED", "UPSTREAM_FAILED")),
    ("AT_LEAST_ONE_SUCCESS", "fail_a", "etl", ("TERMINATED", "SUCCESS")),
    ("AT_LEAST_ONE_SUCCESS", "fail_a", "fail_b", ("SKIPPED", "UPSTREAM_FAILED")),
    ("NONE_FAILED", "etl", "fail_b", ("SKIPPED", "UPSTREAM_FAILED")),
    ("NONE_FAILED", "etl", "etl", ("TERMINATED", "SUCCESS")),
    ("ALL_DONE", "fail_a", "fail_b", ("TERMINATED", "SUCCESS")),
    ("AT_LEAST_ONE_FAILED", "etl", "fail_b", ("TERMINATED", "SUCCESS")),
    ("AT_LEAST_ONE_FAILED", "etl", "etl", ("SKIPPED", "EXCLUDED")),
    ("ALL_FAILED", "fail_a", "fail_b", ("TERMINATED", "SUCCESS")),
    ("ALL_FAILED", "etl", "fail_b", ("SKIPPED", "EXCLUDED")),
])
def test_run_if_decides_whether_a_task_runs(api, clock, run_if, first, second, expected):
    run_id = api.run_now(create(api, notebook("a", first), notebook("b", second),
                                notebook("c", **after("a", "b", run_if=run_if))))
    clock.advance(60)
    assert results(api.run(run_id))["c"] == expected


def test_a_task_whose_dependencies_are_all_excluded_is_excluded(api, clock):
    run_id = api.run_now(create(api, notebook("a"), notebook("alert", **after("a", run_if="AT_LEAST_ONE_FAILED")),
                                notebook("notify", **after("alert", run_if="ALL_DONE"))))
    clock.advance(60)
    run = api.run(run_id)
    assert results(run)["notify"] == ("SKIPPED", "EXCLUDED")
    assert run["state"]["result_state"] == "SUCCESS"  # excluded tasks count as successful


def test_disabled_task_is_skipped(api, clock):
    run_id = api.run_now(create(api, notebook("a"), notebook("off", disabled=True)))
    clock.advance(60)
    run = api.run(run_id)
    assert results(run)["off"] == ("SKIPPED", "DISABLED") and run["state"]["result_state"] == "SUCCESS"


def test_flaky_task_waits_for_its_retry_then_succeeds(api, clock):
    job_id = create(api, notebook("flaky_load", max_retries=2, min_retry_interval_millis=60_000))
    run_id = api.run_now(job_id)
    clock.advance(3)  # the first attempt failed after 3 s; the retry waits until 60 s after it started
    run = api.run(run_id)
    assert (run["state"]["life_cycle_state"], run["status"]["state"]) == ("WAITING_FOR_RETRY", "WAITING")
    first, retry = run["tasks"]
    assert (first["attempt_number"], first["state"]["result_state"]) == (0, "FAILED")
    assert (retry["attempt_number"], retry["state"]["life_cycle_state"], retry["start_time"]) == (1, "WAITING_FOR_RETRY", 0)
    assert retry["run_id"] != first["run_id"]
    assert api.run(retry["run_id"])["original_attempt_run_id"] == first["run_id"]
    # A run waiting for a retry is not "active" (QUEUED, PENDING, RUNNING, TERMINATING only).
    assert "runs" not in api.ok(api.get("runs/list", active_only="true"))
    clock.advance(57)
    run = api.run(run_id)
    # The retry starts its cluster; the job run, which already ran a task, shows RUNNING.
    assert (run["state"]["life_cycle_state"], run["tasks"][1]["state"]["life_cycle_state"]) == ("RUNNING", "PENDING")
    clock.advance(3)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    assert [t["attempt_number"] for t in run["tasks"]] == [0, 1]


def test_retries_stop_at_max_retries(api, clock):
    run_id = api.run_now(create(api, notebook("crash_it", max_retries=2)))
    clock.advance(600)
    run = api.run(run_id)
    assert [(t["attempt_number"], t["state"]["life_cycle_state"]) for t in run["tasks"]] == [
        (0, "INTERNAL_ERROR"), (1, "INTERNAL_ERROR"), (2, "INTERNAL_ERROR")]
    assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"


def test_flaky_task_without_retries_fails(api, clock):
    run_id = api.run_now(create(api, notebook("flaky_x")))
    clock.advance(60)
    assert api.life(run_id) == ("INTERNAL_ERROR", "FAILED")


def test_task_timeout_seconds_and_retry_on_timeout(api, clock):
    job_id = create(api, notebook("slow_a", timeout_seconds=5),
                    notebook("slow_b", timeout_seconds=5, max_retries=1, retry_on_timeout=True))
    run_id = api.run_now(job_id)
    clock.advance(60)
    run = api.run(run_id)
    assert [(t["task_key"], t["attempt_number"], t["state"]["result_state"]) for t in run["tasks"]] == [
        ("slow_a", 0, "TIMEDOUT"), ("slow_b", 0, "TIMEDOUT"), ("slow_b", 1, "TIMEDOUT")]
    slow_a = tasks_by_key(run)["slow_a"]
    assert (slow_a["setup_duration"], slow_a["end_time"] - slow_a["start_time"]) == (5000, 5000)  # cut at 5 s


def test_outputs_by_task_type(make_emulator, clock):
    _, api = make_emulator()
    job_id = api.ok(api.post("create", {
        "name": "types",
        "environments": [{"environment_key": "py", "spec": {"environment_version": "2"}}],
        "tasks": [
            notebook("nb"),
            {"task_key": "script", "environment_key": "py",
             "spark_python_task": {"python_file": "/Workspace/jobs/score.py", "parameters": ["--day", "mon"]}},
            {"task_key": "wheel", "environment_key": "py",
             "python_wheel_task": {"package_name": "etl", "entry_point": "main", "named_parameters": {"a": "1"}}},
            {"task_key": "query", "sql_task": {"warehouse_id": "wh-1", "query": {"query_id": "q-1"}}},
            {"task_key": "fail_script", "environment_key": "py",
             "spark_python_task": {"python_file": "/Workspace/jobs/broken.py"}},
        ]}))["job_id"]
    run_id = api.run_now(job_id)
    ids = {t["task_key"]: t["run_id"] for t in api.run(run_id)["tasks"]}
    running = api.ok(api.get("runs/get-output", run_id=ids["script"]))
    assert set(running) == {"metadata"}  # nothing before the task ends
    clock.advance(60)
    out = {k: api.ok(api.get("runs/get-output", run_id=v)) for k, v in ids.items()}
    assert json.loads(out["nb"]["notebook_output"]["result"])["task_key"] == "nb"
    assert "logs" not in out["nb"] and "notebook_output" not in out["script"]
    assert '"--day", "mon"' in out["script"]["logs"] and out["script"]["logs_truncated"] is False
    assert "etl:main" in out["wheel"]["logs"] and '"--a=1"' in out["wheel"]["logs"]
    assert out["query"]["sql_output"]["query_output"]["warehouse_id"] == "wh-1"
    assert out["fail_script"]["error"] and "Traceback" in out["fail_script"]["error_trace"]
    assert "Traceback" in out["fail_script"]["logs"]
    assert out["script"]["metadata"]["run_id"] == ids["script"]


def test_scenario_rules_match_the_task_source_path(make_emulator, clock):
    scenario = Scenario(rules=[("/Workspace/jobs/*.py", Behavior(phases=(("RUNNING", 100),), notebook_result="42"))])
    _, api = make_emulator(scenario=scenario)
    job_id = api.ok(api.post("create", {"tasks": [
        {"task_key": "s", "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2",
                                          "num_workers": 1},
         "spark_python_task": {"python_file": "/Workspace/jobs/score.py"}}]}))["job_id"]
    run_id = api.run_now(job_id)
    clock.advance(99)
    assert api.life(run_id) == ("RUNNING", None)
    clock.advance(1)
    task_run = api.run(run_id)["tasks"][0]["run_id"]
    assert api.ok(api.get("runs/get-output", run_id=task_run))["logs"] == "42"


def test_run_job_task_runs_the_other_job(api, clock):
    child_job = create(api, notebook("main", "fail_child"), parameters=[{"name": "day", "default": "mon"}])
    parent_job = create(api, notebook("prep"), {"task_key": "trigger", **after("prep"),
                                                "run_job_task": {"job_id": child_job}},
                        parameters=[{"name": "day", "default": "sun"}])
    run_id = api.run_now(parent_job, job_parameters={"day": "tue"})
    trigger = tasks_by_key(api.run(run_id))["trigger"]
    assert api.ok(api.get("runs/get-output", run_id=trigger["run_id"])).get("run_job_output") is None
    assert [r["run_id"] for r in api.ok(api.get("runs/list"))["runs"]] == [run_id]  # not started yet
    clock.advance(4)
    out = api.ok(api.get("runs/get-output", run_id=trigger["run_id"]))
    child_run_id = out["run_job_output"]["run_id"]
    child = api.run(child_run_id)
    assert child["job_id"] == child_job and child["trigger"] == "RUN_JOB_TASK"
    assert child["trigger_info"] == {"run_id": trigger["run_id"]}
    assert child["job_parameters"] == [{"name": "day", "default": "mon", "value": "tue"}]  # pushed down
    clock.advance(60)
    parent = api.run(run_id)
    assert tasks_by_key(parent)["trigger"]["state"]["result_state"] == "FAILED"  # as the run it started
    assert api.life(child_run_id) == ("INTERNAL_ERROR", "FAILED")
    assert parent["state"]["result_state"] == "FAILED"


def test_cancelling_a_task_run_cancels_its_downstream(api, clock):
    run_id = api.run_now(create(api, notebook("slow_a"), notebook("b", **after("slow_a")),
                                notebook("always", **after("slow_a", run_if="ALL_DONE"))))
    clock.advance(5)
    a = tasks_by_key(api.run(run_id))["slow_a"]["run_id"]
    api.ok(api.post("runs/cancel", {"run_id": a}))
    clock.advance(60)
    run = api.run(run_id)
    assert results(run) == {"slow_a": ("TERMINATED", "CANCELED"), "b": ("SKIPPED", "UPSTREAM_CANCELED"),
                            "always": ("TERMINATED", "SUCCESS")}
    assert (run["state"]["life_cycle_state"], run["state"]["result_state"]) == ("TERMINATED", "CANCELED")


def test_cancelling_the_job_run_cancels_blocked_tasks_and_the_runs_it_started(api, clock):
    child_job = create(api, notebook("main", "slow_child"))
    run_id = api.run_now(create(api, {"task_key": "trigger", "run_job_task": {"job_id": child_job}},
                                notebook("after", **after("trigger"))))
    clock.advance(5)
    child_run_id = api.ok(api.get("runs/list", job_id=child_job))["runs"][0]["run_id"]
    api.ok(api.post("runs/cancel", {"run_id": run_id}))
    clock.advance(60)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "CANCELED"
    assert results(run)["after"] == ("TERMINATED", "CANCELED") and tasks_by_key(run)["after"]["start_time"] == 0
    assert api.life(child_run_id) == ("TERMINATED", "CANCELED")


def test_job_parameters_are_pushed_down_to_notebooks_and_shown_on_the_run(api, clock):
    job_id = create(api, notebook("main", base_parameters=None),
                    parameters=[{"name": "day", "default": "mon"}, {"name": "env", "default": "dev"}])
    run_id = api.run_now(job_id, job_parameters={"day": "tue"})
    run = api.run(run_id)
    assert run["job_parameters"] == [{"name": "day", "default": "mon", "value": "tue"},
                                     {"name": "env", "default": "dev", "value": "dev"}]
    assert "overriding_parameters" not in run  # it holds task parameters (notebook_params, …) only
    assert run["tasks"][0]["notebook_task"]["base_parameters"] == {"day": "tue", "env": "dev"}
    clock.advance(10)
    out = api.ok(api.get("runs/get-output", run_id=run["tasks"][0]["run_id"]))
    assert json.loads(out["notebook_output"]["result"])["parameters"] == {"day": "tue", "env": "dev"}


@pytest.mark.parametrize("settings, body, message", [
    ({"parameters": [{"name": "day", "default": "mon"}]}, {"job_parameters": {"nope": "1"}},
     "Job parameter nope is not defined in the job's settings.parameters."),
    ({}, {"job_parameters": {"day": "1"}},
     "job_parameters can only be used with a job that defines job parameters (settings.parameters)."),
    ({"parameters": [{"name": "day", "default": "mon"}]}, {"notebook_params": {"x": "1"}},
     "notebook_params cannot be used with a job that defines job parameters; use job_parameters."),
    ({}, {"notebook_params": {"x": "y" * 10_000}},
     "The JSON representation of notebook_params cannot exceed 10,000 bytes."),
    ({}, {"only": ["ghost"]}, None),
])
def test_run_now_parameter_errors(api, settings, body, message):
    job_id = create(api, notebook("main"), **settings)
    r = api.post("run-now", {"job_id": job_id, **body})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    if message:
        assert r.json()["message"] == message


def test_run_now_only_runs_the_named_tasks(api, clock):
    job_id = create(api, notebook("a"), notebook("b", **after("a")), notebook("c"))
    run = api.run(api.run_now(job_id, only=["b", "c"]))
    assert sorted(t["task_key"] for t in run["tasks"]) == ["b", "c"]
    assert tasks_by_key(run)["b"]["state"]["life_cycle_state"] == "PENDING"  # its dependency is not in the run


def test_a_run_job_task_that_never_starts_leaves_no_run_behind(api, clock):
    child_job = create(api, notebook("main"))
    run_id = api.run_now(create(api, notebook("prep"), {"task_key": "trigger", **after("prep"),
                                                        "run_job_task": {"job_id": child_job}}))
    clock.advance(1)
    api.ok(api.post("runs/cancel", {"run_id": run_id}))
    clock.advance(60)
    assert "runs" not in api.ok(api.get("runs/list", job_id=child_job))
    assert results(api.run(run_id))["trigger"] == ("TERMINATED", "CANCELED")
