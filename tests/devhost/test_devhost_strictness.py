"""devhost is as strict as the extension where it used to be lenient (issue #7 §7).

Each test fails on the old devhost: it completed orchestrations with open timers, scheduled work
the extension would still hold back, wrote its own activity failure text, took any custom status
and instance id, delivered one event per episode only, ran each activity once and kept the first
createdTime across continue_as_new."""
import json
from datetime import datetime, timedelta, timezone

import pytest

import devhost_toyapp as toy
from devhost import InvalidInstanceIdError, OrchestrationStuckError, ReplayHost
from devhost.extension import activity_failure, custom_status_error, instance_id_error
from devhost.replay import (EXECUTION_COMPLETED, ORCHESTRATOR_STARTED, TASK_COMPLETED,
                            TASK_FAILED, TASK_SCHEDULED, TIMER_CREATED, TIMER_FIRED,
                            EVENT_RAISED, parse_timestamp)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def types(history):
    return [e["EventType"] for e in history]


# ---------------------------------------------------------------- A1: open timers keep it Running

@pytest.mark.parametrize("mode, status, output", [
    ("return", "Completed", "done"),
    ("raise", "Failed", "Orchestrator function 'leaves_timer_open' failed: gave up"),
])
def test_an_uncancelled_timer_keeps_the_instance_running_until_it_fires(host, clock, mode, status,
                                                                       output):
    iid = host.start_new("leaves_timer_open", client_input=mode)
    host.run_until_idle()
    clock.advance(5)
    host.raise_event(iid, "go")
    host.run_until_idle()
    # The code has returned (or raised), but DTFx only completes with no open task.
    assert host.get_status(iid)["runtimeStatus"] == "Running"
    assert host.next_timer_at() == (T0 + timedelta(seconds=60)).timestamp()
    done = host.run_until_complete(iid)
    assert (done["runtimeStatus"], done["output"]) == (status, output)
    assert done["lastUpdatedTime"] == at(60)


def test_continue_as_new_waits_for_the_open_timer_too(host, clock):
    iid = host.start_new("leaves_timer_open", client_input="continue")
    host.run_until_idle()
    host.raise_event(iid, "go")
    host.run_until_idle()
    assert len(host.executions(iid)) == 1 and host.get_status(iid)["runtimeStatus"] == "Running"
    done = host.run_until_complete(iid)
    assert done["output"] == "second execution"
    assert len(host.executions(iid)) == 2
    assert done["createdTime"] == at(60)  # the new execution started when the timer fired


def test_a_cancelled_timer_stops_counting_but_still_fires_into_the_history(host, clock):
    iid = host.start_new("cancels_then_waits")
    host.run_until_idle()
    host.raise_event(iid, "first")
    host.run_until_idle()
    history = host.history(iid)
    assert TIMER_FIRED not in types(history)
    # DTFx cannot recall a timer message: it fires at +60 s into the history, harmlessly.
    clock.advance_to(T0 + timedelta(seconds=60))
    host.run_until_idle()
    fired = [e for e in host.history(iid) if e["EventType"] == TIMER_FIRED]
    assert [e["TimerId"] for e in fired] == [0]
    assert host.get_status(iid)["runtimeStatus"] == "Running"
    host.raise_event(iid, "second")
    assert host.run_until_complete(iid)["output"] == "done"


# ------------------------------------------------- A2: task_any over an already-scheduled task

def test_a_deadline_shared_by_two_task_any_blocks_the_extension_for_ever(host, clock):
    iid = host.start_new("shared_deadline")
    host.run_until_idle()
    host.raise_event(iid, "a")
    # The deadline fires: the Python code returns "timeout", but the extension awaits the
    # second task_any's only NEW child, the "b" waiter, and never completes the instance.
    with pytest.raises(OrchestrationStuckError):
        host.run_until_complete(iid)
    status = host.get_status(iid)
    assert status["runtimeStatus"] == "Running"
    assert TIMER_FIRED in types(host.history(iid))
    host.raise_event(iid, "b")
    assert host.run_until_complete(iid)["output"] == "timeout"  # Python had moved on long ago


def test_work_after_a_task_any_the_extension_still_waits_on_is_not_scheduled(host, clock):
    iid = host.start_new("shared_cancel_waiter")
    host.run_until_idle()
    clock.advance(10)
    host.run_until_idle()  # first timer fired; the second task_any waits on timer 2 only
    clock.advance(5)
    host.raise_event(iid, "cancel")
    host.run_until_idle()
    # Python has called the activity, but the extension is still awaiting timer 2 (not
    # cancelled by the code): nothing is scheduled until it fires at +20 s.
    assert [e for e in host.history(iid) if e["EventType"] == TASK_SCHEDULED] == []
    assert toy.HELLO_CALLS == []
    done = host.run_until_complete(iid)
    assert done["output"] == {"result": "Hello after cancel!", "at": "2024-01-01T00:00:20+00:00"}


# --------------------------------------------------------------- A3: the failure text layout

def test_activity_failure_reason_and_details_are_the_extensions(host):
    iid = host.start_new("catches_explode", client_input="bad input\nsecond line")
    caught = host.run_until_complete(iid)["output"]
    failed = next(e for e in host.history(iid) if e["EventType"] == TASK_FAILED)
    assert failed["Reason"] == "Activity function 'explode' failed:  ValueError: bad input\nsecond line"
    details = json.loads(failed["Details"])
    assert details["$type"] == "System.Exception, System.Private.CoreLib"
    assert details["Message"] == " ValueError: bad input\nsecond line"
    inner = details["InnerException"]
    assert inner["$type"].startswith("Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException")
    assert inner["Message"].startswith(
        "Result: Failure\nException: ValueError: bad input\nsecond line\nStack:   File ")
    assert "in explode\n    raise ValueError(text)" in inner["Message"]
    assert list(details) == ["$type", "Message", "Data", "InnerException", "HelpLink", "Source",
                             "HResult", "StackTrace"]
    # What the orchestrator's exception says: "<Reason> \n <Details>".
    assert caught == f"{failed['Reason']} \n {failed['Details']}"
    assert "\n" not in failed["Details"]


def test_a_missing_activity_fails_with_the_extensions_message(host):
    caught = host.run_until_complete(host.start_new("calls_missing_activity"))["output"]
    reason, details = caught.split(" \n ", 1)
    assert reason.startswith("Activity function 'no_such_activity' failed: The function "
                             "'no_such_activity' doesn't exist, is disabled, or is not an "
                             "activity function. Additional info: The following are the known "
                             "activity functions: 'explode', 'flaky', 'hello'.")
    assert json.loads(details)["$type"].startswith("Microsoft.Azure.WebJobs.FunctionFailedException")


def test_the_friendly_message_is_cut_at_the_first_stack_label():
    reason, _ = activity_failure("a", RuntimeError("x\nStack: not really"))
    assert reason == "Activity function 'a' failed:  RuntimeError: x"


# ------------------------------------------------------- A4: custom status and instance ids

def test_custom_status_limit_is_16_kb_of_utf16_json_truncated():
    assert custom_status_error("x" * 8701) is None  # 17,406 bytes: "16 KB"
    assert custom_status_error("x" * 8702) == (
        "The UTF-16 size of the JSON-serialized payload must not exceed 16 KB. "
        "The current payload size is 17 KB.")
    assert custom_status_error("\u00e9" * 8702) is not None  # UTF-16, not UTF-8, counts


def test_an_oversized_custom_status_fails_the_orchestration(host):
    ok = host.run_until_complete(host.start_new("big_status", client_input={"chars": 8701}))
    assert ok["runtimeStatus"] == "Completed"
    first = host.run_until_complete(host.start_new("big_status", client_input={"chars": 8702}))
    assert first["runtimeStatus"] == "Failed"
    assert first["output"] == (
        "Orchestrator function 'big_status' failed: The UTF-16 size of the JSON-serialized "
        "payload must not exceed 16 KB. The current payload size is 17 KB.")
    # Later in a run the shim throws before replaying any action, so DTFx meets the history's
    # first scheduled task unscheduled and reports non-determinism instead.
    later = host.run_until_complete(host.start_new("big_status", client_input={
        "chars": 8702, "after_activity": True}))
    assert later["output"].startswith(
        "Non-Deterministic workflow detected: A previous execution of this orchestration "
        "scheduled an activity task with sequence ID 0 and name 'hello' (version ''), but the "
        "current replay execution hasn't (yet?) scheduled this task.")


@pytest.mark.parametrize("instance_id, message", [
    ("@entity", "instanceId (Parameter 'Orchestration instance ids must not start with @.')"),
    ("a#b", "instanceId (Parameter 'Orchestration instance ids must not contain /, \\, #, ?, "
            "or control characters.')"),
    ("tab\there", "instanceId (Parameter 'Orchestration instance ids must not contain /, \\, "
                  "#, ?, or control characters.')"),
    ("x" * 257, "Instance ID lengths must not exceed 256 characters."),
])
def test_instance_ids_the_extension_refuses(host, instance_id, message):
    with pytest.raises(InvalidInstanceIdError) as caught:
        host.start_new("sequence", instance_id, ["x"])
    assert str(caught.value) == message
    assert instance_id_error(instance_id) == message
    assert host.instance_ids() == []


def test_instance_ids_the_extension_accepts(host):
    assert host.start_new("sequence", "x" * 256, []) == "x" * 256
    generated = host.start_new("sequence", "", [])  # empty: a new GUID, as StartNewAsync does
    assert len(generated) == 32 and generated != ""


# ---------------------------------------------- A5: batched events, at-least-once activities

def test_batch_events_delivers_everything_due_in_one_episode(app, clock):
    host = ReplayHost(app, clock, batch_events=True)
    iid = host.start_new("gather", client_input=["a", "b", "c"])
    assert host.run_until_complete(iid)["output"] == ["Hello a!", "Hello b!", "Hello c!"]
    history = types(host.history(iid))
    first_completion = history.index(TASK_COMPLETED)
    assert history[first_completion - 1] == ORCHESTRATOR_STARTED
    assert history[first_completion:first_completion + 3] == [TASK_COMPLETED] * 3
    assert history.count(ORCHESTRATOR_STARTED) == 2

    events = host.start_new("two_events")
    host.run_until_idle()
    host.raise_event(events, "a", 1)
    host.raise_event(events, "b", 2)
    host.run_until_idle()
    history = types(host.history(events))
    assert history.count(ORCHESTRATOR_STARTED) == 2
    assert history[-4:] == [EVENT_RAISED, EVENT_RAISED, EXECUTION_COMPLETED, 13]


def test_without_batching_each_completion_is_its_own_episode(host):
    iid = host.start_new("gather", client_input=["a", "b", "c"])
    host.run_until_complete(iid)
    assert types(host.history(iid)).count(ORCHESTRATOR_STARTED) == 4


def test_activities_twice_runs_each_activity_twice_and_records_one_result(app, clock):
    host = ReplayHost(app, clock, activities_twice=True, batch_events=True)
    iid = host.start_new("sequence", client_input=["x", "y"])
    assert host.run_until_complete(iid)["output"] == ["Hello x!", "Hello y!"]
    assert toy.HELLO_CALLS == ["x", "x", "y", "y"]
    assert types(host.history(iid)).count(TASK_COMPLETED) == 2


def test_options_are_settable_attributes(app, clock):
    host = ReplayHost(app, clock)
    host.activities_twice = True
    host.run_until_complete(host.start_new("sequence", client_input=["z"]))
    assert toy.HELLO_CALLS == ["z", "z"]


# ----------------------------------------------------- A6: createdTime after continue_as_new

def test_created_time_is_the_current_executions_start(host, clock):
    iid = host.start_new("counter")
    done = host.run_until_complete(iid)
    assert len(host.executions(iid)) == 3
    # Azure Storage rewrites CreatedTime from each new ExecutionStarted.
    assert done["createdTime"] == at(20)
    started = host.executions(iid)[-1]["history"][1]
    assert parse_timestamp(started["Timestamp"]) == (T0 + timedelta(seconds=20)).timestamp()
    # So a purge by creation time measures from the last continue_as_new.
    assert host.purge_by(T0.timestamp(), (T0 + timedelta(seconds=19)).timestamp()) == 0
    assert host.purge_by(T0.timestamp(), (T0 + timedelta(seconds=20)).timestamp()) == 1
