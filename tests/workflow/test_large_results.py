"""Results of any size (issue 17 §1): each task's output travels inline up to its share, the whole
is kept in blob storage (Azurite) by the getJobRunOutput activity, and nothing large enters the
orchestration history. Both host modes: every activity run twice writes the same blobs again."""
from __future__ import annotations

import json

import pytest

from jobs_emulator import Behavior, Scenario
from jobs_emulator.views import MAX_NOTEBOOK_RESULT_BYTES
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow import policy, results
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

CLUSTER = "0923-164208-meows279"
FIVE_MB = 5 * 1024 * 1024
ONE_TASK_SHARE = 65536


def _task(key: str) -> dict:
    return {"task_key": key, "existing_cluster_id": CLUSTER,
            "notebook_task": {"notebook_path": f"/Workspace/etl/{key}"}}


def _history_bytes(host, instance_id: str) -> list:
    """Size of each execution's history as JSON (what the task hub stores and every replay loads)."""
    return [len(json.dumps(ex["history"])) for ex in host.executions(instance_id)]


def _run(host, body):
    settings = WorkflowSettings()
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(validate_request(body, settings), settings))
    return iid, host.run_until_complete(iid, max_virtual_seconds=86400)["output"]


def test_a_5_mb_result_and_a_large_error_are_cut_inline_and_kept_whole(host, host_mode, emulator, results_storage):
    emulator.scenario = Scenario(rules=[
        # Larger than Databricks returns: it keeps the first 5 MB and says so.
        ("*/big", Behavior(phases=(("RUNNING", 60),), notebook_result="x" * (FIVE_MB + 10))),
        ("*/broken", Behavior(phases=(("RUNNING", 60),), result_state="FAILED", notebook_result=None,
                              error="E" * 300_000, error_trace="T" * 1_000_000)),
        ("*/small", Behavior(phases=(("RUNNING", 60),), notebook_result="s" * 100)),
    ])
    iid, out = _run(host, {"jobName": "large-results", "taskKey": "big",
                           "tasks": [_task("big"), _task("broken"), _task("small")]})
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    big, broken, small = tasks["big"], tasks["broken"], tasks["small"]

    # Inline: each task's share (three tasks: the per-task cap), flagged, with the route to the whole.
    assert big["notebookResultBytes"] == MAX_NOTEBOOK_RESULT_BYTES and big["notebookResultTruncated"] is True
    assert big["notebookResultTruncatedAtSource"] is True  # Databricks cut it first
    assert len(big["notebookResult"]) == ONE_TASK_SHARE
    assert big["resultPath"] == f"/api/workflows/{iid}/results/big"
    assert out["notebookResult"] == big["notebookResult"] and out["resultPath"] == big["resultPath"]
    # A failed task spends its share on the error first, so its trace is left out inline.
    assert len(broken["error"]) == ONE_TASK_SHARE and broken["errorTruncated"] is True
    assert "errorTrace" not in broken and broken["errorTraceTruncated"] is True
    assert broken["notebookResultBytes"] == 0 and broken["notebookResultTruncated"] is False
    assert small["notebookResult"] == "s" * 100 and small["notebookResultBytes"] == 100
    assert small["notebookResultTruncated"] is False and "resultPath" not in small
    assert out["errorTruncated"] is True and len(out["error"]) == ONE_TASK_SHARE

    # Kept whole: one blob per task that was cut, named by instance, task key and task run id.
    run_ids = {k: t["runId"] for k, t in tasks.items()}
    assert results_storage.names() == sorted([f"{iid}/big/{run_ids['big']}.json",
                                              f"{iid}/broken/{run_ids['broken']}.json"])
    kept_big = json.loads(results_storage.read(f"{iid}/big/{run_ids['big']}.json"))
    assert kept_big["notebookResult"] == "x" * MAX_NOTEBOOK_RESULT_BYTES
    assert kept_big["notebookResultTruncatedAtSource"] is True and kept_big["runId"] == run_ids["big"]
    kept_broken = json.loads(results_storage.read(f"{iid}/broken/{run_ids['broken']}.json"))
    assert (kept_broken["error"], kept_broken["errorTrace"]) == ("E" * 300_000, "T" * 1_000_000)

    # Nothing large entered the history: of 6.3 MB of output, the activity's result (three shares)
    # and the outputs (three shares and the main task's result and error again) at most.
    assert max(_history_bytes(host, iid)) < 8 * ONE_TASK_SHARE
    # Costs: one get-output per task per activity run (every activity runs twice in that mode).
    calls = sum(n for (_, name), n in emulator.call_counts().items() if name == "runs/get-output")
    assert calls == 3 * (2 if host_mode == "at-least-once" else 1)


def test_a_result_within_its_share_is_carried_whole_and_nothing_is_written(host, emulator, results_storage):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 60),), notebook_result="ok" * 100))])
    _, out = _run(host, {"jobName": "small-results", "taskKey": "main", "tasks": [_task("main")]})
    [task] = out["tasks"]
    assert out["notebookResult"] == task["notebookResult"] == "ok" * 100
    assert (task["notebookResultBytes"], task["notebookResultTruncated"]) == (200, False)
    assert "resultPath" not in out and "notebookResultTruncated" not in out
    assert results_storage.names() == []  # no storage I/O for what fits


# -- the budget of a 1,000-task job: pure, no storage ------------------------------------------------

def _summary(i: int, *, result_bytes: int, failed: bool) -> dict:
    summary = {"taskKey": f"task_{i:04d}", "runId": 10_000_000 + i, "truncated": False}
    if failed:
        summary.update(error="boom " * 2000, errorTrace="Traceback (most recent call last):\n" * 5000)
    else:
        summary["notebookResult"] = "r" * result_bytes
    return summary


def _run_summary(n: int) -> dict:
    return {"runId": 1, "jobId": 2, "lifeCycleState": "TERMINATED", "resultState": "FAILED",
            "runPageUrl": "https://adb-1234567890123456.7.azuredatabricks.net/?o=1234567890123456#job/2/run/1",
            "tasks": [{"taskKey": f"task_{i:04d}", "runId": 10_000_000 + i, "attemptNumber": 0,
                       "lifeCycleState": "TERMINATED", "resultState": "FAILED" if i % 10 == 0 else "SUCCESS",
                       "runPageUrl": "https://adb-1234567890123456.7.azuredatabricks.net/?o=1234567890123456"
                                     f"#job/2/run/{10_000_000 + i}"} for i in range(n)]}


@pytest.mark.parametrize("n", [1, 4, 100, 1000])
def test_the_outputs_of_a_job_of_any_size_stay_under_the_inline_budget(n):
    """Each task's share shrinks with the task count, so all inline text together stays under
    WORKFLOW_RESULTS_INLINE_TOTAL_BYTES however many 5 MB results the job returns (5 MB stands in
    as 64 KB + 1: everything past a share is cut alike)."""
    env = {}
    share = results.task_share(n, env)
    assert share == min(65536, 262144 // n)
    fetched = {}
    for i in range(n):
        inline, kept = results.cap_task_output(_summary(i, result_bytes=65537, failed=i % 10 == 0), share)
        assert kept is not None  # every one was cut, and its whole is kept
        fetched[inline["taskKey"]] = dict(inline, resultPath=results.result_path("inst-1", inline["taskKey"]))
    outputs = policy.outputs(job_id=2, run_id=1, result="FAILED", run=_run_summary(n), task_outputs=fetched,
                             output_task_key="task_0001" if n > 1 else "task_0000")
    inline_text = sum(len((t.get(f) or "").encode("utf-8")) for t in outputs["tasks"] for f in results.TEXT_FIELDS)
    assert inline_text <= 262144
    size = len(json.dumps(outputs).encode("utf-8"))
    # The whole outputs: the inline budget, plus the top-level copy of one share, plus ~600 bytes of
    # ids, states and links per task. 1,000 tasks: under 1 MB (the status answer and orchestration
    # output), where without caps they would be 5 GB.
    assert size <= 262144 + 2 * share + 600 * n + 4096, size
    if n == 1000:
        assert size < 1_000_000
    assert all(t["notebookResultTruncated"] or "error" in t for t in outputs["tasks"])


def test_an_inline_share_never_splits_a_character():
    inline, kept = results.cap_task_output({"taskKey": "t", "runId": 1, "notebookResult": "é" * 10}, 7)
    assert inline["notebookResult"] == "ééé" and inline["notebookResultBytes"] == 20 and kept["notebookResult"] == "é" * 10


@pytest.mark.parametrize("name,value", [("WORKFLOW_RESULT_INLINE_BYTES", "12"),
                                        ("WORKFLOW_RESULTS_INLINE_TOTAL_BYTES", "lots")])
def test_a_bad_results_setting_is_named(name, value):
    with pytest.raises(results.ResultSettingError, match=f"^{name} "):
        results.task_share(3, {name: value})


@pytest.mark.parametrize("status,kind", [(503, "transient"), (429, "transient"), (0, "transient"),
                                         (403, "permanent"), (None, "permanent")])
def test_blob_storage_errors_are_classified_by_kind_and_never_quote_the_request(status, kind):
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    from messaging import result_blobs

    secret = "sig=SECRET-SAS-SIGNATURE"
    if status is None:
        error = ClientAuthenticationError(message=f"refused {secret}")
    elif status == 0:
        error = ServiceRequestError(f"connection refused to https://a.blob.core.windows.net/?{secret}")
    else:
        error = HttpResponseError(message=f"failed {secret}")
        error.status_code = status

    def failing():
        raise error

    with pytest.raises(result_blobs.ResultStoreError) as raised:
        result_blobs._guarded(failing)
    assert policy.failure_kind(str(raised.value)) == kind and secret not in str(raised.value)
