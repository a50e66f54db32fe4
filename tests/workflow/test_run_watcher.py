"""The workspace run watcher (triggers/run_watcher.py, workflow/watch.py): one timer lists the
active runs of the awaited runs' jobs and tells each workflow whose run has left the list.

The policy first, as plain functions; then whole workflows on devhost with the watcher's timer on
the virtual clock, counting every Jobs API request the emulator sees."""
from __future__ import annotations

from datetime import datetime

import pytest

from jobs_emulator import Behavior, Scenario
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME, RUN_FINISHED_EVENT
from workflow import policy, watch
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

from workflow_support import REQUEST

TICK = 15


# ---------------------------------------------------------------- when to list (pure)

def _simulate(starts_ends, *, tick=TICK, until=None):
    """Ticks of the watcher over runs given as (start, end) seconds, each awaited from its start
    until the first list after its end. Returns (list times, {run: detection lag})."""
    awaited_until = {i: None for i in range(len(starts_ends))}
    credit, lists, lag = 0.0, [], {}
    now = 0.0
    until = until or max(end for _, end in starts_ends) + 3600
    while now <= until and len(lag) < len(starts_ends):
        now += tick
        awaited = {i: {"since": s, "jobId": 1} for i, (s, e) in enumerate(starts_ends) if s <= now and i not in lag}
        listing, credit = watch.list_credit(credit, awaited, now, elapsed=tick, tick=tick, pages=1,
                                            check_every=policy.own_check_interval)
        if listing:
            lists.append(now)
            for i in awaited:
                if starts_ends[i][1] <= now:
                    lag[i] = now - starts_ends[i][1]
    return lists, lag


def _own_polls(start, end):
    age, polls = 0.0, 0
    while age < end - start:
        age += policy.own_check_interval(age)
        polls += 1
    return polls


def test_one_run_alone_is_listed_on_its_own_poll_schedule():
    lists, lag = _simulate([(0, 600)])
    assert len(lists) == _own_polls(0, 600) == 20  # every 30 s, like a 30 s poll
    assert all(b - a == 30 for a, b in zip(lists, lists[1:]))
    assert lag == {0: 0}


def test_a_batch_of_25_is_listed_every_tick_and_so_is_its_tail():
    # 25 runs start together and end over an hour, from 3 h on: the last ones alone in the registry.
    runs = [(0, 3 * 3600 + 150 * i) for i in range(25)]
    lists, lag = _simulate(runs)
    gaps = {b - a for a, b in zip(lists, lists[1:])}
    assert gaps == {TICK}
    assert max(lag.values()) < TICK
    # What the batch saved paid for its tail: never more list calls than the runs' own polls.
    assert len(lists) <= sum(_own_polls(s, e) for s, e in runs)


def test_credit_is_capped_and_dropped_when_nothing_is_awaited():
    awaited = {1: {"since": 0.0}}
    listing, credit = watch.list_credit(10 ** 9, awaited, 60.0, elapsed=TICK, tick=TICK, pages=1,
                                        check_every=policy.own_check_interval)
    assert listing and credit == watch.CREDIT_HORIZON_SECONDS / TICK - 1
    assert watch.list_credit(credit, {}, 75.0, elapsed=TICK, tick=TICK, pages=1,
                             check_every=policy.own_check_interval) == (False, 0.0)


def test_a_list_of_many_pages_waits_until_the_runs_have_earned_all_its_calls():
    young = {i: {"since": 0.0} for i in range(4)}  # 4 runs earn 2 calls per 15 s tick
    listing, credit = watch.list_credit(0.0, young, 15.0, elapsed=TICK, tick=TICK, pages=3,
                                        check_every=policy.own_check_interval)
    assert not listing and credit == 2.0
    assert watch.list_credit(credit, young, 30.0, elapsed=TICK, tick=TICK, pages=3,
                             check_every=policy.own_check_interval) == (True, 1.0)


# ---------------------------------------------------------------- whom to tell (pure)

def test_a_run_that_left_the_list_is_told_once_then_at_its_own_poll_interval_until_seen_again():
    entry = {"instanceId": "w", "jobId": 1, "since": 0.0, "signaledAt": None}
    first = watch.decide({7: entry}, set(), 100.0, check_every=policy.own_check_interval)
    assert first.signal == [(7, "w")]
    state = watch.apply({"runs": {"7": entry}}, "signaled", {"runIds": [7], "at": 100.0})
    told = watch.merged([state])
    # Not again at the next ticks (still absent: BLOCKED or WAITING_FOR_RETRY) ...
    for now in (115.0, 125.0):
        assert watch.decide(told, set(), now, check_every=policy.own_check_interval).signal == []
    # ... but after as long as its own poll would wait (a retry may have come and gone unseen).
    assert watch.decide(told, set(), 130.0, check_every=policy.own_check_interval).signal == [(7, "w")]
    # Seen active again: forgotten that it was told, so its next departure is told at once.
    back = watch.decide(told, {7}, 140.0, check_every=policy.own_check_interval)
    assert back.seen_active == [7] and back.signal == []
    again = watch.merged([watch.apply(state, "seenActive", {"runIds": [7]})])
    assert watch.decide(again, set(), 150.0, check_every=policy.own_check_interval).signal == [(7, "w")]


def test_registry_operations_are_idempotent():
    watched = {"runId": 7, "instanceId": "w", "jobId": 1, "since": 5.0}
    once = watch.apply(None, "watch", watched)
    assert watch.apply(once, "watch", watched) == once
    gone = watch.apply(once, "unwatch", {"runId": 7})
    assert watch.apply(gone, "unwatch", {"runId": 7}) == gone == watch.empty_state()


# ---------------------------------------------------------------- whole workflows

def _start(host, settings=WorkflowSettings(), body=None, **overrides):
    request = validate_request(body or {**REQUEST, **overrides}, settings)
    return host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))


def _tick() -> int:
    from triggers import run_watcher

    return run_watcher.INTERVAL


def _calls(emulator, suffix):
    return len([r for r in emulator.request_log if r["path"].endswith(suffix)])


def _ended(host, instance_id) -> float:
    status = host.get_status(instance_id)
    return datetime.fromisoformat(status["lastUpdatedTime"].replace("Z", "+00:00")).timestamp()


def _registry(host) -> dict:
    return watch.merged(host.read_entity_state(watch.REGISTRY_ENTITY, str(s))["entityState"]
                        for s in range(watch.SHARDS))


def test_thirty_concurrent_runs_cost_a_fraction_of_their_own_polls_and_are_noticed_within_a_tick(
        host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 1200),)))])
    ids = []
    for _ in range(30):  # one definition, started 10 s apart: ends spread over 5 minutes
        ids.append(_start(host))
        host.run_until_idle()
        clock.advance(10)
    statuses = [host.run_until_complete(i) for i in ids]
    assert {s["output"]["resultState"] for s in statuses} == {"SUCCESS"}
    times = 2 if host.activities_twice else 1
    # One confirming runs/get per workflow (under an hour: no safety-net poll), no jobs/get at all.
    assert _calls(emulator, "/runs/get") == 30 * times
    assert _calls(emulator, "/jobs/get") == 0
    # Lists: at most one per tick for all 30 (two pages of 25), where each run polling alone would
    # make 40 calls.
    lists = _calls(emulator, "/runs/list")
    assert lists <= 2 * ((1200 + 300) / _tick() + 2)
    own = sum(_calls(emulator, p) for p in ("/runs/get", "/run-now", "/runs/get-output")) / times
    per_run = (lists + own) / 30
    assert per_run <= 0.25 * (1200 / 30 + 4)  # a quarter of a fixed 30 s poll's calls
    # Each workflow ends within a tick of its run's end.
    for status in statuses:
        run = emulator.run(status["output"]["runId"])
        assert 0 <= _ended(host, status["instanceId"]) - run["end_time"] / 1000 <= _tick()
    host.settle_signals()  # the last unwatch signals are still on their way (devhost realism)
    assert _registry(host) == {}  # every workflow unregistered its run


def test_a_run_waiting_for_a_retry_is_confirmed_not_ended_and_not_told_again_every_tick(host, clock, emulator):
    # RUNNING, then 20 minutes out of the active list without having ended, then RUNNING again.
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(
        ("RUNNING", 120), ("WAITING_FOR_RETRY", 1200), ("RUNNING", 120))))])
    iid = _start(host)
    status = host.run_until_complete(iid)
    assert status["output"]["resultState"] == "SUCCESS"
    times = 2 if host.activities_twice else 1
    confirms = _calls(emulator, "/runs/get") // times
    # Told when it left the list, then no more often than it would poll on its own at its age
    # (30 s while young): far fewer than the ticks it spent out of the list (80 of 15 s).
    assert 2 <= confirms <= 1200 / 30 + 2
    # A lone run is listed as often as it would poll on its own: at its age, every 10 % of it.
    run = emulator.run(status["output"]["runId"])
    age = (run["end_time"] - run["start_time"]) / 1000
    assert _ended(host, iid) - run["end_time"] / 1000 <= policy.own_check_interval(age) + _tick()


def test_a_repaired_run_is_noticed_as_promptly_as_the_first_attempt(host, clock, emulator):
    # The first attempt's signal has fired this execution's waiter; the repaired run's end must
    # still wake the workflow within a list interval, not at the safety-net poll an hour in.
    iid = _start(host, body=dict(jobName="dag", taskKey="flaky_b", repair={"maxAttempts": 1}, tasks=[
        {"task_key": "a", "existing_cluster_id": "0923-164208-meows279",
         "notebook_task": {"notebook_path": "/Workspace/a"}},
        {"task_key": "flaky_b", "depends_on": [{"task_key": "a"}], "existing_cluster_id": "0923-164208-meows279",
         "notebook_task": {"notebook_path": "/Workspace/b"}}]))
    status = host.run_until_complete(iid)
    assert status["output"]["resultState"] == "SUCCESS" and len(status["output"]["repairs"]) == 1
    run = emulator.run(status["output"]["runId"])
    age = (run["end_time"] - run["start_time"]) / 1000
    assert _ended(host, iid) - run["end_time"] / 1000 <= policy.own_check_interval(age) + _tick()


def test_if_the_watcher_stops_a_workflow_still_finishes_at_its_safety_net_poll(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 300),)))])
    iid = _start(host)  # the watcher is on in the settings, so the workflow expects its signal
    host.timer_triggers = False  # ... but it never ticks
    started = clock.now()
    status = host.run_until_complete(iid)
    assert status["output"]["resultState"] == "SUCCESS"
    # Noticed at the first safety-net poll, an hour in (this workflow's place in the spread): one
    # runs/get, not 120 polls.
    first = policy.poll_schedule(signals=True, max_seconds=86400, workflow_key=iid).delay_at(0)
    assert 3600 <= first <= 3600 * 1.25
    assert _ended(host, iid) - started == pytest.approx(first, abs=5)
    assert _calls(emulator, "/runs/get") == (2 if host.activities_twice else 1)


def test_a_webhook_and_the_watcher_both_signalling_cost_one_confirmation(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 300),)))])
    iid = _start(host)
    host.run_until_idle()
    run_id = host.get_status(iid)["customStatus"]["runId"]
    clock.advance(301)  # the run has ended; the watcher's tick and two webhook deliveries arrive
    for _ in range(2):
        host.raise_event(iid, RUN_FINISHED_EVENT, {"runId": run_id, "source": "webhook"})
    status = host.run_until_complete(iid)
    assert status["output"]["resultState"] == "SUCCESS"
    assert _calls(emulator, "/runs/get") == (2 if host.activities_twice else 1)


def test_a_workflow_that_ended_without_unregistering_is_forgotten(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 300),)))])
    iid = _start(host)
    host.run_until_idle()
    run_id = host.get_status(iid)["customStatus"]["runId"]
    host.settle_signals()  # the watch signal arrives after the control queue's latency
    assert run_id in _registry(host)
    host.terminate(iid, "an operator stopped it")  # terminated: its code never runs again
    host.run_until_idle()
    for _ in range(30):
        clock.advance(_tick())
        host.run_until_idle()
    assert _registry(host) == {}
