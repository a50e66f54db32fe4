"""The history purge timer, invoked like the host's admin endpoint does, with the REAL
DurableOrchestrationClient calling devhost's management API over loopback HTTP.

Workflows run in virtual time: the old ones are created at T0, the new ones two hours later, then
the clock jumps 30 days and one hour ahead without driving the host (the running workflow stays
running) and the function reads "now" from that clock. With a 30-day retention the cutoff is
T0 + 1 h: the old finished workflows go, the new ones and the running one stay."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import parse_qs

import azure.durable_functions as df
import pytest
import requests

import databricks_jobs
from devhost import ReplayHost, VirtualClock
from devhost.functions import run_coroutine
from devhost.serve import DevServer
from jobs_emulator import Behavior, JobsEmulator, Scenario
from triggers import maintenance

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
PURGE_AT = T0 + timedelta(days=30, hours=1)
TOKEN = "dapi-purge-tests-0123456789abcdef-SECRET"
FUNCTION = "purge_workflow_history"
REQUEST = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
           "existingClusterId": "0923-164208-meows279"}
LONG_RUN = dict(REQUEST, notebookPath="/Workspace/Users/me@contoso.com/long-load")


@pytest.fixture
def purge_stack(monkeypatch):
    import function_app

    clock = VirtualClock(T0)
    # Runs of the "long" notebook stay RUNNING for 20 days; every other run takes seconds.
    emulator = JobsEmulator(clock=clock.now, tokens={TOKEN},
                            scenario=Scenario(rules=[("*/long-*", Behavior(phases=(("RUNNING", 20 * 86400),)))]))
    clock.on_advance(emulator.tick)
    monkeypatch.setenv("DATABRICKS_HOST", emulator.start(port=0))
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    # The host's timers do not run, so no watcher would tick: short runs end at their own first
    # poll, seconds after T0, well before the cutoff an hour later.
    monkeypatch.setenv("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "0")
    monkeypatch.delenv(maintenance.RETENTION_SETTING, raising=False)
    monkeypatch.setattr(maintenance, "utcnow", clock.utcnow)
    databricks_jobs.reset_all()
    host = ReplayHost(function_app.app, clock)
    server = DevServer(function_app.app, host)
    base_url = server.start()
    host.stop()  # the test drives the workflows in virtual time itself

    purge_requests = []
    handle = server.management.handle

    def recording_handle(method, path, query_string, *args, **kwargs):
        if method == "DELETE":
            purge_requests.append((path, parse_qs(query_string)))
        return handle(method, path, query_string, *args, **kwargs)

    monkeypatch.setattr(server.management, "handle", recording_handle)
    yield SimpleNamespace(base_url=base_url, host=host, clock=clock, emulator=emulator, server=server,
                          purge_requests=purge_requests)
    server.stop()
    emulator.stop()
    databricks_jobs.reset_all()


def start_workflow(stack, body=REQUEST) -> str:
    response = requests.post(stack.base_url + "/api/workflows/create-job-and-run", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def create_instances(stack, monkeypatch) -> dict:
    """Finished and running workflows at T0, finished ones at T0 + 2 h; ids by label."""
    ids = {}
    ids["old_completed"] = start_workflow(stack)
    stack.host.run_until_complete(ids["old_completed"])

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")  # 401: the workflow itself fails
    databricks_jobs.reset_all()
    ids["old_failed"] = start_workflow(stack)
    stack.host.run_until_complete(ids["old_failed"])
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    databricks_jobs.reset_all()

    ids["old_terminated"] = start_workflow(stack)
    stack.host.run_until_idle()
    stack.host.terminate(ids["old_terminated"], "operator")

    ids["old_running"] = start_workflow(stack, LONG_RUN)
    stack.host.run_until_idle()

    stack.clock.advance_to(T0 + timedelta(hours=2))
    ids["new_completed"] = start_workflow(stack)
    stack.host.run_until_complete(ids["new_completed"])
    ids["new_terminated"] = start_workflow(stack)
    stack.host.run_until_idle()
    stack.host.terminate(ids["new_terminated"], "operator")

    statuses = {label: stack.host.get_status(iid)["runtimeStatus"] for label, iid in ids.items()}
    assert statuses == {"old_completed": "Completed", "old_failed": "Failed", "old_terminated": "Terminated",
                        "old_running": "Running", "new_completed": "Completed", "new_terminated": "Terminated"}
    stack.clock.advance_to(PURGE_AT)  # the host is not driven: the running workflow stays running
    return ids


def invoke_timer(stack) -> None:
    """POST /admin/functions/{name} as the host's admin endpoint; the function runs before it answers."""
    response = requests.post(f"{stack.base_url}/admin/functions/{FUNCTION}", json={"input": ""}, timeout=30)
    assert response.status_code == 202
    assert stack.server.invocations[-1]["function"] == FUNCTION


def remaining(stack, ids) -> set:
    return {label for label, iid in ids.items() if stack.host.get_status(iid) is not None}


def purge_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == maintenance.__name__]


def test_finished_workflows_older_than_the_retention_are_purged_and_the_rest_kept(purge_stack, monkeypatch,
                                                                                   caplog):
    ids = create_instances(purge_stack, monkeypatch)
    caplog.set_level(logging.INFO, logger=maintenance.__name__)

    invoke_timer(purge_stack)

    assert purge_stack.server.invocations[-1]["ok"], purge_stack.server.invocations[-1]
    assert remaining(purge_stack, ids) == {"old_running", "new_completed", "new_terminated"}
    [message] = purge_logs(caplog)
    assert "deleted 3 finished workflow instance(s)" in message and "2026-03-01T01:00:00Z" in message
    assert TOKEN not in caplog.text


def test_the_purge_names_only_finished_statuses_and_the_cutoff(purge_stack, monkeypatch):
    create_instances(purge_stack, monkeypatch)
    invoke_timer(purge_stack)

    [(path, query)] = purge_stack.purge_requests
    assert path == "/durabletask/instances/"
    assert query["runtimeStatus"] == ["Completed,Failed,Terminated"]
    assert query["createdTimeTo"] == ["2026-03-01T01:00:00.000000Z"]
    assert datetime.fromisoformat(query["createdTimeFrom"][0]) <= T0


def test_a_running_workflow_older_than_the_retention_is_kept_and_without_the_status_filter_it_would_not_be(
        purge_stack, monkeypatch):
    ids = create_instances(purge_stack, monkeypatch)
    invoke_timer(purge_stack)
    assert purge_stack.host.get_status(ids["old_running"])["runtimeStatus"] == "Running"

    # Why the statuses matter: with no runtimeStatus the extension purges every status in range.
    client = df.DurableOrchestrationClient(purge_stack.server.management.binding_json(purge_stack.base_url))
    result = run_coroutine(client.purge_instance_history_by(
        created_time_from=maintenance.CREATED_FROM, created_time_to=PURGE_AT - timedelta(days=30)), timeout=10)
    assert result.instances_deleted == 1
    assert purge_stack.host.get_status(ids["old_running"]) is None


def test_a_second_run_finds_nothing_and_logs_zero(purge_stack, monkeypatch, caplog):
    ids = create_instances(purge_stack, monkeypatch)
    invoke_timer(purge_stack)
    caplog.set_level(logging.INFO, logger=maintenance.__name__)

    invoke_timer(purge_stack)  # the extension answers 404 when nothing matched

    assert purge_stack.server.invocations[-1]["ok"], purge_stack.server.invocations[-1]
    assert remaining(purge_stack, ids) == {"old_running", "new_completed", "new_terminated"}
    [message] = purge_logs(caplog)
    assert "deleted 0 finished workflow instance(s)" in message


def test_a_longer_retention_keeps_more(purge_stack, monkeypatch, caplog):
    ids = create_instances(purge_stack, monkeypatch)
    monkeypatch.setenv(maintenance.RETENTION_SETTING, "31")
    caplog.set_level(logging.INFO, logger=maintenance.__name__)

    invoke_timer(purge_stack)

    assert remaining(purge_stack, ids) == set(ids)
    assert "deleted 0 finished" in purge_logs(caplog)[0]


def test_retention_zero_purges_nothing(purge_stack, monkeypatch, caplog):
    ids = create_instances(purge_stack, monkeypatch)
    monkeypatch.setenv(maintenance.RETENTION_SETTING, "0")
    caplog.set_level(logging.INFO, logger=maintenance.__name__)

    invoke_timer(purge_stack)

    assert purge_stack.server.invocations[-1]["ok"]
    assert remaining(purge_stack, ids) == set(ids)
    assert purge_stack.purge_requests == []
    assert purge_logs(caplog) == [f"history purge is off ({maintenance.RETENTION_SETTING}=0); nothing purged"]


@pytest.mark.parametrize("value", ["thirty", "-1", "3651"])
def test_an_invalid_retention_fails_the_run_naming_the_setting_and_purges_nothing(purge_stack, monkeypatch,
                                                                                   value):
    ids = create_instances(purge_stack, monkeypatch)
    monkeypatch.setenv(maintenance.RETENTION_SETTING, value)

    invoke_timer(purge_stack)

    record = purge_stack.server.invocations[-1]
    assert not record["ok"] and maintenance.RETENTION_SETTING in record["error"]
    assert remaining(purge_stack, ids) == set(ids)


def test_the_timer_runs_daily_at_three_by_default_and_not_on_startup():
    import function_app
    from devhost.functions import index_functions

    info = index_functions(function_app.app)[FUNCTION]
    assert info.trigger_type == "timerTrigger"
    assert info.trigger["schedule"] == "0 0 3 * * *" and info.trigger["runOnStartup"] is False
    assert [b["type"] for b in info.bindings if b["name"] == "client"] == ["durableClient"]


def test_the_schedule_setting_is_read_with_a_default_for_missing_or_empty(caplog):
    assert maintenance.purge_schedule({}) == "0 0 3 * * *"
    assert maintenance.purge_schedule({"WORKFLOW_PURGE_SCHEDULE": "  "}) == "0 0 3 * * *"
    assert maintenance.purge_schedule({"WORKFLOW_PURGE_SCHEDULE": "0 30 1 * * Sun"}) == "0 30 1 * * Sun"
    assert not caplog.records
    # A five-field (Unix cron) schedule is passed on, for the host to refuse, and logged by name.
    assert maintenance.purge_schedule({"WORKFLOW_PURGE_SCHEDULE": "0 3 * * *"}) == "0 3 * * *"
    assert "WORKFLOW_PURGE_SCHEDULE" in caplog.text


def test_devhost_purge_by_filter_answers_like_the_extension(purge_stack):
    base = f"{purge_stack.base_url}/durabletask/instances/"
    missing_from = requests.delete(base, timeout=10)
    assert missing_from.status_code == 400 and "createdTimeFrom" in missing_from.json()
    nothing = requests.delete(base, params={"createdTimeFrom": "2020-01-01T00:00:00Z"}, timeout=10)
    assert nothing.status_code == 404 and nothing.content == b""

    iid = purge_stack.host.start_new("create_job_and_run", "to-purge", None)
    purge_stack.host.terminate(iid, "x")
    created = purge_stack.host.get_status(iid)["createdTime"]  # both ends are inclusive
    done = requests.delete(base, timeout=10, params={
        "createdTimeFrom": created, "createdTimeTo": created, "runtimeStatus": "Terminated"})
    assert done.status_code == 200 and done.json() == {"instancesDeleted": 1}
