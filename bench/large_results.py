"""Results of any size (issue 17 §1): a job of TASKS tasks whose notebooks each return the largest
exit value Databricks gives (5 MB), through the real app.

The workflow runs on devhost's ReplayHost (the real replay engine, virtual time, the app's default
settings) with its getJobRunOutput activity writing the kept copies to Azurite's blob service; the
Jobs API emulator runs in a process of its own, so the worker's memory is the app's alone. Figures:

- peak worker memory (tracemalloc, this process) while the workflow runs, as a ratio to one task's
  result: what the worker holds at once, which must not grow with the task count;
- history size per execution (JSON, what the task hub stores and every replay loads), as a ratio
  to the baseline: the same outputs uncapped (TASKS x 5 MB, what the app carried before);
- the status answer's size (the outputs as the status route sends them);
- the outputs of a 1,000-task job of 5 MB results, from the same capping code (no run).

Targets: peak memory at most MAX_MEMORY_RATIO results at once; history under 1 % of the uncapped
outputs; the 1,000-task outputs under 1 MB."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

TASKS = 100
RESULT_BYTES = 5 * 1024 * 1024
MAX_MEMORY_RATIO = 8.0
MAX_HISTORY_RATIO = 0.01
MAX_THOUSAND_TASK_OUTPUT_BYTES = 1_000_000
TOKEN = "dapi-bench-large-results-not-a-secret"
BLOB_SERVICE = None  # a running devhost.azurite.BlobService to use instead of starting one (tests)
CLUSTER = "0101-000000-bench"


def _start_emulator(scenario_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "jobs_emulator", "--scenario", str(scenario_path),
                             "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http"):
        proc.kill()
        raise RuntimeError("the Jobs API emulator did not start")
    return proc, base_url


def _settings_env(base_url: str, connection_string: str) -> dict:
    return {"DATABRICKS_HOST": base_url, "DATABRICKS_AUTH": "pat", "DATABRICKS_TOKEN": TOKEN,
            "WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS": "0", "BENCH_RESULTS_STORAGE": connection_string,
            "WORKFLOW_RESULTS_CONNECTION": "BENCH_RESULTS_STORAGE", "WORKFLOW_RESULTS_CONTAINER": "bench-results"}


def measure(tasks: int = None, result_bytes: int = None) -> dict:
    tasks = TASKS if tasks is None else tasks
    result_bytes = RESULT_BYTES if result_bytes is None else result_bytes
    from devhost.azurite import start_blob_service

    workdir = Path(tempfile.mkdtemp(prefix="bench-large-results-"))
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps({"rules": [
        {"match": "*/warmup/*", "phases": [["RUNNING", 0.05]], "notebook_result": "w" * 100_000},
        {"match": "*", "phases": [["RUNNING", 0.05]], "notebook_result": "r" * result_bytes}]}))
    blob = start_blob_service() if BLOB_SERVICE is None else BLOB_SERVICE
    emulator, base_url = _start_emulator(scenario)
    saved = {k: os.environ.get(k) for k in _settings_env("", "")}
    os.environ.update(_settings_env(base_url, blob.connection_string))
    try:
        return _run(tasks, result_bytes)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        emulator.terminate()
        emulator.wait(10)
        if blob is not BLOB_SERVICE:
            blob.stop()
        scenario.unlink()
        workdir.rmdir()


def _run(tasks: int, result_bytes: int) -> dict:
    import databricks_jobs
    import function_app
    from activities.jobs import known_jobs
    from devhost import ReplayHost, VirtualClock
    from messaging import result_blobs
    from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
    from workflow.inputs import orchestration_input, validate_request
    from workflow.settings import WorkflowSettings

    databricks_jobs.reset_all()
    known_jobs.clear()
    result_blobs.reset_cache()
    settings = WorkflowSettings.from_env()

    def job(name: str, n: int) -> dict:
        return validate_request({"jobName": f"bench-{name}", "taskKey": "task_000", "tasks": [
            {"task_key": f"task_{i:03d}", "existing_cluster_id": CLUSTER,
             "notebook_task": {"notebook_path": f"/Workspace/bench/{name}/{i}"}} for i in range(n)]}, settings)

    request = job("large", tasks)
    clock = VirtualClock(datetime.now(timezone.utc))
    host = ReplayHost(function_app.app, clock, timer_triggers=False)
    try:
        # A small workflow first, whose output is cut and kept too: every module and client the
        # measured run uses is loaded before memory is traced (a first use is not the worker's load).
        warm = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(job("warmup", 2), settings))
        host.run_until_complete(warm, max_virtual_seconds=86400)
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        started = time.perf_counter()
        iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))
        status = host.run_until_complete(iid, max_virtual_seconds=86400)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        outputs = status["output"]
        histories = [len(json.dumps(ex["history"])) for ex in host.executions(iid)]
        kept = sorted(b.size for b in result_blobs.container_client().list_blobs(name_starts_with=f"{iid}/"))
    finally:
        host.stop()
        databricks_jobs.reset_all()
        result_blobs.reset_cache()
    cut = sum(1 for t in outputs.get("tasks", ()) if t.get("notebookResultTruncated") and t.get("resultPath"))
    return {"tasks": tasks, "resultBytes": result_bytes, "seconds": seconds,
            "resultState": outputs.get("resultState"), "tasksCut": cut, "blobs": len(kept),
            "blobBytes": sum(kept), "peakBytes": peak - before, "memoryRatio": (peak - before) / result_bytes,
            "historyBytes": histories, "uncappedBytes": tasks * result_bytes,
            "historyRatio": max(histories) / (tasks * result_bytes),
            "statusBytes": len(json.dumps(outputs).encode("utf-8"))}


def thousand_task_outputs(result_bytes: int = RESULT_BYTES) -> int:
    """The outputs of 1,000 tasks of `result_bytes` each, one in ten failed with an error and trace,
    through the same capping and shaping code the activity and the orchestrator use."""
    from workflow import policy, results

    n = 1000
    share = results.task_share(n, {})
    value = "r" * result_bytes
    fetched = {}
    for i in range(n):
        summary = {"taskKey": f"task_{i:04d}", "runId": 10_000_000 + i, "truncated": False}
        if i % 10 == 0:
            summary.update(error="boom " * 2000, errorTrace="Traceback\n" * 20000)
        else:
            summary["notebookResult"] = value
        inline, _ = results.cap_task_output(summary, share)
        fetched[inline["taskKey"]] = dict(inline, resultPath=results.result_path("a" * 32, inline["taskKey"]))
    page = "https://adb-1234567890123456.7.azuredatabricks.net/?o=1234567890123456#job/2/run/"
    run = {"runId": 1, "jobId": 2, "lifeCycleState": "TERMINATED", "resultState": "FAILED", "runPageUrl": page + "1",
           "tasks": [{"taskKey": f"task_{i:04d}", "runId": 10_000_000 + i, "attemptNumber": 0,
                      "lifeCycleState": "TERMINATED", "resultState": "FAILED" if i % 10 == 0 else "SUCCESS",
                      "runPageUrl": page + str(10_000_000 + i)} for i in range(n)]}
    outputs = policy.outputs(job_id=2, run_id=1, result="FAILED", run=run, task_outputs=fetched,
                             output_task_key="task_0001")
    return len(json.dumps(outputs).encode("utf-8"))


def run() -> bool:
    figures = measure()
    thousand = thousand_task_outputs()
    mb = 1024 * 1024
    print(f"{figures['tasks']} tasks x {figures['resultBytes'] / mb:.0f} MB exit values: {figures['resultState']} in "
          f"{figures['seconds']:.1f} s; {figures['tasksCut']} tasks cut inline, {figures['blobs']} kept copies "
          f"({figures['blobBytes'] / mb:.0f} MB in blob storage)")
    print(f"peak worker memory: {figures['peakBytes'] / mb:.1f} MB, memory ratio: {figures['memoryRatio']:.2f} "
          f"results (target <= {MAX_MEMORY_RATIO})")
    print(f"history per execution: {', '.join(f'{b / 1024:.0f} KB' for b in figures['historyBytes'])}; "
          f"uncapped outputs (baseline): {figures['uncappedBytes'] / mb:.0f} MB; history ratio: "
          f"{figures['historyRatio']:.5f} (target <= {MAX_HISTORY_RATIO})")
    print(f"status answer: {figures['statusBytes'] / 1024:.0f} KB")
    print(f"1,000 tasks x 5 MB: outputs {thousand / 1024:.0f} KB (target < {MAX_THOUSAND_TASK_OUTPUT_BYTES / 1e6:.0f} MB)")
    return (figures["memoryRatio"] <= MAX_MEMORY_RATIO and figures["historyRatio"] <= MAX_HISTORY_RATIO
            and thousand < MAX_THOUSAND_TASK_OUTPUT_BYTES and figures["blobs"] == figures["tasks"])


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
