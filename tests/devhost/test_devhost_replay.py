"""ReplayHost: orchestrations through the real azure-functions-durable engine, virtual time."""
import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from devhost import (FunctionNotFoundError, InstanceAlreadyExistsError, InstanceGoneError,
                     NonDeterminismError, OrchestrationStuckError, RealClock, ReplayHost)
from devhost.replay import (EVENT_RAISED, ORCHESTRATOR_STARTED, TASK_COMPLETED, TASK_FAILED,
                            TASK_SCHEDULED, TIMER_CREATED, TIMER_FIRED)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)  # the clock fixture's start


def types(history):
    return [e["EventType"] for e in history]


def test_activity_sequence(host):
    iid = host.start_new("sequence", client_input=["Tokyo", "Seattle"])
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!"]
    # Like the extension's status for client-started instances: the input's JSON text.
    assert status["input"] == '["Tokyo", "Seattle"]'
    assert host.executions(iid)[0]["input"] == ["Tokyo", "Seattle"]
    history = host.history(iid)
    scheduled = [e for e in history if e["EventType"] == TASK_SCHEDULED]
    assert [(e["EventId"], e["Name"], e["Input"]) for e in scheduled] == [
        (0, "hello", '"Tokyo"'), (1, "hello", '"Seattle"')]
    completed = [e for e in history if e["EventType"] == TASK_COMPLETED]
    assert [e["Result"] for e in completed] == ['"Hello Tokyo!"', '"Hello Seattle!"']


def test_task_all(host):
    iid = host.start_new("gather", client_input=["a", "b", "c"])
    assert host.run_until_complete(iid)["output"] == ["Hello a!", "Hello b!", "Hello c!"]


def test_retry_fail_fail_ok(host, clock):
    iid = host.start_new("with_retry", client_input={"fail_times": 2})
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == "ok after 3"
    relevant = [(e["EventType"], e.get("EventId") if e["EventType"] in (4, 10)
                 else e.get("TaskScheduledId", e.get("TimerId")))
                for e in host.history(iid) if e["EventType"] in (4, 5, 6, 10, 11)]
    assert relevant == [(4, 0), (6, 0), (10, 1), (11, 1), (4, 2), (6, 2), (10, 3), (11, 3),
                        (4, 4), (5, 4)]
    # Two 5 s retry intervals of virtual time.
    assert clock.now() - T0.timestamp() == pytest.approx(10, abs=0.01)


def test_retry_exhausted_fails_instance(host):
    iid = host.start_new("with_retry", client_input={"fail_times": 5})
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Failed"
    # The extension's layout (devhost.extension): two spaces, then "<Type>: <message>".
    assert status["output"].startswith(
        "Orchestrator function 'with_retry' failed: Activity function 'flaky' failed:  "
        "ValueError: boom 3 \n {")
    failed = [e for e in host.history(iid) if e["EventType"] == TASK_FAILED]
    assert len(failed) == 3
    assert failed[0]["Reason"] == "Activity function 'flaky' failed:  ValueError: boom 1"
    details = json.loads(failed[0]["Details"])
    assert details["Message"] == " ValueError: boom 1"


def test_activity_failure_caught_by_orchestrator(host):
    status = host.run_until_complete(host.start_new("catches_failure"))
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["caught"].startswith(
        "Activity function 'flaky' failed:  ValueError: boom 1 \n {\"$type\":\"System.Exception")


def test_timer_advances_virtual_clock(host, clock):
    started = time.monotonic()
    iid = host.start_new("sleeper", client_input=3600)
    status = host.run_until_complete(iid)
    assert time.monotonic() - started < 30  # a real wait would take the hour
    assert status["output"] == {"start": "2024-01-01T00:00:00+00:00",
                                "end": "2024-01-01T01:00:00+00:00"}
    assert clock.utcnow() == T0 + timedelta(hours=1)
    history = host.history(iid)
    fired = [i for i, e in enumerate(history) if e["EventType"] == TIMER_FIRED][0]
    assert history[fired - 1]["EventType"] == ORCHESTRATOR_STARTED
    assert history[fired - 1]["Timestamp"] == "2024-01-01T01:00:00.000000Z"


def test_long_timer_is_split_like_azure_storage(host, clock):
    iid = host.start_new("sleeper", client_input=10 * 86400)
    status = host.run_until_complete(iid, max_virtual_seconds=11 * 86400)
    assert status["output"]["end"] == "2024-01-11T00:00:00+00:00"
    created = [e["FireAt"] for e in host.history(iid) if e["EventType"] == TIMER_CREATED]
    assert created == ["2024-01-04T00:00:00.000000Z", "2024-01-07T00:00:00.000000Z",
                       "2024-01-11T00:00:00.000000Z"]


def test_task_any_event_wins(host):
    iid = host.start_new("timer_or_event")
    host.run_until_idle()
    assert host.get_status(iid)["runtimeStatus"] == "Running"
    host.raise_event(iid, "approve", {"by": "alice"})
    status = host.run_until_complete(iid)
    assert status["output"] == {"winner": "event", "data": {"by": "alice"}}
    assert host.next_timer_at() is None  # the cancelled timer is no longer pending


def test_task_any_timer_wins(host, clock):
    iid = host.start_new("timer_or_event")
    status = host.run_until_complete(iid)
    assert status["output"] == {"winner": "timer", "at": "2024-01-01T00:01:00+00:00"}
    with pytest.raises(InstanceGoneError):
        host.raise_event(iid, "approve", {})


def test_timer_that_fired_before_the_event_arrived_wins(host, clock):
    iid = host.start_new("timer_or_event")
    host.run_until_idle()
    clock.advance(120)  # timer due at +60 s; the event arrives at +120 s
    host.raise_event(iid, "approve", {})
    assert host.run_until_complete(iid)["output"]["winner"] == "timer"


def test_event_before_waiter_is_buffered(host):
    iid = host.start_new("late_waiter")
    host.raise_event(iid, "go", {"n": 1})  # before the orchestrator even ran
    status = host.run_until_complete(iid)
    assert status["output"] == {"first": "Hello first!", "go": {"n": 1}}
    raised = [e for e in host.history(iid) if e["EventType"] == EVENT_RAISED]
    assert raised[0]["Name"] == "go" and raised[0]["Input"] == '{"n": 1}'


def test_custom_status(host, clock):
    iid = host.start_new("status_steps")
    host.run_until_idle()
    assert host.get_status(iid)["customStatus"] == {"step": "one"}
    clock.advance(10)
    host.run_until_idle()
    assert host.get_status(iid)["customStatus"] == {"step": "two"}
    with pytest.raises(OrchestrationStuckError):
        host.run_until_complete(iid)
    host.raise_event(iid, "next", None)
    status = host.run_until_complete(iid)
    assert (status["output"], status["customStatus"]) == ("done", {"step": "two"})


def test_continue_as_new(host):
    iid = host.start_new("counter")
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"n": 3}
    assert status["input"] == '{"n": 2}'  # the last execution's input (as JSON text)
    executions = host.executions(iid)
    assert [e["input"] for e in executions] == [None, {"n": 1}, {"n": 2}]
    assert len({e["executionId"] for e in executions}) == 3
    # Each execution starts from a fresh history.
    last = host.history(iid)
    assert types(last)[:2] == [ORCHESTRATOR_STARTED, 0]
    assert json.loads(json.loads(last[1]["Input"])) == {"n": 2}
    assert sum(1 for e in last if e["EventType"] == TIMER_CREATED) == 1


@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion")
def test_continue_as_new_drops_unconsumed_events(host, clock):
    iid = host.start_new("counter")
    host.run_until_idle()
    host.raise_event(iid, "ignored", 1)  # delivered into execution 1, never awaited
    host.run_until_idle()
    clock.advance(10)
    host.run_until_idle()
    assert len(host.executions(iid)) == 2
    assert EVENT_RAISED not in types(host.history(iid))


def test_terminate(host):
    iid = host.start_new("waits_forever")
    host.run_until_idle()
    host.terminate(iid, "user asked")
    status = host.get_status(iid)
    assert (status["runtimeStatus"], status["output"]) == ("Terminated", "user asked")
    assert types(host.history(iid))[-1] == 3
    with pytest.raises(InstanceGoneError):
        host.terminate(iid, "again")


def test_start_conflicts_with_running_instance_but_overwrites_finished(host):
    iid = host.start_new("waits_forever", "fixed-id")
    with pytest.raises(InstanceAlreadyExistsError):
        host.start_new("sequence", "fixed-id", ["x"])
    host.terminate(iid, "done")
    assert host.start_new("sequence", "fixed-id", ["x"]) == "fixed-id"
    assert host.run_until_complete("fixed-id")["output"] == ["Hello x!"]


def test_unknown_orchestrator(host):
    with pytest.raises(FunctionNotFoundError, match="known orchestrator functions"):
        host.start_new("nope")


def test_orchestrator_exception_fails_instance(host):
    status = host.run_until_complete(host.start_new("explodes"))
    assert status["runtimeStatus"] == "Failed"
    assert "orchestrator bug" in status["output"]


def test_nondeterminism_detected(app, clock):
    host = ReplayHost(app, clock)
    iid = host.start_new("nondeterministic")
    with pytest.raises(NonDeterminismError, match="action #1 changed on replay"):
        host.run_until_complete(iid)
    status = host.get_status(iid)
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic workflow detected" in status["output"]


def test_24h_poll_loop_in_virtual_time(host, clock):
    started = time.monotonic()
    iid = host.start_new("day_poller", client_input={"polls": 0, "total": 288})
    status = host.run_until_complete(iid, max_virtual_seconds=2 * 86400)
    elapsed = time.monotonic() - started
    assert status["output"] == {"polls": 288, "end": "2024-01-02T00:00:00+00:00"}
    assert elapsed < 30  # virtual time: a real wait would take the day; speed itself is for bench/
    executions = host.executions(iid)
    assert len(executions) == 288 // 20 + 1
    assert max(len(e["history"]) for e in executions) < 20 * 5 + 10


def test_background_real_time_mode(app):
    host = ReplayHost(app, RealClock()).start()
    try:
        iid = host.start_new("sleeper", client_input=0.3)
        started = time.monotonic()
        status = host.wait_for_completion(iid, timeout=5)
        assert status["runtimeStatus"] == "Completed"
        assert 0.25 < time.monotonic() - started < 10  # fired on the real clock, not at once
        # An event wakes the worker early: no need to wait for the 60 s timer.
        iid = host.start_new("timer_or_event")
        time.sleep(0.1)
        host.raise_event(iid, "approve", "now")
        status = host.wait_for_completion(iid, timeout=5)
        assert status["output"] == {"winner": "event", "data": "now"}
    finally:
        host.stop()
