"""A run that ends before its workflow's registration reaches the registry (issue 14 §3).

devhost's realistic mode delivers the workflow's `watch` signal 20-30 s after run-now, as the
extension may (after the episode is saved and the idle control queue is polled). A 15-second run
is notified before then. Databricks documents no retry of a notification, so the endpoint keeps
it in the registry, and the run watcher tells the workflow at its first tick after the
registration arrives: no list, no extra poll."""
import json

from devhost.realism import Realism
from devhost.replay import EVENT_RAISED, parse_timestamp
from orchestrators.create_job_and_run import RUN_FINISHED_EVENT

from test_events_webhook_speedup import drive, scenario, start_by_event

def _value(text):
    value = json.loads(text)
    return json.loads(value) if isinstance(value, str) else value


LATE = Realism(seed=5, min_latency=20.0, max_latency=30.0)


def test_a_notification_that_beats_the_registration_is_remembered_and_delivered(app_stack):
    stack = app_stack(scenario=scenario(15), watcher=True, realism=LATE)
    instance_id = start_by_event(stack, 15, "evt-early-end")
    status = drive(stack, instance_id)
    outputs = status["output"]
    assert status["runtimeStatus"] == "Completed" and outputs["resultState"] == "SUCCESS"
    answers = [d for d in stack.emulator.deliveries if d["event_type"] == "jobs.on_success"]
    assert [d["status"] for d in answers] == [202]
    raised = [_value(e["Input"]) for x in stack.host.executions(instance_id) for e in x["history"]
              if e["EventType"] == EVENT_RAISED and e["Name"] == RUN_FINISHED_EVENT]
    # Told from the kept notification, not found later by a list.
    assert raised and raised[0] == {"runId": outputs["runId"], "source": "webhook"}
    calls = stack.emulator.call_counts()
    assert sum(n for (method, path), n in calls.items() if path == "runs/list") == 0
    assert sum(n for (method, path), n in calls.items() if path == "runs/get") == 1
    run_end = stack.emulator.run(outputs["runId"])["end_time"] / 1000.0
    # The kept notification reached the registry within 30 s; the next watcher tick (15 s) told it.
    assert parse_timestamp(status["lastUpdatedTime"]) - run_end <= 30 + 15 + 1


def test_a_release_1_workflow_in_flight_is_woken_by_its_runs_notification(app_stack):
    # Release 1.0 never registers its run (issue 14, cause 6): the endpoint finds it through its
    # job's durable_instance_id tag, so it no longer waits for its safety-net poll.
    from orchestrators.create_job_and_run import ORCHESTRATOR_NAME

    stack = app_stack(scenario=scenario(600))
    release_1_input = {
        "request": {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/a@b.c/long_etl_600",
                    "existingClusterId": "0923-164208-meows279", "notebookParams": {}, "timeoutSeconds": 86400,
                    "pollIntervalSeconds": 300, "deleteJobOnCompletion": False},
        "options": {"pollsPerExecution": 20, "webhookPollIntervalSeconds": 86400, "notify": False}}
    instance_id = stack.host.start_new(ORCHESTRATOR_NAME, None, release_1_input, version="1.0")
    status = drive(stack, instance_id)
    assert status["runtimeStatus"] == "Completed" and status["output"]["resultState"] == "SUCCESS"
    answers = [d["status"] for d in stack.emulator.deliveries if d["event_type"] == "jobs.on_success"]
    assert answers == [202]
    run_end = stack.emulator.run(status["output"]["runId"])["end_time"] / 1000.0
    assert parse_timestamp(status["lastUpdatedTime"]) - run_end <= 1.0  # woken at the notification


def test_a_suspended_workflow_gets_its_runs_end_when_resumed(app_stack):
    # Issue 14, cause 7: the endpoint answered "ignored" to a Suspended workflow, which then waited
    # for its safety-net poll after being resumed; the extension holds a raised event until resume.
    import azure.durable_functions as df
    from devhost.functions import run_coroutine

    stack = app_stack(scenario=scenario(600))
    instance_id = start_by_event(stack, 600, "evt-suspended")
    host, clock = stack.host, stack.clock
    clock.advance_to(clock.now() + 60)
    host.run_until_idle()
    client = df.DurableOrchestrationClient(stack.server.management.binding_json(stack.base_url))
    run_coroutine(client.suspend(instance_id, "maintenance window"), timeout=10)
    assert host.get_status(instance_id)["runtimeStatus"] == "Suspended"
    clock.advance_to(clock.now() + 700)  # the run ends meanwhile; its notification comes
    host.run_until_idle()
    answers = [d["status"] for d in stack.emulator.deliveries if d["event_type"] == "jobs.on_success"]
    assert answers == [202]
    assert host.get_status(instance_id)["runtimeStatus"] == "Suspended"  # held, not acted on
    gets_before = stack.emulator.call_counts().get(("GET", "runs/get"), 0)
    assert gets_before == 0
    run_coroutine(client.resume(instance_id, "done"), timeout=10)
    resumed_at = clock.now()
    status = drive(stack, instance_id)
    assert status["runtimeStatus"] == "Completed" and status["output"]["resultState"] == "SUCCESS"
    assert parse_timestamp(status["lastUpdatedTime"]) - resumed_at <= 1.0  # the held event woke it
    assert stack.emulator.call_counts()[("GET", "runs/get")] == 1
