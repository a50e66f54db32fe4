"""Record orchestration histories of a release for tests/versions (DEVELOPMENT TOOL).

    python -m tools.record_histories --version 2.0                     # this checkout's code
    python -m tools.record_histories --version 1.0 --release-dir DIR   # a checkout of release 1.0

Runs a few scenarios (success, failure, cancel, continue-as-new mid-run, a webhook signal) through
the app of the given checkout on devhost (this checkout's devhost, the extension-faithful one) with
the Jobs API emulator in virtual time, and writes each instance's executions to
tests/versions/histories/<version>/<scenario>.json. tests/versions replays them on the current code:
an orchestrator change that would break them fails there, and needs a version bump.

Release 1.0 is commit ce8c1b3 (`git worktree add /tmp/release-1.0 ce8c1b3`).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OUT = HERE / "tests" / "versions" / "histories"
TOKEN = "dapi-recording-not-a-secret"
REQUEST = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
           "existingClusterId": "0923-164208-meows279"}


def _load_app(release_dir: Path):
    """The app of `release_dir` with THIS checkout's devhost and emulator (modules of the release
    shadow ours except for the development tools)."""
    sys.path.insert(0, str(release_dir))
    for name in list(sys.modules):
        if name.split(".")[0] in ("function_app", "orchestrators", "activities", "triggers", "workflow",
                                  "databricks_jobs", "messaging", "entities"):
            del sys.modules[name]
    return importlib.import_module("function_app").app


def record(version: str, release_dir: Path) -> dict:
    from devhost import ReplayHost, VirtualClock

    dev_root = str(HERE)
    if dev_root in sys.path:
        sys.path.remove(dev_root)
    sys.path.append(dev_root)  # devhost and jobs_emulator from here, the app from release_dir
    from jobs_emulator import Behavior, JobsEmulator, Scenario

    app = _load_app(release_dir)
    orchestrator = importlib.import_module("orchestrators.create_job_and_run")
    inputs = importlib.import_module("workflow.inputs")
    settings_mod = importlib.import_module("workflow.settings")
    recorded = {}

    def scenario(name, behavior, *, settings_kwargs=None, drive=None, destination=False, request=None):
        clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        emulator = JobsEmulator(clock=clock.now, scenario=Scenario(rules=[("*", behavior)]))
        clock.on_advance(emulator.tick)
        os.environ.update(DATABRICKS_HOST=emulator.start(port=0), DATABRICKS_AUTH="pat", DATABRICKS_TOKEN=TOKEN,
                          WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS="0")
        if destination:
            os.environ["DATABRICKS_NOTIFICATION_DESTINATION_ID"] = "dest-recording"
        else:
            os.environ.pop("DATABRICKS_NOTIFICATION_DESTINATION_ID", None)
        importlib.import_module("databricks_jobs").reset_all()
        try:
            host = ReplayHost(app, clock)
            # From the environment set above (the watcher off: the workflow polls on its own, so a
            # long run continues as new), then the scenario's own overrides.
            settings = dataclasses.replace(settings_mod.WorkflowSettings.from_env(os.environ), **(settings_kwargs or {}))
            body = inputs.orchestration_input(inputs.validate_request(dict(request or REQUEST), settings), settings)
            iid = host.start_new(orchestrator.ORCHESTRATOR_NAME, f"recorded-{name}", body)
            if drive:
                drive(host, clock, iid)
            status = host.run_until_complete(iid, max_virtual_seconds=10 * 86400)
            executions = host.executions(iid)
            text = json.dumps(executions)
            assert TOKEN not in text
            recorded[name] = {"status": status["runtimeStatus"], "executions": executions}
        finally:
            emulator.stop()

    def cancel_mid_run(host, clock, iid):
        host.run_until_idle()
        clock.advance(120)
        host.run_until_idle()
        host.raise_event(iid, "cancel", {"reason": "recorded cancel"})

    def signal_mid_run(host, clock, iid):
        # Drive the workflow to just after its run ends (t = 1,800 s), then the webhook arrives.
        until = clock.now() + 1801
        while clock.now() < until:
            host.run_until_idle()
            nxt = host.next_timer_at()
            clock.advance_to(until if nxt is None else min(nxt, until))
        host.run_until_idle()
        if host.get_status(iid)["runtimeStatus"] == "Running":
            host.raise_event(iid, "runFinished", {"runId": 0, "source": "recording"})

    scenario("success", Behavior(phases=(("PENDING", 30), ("RUNNING", 300)), notebook_result="42"))
    scenario("failure", Behavior(phases=(("RUNNING", 200),), result_state="FAILED", error="boom",
                                 error_trace="Traceback (most recent call last): boom"))
    scenario("cancel", Behavior(phases=(("RUNNING", 3600),)), drive=cancel_mid_run)
    scenario("continue_as_new", Behavior(phases=(("RUNNING", 3 * 3600),), notebook_result="long"),
             settings_kwargs={"polls_per_execution": 4})
    scenario("webhook", Behavior(phases=(("RUNNING", 1800),), notebook_result="hooked"), destination=True,
             drive=signal_mid_run)
    return recorded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--release-dir", default=str(HERE))
    args = parser.parse_args(argv)
    recorded = record(args.version, Path(args.release_dir).resolve())
    target = OUT / args.version
    target.mkdir(parents=True, exist_ok=True)
    for name, data in recorded.items():
        (target / f"{name}.json").write_text(json.dumps(data["executions"], indent=1) + "\n", "utf-8")
        print(f"{target / name}.json: {data['status']}, {len(data['executions'])} execution(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
