"""Run state progression, computed lazily from a virtual clock."""

import json

import pytest

from jobs_emulator import Scenario
from jobs_emulator.scenario import Behavior, builtin_behavior

NB = "/Workspace/Users/dev@example.com/"


def test_default_run_progresses_and_succeeds_in_about_three_seconds(api, clock):
    job_id = api.create_job(NB + "etl")
    run_id = api.run_now(job_id)
    seen = []
    for _ in range(8):
        run = api.run(run_id)
        seen.append(run["state"]["life_cycle_state"])
        if run["state"]["life_cycle_state"] != "TERMINATED":
            # result_state is only present once the run is terminal, end_time is 0 until then
            assert "result_state" not in run["state"]
            assert run["end_time"] == 0
            assert "result_state" not in run["tasks"][0]["state"]
        clock.advance(0.5)
    assert seen[:3] == ["PENDING", "RUNNING", "RUNNING"]
    assert "TERMINATING" in seen and seen[-1] == "TERMINATED"
    run = api.run(run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    assert run["end_time"] - run["start_time"] == 3000
    assert run["status"] == {"state": "TERMINATED", "termination_details": {
        "code": "SUCCESS", "type": "SUCCESS", "message": ""}}


def test_job_run_and_task_runs_have_distinct_integer_ids_and_urls(api):
    job_id = api.create_job(tasks=3)
    run_id = api.run_now(job_id)
    run = api.run(run_id)
    task_ids = [t["run_id"] for t in run["tasks"]]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in [job_id, run_id, *task_ids])
    assert len({job_id, run_id, *task_ids}) == 5
    assert run["job_id"] == job_id and run["format"] == "MULTI_TASK"
    assert f"#job/{job_id}/run/{run_id}" in run["run_page_url"]
    for task in run["tasks"]:
        assert task["attempt_number"] == 0
        assert f"/run/{task['run_id']}" in task["run_page_url"]
        assert task["start_time"] > 0  # PENDING already counts as started


# A failed task leaves its job run INTERNAL_ERROR/FAILED (the task itself is TERMINATED/FAILED), as
# real workspaces report it (see jobs_emulator/runs.py).
@pytest.mark.parametrize("name, life, result", [
    ("fail_report", "INTERNAL_ERROR", "FAILED"),
    ("skip-me", "SKIPPED", "MAXIMUM_CONCURRENT_RUNS_REACHED"),
    ("crash", "INTERNAL_ERROR", "FAILED"),
    ("timeout_job", "TERMINATED", "TIMEDOUT"),
    ("queued_nb", "TERMINATED", "SUCCESS"),
    ("etl", "TERMINATED", "SUCCESS"),
])
def test_outcome_follows_the_notebook_name(api, clock, name, life, result):
    run_id = api.run_now(api.create_job(NB + name))
    clock.advance(60)
    assert api.life(run_id) == (life, result)


def test_failed_task_output_has_error_and_trace(api, clock):
    run_id = api.run_now(api.create_job(NB + "failing"))
    clock.advance(60)
    task_run = api.run(run_id)["tasks"][0]["run_id"]
    out = api.ok(api.get("runs/get-output", run_id=task_run))
    assert out["error"] and "Traceback" in out["error_trace"]
    assert "result" not in out["notebook_output"]
    assert out["metadata"]["run_id"] == task_run and out["metadata"]["state"]["result_state"] == "FAILED"


def test_success_output_is_a_json_notebook_result_with_merged_parameters(api, clock):
    job_id = api.create_job(NB + "etl")
    run_id = api.run_now(job_id, notebook_params={"y": "2"})
    task_run = api.run(run_id)["tasks"][0]["run_id"]
    running = api.ok(api.get("runs/get-output", run_id=task_run))
    assert "notebook_output" not in running  # nothing to report before the task ends
    clock.advance(3)
    out = api.ok(api.get("runs/get-output", run_id=task_run))
    result = json.loads(out["notebook_output"]["result"])
    assert out["notebook_output"]["truncated"] is False
    assert result["parameters"] == {"x": "1", "y": "2"} and result["job_run_id"] == run_id


def test_slow_runs_ten_times_longer(api, clock):
    slow = api.run_now(api.create_job(NB + "slow_etl"))
    clock.advance(29)
    assert api.life(slow)[0] == "TERMINATING"
    clock.advance(1)
    assert api.life(slow) == ("TERMINATED", "SUCCESS")


def test_queued_notebook_passes_through_queued_and_blocked(api, clock):
    run_id = api.run_now(api.create_job(NB + "queued_report"))
    run = api.run(run_id)
    assert run["state"]["life_cycle_state"] == "QUEUED"
    assert run["status"]["queue_details"]["code"] == "ACTIVE_RUNS_LIMIT_REACHED"
    assert run["tasks"][0]["start_time"] == 0
    clock.advance(1)
    assert api.life(run_id)[0] == "BLOCKED"
    clock.advance(1)
    assert api.life(run_id)[0] == "RUNNING"


def test_scenario_run_ends_at_exactly_600_seconds(make_emulator, clock):
    scenario = Scenario(rules=[("*/exact", Behavior(phases=[("PENDING", 100), ("RUNNING", 500)]))])
    _, api = make_emulator(scenario=scenario)
    start = clock.t
    run_id = api.run_now(api.create_job(NB + "exact"))
    clock.advance_to(start + 599.999)
    assert api.life(run_id) == ("RUNNING", None)
    clock.advance_to(start + 600)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    assert run["end_time"] == int((start + 600) * 1000)


def test_virtual_clock_can_jump_over_a_24_hour_running_phase(tmp_path, make_emulator, clock):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"rules": [{
        "match": "*/nightly*", "phases": [["PENDING", 30], ["RUNNING", 86400], ["TERMINATING", 5]],
        "result_state": "FAILED", "notebook_result": None, "error": "boom", "error_trace": "trace"}]}))
    _, api = make_emulator(scenario=str(path))
    run_id = api.run_now(api.create_job(NB + "nightly_load"))
    clock.advance(12 * 3600)
    assert api.life(run_id) == ("RUNNING", None)
    clock.advance(12 * 3600 + 35)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "FAILED"
    assert run["tasks"][0]["execution_duration"] == 86400 * 1000
    out = api.ok(api.get("runs/get-output", run_id=run["tasks"][0]["run_id"]))
    assert (out["error"], out["error_trace"]) == ("boom", "trace")
    # other paths keep the built-in behaviour
    assert api.life(api.run_now(api.create_job(NB + "crash_it")))[0] == "PENDING"


def test_scenario_notebook_result_and_time_scale(make_emulator, clock):
    scenario = Scenario.from_dict({"time_scale": 0.01, "rules": [
        {"match": "*", "notebook_result": "{\"rows\": 42}", "truncated": True}]})
    _, api = make_emulator(scenario=scenario)
    run_id = api.run_now(api.create_job(NB + "etl"))
    clock.advance(0.031)  # 30 ms scaled run, plus float slack
    run = api.run(run_id)
    assert run["state"]["result_state"] == "SUCCESS"
    out = api.ok(api.get("runs/get-output", run_id=run["tasks"][0]["run_id"]))
    assert out["notebook_output"] == {"result": "{\"rows\": 42}", "truncated": True}


def test_job_timeout_seconds_ends_a_long_run_as_timedout(api, clock):
    run_id = api.run_now(api.create_job(NB + "slow_thing", timeout_seconds=10))
    clock.advance(10)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "TIMEDOUT" and run["state"]["user_cancelled_or_timedout"]


def test_scenario_validation_and_round_trip():
    with pytest.raises(ValueError):
        Scenario.from_dict({"rules": [{"match": "*", "phases": [["TERMINATED", 1]]}]})
    with pytest.raises(ValueError):
        Scenario.from_dict({"rules": [{"phases": []}]})
    with pytest.raises(ValueError):
        Scenario.from_dict({"rules": [{"match": "*", "colour": "red"}]})
    original = Scenario.from_dict({"time_scale": 2, "rules": [
        {"match": "/a/*", "phases": [["RUNNING", 5]], "result_state": "FAILED", "notebook_result": None}]})
    again = Scenario.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again.behavior_for("/a/b") == original.behavior_for("/a/b")
    assert again.behavior_for("/a/b").duration == 10
    assert builtin_behavior("/x/Fail_Report").result_state == "FAILED"  # prefix match ignores case


def test_get_output_returns_the_first_5_mb_of_a_larger_exit_value_and_large_errors_whole(make_emulator, clock):
    """Databricks returns the first 5 MB of an exit value, flagged `truncated`; an error and its
    trace have no stated cap, so the emulator returns them whole however large."""
    from jobs_emulator.views import MAX_NOTEBOOK_RESULT_BYTES

    assert MAX_NOTEBOOK_RESULT_BYTES == 5 * 1024 * 1024
    # A 2-byte character across the 5 MB mark: the cut must not split it.
    big = "x" * (MAX_NOTEBOOK_RESULT_BYTES - 1) + "é" + "x" * 1024 * 1024
    scenario = Scenario(rules=[
        ("*/big", Behavior(phases=[("RUNNING", 1)], notebook_result=big)),
        ("*/exact", Behavior(phases=[("RUNNING", 1)], notebook_result="y" * MAX_NOTEBOOK_RESULT_BYTES)),
        ("*/broken", Behavior(phases=[("RUNNING", 1)], result_state="FAILED", notebook_result="partial",
                              error="E" * 300_000, error_trace="T" * 2_000_000)),
    ])
    _, api = make_emulator(scenario=scenario)
    runs = {name: api.run_now(api.create_job(NB + name)) for name in ("big", "exact", "broken")}
    clock.advance(5)

    def output(name):
        task_run = api.run(runs[name])["tasks"][0]["run_id"]
        return api.ok(api.get("runs/get-output", run_id=task_run))

    cut = output("big")["notebook_output"]
    assert cut["truncated"] is True and len(cut["result"].encode("utf-8")) == MAX_NOTEBOOK_RESULT_BYTES - 1
    assert big.startswith(cut["result"])
    whole = output("exact")["notebook_output"]
    assert whole["truncated"] is False and len(whole["result"]) == MAX_NOTEBOOK_RESULT_BYTES
    failed = output("broken")
    assert (len(failed["error"]), len(failed["error_trace"])) == (300_000, 2_000_000)
    assert failed["notebook_output"] == {"truncated": False, "result": "partial"}
