"""Databricks webhooks end the wait early, in virtual time, through the whole app.

Stack: devhost (`DevServer` over a `ReplayHost`, the real replay engine) with a `VirtualClock`; the
Jobs API emulator on the same clock, whose notification destination is devhost's
/api/databricks/notifications (so the webhook function, the real Durable client and the devhost
management API all take part). The workflow starts from an Event Grid event at t = 10 s; its run
ends at t = 600 s. The test drives the clock in 0.5 s steps (or to the next durable timer, if
sooner), so a notification is delivered no later than 0.5 s after the run ends, as a real one
would be within moments.

Figures (lag = workflow completion - run end, virtual seconds) are printed with -s.
"""
import dataclasses
import json

import pytest
import requests

from devhost.replay import TERMINAL_STATES, parse_timestamp
from triggers.event_grid import FUNCTION_NAME
from workflow.policy import poll_schedule
from workflow.settings import WorkflowSettings

START_AT = 10.0
RUN_ENDS_AT = 600.0
STEP = 0.5
NOTEBOOK = "/Workspace/Users/a@b.c/long_etl_{}"


def scenario(*durations):
    return {"rules": [{"match": NOTEBOOK.format(int(d)), "phases": [["PENDING", 5], ["RUNNING", d - 10],
                                                                    ["TERMINATING", 5]],
                       "result_state": "SUCCESS", "notebook_result": "rows=42"} for d in durations]}


def start_by_event(stack, duration, event_id):
    stack.clock.advance_to(stack.clock.now() + START_AT)
    event = {"id": event_id, "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/jobs",
             "subject": "etl", "eventType": "Databricks.JobRun.Requested", "eventTime": "2026-01-05T00:00:10Z",
             "dataVersion": "1.0", "data": {"jobName": f"etl-{event_id}", "taskKey": "main",
                                            "notebookPath": NOTEBOOK.format(int(duration)),
                                            "existingClusterId": "0923-164208-meows279"}}
    r = requests.post(f"{stack.base_url}/runtime/webhooks/eventgrid?functionName={FUNCTION_NAME}",
                      json=[event], headers={"aeg-event-type": "Notification"}, timeout=10)
    assert r.status_code == 202, r.text
    [instance_id] = stack.host.instance_ids()
    return instance_id


def drive(stack, instance_id, limit=2 * 3600.0):  # past the latest first safety poll (1 h + a quarter)
    host, clock = stack.host, stack.clock
    deadline = clock.now() + limit
    while True:
        host.run_until_idle()
        status = host.get_status(instance_id)
        if status["runtimeStatus"] in TERMINAL_STATES:
            return status
        assert clock.now() < deadline, f"still {status['runtimeStatus']} after {limit} s"
        nxt = host.next_timer_at()
        clock.advance_to(min(nxt, clock.now() + STEP) if nxt is not None else clock.now() + STEP)


def measure(app_stack, duration, *, webhooks=True, destination_password=None):
    kwargs = {"webhooks": webhooks, "scenario": scenario(duration)}
    if destination_password is not None:
        kwargs["destination_password"] = destination_password
    stack = app_stack(**kwargs)
    t0 = stack.clock.now()
    instance_id = start_by_event(stack, duration, f"evt-{duration}-{webhooks}-{destination_password}")
    status = drive(stack, instance_id)
    outputs = status["output"]
    assert status["runtimeStatus"] == "Completed" and outputs["resultState"] == "SUCCESS"
    assert outputs["notebookResult"] == "rows=42"
    run_end = stack.emulator.run(outputs["runId"])["end_time"] / 1000.0
    done = parse_timestamp(status["lastUpdatedTime"])
    return {"runEndsAt": round(run_end - t0, 1), "detectedAt": round(done - t0, 1), "lag": round(done - run_end, 1),
            "polls": status["customStatus"]["polls"],
            "webhooks": [(d["event_type"], d["status"]) for d in stack.emulator.deliveries]}


def test_notification_detects_the_run_end_within_a_second(app_stack):
    delivered = measure(app_stack, RUN_ENDS_AT - START_AT)
    assert delivered["runEndsAt"] == RUN_ENDS_AT
    assert ("jobs.on_success", 202) in delivered["webhooks"]
    assert 0 <= delivered["lag"] <= 1.0, delivered

    refused = measure(app_stack, RUN_ENDS_AT - START_AT, destination_password="wrong")
    assert ("jobs.on_success", 401) in refused["webhooks"]  # refused: nothing signalled
    off = measure(app_stack, RUN_ENDS_AT - START_AT, webhooks=False)
    assert off["webhooks"] == []
    print("\nrun ends at t=600 s:", json.dumps({"delivered": delivered, "refused": refused, "off": off}))
    # Without the notification, detection waits for the next poll timer.
    assert refused["lag"] > delivered["lag"] + 5 and off["lag"] > delivered["lag"] + 5


@pytest.mark.parametrize("duration", [640, 700, 810])
def test_lag_is_bounded_by_a_second_with_webhooks_and_by_the_poll_interval_without(app_stack, duration):
    delivered = measure(app_stack, duration)
    refused = measure(app_stack, duration, destination_password="wrong")
    off = measure(app_stack, duration, webhooks=False)
    print(f"\nrun of {duration} s:", json.dumps({"delivered": delivered["lag"], "refused": refused["lag"],
                                                "off": off["lag"], "polls": [delivered["polls"], refused["polls"],
                                                                              off["polls"]]}))
    assert delivered["lag"] <= 1.0
    # Without a notification the next poll finds the end: at most the schedule's wait at that age
    # (for the safety net, at the far end of its spread).
    settings = WorkflowSettings()
    for figures, schedule in (
            (refused, poll_schedule(signals=True, max_seconds=settings.webhook_poll_interval_seconds)),
            (off, poll_schedule(signals=False, max_seconds=settings.poll_interval_seconds))):
        assert figures["lag"] <= dataclasses.replace(schedule, phase=1.0).delay_at(duration + START_AT)
    # The safety net costs fewer polls than polling alone.
    assert delivered["polls"] < off["polls"] and refused["polls"] < off["polls"]
