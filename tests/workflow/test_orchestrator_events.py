"""External events that arrive while the orchestrator is NOT waiting for them.

On a real host an event can be delivered while an activity (a poll) is running. The devhost
delivers queued activities first, so these tests drive the real azure-functions-durable replay
engine directly with histories shaped like the extension's, one episode at a time.

SDK 1.7 facts the tests pin down: a raised event resolves the NEWEST waiter of that name, even one
whose task_any is long over (so a waiter per loop iteration loses events that arrive mid-poll),
and an event that arrived before any waiter existed is re-applied to EVERY later waiter of that
name (`deferred_tasks` is never cleared)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from orchestrators import versions
from orchestrators.create_job_and_run import CANCEL_EVENT, RUN_FINISHED_EVENT, create_job_and_run
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

from workflow_support import REQUEST

# The SDK's own note when it parks an event that found no waiter: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Potential duplicate Task completion:UserWarning")

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
_HANDLE = create_job_and_run.build().get_user_function()

RUNNING = {"runId": 2, "jobId": 1, "lifeCycleState": "RUNNING", "stateMessage": "", "runPageUrl": "u",
           "startTime": 1, "endTime": 0, "tasks": [{"taskKey": "main", "runId": 3, "attemptNumber": 0, "startTime": 1}]}


def _flatten(actions):
    out = []

    def walk(item):
        if isinstance(item, list):
            for child in item:
                walk(child)
        elif item.get("actionType") in (11, 12):
            walk(item["compoundActions"])
        else:
            out.append(item)

    walk(actions)
    return out


class Episodes:
    """A minimal extension stand-in: history in, actions out, one delivery per episode."""

    def __init__(self, orchestration_input: dict):
        self.now = T0
        self.input = json.dumps(orchestration_input)
        self.history = [self._ev(12), self._ev(0, Name="create_job_and_run", Version=versions.CURRENT, Input=self.input)]
        self.next_id = 0
        self.seen = 0
        self.ids: list = []  # sequence id per flattened action (None for event waiters)
        self.state: dict = {}

    def _ev(self, event_type, **fields):
        ts = self.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"EventType": event_type, "EventId": -1, "IsPlayed": False, "Timestamp": ts, **fields}

    def run(self) -> list:
        """Replay; returns the new actions (each with its sequence id under 'id')."""
        ctx = {"history": self.history, "input": self.input, "instanceId": "inst-1", "isReplaying": False,
               "parentInstanceId": None, "upperSchemaVersion": 1, "upperSchemaVersionNew": 2}
        self.state = json.loads(_HANDLE(json.dumps(ctx)))
        flat = _flatten(self.state["actions"])
        new = []
        for action in flat[self.seen:]:
            if action["actionType"] in (0, 1, 5, 9):  # a signal to an entity takes a sequence id too
                self.ids.append(self.next_id)
                if action["actionType"] == 5:
                    self.history.append(self._ev(10, EventId=self.next_id, FireAt=action["fireAt"]))
                elif action["actionType"] == 9:
                    self.history.append(self._ev(14, EventId=self.next_id, InstanceId=action["instanceId"],
                                                 Name=action["operation"], Input=action["input"]))
                else:
                    self.history.append(self._ev(4, EventId=self.next_id, Name=action["functionName"]))
                self.next_id += 1
            else:
                self.ids.append(None)
            new.append({**action, "id": self.ids[-1]})
        self.seen = len(flat)
        self.history.append(self._ev(13))
        return new

    def pending(self, function_name: str) -> int:
        """The NEWEST pending call (an activity interrupted by a cancel stays pending forever)."""
        for action, tid in reversed(list(zip(_flatten(self.state["actions"]), self.ids))):
            if action.get("functionName") == function_name and tid is not None:
                done = any(e.get("TaskScheduledId") == tid for e in self.history)
                if not done:
                    return tid
        raise AssertionError(f"no pending {function_name}")

    def pending_timer(self) -> dict:
        fired = {e["TimerId"] for e in self.history if e["EventType"] == 11}
        for action, tid in zip(_flatten(self.state["actions"]), self.ids):
            if action["actionType"] == 5 and not action["isCanceled"] and tid not in fired:
                return {**action, "id": tid}
        raise AssertionError("no pending timer")

    def complete(self, function_name: str, result) -> list:
        tid = self.pending(function_name)
        self.now += timedelta(seconds=1)
        self.history += [self._ev(12), self._ev(5, TaskScheduledId=tid, Result=json.dumps(result))]
        return self.run()

    def fire_timer(self) -> list:
        timer = self.pending_timer()
        self.now = datetime.strptime(timer["fireAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        self.history += [self._ev(12), self._ev(11, TimerId=timer["id"], FireAt=timer["fireAt"])]
        return self.run()

    def raise_event(self, name: str, data=None) -> list:
        self.now += timedelta(seconds=1)
        self.history += [self._ev(12), self._ev(15, Name=name, Input=json.dumps(data))]
        return self.run()


def _start(webhooks: bool = False) -> Episodes:
    settings = WorkflowSettings()
    ep = Episodes(orchestration_input(validate_request(dict(REQUEST), settings), settings))
    ep.run()
    ep.complete("createJob", {"jobId": 1, "created": True, "webhooks": webhooks})
    ep.complete("runJobNow", {"runId": 2})
    return ep


def _names(actions) -> list:
    """What the actions schedule; event waiters (first yielded once per execution) and signals to
    the registry of awaited runs are left out."""
    return [a.get("functionName") or {5: "timer"}.get(a["actionType"]) for a in actions if a["actionType"] not in (6, 9)]


def _final_state_after_cancel(ep, after):
    assert _names(after) == ["cancelRun"], _names(after)
    after = ep.complete("cancelRun", {"runId": 2, "canceled": True})
    assert _names(after) == ["getJobRun"]      # the run's final state is read back
    ep.complete("getJobRun", {**RUNNING, "lifeCycleState": "TERMINATED", "resultState": "CANCELED"})
    assert ep.state["isDone"]
    out = ep.state["output"]
    assert (out["resultState"], out["lifeCycleState"], out["databricksResultState"]) == \
        ("CANCELED", "TERMINATED", "CANCELED")
    assert out["cancelRequested"] is True
    return out


def test_cancel_raised_while_a_poll_runs_cancels_the_run_at_once():
    ep = _start()                           # waiting on timer 1 / cancel (no poll at age 0)
    ep.fire_timer()                         # timer 1 wins: poll 1 is scheduled
    after = ep.raise_event(CANCEL_EVENT, {"reason": "http"})   # arrives mid-poll
    _final_state_after_cancel(ep, after)


def test_cancel_raised_while_the_first_poll_is_awaited_cancels_the_run():
    ep = _start()
    _final_state_after_cancel(ep, ep.raise_event(CANCEL_EVENT))


def test_cancel_during_create_job_prevents_the_run():
    settings = WorkflowSettings()
    ep = Episodes(orchestration_input(validate_request(dict(REQUEST), settings), settings))
    assert _names(ep.run()) == ["createJob"]
    after = ep.raise_event(CANCEL_EVENT, {"reason": "changed my mind"})
    assert after == [] and ep.state["isDone"]
    out = ep.state["output"]
    assert out["resultState"] == "CANCELED" and out["runId"] is None and out["cancelRequested"] is True
    assert "runJobNow" not in _names(_flatten(ep.state["actions"]))


def test_cancel_during_run_now_cancels_the_run_it_started():
    settings = WorkflowSettings()
    ep = Episodes(orchestration_input(validate_request(dict(REQUEST), settings), settings))
    ep.run()
    ep.complete("createJob", {"jobId": 1, "created": True})
    after = ep.raise_event(CANCEL_EVENT)       # run-now is in flight
    # The run key is run-now's idempotency token: asking again returns the run, which is cancelled.
    assert _names(after) == ["runJobNow"]
    after = ep.complete("runJobNow", {"runId": 2})
    _final_state_after_cancel(ep, after)


def test_cancel_while_waiting_still_wins_over_the_timer_and_cancels_it():
    ep = _start()
    ep.fire_timer()
    ep.complete("getJobRun", RUNNING)        # now waiting on timer 2
    after = ep.raise_event(CANCEL_EVENT)
    assert _names(after) == ["cancelRun"]
    timers = [a for a in _flatten(ep.state["actions"]) if a["actionType"] == 5]
    assert timers[-1]["isCanceled"] is True  # or the instance would stay Running until it fires


def test_a_cancel_in_the_same_batch_as_continue_as_new_reaches_the_next_execution():
    settings = WorkflowSettings(polls_per_execution=2)
    ep = Episodes(orchestration_input(validate_request(dict(REQUEST), settings), settings))
    ep.run()
    ep.complete("createJob", {"jobId": 1, "created": True})
    ep.complete("runJobNow", {"runId": 2})
    ep.fire_timer()
    ep.complete("getJobRun", RUNNING)
    ep.fire_timer()
    # Poll 2 completes and the cancel arrives in the SAME episode: poll 2 is this execution's last.
    tid = ep.pending("getJobRun")
    ep.now += timedelta(seconds=1)
    ep.history += [ep._ev(12), ep._ev(5, TaskScheduledId=tid, Result=json.dumps(RUNNING)),
                   ep._ev(15, Name=CANCEL_EVENT, Input=json.dumps({"reason": "batch"}))]
    ep.run()
    assert ep.state["isDone"]
    [can] = [a for a in _flatten(ep.state["actions"]) if a["actionType"] == 4]
    carried = json.loads(can["input"])["progress"]
    assert carried["cancel"] == {"reason": "batch"}
    # The next execution acts on it before anything else.
    nxt = Episodes(json.loads(can["input"]))
    assert _names(nxt.run()) == ["cancelRun"]


def test_a_run_finished_signal_makes_the_next_poll_early_and_is_confirmed_with_runs_get():
    ep = _start(webhooks=True)
    after = ep.raise_event(RUN_FINISHED_EVENT, {"runId": 2})   # while waiting for the first poll
    assert _names(after) == ["getJobRun"]
    timers = [a for a in _flatten(ep.state["actions"]) if a["actionType"] == 5]
    assert timers[-1]["isCanceled"] is True
    after = ep.complete("getJobRun", {**RUNNING, "lifeCycleState": "TERMINATED", "resultState": "SUCCESS"})
    assert _names(after) == ["getJobRunOutput"]


def test_a_signal_for_a_run_that_has_not_ended_starts_a_fresh_execution_not_a_busy_loop():
    # The signal comes, and runs/get says the run is still going (it is BLOCKED, or waiting for a
    # retry). The workflow continues as new, so a fresh waiter catches the next signal, and the new
    # execution starts with a wait, not a poll.
    ep = _start(webhooks=True)
    after = ep.raise_event(RUN_FINISHED_EVENT, {"runId": 2})
    assert _names(after) == ["getJobRun"]      # the signal made the poll early
    ep.complete("getJobRun", {**RUNNING, "lifeCycleState": "BLOCKED"})
    assert ep.state["isDone"]
    [can] = [a for a in _flatten(ep.state["actions"]) if a["actionType"] == 4]
    nxt = Episodes(json.loads(can["input"]))
    first = nxt.run()
    assert "getJobRun" not in _names(first) and "timer" in _names(first)


def test_run_finished_raised_mid_poll_makes_the_next_poll_early():
    ep = _start(webhooks=True)
    ep.fire_timer()                          # poll 1 running
    ep.raise_event(RUN_FINISHED_EVENT, {"runId": 2})
    after = ep.complete("getJobRun", RUNNING)
    # The notification was not lost: the next poll is immediate rather than a timer away.
    assert "getJobRun" in _names(after), _names(after)
