"""jobs/runs/list (2.1 and 2.2) and the per-endpoint call counts."""

import pytest

from jobs_emulator import Behavior, Scenario

NB = "/Workspace/Users/dev@example.com/"


def ids(page):
    return [r["run_id"] for r in page.get("runs", [])]


def all_pages(api, version="2.2", **params):
    seen, token, pages = [], None, 0
    while True:
        page = api.ok(api.get("runs/list", version, **params, **({"page_token": token} if token else {})))
        pages += 1
        seen += ids(page)
        assert page["has_more"] == ("next_page_token" in page)
        token = page.get("next_page_token")
        if not token:
            return seen, pages


def test_lists_newest_first_with_filters(api, clock):
    a, b = api.create_job(name="a", max_concurrent_runs=10), api.create_job(name="b", max_concurrent_runs=10)
    first = api.run_now(a)
    clock.advance(1)
    second = api.run_now(b)
    clock.advance(1)
    submitted = api.ok(api.post("runs/submit", {"tasks": [{"task_key": "t", "notebook_task": {"notebook_path": NB}}]}))
    third = submitted["run_id"]
    page = api.ok(api.get("runs/list"))
    assert ids(page) == [third, second, first] and page["has_more"] is False
    assert "tasks" not in page["runs"][0]  # only with expand_tasks
    assert ids(api.ok(api.get("runs/list", job_id=a))) == [first]
    assert ids(api.ok(api.get("runs/list", run_type="SUBMIT_RUN"))) == [third]
    assert ids(api.ok(api.get("runs/list", run_type="JOB_RUN"))) == [second, first]
    start = 1_700_000_000_000
    assert ids(api.ok(api.get("runs/list", start_time_from=start + 1000))) == [third, second]
    assert ids(api.ok(api.get("runs/list", start_time_from=start + 1000, start_time_to=start + 1000))) == [second]
    missing = api.get("runs/list", job_id=1)  # no such job: refused, as jobs/get refuses it
    assert missing.status_code == 400 and missing.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_active_only_means_queued_pending_running_terminating(make_emulator, clock):
    scenario = Scenario(rules=[("*/blocked*", Behavior(phases=(("BLOCKED", 100), ("RUNNING", 10))))])
    _, api = make_emulator(scenario=scenario)
    running = api.run_now(api.create_job(NB + "slow_etl"))
    blocked = api.run_now(api.create_job(NB + "blocked_nb"))
    waiting = api.run_now(api.ok(api.post("create", {"tasks": [
        {"task_key": "flaky_x", "max_retries": 1, "min_retry_interval_millis": 600_000,
         "notebook_task": {"notebook_path": NB + "etl"}}]}))["job_id"])
    done = api.run_now(api.create_job(NB + "fast"))
    clock.advance(5)
    assert api.life(blocked)[0] == "BLOCKED" and api.life(waiting)[0] == "WAITING_FOR_RETRY"
    assert ids(api.ok(api.get("runs/list", active_only="true"))) == [running]
    assert ids(api.ok(api.get("runs/list", completed_only="true"))) == [done]
    assert ids(api.ok(api.get("runs/list"))) == [done, waiting, blocked, running]
    r = api.get("runs/list", active_only="true", completed_only="true")
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


def test_limit_is_at_most_25_and_0_means_25(api):
    job_id = api.create_job(max_concurrent_runs=100)
    for _ in range(30):
        api.run_now(job_id)
    assert len(ids(api.ok(api.get("runs/list")))) == 20
    assert len(ids(api.ok(api.get("runs/list", limit=0)))) == 25
    r = api.get("runs/list", limit=26)
    assert (r.status_code, r.json()["message"]) == (400, "Invalid limit 26 - it has to be no more than 25.")
    assert api.get("runs/list", limit=-1).status_code == 400


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_pages_follow_tokens_and_stay_stable_when_new_runs_arrive(api, clock, version):
    job_id = api.create_job(max_concurrent_runs=100)
    created = []
    for _ in range(12):
        created.append(api.run_now(job_id))
        clock.advance(1)
    first = api.ok(api.get("runs/list", version, limit=5))
    assert ids(first) == created[::-1][:5] and "prev_page_token" not in first
    api.run_now(job_id)  # a new run must not shift the next page
    second = api.ok(api.get("runs/list", version, limit=5, page_token=first["next_page_token"]))
    assert ids(second) == created[::-1][5:10]
    back = api.ok(api.get("runs/list", version, limit=5, page_token=second["prev_page_token"]))
    assert ids(back) == ids(first)
    seen, pages = all_pages(api, version, limit=5)
    assert seen == sorted(seen, reverse=True) and len(seen) == 13 and pages == 3
    assert ids(api.ok(api.get("runs/list", version, limit=5, offset=10))) == created[::-1][9:12]
    assert api.get("runs/list", version, page_token="nonsense").status_code == 400


def test_expand_tasks_caps_tasks_at_100_in_2_2(api):
    run_id = api.run_now(api.create_job(tasks=120))
    run_22 = api.ok(api.get("runs/list", "2.2", expand_tasks="true"))["runs"][0]
    assert len(run_22["tasks"]) == 100 and run_22["has_more"] is True
    run_21 = api.ok(api.get("runs/list", "2.1", expand_tasks="true"))["runs"][0]
    assert len(run_21["tasks"]) == 120 and run_21["run_id"] == run_id


def test_active_only_paging_over_a_thousand_runs(make_emulator, clock):
    scenario = Scenario(rules=[("*", Behavior(phases=(("PENDING", 60), ("RUNNING", 3600))))])
    emu, api = make_emulator(scenario=scenario)
    job_id = api.create_job(max_concurrent_runs=1000)
    finished = api.ok(api.post("create", {"tasks": [{"task_key": "t", "notebook_task": {"notebook_path": NB + "q"}}],
                                          "max_concurrent_runs": 1000}))["job_id"]
    for i in range(1000):
        api.run_now(job_id)
        clock.advance(0.5)
    emu.scenario = Scenario()
    for _ in range(200):
        api.run_now(finished)
    clock.advance(10)
    emu.reset_call_counts()
    seen, pages = all_pages(api, active_only="true", limit=25)
    assert len(seen) == 1000 and len(set(seen)) == 1000 and pages == 40
    assert emu.call_counts() == {("GET", "runs/list"): 40}
    clock.advance(7200)  # every run has ended
    assert all_pages(api, active_only="true")[0] == []


def test_call_counts_by_method_and_endpoint(emulator, api):
    job_id = api.create_job()
    run_id = api.run_now(job_id)
    api.run(run_id)
    api.run(run_id, version="2.1")
    api.get("runs/get", run_id=1)  # errors count: the client made the call
    emulator.faults.script("429", path="*/runs/list")
    api.get("runs/list")
    assert emulator.call_counts() == {("POST", "create"): 1, ("POST", "run-now"): 1, ("GET", "runs/get"): 3,
                                      ("GET", "runs/list"): 1}
    assert emulator.call_counts(reset=True)[("GET", "runs/get")] == 3
    assert emulator.call_counts() == {}
    api.get("list")
    emulator.reset_call_counts()
    assert emulator.call_counts() == {}
