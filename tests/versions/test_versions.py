"""Upgrades that do not break running workflows (issue 8): orchestration versions, the frozen
release-1.0 code path, and the recorded histories of each release replayed on the current code.

Histories were recorded with `python -m tools.record_histories` (1.0 from a checkout of that release,
2.0 from this code): success, failure, cancel, continue-as-new mid-run and a webhook signal."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

import databricks_jobs
from activities.jobs import known_jobs
from devhost import ReplayHost, VirtualClock
from devhost.history_check import check_history
from devhost.replay import DurableOptions
from jobs_emulator import Behavior, JobsEmulator, Scenario
from orchestrators import create_job_and_run as orchestrator
from orchestrators import versions

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = Path(__file__).resolve().parent / "histories"
RECORDED = sorted(HISTORIES.glob("*/*.json"))
RELEASE_1_INPUT = {  # what release 1.0's starters put in the orchestration input
    "request": {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me/load",
                "existingClusterId": "0923-164208-meows279", "notebookParams": {"day": "mon"},
                "timeoutSeconds": 86400, "pollIntervalSeconds": 300, "deleteJobOnCompletion": False},
    "options": {"pollsPerExecution": 20, "webhookPollIntervalSeconds": 900, "notify": False},
}


def test_recordings_cover_both_releases_and_every_scenario():
    names = {(p.parent.name, p.stem) for p in RECORDED}
    for version in ("1.0", versions.CURRENT):
        assert {(version, s) for s in ("success", "failure", "cancel", "continue_as_new", "webhook")} <= names


@pytest.mark.parametrize("path", RECORDED, ids=[f"{p.parent.name}-{p.stem}" for p in RECORDED])
def test_recorded_histories_replay_on_the_current_code_as_the_extension_would(path):
    import function_app

    result = check_history(function_app.app, path)
    breaking = [d for d in result.divergences if d.source == "extension"]
    assert result.executions_checked >= 1
    assert not breaking, ("this orchestrator change would break workflows in flight: bump "
                          "orchestrators.versions.CURRENT and keep the old path frozen\n"
                          + "\n".join(map(str, breaking)))


def test_the_check_fails_on_a_change_that_would_break_workflows_in_flight(monkeypatch):
    import function_app

    def create_job_differently(self, stale_job_id=None):
        yield from self.call("createJobV3", {"job": self.request["job"]})

    monkeypatch.setattr(orchestrator._Run, "create_job", create_job_differently)
    result = check_history(function_app.app, HISTORIES / versions.CURRENT / "success.json")
    assert any(d.source == "extension" and "createJob" in d.message for d in result.divergences), result.report()


def test_host_json_starts_new_workflows_on_the_codes_version_and_leaves_newer_ones_alone():
    durable = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["durableTask"]
    assert durable["defaultVersion"] == versions.CURRENT
    assert (durable["versionMatchStrategy"], durable["versionFailureStrategy"]) == ("CurrentOrOlder", "Reject")


def test_host_json_pins_an_extension_bundle_with_orchestration_versions():
    # Bundles before 4.30.0 carry an extension without context.version / defaultVersion: every new
    # workflow would take release 1.0's path.
    bundle = json.loads((ROOT / "host.json").read_text("utf-8"))["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    low, _, high = bundle["version"].strip("[)").partition(",")
    assert bundle["version"].startswith("[") and bundle["version"].endswith(")")
    assert tuple(map(int, low.strip().split("."))) >= (4, 30, 0)
    assert tuple(map(int, high.strip().split("."))) == (5, 0, 0)
    assert bundle["version"] == versions.EXTENSION_BUNDLE_RANGE


def test_a_later_input_on_release_1s_path_fails_at_once_naming_the_bundle(stack):
    # What an older bundle does: the instance has no version, so it replays on 1.0's code path.
    import function_app

    clock, emulator = stack
    host = ReplayHost(function_app.app, clock)
    iid = host.start_new(orchestrator.ORCHESTRATOR_NAME, None, _current_input(), version="")
    status = host.run_until_complete(iid)
    assert status["runtimeStatus"] == "Failed"
    assert "extension bundle 4.30.0" in status["output"] and "[4.30.0, 5.0.0)" in status["output"]
    assert emulator.request_log == []  # nothing was created or started


@pytest.fixture
def stack(monkeypatch):
    clock = VirtualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, scenario=Scenario(rules=[
        ("*", Behavior(phases=(("PENDING", 30), ("RUNNING", 2 * 3600)), notebook_result="done"))]))
    clock.on_advance(emulator.tick)
    monkeypatch.setenv("DATABRICKS_HOST", emulator.start(port=0))
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-versions-test")
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    databricks_jobs.reset_all()
    known_jobs.clear()
    yield clock, emulator
    emulator.stop()
    databricks_jobs.reset_all()
    known_jobs.clear()


def _current_input():
    from workflow.inputs import orchestration_input, validate_request
    from workflow.settings import WorkflowSettings

    settings = WorkflowSettings(run_watcher_interval_seconds=0, polls_per_execution=5)
    return orchestration_input(validate_request({**RELEASE_1_INPUT["request"], "notebookParams": {}}, settings),
                               settings)


def _release_1_app():
    """An app as release 1.0 deployed it: only the 1.0 orchestrator (the frozen path) under the
    same name, with today's activities."""
    import azure.durable_functions as df

    from activities.jobs import bp as activities_bp
    from activities.notifications import bp as notifications_bp
    from orchestrators.v1.workflow import orchestrate

    old = df.DFApp()
    bp = df.Blueprint()

    @bp.orchestration_trigger(context_name="context", orchestration=orchestrator.ORCHESTRATOR_NAME)
    def create_job_and_run(context):  # noqa: F811 - release 1.0's orchestrator function
        return (yield from orchestrate(context))

    for blueprint in (bp, activities_bp, notifications_bp):
        old.register_functions(blueprint)
    return old


def test_workflows_of_both_versions_run_side_by_side_each_on_its_own_path(stack):
    import function_app

    clock, emulator = stack
    host = ReplayHost(function_app.app, clock)
    old = host.start_new(orchestrator.ORCHESTRATOR_NAME, "started-by-1.0", RELEASE_1_INPUT, version="1.0")
    new = host.start_new(orchestrator.ORCHESTRATOR_NAME, "started-by-2.0", _current_input())
    old_status = host.run_until_complete(old, max_virtual_seconds=5 * 86400)
    new_status = host.run_until_complete(new, max_virtual_seconds=5 * 86400)
    assert [x["version"] for x in host.executions(old)] == ["1.0"] * len(host.executions(old))
    assert {x["version"] for x in host.executions(new)} == {versions.CURRENT}
    # Release 1.0's outputs (no databricksResultState, no tasks) and its own job tagged for its instance.
    assert old_status["output"]["resultState"] == "SUCCESS" and "tasks" not in old_status["output"]
    old_job = emulator.jobs[old_status["output"]["jobId"]]["settings"]
    assert old_job["tags"]["durable_instance_id"] == "started-by-1.0"
    assert old_job["tasks"][0]["notebook_task"]["base_parameters"] == {"day": "mon"}
    assert new_status["output"]["tasks"][0]["notebookResult"] == "done"


def test_an_upgrade_mid_run_lets_the_old_workflow_finish_on_its_path_and_new_ones_take_the_new(stack):
    import function_app

    clock, emulator = stack
    host = ReplayHost(_release_1_app(), clock, durable_options=DurableOptions(default_version="1.0"))
    old = host.start_new(orchestrator.ORCHESTRATOR_NAME, "in-flight", RELEASE_1_INPUT)
    host.run_until_idle()
    clock.advance(1800)  # half an hour into a two-hour run, across several polls
    host.run_until_idle()
    assert host.get_status(old)["runtimeStatus"] == "Running"

    # The deploy: new code and its host.json (defaultVersion = the code's version).
    host.replace_app(function_app.app, durable_options=DurableOptions(default_version=versions.CURRENT))
    new = host.start_new(orchestrator.ORCHESTRATOR_NAME, "after-upgrade", _current_input())
    assert host.run_until_complete(old, max_virtual_seconds=5 * 86400)["output"]["resultState"] == "SUCCESS"
    assert host.run_until_complete(new, max_virtual_seconds=5 * 86400)["output"]["resultState"] == "SUCCESS"
    assert {x["version"] for x in host.executions(old)} == {"1.0"}
    assert {x["version"] for x in host.executions(new)} == {versions.CURRENT}


def test_continue_as_new_keeps_the_version_so_a_workflow_stays_on_one_path(stack):
    import function_app

    clock, _ = stack
    host = ReplayHost(function_app.app, clock)
    iid = host.start_new(orchestrator.ORCHESTRATOR_NAME, None, _current_input())
    host.run_until_complete(iid, max_virtual_seconds=5 * 86400)
    executions = host.executions(iid)
    assert len(executions) > 3 and {x["version"] for x in executions} == {versions.CURRENT}


def test_a_worker_does_not_run_a_workflow_newer_than_its_code(stack):
    import function_app

    clock, emulator = stack
    host = ReplayHost(function_app.app, clock)
    iid = host.start_new(orchestrator.ORCHESTRATOR_NAME, None, _current_input(), version="3.0")
    host.run_until_idle()
    clock.advance(600)
    host.run_until_idle()
    # Rejected, not failed: it waits for a worker with 3.0 code (a rolling deploy still in progress).
    assert host.get_status(iid)["runtimeStatus"] == "Pending" and emulator.request_log == []
