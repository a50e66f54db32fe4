"""Whole workflows under devhost's realistic timing (devhost.realism) where it matters most: the
registry of awaited runs lags behind the signals sent to it."""
from __future__ import annotations

from jobs_emulator import Behavior, Scenario
from devhost import Realism
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow import policy
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

from workflow_support import REQUEST

# Every signal takes longer than a watcher tick (15 s): each read of the registry is stale.
SLOW = Realism(seed=3, min_latency=20.0, max_latency=30.0)


def _calls(emulator, path):
    return sum(n for (method, endpoint), n in emulator.call_counts().items() if endpoint == path.lstrip("/"))


def test_stale_registry_reads_do_not_make_the_watcher_tell_a_waiting_workflow_more_often(host, emulator):
    host.realism = SLOW
    # One run is out of the active list for 20 minutes without having ended (a task waits for its
    # retry); 30 long runs of other workflows keep the watcher listing at every tick.
    emulator.scenario = Scenario(rules=[
        ("*/retrying", Behavior(phases=(("RUNNING", 120), ("WAITING_FOR_RETRY", 1200), ("RUNNING", 120)))),
        ("*", Behavior(phases=(("RUNNING", 1800),)))])
    settings = WorkflowSettings()
    for _ in range(30):
        request = validate_request(dict(REQUEST), settings)
        host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
    request = validate_request({**REQUEST, "jobName": "retrying", "notebookPath": "/Workspace/retrying"}, settings)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
    status = host.run_until_complete(iid, max_virtual_seconds=86400)
    assert status["output"]["resultState"] == "SUCCESS"
    times = 2 if host.activities_twice else 1
    confirms = sum(1 for r in emulator.request_log
                   if r["path"].endswith("runs/get") and r.get("query", {}).get("run_id") == str(
                       status["output"]["runId"])) // times
    # Told when it left the list, then at most once per its own poll interval at its age (30 s
    # while young), as with fresh reads; a stale read telling it at every 15 s tick would double it.
    assert confirms <= 1200 / policy.own_check_interval(0) + 3, confirms
