"""What waiting for a long run costs: our poll schedule against a fixed 30 s poll.

Baseline: the same app with `pollIntervalSeconds=30`, which caps our schedule at 30 s, i.e. the
fixed interval Airflow's DatabricksRunNowOperator uses by default. Both wait for a 24 h notebook run
in virtual time, through the real replay engine, activities and the Jobs API emulator, in the same
run. Each poll is an activity, a runs/get call and an orchestration replay that re-parses its
execution's history, so polls and replay time are the cost of waiting in production too.
Targets: at most 1/5 of the baseline's polls, and detection lag within 10 % of the run's length."""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone

RUN_SECONDS = 24 * 3600
TARGET_POLL_RATIO = 0.2
TARGET_LAG_FRACTION = 0.1


def _wait_for_run(poll_interval_seconds: int) -> dict:
    import databricks_jobs
    import function_app
    from devhost import ReplayHost, VirtualClock
    from jobs_emulator import Behavior, JobsEmulator, Scenario
    from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
    from workflow.inputs import orchestration_input, validate_request
    from workflow.settings import WorkflowSettings

    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, scenario=Scenario(rules=[
        ("*", Behavior(phases=(("PENDING", 60), ("RUNNING", RUN_SECONDS - 60)), notebook_result="done"))]))
    clock.on_advance(emulator.tick)
    os.environ.update(DATABRICKS_HOST=emulator.start(port=0), DATABRICKS_AUTH="pat", DATABRICKS_TOKEN="bench")
    databricks_jobs.reset_all()
    try:
        host = ReplayHost(function_app.app, clock)
        settings = WorkflowSettings(run_watcher_interval_seconds=0)  # the workflow's own polls
        request = validate_request({"jobName": "bench", "taskKey": "main", "notebookPath": "/Workspace/bench/nb",
                                    "existingClusterId": "0101-000000-bench", "timeoutSeconds": 2 * RUN_SECONDS,
                                    "pollIntervalSeconds": poll_interval_seconds}, settings)
        started = time.perf_counter()
        instance_id = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
        status = host.run_until_complete(instance_id, max_virtual_seconds=3 * RUN_SECONDS)
        wall = time.perf_counter() - started
        run_end = emulator.run(status["output"]["runId"])["end_time"] / 1000.0
        executions = host.executions(instance_id)
        return {
            "polls": sum(1 for r in emulator.request_log if r["path"].endswith("/runs/get")),
            "replay_wall_s": wall,
            "lag_s": clock.now() - run_end,
            "executions": len(executions),
            "max_history": max(len(x["history"]) for x in executions),
        }
    finally:
        emulator.stop()
        databricks_jobs.reset_all()


def run() -> bool:
    ours = _wait_for_run(poll_interval_seconds=300)
    fixed = _wait_for_run(poll_interval_seconds=30)
    poll_ratio = ours["polls"] / fixed["polls"]
    wall_ratio = ours["replay_wall_s"] / fixed["replay_wall_s"]
    for name, figures in (("schedule (default)", ours), ("fixed 30 s baseline", fixed)):
        print(f"{name:20s} polls {figures['polls']:5d}  executions {figures['executions']:4d}  "
              f"max history {figures['max_history']:4d} events  replay wall {figures['replay_wall_s']:.2f} s  "
              f"detection lag {figures['lag_s']:.0f} s")
    print(f"poll ratio: {poll_ratio:.3f} (target <= {TARGET_POLL_RATIO})")
    print(f"replay wall-time ratio: {wall_ratio:.3f}")
    met = poll_ratio <= TARGET_POLL_RATIO and ours["lag_s"] <= TARGET_LAG_FRACTION * RUN_SECONDS
    print("target met" if met else "target MISSED")
    return met


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
