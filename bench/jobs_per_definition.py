"""One saved job per definition (issue #9): what 1,000 workflows of one definition leave behind and
what each start costs.

1,000 workflows of the same request run through the real app (devhost's ReplayHost and the real
replay engine, activities over loopback HTTP to the Jobs API emulator, virtual time, the app's
default settings with the run watcher on) in 10 batches of 100 started together, each run a few
seconds long. Per batch: Jobs API calls per start (SCIM Me + jobs/list + jobs/create + run-now, all
made before a workflow's first poll); at the end: saved jobs left in the workspace. Then, for the shared
job, one more batch with a cold cache (a new worker process: `activities.jobs.known_jobs` cleared).

Baseline, in the same run: the previous model, one private job per workflow, kept. Today's
private-job mode (`deleteJobOnCompletion: true`) deletes its job when the run ends, so it is not
that model; the baseline is the same private job per workflow (tagged with the workflow run's key,
looked up by name before and after creating, exactly as the app's createJob does) without the
delete: the benchmark wraps the createJob activity to ask for a private job while the request keeps
deleteJobOnCompletion false. Its saved jobs grow to 1,000, and with them the jobs/list pages each
start reads (every job has the definition's name). Today's opt-in delete mode is shown for context.

Targets: the shared mode leaves 1 saved job; its calls per start in the last batch are no more than
in the first batch (no growth) and at most 1.1 (run-now, plus one look-up per process).

Cold worker among leftovers (issue 14, cause 8): LEFTOVERS saved jobs of the same name but other
definitions (what per-request deadlines used to leave, one per workflow) and a worker with nothing
cached starts the definition once: the Jobs API calls of its createJob (SCIM Me, jobs/list pages
before and after creating, jobs/create). The lookup asks 100 jobs a page (2.2); the baseline, in the
same run, is the previous 25 a page. Target: at most 2 x ceil((LEFTOVERS + 1) / 100) list pages."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Dict, List

WORKFLOWS = 1000
BATCH = 100
RUN_SECONDS = 4.0
TARGET_CALLS_PER_START = 1.1
TOKEN = "dapi-bench-not-a-secret"
REQUEST = {"jobName": "bench-one-definition", "taskKey": "main", "notebookPath": "/Workspace/bench/definition",
           "existingClusterId": "0101-000000-bench"}
# SCIM Me: the app's identity, learnt once per worker process (a job is reused only if the app made it).
START_ENDPOINTS = (("GET", "preview/scim/v2/Me"), ("GET", "list"), ("POST", "create"), ("POST", "run-now"))
MODES = ("shared", "private-kept", "private-deleted")
LEFTOVERS = 500
WRITE_DOCS = True
DOCS_DIR = None  # None: the repository's docs/


def _run_mode(mode: str, workflows: int, batch: int) -> dict:
    from bench import speedups

    with speedups.applied():
        return _measure_mode(mode, workflows, batch)


def _measure_mode(mode: str, workflows: int, batch: int) -> dict:
    import databricks_jobs
    import function_app
    from activities.jobs import activity_input, known_jobs
    from devhost import ReplayHost, VirtualClock
    from jobs_emulator import Behavior, JobsEmulator, Scenario
    from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
    from triggers import run_watcher
    from workflow.inputs import orchestration_input, validate_request
    from workflow.settings import WorkflowSettings

    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, tokens={TOKEN}, request_log_limit=1000, scenario=Scenario(rules=[
        ("*", Behavior(phases=(("PENDING", 1.0), ("RUNNING", RUN_SECONDS - 1.0)), notebook_result="done"))]))
    clock.on_advance(emulator.tick)
    saved_env = {k: os.environ.get(k) for k in ("DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN",
                                                "DATABRICKS_NOTIFICATION_DESTINATION_ID")}
    os.environ.update(DATABRICKS_HOST=emulator.start(port=0), DATABRICKS_AUTH="pat", DATABRICKS_TOKEN=TOKEN)
    os.environ.pop("DATABRICKS_NOTIFICATION_DESTINATION_ID", None)
    databricks_jobs.reset_all()
    known_jobs.clear()
    saved_utcnow = run_watcher.utcnow
    run_watcher.utcnow = lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc)
    run_watcher.memory.reset()
    host = ReplayHost(function_app.app, clock, timer_triggers=["watch_runs"])
    create = host.activities["createJob"]
    original_create = create.user_function
    if mode == "private-kept":
        # The previous model: a private job per workflow run, never deleted (see the docstring).
        create.user_function = lambda request: original_create({**activity_input(request), "private": True})
    settings = WorkflowSettings()
    body = {**REQUEST, "deleteJobOnCompletion": mode == "private-deleted"}
    batches: List[dict] = []
    started = time.perf_counter()
    try:
        request = validate_request(body, settings)
        rounds = [("warm", n) for n in range(0, workflows, batch)]
        if mode == "shared":  # only the shared job is cached per process
            rounds.append(("cold", workflows))
        for cache, first in rounds:
            if cache == "cold":
                known_jobs.clear()
            emulator.reset_call_counts()
            ids = [host.start_new(ORCHESTRATOR_NAME, f"{mode}-{first + i:05d}", orchestration_input(request, settings))
                   for i in range(batch)]
            for iid in ids:
                status = host.run_until_complete(iid, max_virtual_seconds=3600)
                if (status["output"] or {}).get("resultState") != "SUCCESS":
                    raise RuntimeError(f"{iid} ended {status['runtimeStatus']}: {status['output']}")
            counts = emulator.call_counts()
            starts = {f"{m} {e}": counts.get((m, e), 0) for m, e in START_ENDPOINTS}
            batches.append({"first": first + 1, "last": first + batch, "cache": cache, "calls": starts,
                            "per_start": sum(starts.values()) / batch,
                            "list_pages_per_start": starts["GET list"] / batch,
                            "jobs_after": len(emulator.jobs)})
    finally:
        create.user_function = original_create
        host.stop()
        emulator.stop()
        run_watcher.utcnow = saved_utcnow
        known_jobs.clear()
        databricks_jobs.reset_all()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"mode": mode, "batches": batches, "jobs_left": batches[-1]["jobs_after"],
            "wall_seconds": time.perf_counter() - started}


def measure_cold_lookup(leftovers: int = None, page_size: int = None) -> dict:
    """createJob on a cold worker with `leftovers` same-named jobs of other definitions in the
    workspace: the Jobs API calls it makes, by endpoint. `page_size`: the jobs/list page size to use
    (None: the client's own)."""
    import databricks_jobs
    from activities.jobs import createJob, known_jobs
    from databricks_jobs import client as client_module
    from devhost import VirtualClock
    from jobs_emulator import JobsEmulator
    from workflow.inputs import validate_request
    from workflow.jobspec import DEFINITION_TAG

    leftovers = LEFTOVERS if leftovers is None else leftovers
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, tokens={TOKEN}, request_log_limit=1000)
    saved_env = {k: os.environ.get(k) for k in ("DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN",
                                                "DATABRICKS_NOTIFICATION_DESTINATION_ID")}
    saved_page = client_module.LIST_PAGE_SIZE
    job = validate_request(dict(REQUEST)).plan["job"]
    try:
        os.environ.update(DATABRICKS_HOST=emulator.start(port=0), DATABRICKS_AUTH="pat", DATABRICKS_TOKEN=TOKEN)
        os.environ.pop("DATABRICKS_NOTIFICATION_DESTINATION_ID", None)
        databricks_jobs.reset_all()
        known_jobs.clear()
        if page_size is not None:
            client_module.LIST_PAGE_SIZE = page_size
        for n in range(leftovers):  # same name, other definitions: a leftover per old deadline
            emulator.store.create_job({**job, "timeout_seconds": 3600 + n, "tags": {DEFINITION_TAG: f"old-{n}"}}, "2.1")
            clock.advance(1)
        emulator.reset_call_counts()
        started = time.perf_counter()
        createJob({"instanceId": "cold", "runKey": "cold", "job": job})
        wall = time.perf_counter() - started
        counts = {endpoint: n for (_, endpoint), n in emulator.call_counts().items()}
    finally:
        client_module.LIST_PAGE_SIZE = saved_page
        emulator.stop()
        known_jobs.clear()
        databricks_jobs.reset_all()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"leftovers": leftovers, "page_size": page_size or saved_page, "calls": counts, "wall_seconds": wall}


def cold_lookup_table(cold: List[dict]) -> str:
    lines = ["| lookup | same-named leftovers | jobs/list pages | SCIM Me | jobs/create | calls | wall |",
             "|---|---|---|---|---|---|---|"]
    for c in cold:
        calls = c["calls"]
        name = f"{c['page_size']} a page" + (" (baseline)" if c["page_size"] == 25 else "")
        lines.append(f"| {name} | {c['leftovers']} | {calls.get('list', 0)} | {calls.get('preview/scim/v2/Me', 0)} | "
                     f"{calls.get('create', 0)} | {sum(calls.values())} | {c['wall_seconds'] * 1000:.0f} ms |")
    return "\n".join(lines)


def cold_verdicts(cold: List[dict]) -> List[tuple]:
    ours, baseline = cold[0], cold[1]
    pages = 2 * -(-(ours["leftovers"] + 1) // 100)
    return [(f"cold worker, {ours['leftovers']} same-named leftovers: jobs/list pages <= {pages}",
             ours["calls"].get("list", 0) <= pages,
             f"{ours['calls'].get('list', 0)} (baseline at 25 a page: {baseline['calls'].get('list', 0)}, ratio "
             f"{ours['calls'].get('list', 0) / max(1, baseline['calls'].get('list', 0)):.2f})")]


def measure(workflows: int = None, batch: int = None) -> Dict[str, dict]:
    workflows = WORKFLOWS if workflows is None else workflows
    batch = BATCH if batch is None else batch
    return {mode: _run_mode(mode, workflows, batch) for mode in MODES}


def table(results: Dict[str, dict]) -> str:
    lines = ["| mode | starts | cache | SCIM Me | jobs/list | jobs/create | run-now | calls per start | saved jobs after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, result in results.items():
        for b in result["batches"]:
            c = b["calls"]
            lines.append(f"| {mode} | {b['first']}-{b['last']} | {b['cache']} | {c['GET preview/scim/v2/Me']} | "
                         f"{c['GET list']} | {c['POST create']} | "
                         f"{c['POST run-now']} | {b['per_start']:.2f} | {b['jobs_after']} |")
    return "\n".join(lines)


def verdicts(results: Dict[str, dict]) -> List[tuple]:
    shared = results["shared"]["batches"]
    warm = [b for b in shared if b["cache"] == "warm"]
    cold = [b for b in shared if b["cache"] == "cold"]
    kept = results["private-kept"]["batches"]
    return [
        ("shared: saved jobs left = 1", results["shared"]["jobs_left"] == 1, f"{results['shared']['jobs_left']}"),
        ("shared: calls per start do not grow (last batch <= first batch)", warm[-1]["per_start"] <= warm[0]["per_start"],
         f"first {warm[0]['per_start']:.2f}, last {warm[-1]['per_start']:.2f}"),
        (f"shared: calls per start <= {TARGET_CALLS_PER_START} in every batch, cold cache included",
         max(b["per_start"] for b in shared) <= TARGET_CALLS_PER_START,
         f"max {max(b['per_start'] for b in shared):.2f}, cold {cold[0]['per_start']:.2f}"),
        ("baseline (private, kept): saved jobs grow with the workflows, and so do the calls per start",
         results["private-kept"]["jobs_left"] == kept[-1]["last"] and kept[-1]["per_start"] >= kept[0]["per_start"],
         f"{results['private-kept']['jobs_left']} left; per start first {kept[0]['per_start']:.2f}, "
         f"last {kept[-1]['per_start']:.2f}"),
    ]


def run() -> bool:
    results = measure()
    print(table(results))
    cold = [measure_cold_lookup(), measure_cold_lookup(page_size=25)]
    print(cold_lookup_table(cold))
    checks = verdicts(results) + cold_verdicts(cold)
    met = True
    for name, ok, figures in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {figures}")
        met = met and ok
    walls = ", ".join(f"{m} {r['wall_seconds']:.1f} s" for m, r in results.items())
    print(f"wall time: {walls}")
    if WRITE_DOCS:
        from bench import report
        lines = "\n".join(report.target_lines(checks))
        report.write_section("jobs_per_definition", (
            "## One saved job per definition (`bench/jobs_per_definition.py`, issue #9)\n\n"
            f"{WORKFLOWS:,} workflows of one definition through the real app on devhost (virtual time, watcher on), "
            f"in batches of {BATCH} started together, then one batch more with a cold cache (a new worker). Calls per "
            "start: SCIM Me (once per worker) + jobs/list + jobs/create + run-now, all made before a workflow's first poll. Baseline "
            "(`private-kept`): the previous model, a private job per workflow run that is kept: createJob asked for "
            "a private job (tagged with the run key, looked up by name before and after creating) while the request "
            "keeps deleteJobOnCompletion false. `private-deleted` is today's opt-in deleteJobOnCompletion: true.\n\n"
            + table(results) + "\n\n"
            f"A cold worker among {LEFTOVERS} same-named jobs of other definitions (what per-request deadlines used to "
            "leave, one per workflow), starting the definition once: the Jobs API calls of its createJob, with the "
            "lookup's 100 jobs a page (asked through 2.2) and the previous 25 a page as the baseline.\n\n"
            + cold_lookup_table(cold) + "\n\n" + lines + f"\n\nWall: {walls}."), DOCS_DIR)
    print("target met" if met else "TARGET MISSED")
    return met


if __name__ == "__main__":
    import sys
    sys.exit(0 if run() else 1)
