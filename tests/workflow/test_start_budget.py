"""The start budget (databricks_jobs/start_budget.py): run-nows of workflows started together are
spaced at the budget's rate, the far ones waited for on durable timers (no activity waits), and a
cancel while a workflow waits for its slot sends no run-now at all."""
from __future__ import annotations

import pytest

from databricks_jobs import start_budget
from jobs_emulator import Behavior, Scenario
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings
from workflow_support import REQUEST


@pytest.fixture(autouse=True)
def budget_on_the_virtual_clock(clock, monkeypatch):
    """Slots on the emulator's virtual clock; a wait for a slot in an activity moves that clock."""
    monkeypatch.setattr(start_budget, "clock", clock.now)
    monkeypatch.setattr(start_budget, "sleep", clock.advance)


def _start(host, count, **overrides):
    settings = WorkflowSettings()
    request = validate_request({**REQUEST, **overrides}, settings)
    return [host.start_new(ORCHESTRATOR_NAME, f"budget-{i}", orchestration_input(request, settings))
            for i in range(count)]


def _run_nows(emulator):
    return [r for r in emulator.request_log if r["path"].endswith("/run-now")]


def test_run_nows_of_workflows_started_together_keep_to_the_rate(host, clock, emulator, monkeypatch):
    monkeypatch.setenv(start_budget.RATE_SETTING, "2")  # 2 run-nows a second
    start_budget.reset()
    started = clock.now()
    ids = _start(host, 6)
    for iid in ids:
        assert host.run_until_complete(iid)["output"]["resultState"] == "SUCCESS"
    sent = _run_nows(emulator)
    times = sorted({r["body"]["idempotency_token"]: r["time"] for r in sent}.values())
    assert len(times) == 6
    # Slots 0.5 s apart: never more than 2 in one second, the last 2.5 s after the first.
    assert all(b - a >= 0.5 - 1e-6 for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] == pytest.approx(2.5, abs=0.01)
    assert times[0] - started < 1  # the first went at once (after createJob's paced lookups)
    assert all(r["status"] == 200 for r in sent)
    # One run-now per workflow (twice under at-least-once delivery, same token, same run).
    assert len(sent) == 6 * (2 if host.activities_twice else 1)
    assert len(emulator.runs) == 6


def test_a_cancel_while_waiting_for_the_slot_sends_no_run_now(host, clock, emulator, monkeypatch):
    monkeypatch.setenv(start_budget.RATE_SETTING, "0.1")  # one run-now every 10 s
    start_budget.reset()
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 5),)))])
    first, second = _start(host, 2)
    host.run_until_idle()
    clock.advance(2)  # the second waits for its slot (10 s after the first) on a durable timer
    host.run_until_idle()
    assert host.get_status(second)["runtimeStatus"] == "Running"
    host.raise_event(second, "cancel", {"reason": "test"})
    status = host.run_until_complete(second)
    assert status["output"]["resultState"] == "CANCELED"
    assert status["output"].get("runId") is None
    assert host.run_until_complete(first)["output"]["resultState"] == "SUCCESS"
    tokens = {r["body"]["idempotency_token"] for r in _run_nows(emulator)}
    assert len(tokens) == 1 and len(emulator.runs) == 1  # only the first workflow's run
    assert not [r for r in emulator.request_log if r["path"].endswith("/runs/cancel")]


def test_the_budget_is_off_at_rate_zero_and_settings_are_checked(monkeypatch):
    assert start_budget.from_env({start_budget.RATE_SETTING: "0"}) is None
    assert start_budget.from_env({start_budget.STORE_SETTING: "off"}) is None
    assert start_budget.from_env({}).rate == 20
    with pytest.raises(ValueError, match=start_budget.RATE_SETTING):
        start_budget.from_env({start_budget.RATE_SETTING: "fast"})
    with pytest.raises(ValueError, match=start_budget.STORE_SETTING):
        start_budget.from_env({start_budget.STORE_SETTING: "redis"})


def test_take_slot_waits_briefly_in_the_activity_and_hands_far_slots_back(monkeypatch):
    now, slept = [100.0], []
    monkeypatch.setattr(start_budget, "clock", lambda: now[0])
    monkeypatch.setattr(start_budget, "sleep", slept.append)
    budget = start_budget.StartBudget(2, start_budget.WorkerSlots())
    assert [start_budget.take_slot(budget, None) for _ in range(3)] == [None, None, None]
    assert slept == [0.5, 1.0]  # slots at 100.5 and 101.0: within a second, waited for here
    assert start_budget.take_slot(budget, None) == 101.5  # further: to the orchestrator's timer
    assert start_budget.take_slot(budget, None, urgent=True) is None  # a cancel's follow-up: no budget
    assert start_budget.take_slot(budget, None, hand_back=False) is None and len(slept) == 2  # release 1.0: none
    now[0] = 101.5
    assert start_budget.take_slot(budget, 101.5) is None  # the held slot has come: sent at once


def test_lookups_and_creations_keep_to_their_rate_across_workflows(monkeypatch):
    now, slept = [100.0], []
    monkeypatch.setattr(start_budget, "clock", lambda: now[0])
    monkeypatch.setattr(start_budget, "sleep", slept.append)
    start_budget.reset()
    for _ in range(3):
        start_budget.pace("https://adb-1.azuredatabricks.net", "jobs/list")
    start_budget.pace("https://adb-1.azuredatabricks.net", "jobs/runs/get")  # not paced here
    start_budget.pace("https://adb-1.azuredatabricks.net", "jobs/create")  # its own timeline
    assert slept == pytest.approx([0.05, 0.10])
    monkeypatch.setenv(start_budget.RATE_SETTING, "0")  # budget off: nothing paced
    start_budget.pace("https://adb-1.azuredatabricks.net", "jobs/list")
    assert len(slept) == 2
    start_budget.reset()
