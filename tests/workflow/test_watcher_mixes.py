"""The run watcher for any mix of runs (issue 14 §1): one-time runs, many definitions, a busy
workspace, lists that fail, and a memory of page counts that must not outlive what it describes.

First the choice between per-job lists and one workspace-wide list, as plain functions; then one
round of lists against the emulator (each list's error on its own); then whole workflows on devhost
with the watcher's timer on the virtual clock, counting every Jobs API request the emulator sees."""
from __future__ import annotations

from datetime import datetime

import pytest
import requests

from jobs_emulator import Behavior, Scenario
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow import policy, watch
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

from workflow_support import REQUEST, SECRET_TOKEN

TICK = 15
NOW = 10_000.0


def _awaited(jobs, one_time=0):
    """Awaited runs: `jobs` maps a job id to how many of its runs are awaited."""
    out, run_id = {}, 1000
    for job_id, count in jobs.items():
        for _ in range(count):
            run_id += 1
            out[run_id] = {"instanceId": f"w{run_id}", "jobId": job_id, "since": 0.0, "signaledAt": None}
    for _ in range(one_time):
        run_id += 1
        out[run_id] = {"instanceId": f"w{run_id}", "jobId": None, "since": 0.0, "signaledAt": None}
    return out


# ---------------------------------------------------------------- which lists (pure)

def test_one_shared_job_is_listed_by_itself():
    choice = watch.choose_lists(_awaited({7: 100}), {}, NOW)
    assert choice.sources == (watch.ListSource(job_id=7),) and choice.pages == 4


def test_a_hundred_single_run_jobs_are_listed_workspace_wide():
    choice = watch.choose_lists(_awaited({j: 1 for j in range(100)}), {}, NOW)
    assert choice.workspace and choice.pages == 4 and choice.alternative == 100


def test_one_time_runs_are_listed_by_run_type_beside_the_jobs():
    choice = watch.choose_lists(_awaited({7: 90}, one_time=10), {"workspace": watch.Sighting(500, NOW)}, NOW)
    assert choice.sources == (watch.ListSource(job_id=7), watch.ONE_TIME)
    assert choice.sources[1].params() == {"run_type": "SUBMIT_RUN"} and choice.pages == 4 + 1


def test_in_a_busy_workspace_few_jobs_are_listed_per_job_and_many_workspace_wide():
    busy = {"workspace": watch.Sighting(500, NOW - 60)}
    few = watch.choose_lists(_awaited({1: 30, 2: 30, 3: 40}), busy, NOW)
    assert not few.workspace and few.pages == 2 + 2 + 2 and few.alternative == 24
    many = watch.choose_lists(_awaited({j: 1 for j in range(100)}), busy, NOW)
    assert many.workspace and many.pages == 24 and many.alternative == 100


def test_a_sighting_is_forgotten_after_its_time_so_the_workspace_is_tried_again():
    awaited = _awaited({1: 1, 2: 1})
    busy = {"workspace": watch.Sighting(500, NOW)}
    assert not watch.choose_lists(awaited, busy, NOW + 60).workspace
    later = NOW + watch.SIGHTING_TTL_SECONDS
    assert watch.choose_lists(awaited, busy, later).workspace
    watch.forget_stale(busy, later)
    assert busy == {}


def test_a_complete_workspace_list_teaches_every_job_s_others_and_an_incomplete_one_a_lower_bound():
    awaited = _awaited({1: 2}, one_time=1)
    ours = [{"run_id": r, "job_id": 1, "run_type": "JOB_RUN"} for r in awaited]
    theirs = ([{"run_id": 1, "job_id": 1, "run_type": "JOB_RUN"}] + [{"run_id": 2, "job_id": 9, "run_type": "SUBMIT_RUN"}]
              + [{"run_id": 10 + i, "job_id": 5, "run_type": "JOB_RUN"} for i in range(40)])
    memory = {}
    watch.learn(memory, watch.WORKSPACE, ours + theirs, awaited, complete=True, now=NOW)
    assert memory == {"workspace": watch.Sighting(42, NOW), "job:1": watch.Sighting(1, NOW),
                      "oneTime": watch.Sighting(1, NOW)}
    watch.learn(memory, watch.WORKSPACE, theirs[:25], awaited, complete=False, now=NOW + 15)
    assert memory["workspace"] == watch.Sighting(25 + watch.RUNS_PER_PAGE, NOW + 15)


def test_credit_is_earned_first_and_paid_for_the_calls_made():
    awaited = _awaited({1: 4})  # 4 young runs earn 2 calls per 15 s tick
    credit = watch.earn_credit(0.0, awaited, 15.0, elapsed=TICK, tick=TICK, pages=3,
                               check_every=policy.own_check_interval)
    assert credit == 2.0
    assert watch.earn_credit(credit, {}, 30.0, elapsed=TICK, tick=TICK, pages=3,
                             check_every=policy.own_check_interval) == 0.0


# ---------------------------------------------------------------- one round of lists (emulator)

class _Api:
    """The emulator's Jobs API, called directly: what other teams do in the same workspace."""

    def __init__(self, emulator):
        self.base = f"{emulator.base_url}/api/2.1/jobs"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {SECRET_TOKEN}"

    def create(self, name, notebook="/Workspace/other_team/etl"):
        response = self.session.post(f"{self.base}/create", json={
            "name": name, "max_concurrent_runs": 1000, "tasks": [{
                "task_key": "t", "existing_cluster_id": "0923-164208-meows279",
                "notebook_task": {"notebook_path": notebook}}]}, timeout=10)
        response.raise_for_status()
        return response.json()["job_id"]

    def run_now(self, job_id):
        response = self.session.post(f"{self.base}/run-now", json={"job_id": job_id}, timeout=10)
        response.raise_for_status()
        return response.json()["run_id"]

    def delete(self, job_id):
        self.session.post(f"{self.base}/delete", json={"job_id": job_id}, timeout=10).raise_for_status()


LONG = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 86400),)))])


@pytest.fixture
def api(emulator, databricks_env, monkeypatch):
    import databricks_jobs
    from triggers import run_watcher

    # A failed call is reported at once (no retries within the tick): the next tick is the retry.
    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.1")
    databricks_jobs.reset_all()
    run_watcher.memory.reset()
    emulator.scenario = LONG
    yield _Api(emulator)
    run_watcher.memory.reset()


def _jobs_with_runs(api, runs_per_job):
    """{run id: registry entry} for runs started now, `runs_per_job[i]` runs of job i."""
    awaited = {}
    for i, count in enumerate(runs_per_job):
        job_id = api.create(f"team-{i}")
        for _ in range(count):
            run_id = api.run_now(job_id)
            awaited[run_id] = {"instanceId": f"w{run_id}", "jobId": job_id, "since": 0.0, "signaledAt": None}
    return awaited


def _list_calls(emulator):
    return [r for r in emulator.request_log if r["path"].endswith("/runs/list")]


def test_a_transient_failure_stops_the_round_and_costs_only_the_call_it_made(api, emulator, monkeypatch):
    from databricks_jobs.client import JobsClient
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [1, 1, 1])
    emulator.clear_request_log()
    choice = watch.ListChoice(tuple(watch.ListSource(job_id=e["jobId"]) for e in awaited.values()), 3, 1)
    emulator.faults.script("503", path="*/runs/list")
    round_ = run_watcher._list_round(choice, awaited, budget=3, now=NOW)
    assert round_.calls == 1 and len(_list_calls(emulator)) == 1  # the failed call, then no other list
    assert "503" in round_.interrupted and round_.decided == set() and round_.failed == {}
    # A failure on the second list: the first list's runs are decided, the third list is not made.
    emulator.clear_request_log()
    real = JobsClient.list_runs_page

    def fail_after_first(self, **kwargs):
        page = real(self, **kwargs)
        emulator.faults.script("503", path="*/runs/list")
        return page

    monkeypatch.setattr(JobsClient, "list_runs_page", fail_after_first)
    round_ = run_watcher._list_round(choice, awaited, budget=3, now=NOW)
    first = sorted(awaited)[0]
    assert round_.calls == len(_list_calls(emulator)) == 2 and round_.interrupted
    assert round_.decided == round_.active == {first}


def test_a_deleted_job_s_list_is_refused_for_its_runs_only(api, emulator):
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [2, 1])
    gone_job = max(e["jobId"] for e in awaited.values())
    api.delete(gone_job)
    emulator.clear_request_log()
    choice = watch.choose_lists(awaited, {"workspace": watch.Sighting(500, NOW)}, NOW)
    assert not choice.workspace and len(choice.sources) == 2
    round_ = run_watcher._list_round(choice, awaited, budget=int(choice.pages), now=NOW)
    lists = _list_calls(emulator)
    assert len(lists) == round_.calls == 2 and [r["status"] for r in lists] == [200, 400]
    gone = {r for r, e in awaited.items() if e["jobId"] == gone_job}
    kept = set(awaited) - gone
    assert set(round_.failed) == gone and all("400 INVALID_PARAMETER_VALUE" in e for e in round_.failed.values())
    assert round_.decided == kept == round_.active and round_.refused is None


@pytest.mark.parametrize("fault, refused", [("403", False), ("404", False), ("400", False)])
def test_a_job_list_refused_with_a_4xx_concerns_that_job_only(api, emulator, fault, refused):
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [1, 1])
    emulator.clear_request_log()
    choice = watch.ListChoice(tuple(sorted({watch.ListSource(job_id=e["jobId"]) for e in awaited.values()},
                                           key=lambda s: s.job_id)), 2, 2)
    emulator.faults.script(fault, path="*/runs/list")
    round_ = run_watcher._list_round(choice, awaited, budget=2, now=NOW)
    assert round_.calls == 2 and len(round_.failed) == 1 and len(round_.decided) == 1
    assert round_.refused is None and fault in next(iter(round_.failed.values()))


@pytest.mark.parametrize("fault", ["403", "401"])
def test_a_refusal_of_the_workspace_list_is_a_refusal_of_the_watcher_and_names_the_error(api, emulator, fault):
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [1, 1])
    emulator.clear_request_log()
    if fault == "401":
        emulator.tokens = {"a-token-nobody-has"}  # the credential was revoked
    else:
        emulator.faults.script("403", path="*/runs/list")
    round_ = run_watcher._list_round(watch.ListChoice((watch.WORKSPACE,), 1, 2), awaited, budget=2, now=NOW)
    assert f"Databricks API error {fault}" in round_.refused
    # One call (a 401 is repeated once with a fresh token: the client's rule, not the watcher's).
    assert len(_list_calls(emulator)) == (2 if fault == "401" else 1) and round_.calls == 1


def test_a_workspace_list_stops_once_it_costs_what_per_job_lists_would(api, emulator):
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [1, 1])
    other = api.create("other-team")
    for _ in range(60):
        api.run_now(other)
    emulator.clear_request_log()
    choice = watch.choose_lists(awaited, {}, NOW)  # nothing known: the workspace list is tried
    assert choice.workspace and choice.alternative == 2
    round_ = run_watcher._list_round(choice, awaited, budget=10, now=NOW)
    assert round_.calls == len(_list_calls(emulator)) == 2 and round_.unfinished == ["workspace"]
    assert round_.decided == set()
    # ... and what it saw makes per-job lists the cheaper way from now on.
    assert not watch.choose_lists(awaited, run_watcher.memory.sightings, NOW + TICK).workspace


def test_a_bug_is_not_told_to_anyone(api, emulator, monkeypatch):
    from databricks_jobs.client import JobsClient
    from triggers import run_watcher

    awaited = _jobs_with_runs(api, [1])

    def broken(self, **kwargs):
        raise TypeError("list_runs_page() got an unexpected keyword argument")

    monkeypatch.setattr(JobsClient, "list_runs_page", broken)
    with pytest.raises(TypeError):
        run_watcher._list_round(watch.ListChoice((watch.WORKSPACE,), 1, 1), awaited, budget=1, now=NOW)


# ---------------------------------------------------------------- whole workflows

def _start(host, body, settings=WorkflowSettings()):
    request = validate_request(body, settings)
    return host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))


def _calls(emulator, suffix):
    return len([r for r in emulator.request_log if r["path"].endswith(suffix)])


def _ended(host, instance_id) -> float:
    status = host.get_status(instance_id)
    return datetime.fromisoformat(status["lastUpdatedTime"].replace("Z", "+00:00")).timestamp()


def _times(host):
    return 2 if host.activities_twice else 1


def _own_polls(seconds):
    age, polls = 0.0, 0
    while age < seconds:
        age += policy.own_check_interval(age)
        polls += 1
    return polls


def test_one_time_runs_are_watched_like_any_other_and_cost_one_confirmation_each(host, clock, emulator):
    # Issue 14 cause 1: a one-time run made every list fail, and every workflow was told at each of
    # its own poll intervals as if Databricks had refused the watcher: 140 runs/get instead of 4.
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 1800),)))])
    ids = [_start(host, dict(REQUEST, jobSource="oneTime", jobName=f"adhoc-{i}")) for i in range(4)]
    statuses = [host.run_until_complete(i) for i in ids]
    assert {s["output"]["resultState"] for s in statuses} == {"SUCCESS"}
    assert _calls(emulator, "/runs/get") == 4 * _times(host)
    lists = [r for r in emulator.request_log if r["path"].endswith("/runs/list")]
    assert lists and all(r["query"].get("run_type") == "SUBMIT_RUN" and r["status"] == 200 for r in lists)
    # One page a list for the four, and never more lists than their own polls would have made.
    assert len(lists) <= 4 * _own_polls(1800)
    for status in statuses:
        run = emulator.run(status["output"]["runId"])
        assert 0 <= _ended(host, status["instanceId"]) - run["end_time"] / 1000 <= TICK


def test_thirty_definitions_are_listed_workspace_wide_at_a_fraction_of_their_own_polls(host, clock, emulator):
    # Issue 14 cause 2: listed per job, 30 single-run jobs cost 30 calls a round.
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 1200),)))])
    ids = []
    for i in range(30):
        ids.append(_start(host, dict(REQUEST, jobName=f"team-{i}")))
        host.run_until_idle()
        clock.advance(10)
    statuses = [host.run_until_complete(i) for i in ids]
    assert {s["output"]["resultState"] for s in statuses} == {"SUCCESS"}
    assert _calls(emulator, "/runs/get") == 30 * _times(host)
    lists = [r for r in emulator.request_log if r["path"].endswith("/runs/list")]
    # Workspace-wide, once more than one job is awaited (with one, its own list is as cheap).
    assert len([r for r in lists if "job_id" in r["query"]]) <= 2
    assert all("run_type" not in r["query"] for r in lists)
    # At most a round a tick of two pages (30 runs), where each run polling alone makes 40 calls.
    assert len(lists) <= 2 * ((1200 + 300) / TICK + 2)
    for status in statuses:
        run = emulator.run(status["output"]["runId"])
        assert 0 <= _ended(host, status["instanceId"]) - run["end_time"] / 1000 <= TICK


def test_in_a_busy_workspace_one_definition_is_listed_by_its_job(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*/other_team/*", Behavior(phases=(("RUNNING", 86400),))),
                                        ("*", Behavior(phases=(("RUNNING", 600),)))])
    api = _Api(emulator)
    other = api.create("other-team")
    for _ in range(60):  # three pages of other teams' active runs
        api.run_now(other)
    emulator.clear_request_log()
    ids = [_start(host, dict(REQUEST)) for _ in range(3)]
    statuses = [host.run_until_complete(i) for i in ids]
    assert {s["output"]["resultState"] for s in statuses} == {"SUCCESS"}
    lists = [r for r in emulator.request_log if r["path"].endswith("/runs/list")]
    job_id = statuses[0]["output"]["jobId"]
    assert lists and all(r["query"].get("job_id") == str(job_id) for r in lists)
    # One page a round, at most a round a tick: never the three pages of the workspace's others.
    assert len(lists) <= 600 / TICK + 2 <= 3 * _own_polls(600)
    assert _calls(emulator, "/runs/get") == 3 * _times(host)


def test_after_a_many_page_list_a_lone_run_is_listed_on_its_own_schedule(host, clock, emulator, monkeypatch):
    # Issue 14 cause 4: the page count of a big batch outlived it (its workflows were woken by
    # webhooks, so no short list followed), and the next lone run paid for three pages a list.
    from orchestrators.create_job_and_run import RUN_FINISHED_EVENT

    # The batch's runs all start at once and end together (the start budget, which would spread
    # 60 run-nows over seconds, is not what this test is about).
    monkeypatch.setenv("DATABRICKS_RUN_NOW_RATE", "0")

    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 307),)))])
    batch = [_start(host, dict(REQUEST)) for _ in range(60)]
    host.run_until_idle()
    started = clock.now()
    while clock.now() < started + 300:  # the watcher lists three pages a tick
        clock.advance(TICK)
        host.run_until_idle()
    clock.advance(started + 308 - clock.now())  # the runs have ended: webhooks tell every workflow
    for iid in batch:
        host.raise_event(iid, RUN_FINISHED_EVENT, {"runId": host.get_status(iid)["customStatus"]["runId"],
                                                   "source": "webhook"})
    for iid in batch:
        assert host.run_until_complete(iid)["output"]["resultState"] == "SUCCESS"
    assert clock.now() < started + 315  # before the watcher's next tick
    assert _calls(emulator, "/runs/list") >= 3 * (300 // TICK) - 3
    for _ in range(2):  # the watcher ticks over an empty registry: what the batch saved is dropped
        clock.advance(TICK)
        host.run_until_idle()
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 120),)))])
    emulator.clear_request_log()
    started = clock.now()
    lone = _start(host, dict(REQUEST))
    status = host.run_until_complete(lone)
    assert status["output"]["resultState"] == "SUCCESS"
    lists = sorted(r["time"] for r in emulator.request_log if r["path"].endswith("/runs/list"))
    # One page every 30 s from the start, as the run would poll on its own, not a first list
    # after 90 s (the three pages it was charged for).
    assert lists[0] - started <= policy.own_check_interval(0) + TICK
    assert all(b - a == policy.own_check_interval(0) for a, b in zip(lists, lists[1:]))
    assert len(lists) >= 120 // policy.own_check_interval(0)
    run = emulator.run(status["output"]["runId"])
    assert _ended(host, lone) - run["end_time"] / 1000 <= policy.own_check_interval(120)
    assert len(lists) <= _own_polls(_ended(host, lone) - started)


def test_a_deleted_job_tells_its_workflow_only_and_the_other_job_s_workflow_waits_undisturbed(
        host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*/other_team/*", Behavior(phases=(("RUNNING", 86400),))),
                                        ("*", Behavior(phases=(("RUNNING", 1200),)))])
    api = _Api(emulator)
    other = api.create("other-team")
    for _ in range(60):  # a busy workspace: the two jobs are listed one by one
        api.run_now(other)
    emulator.clear_request_log()
    kept = _start(host, dict(REQUEST, jobName="kept"))
    doomed = _start(host, dict(REQUEST, jobName="doomed"))
    for _ in range(10):
        clock.advance(TICK)
        host.run_until_idle()
    api.delete(host.get_status(doomed)["customStatus"]["jobId"])  # someone deletes the job
    failed = host.run_until_complete(doomed)
    refused = [r for r in emulator.request_log if r["path"].endswith("/runs/list") and r["status"] == 400]
    assert refused and failed["runtimeStatus"] in ("Failed", "Completed")
    # Told at once (not at its safety-net poll an hour in), it saw the deletion on its own runs/get.
    assert _ended(host, doomed) - refused[0]["time"] <= TICK
    status = host.run_until_complete(kept)
    assert status["output"]["resultState"] == "SUCCESS"
    kept_run = status["output"]["runId"]
    confirms = [r for r in emulator.request_log
                if r["path"].endswith("/runs/get") and r["query"].get("run_id") == str(kept_run)]
    assert len(confirms) == _times(host)  # never told early: one confirmation, after its end
    assert confirms[0]["time"] * 1000 >= emulator.run(kept_run)["end_time"]


def test_a_revoked_credential_is_told_to_every_workflow_with_the_error(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    ids = [_start(host, dict(REQUEST, jobName=f"team-{i}")) for i in range(3)]
    for _ in range(4):
        clock.advance(TICK)
        host.run_until_idle()
    emulator.tokens = {"a-token-nobody-has"}
    revoked_at = clock.now()
    statuses = [host.run_until_complete(i) for i in ids]
    assert {s["runtimeStatus"] for s in statuses} <= {"Failed", "Completed"}
    for iid in ids:
        assert _ended(host, iid) - revoked_at <= 2 * TICK + 1  # not at its safety-net poll an hour in
        raised = [e for x in host.executions(iid) for e in x["history"] if e["EventType"] == 15]
        assert any("Databricks API error 401" in (e.get("Input") or "") for e in raised)
