"""Issue 14 causes 5 and 9, issue 15 §4: a private job (deleteJobOnCompletion) is deleted however its
workflow ends, and each task's output stands on its own. Every test runs under both host modes (each
activity run twice in the second) and asserts the Jobs API calls the workflow made."""
from __future__ import annotations

import json

import pytest

from jobs_emulator import Behavior, Scenario
from jobs_emulator.errors import ApiError
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings
from workflow_support import REQUEST


def _calls(emulator, suffix):
    return [r for r in emulator.request_log if r["path"].endswith(suffix)]


def _times(host) -> int:
    return 2 if host.activities_twice else 1


def _assert_private_job_deleted(emulator, host, out_or_job_id):
    """The one private job was created once and deleted: no job is left. Under the at-least-once
    host the delete activity runs twice (deleting a deleted job is no error)."""
    assert emulator.jobs == {}
    created, deleted = _calls(emulator, "/jobs/create"), _calls(emulator, "/jobs/delete")
    assert len(created) == 1
    assert len(deleted) == _times(host) and {d["body"]["job_id"] for d in deleted} == {out_or_job_id}


def _start(host, **overrides):
    settings = WorkflowSettings()
    request = validate_request({**REQUEST, "deleteJobOnCompletion": True, **overrides}, settings)
    return host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings))


# -- cause 5: a private job is deleted however the workflow ends --------------------------------------

def test_a_private_job_is_deleted_after_success(run_workflow, emulator, host):
    out = run_workflow(deleteJobOnCompletion=True)["output"]
    assert out["resultState"] == "SUCCESS" and out["jobDeleted"] is True
    _assert_private_job_deleted(emulator, host, out["jobId"])
    # Deleted after the output was fetched (a deleted job's runs can no longer be read).
    paths = [r["path"] for r in emulator.request_log]
    assert max(i for i, p in enumerate(paths) if p.endswith("/runs/get-output")) < paths.index(
        next(p for p in paths if p.endswith("/jobs/delete")))


def test_a_private_job_is_deleted_after_its_run_failed(run_workflow, emulator, host):
    out = run_workflow(deleteJobOnCompletion=True, notebookPath="/Workspace/Users/me@contoso.com/fail_load")["output"]
    assert out["resultState"] == "FAILED" and out["jobDeleted"] is True
    _assert_private_job_deleted(emulator, host, out["jobId"])


def test_a_private_job_is_deleted_after_a_cancel(host, clock, emulator):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    iid = _start(host)
    host.run_until_idle()
    clock.advance(60)
    host.run_until_idle()
    host.raise_event(iid, "cancel", {"reason": "test"})
    out = host.run_until_complete(iid)["output"]
    assert out["resultState"] == "CANCELED" and out["cancelRequested"] is True and out["jobDeleted"] is True
    _assert_private_job_deleted(emulator, host, out["jobId"])
    assert len(_calls(emulator, "/runs/cancel")) == _times(host)


def test_a_private_job_is_deleted_after_the_deadline(run_workflow, emulator, host):
    emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 7200),)))])
    out = run_workflow(deleteJobOnCompletion=True, timeoutSeconds=600)["output"]
    assert out["resultState"] == "TIMEDOUT" and out["deadlineExceeded"] is True and out["jobDeleted"] is True
    _assert_private_job_deleted(emulator, host, out["jobId"])


def test_a_private_job_is_deleted_when_the_workflow_fails(run_workflow, emulator, host):
    # run-now is refused for good (job parameters on a job that defines none): the workflow fails.
    status = run_workflow(deleteJobOnCompletion=True, jobParameters={"day": "mon"})
    assert status["runtimeStatus"] == "Failed" and "runJobNow" in json.dumps(status["output"])
    job_id = _calls(emulator, "/jobs/delete")[0]["body"]["job_id"]
    _assert_private_job_deleted(emulator, host, job_id)
    assert not emulator.runs


def test_a_shared_job_is_kept_however_the_workflow_ends(run_workflow, emulator):
    status = run_workflow(jobParameters={"day": "mon"})
    assert status["runtimeStatus"] == "Failed"
    assert len(emulator.jobs) == 1 and not _calls(emulator, "/jobs/delete")


# -- cause 9: each task's output on its own ----------------------------------------------------------

MULTI = {"jobName": "etl", "taskKey": "report", "notebookPath": None, "existingClusterId": None,
         "tasks": [{"task_key": key, "existing_cluster_id": "0923-164208-meows279",
                    "notebook_task": {"notebook_path": f"/Workspace/etl/{key}"}} for key in ("extract", "clean", "report")]}


def _run(host, **overrides):
    settings = WorkflowSettings()
    body = {k: v for k, v in {**REQUEST, **MULTI, **overrides}.items() if v is not None}
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(validate_request(body, settings), settings))
    return host.run_until_complete(iid, max_virtual_seconds=86400)


@pytest.fixture
def output_refused(emulator):
    """get-output of the `clean` task answers `errors` in turn (then normally): the emulator's own
    answer, so the client, activity and orchestrator paths are the real ones."""
    calls = {"clean": 0}
    real = emulator.store.get_output

    def get_output(query, version):
        with emulator.store.lock:
            entry = emulator.store.task_runs.get(int(query.get("run_id")))
        if entry is not None and entry[2] == "clean":
            calls["clean"] += 1
            if calls["clean"] <= len(output_refused.errors):
                raise output_refused.errors[calls["clean"] - 1]
        return real(query, version)

    output_refused.errors = []
    emulator.store.get_output = get_output
    return output_refused


def _outputs_by_task(emulator):
    by_run = {}
    for r in _calls(emulator, "/runs/get-output"):
        entry = emulator.store.task_runs[int(r["query"]["run_id"])]
        by_run.setdefault(entry[2], []).append(r["status"])
    return by_run


def test_one_tasks_refused_output_is_reported_on_that_task_only(host, emulator, output_refused,
                                                                monkeypatch):
    output_refused.errors = [ApiError(403, "PERMISSION_DENIED", "no access to the output of this run")] * 4
    out = _run(host)["output"]
    assert out["resultState"] == "SUCCESS"  # the run's outcome stands
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    assert json.loads(tasks["extract"]["notebookResult"])["task_key"] == "extract"
    assert json.loads(tasks["report"]["notebookResult"])["task_key"] == "report"
    assert json.loads(out["notebookResult"])["task_key"] == "report" and "outputError" not in out
    assert tasks["clean"]["notebookResult"] is None
    assert tasks["clean"]["outputError"].startswith("Databricks API error 403 PERMISSION_DENIED")
    assert "outputError" not in tasks["extract"] and "outputError" not in tasks["report"]
    # A refusal is final: each task asked once per activity run, none again.
    assert _outputs_by_task(emulator) == {"extract": [200] * _times(host), "clean": [403] * _times(host),
                                          "report": [200] * _times(host)}


def test_a_task_whose_output_fails_transiently_is_asked_again_alone(host, emulator, output_refused,
                                                                   monkeypatch):
    import databricks_jobs

    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.1")  # the client gives up at once: the workflow retries
    databricks_jobs.reset_all()
    output_refused.errors = [ApiError(503, "TEMPORARILY_UNAVAILABLE", "busy")] * _times(host)
    out = _run(host)["output"]
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    assert all(json.loads(tasks[k]["notebookResult"])["task_key"] == k for k in ("extract", "clean", "report"))
    assert not any("outputError" in t for t in out["tasks"])
    fetched = _outputs_by_task(emulator)
    # The tasks that answered are not fetched again; only `clean` is, after its failure.
    assert fetched["extract"] == fetched["report"] == [200] * _times(host)
    assert fetched["clean"][:_times(host)] == [503] * _times(host) and fetched["clean"][-1] == 200


def test_the_main_tasks_lost_output_shows_on_top_too(host, emulator, output_refused):
    output_refused.errors = [ApiError(403, "PERMISSION_DENIED", "no access")] * 4
    out = _run(host, taskKey="clean")["output"]
    assert out["notebookResult"] is None and out["outputError"].startswith("Databricks API error 403")
    assert [t["taskKey"] for t in out["tasks"] if "outputError" in t] == ["clean"]


def test_a_private_job_made_by_a_createjob_that_a_cancel_overtook_is_found_and_deleted(host, emulator):
    """The cancel arrives while createJob runs: the workflow stops without learning the job id, so
    it looks the job up by its run key's tag (lookupOnly) and deletes it."""
    activity = host.activities["createJob"]
    real = activity.user_function
    iid = None

    sent = []

    def cancel_then_create(request):
        if not sent:  # once, however often the activity runs
            sent.append(True)
            host.raise_event(iid, "cancel", {"reason": "while createJob ran"})
        return real(request)

    activity.user_function = cancel_then_create
    try:
        iid = _start(host)
        out = host.run_until_complete(iid)["output"]
    finally:
        activity.user_function = real
    assert out["resultState"] == "CANCELED" and out["jobDeleted"] is True
    # With events batched as the extension batches them, the cancel is seen before createJob's
    # result: the workflow never learnt the job id, started no run, and found the job by its tag.
    # Otherwise it learnt the id first (and cancelled the run it had asked for). Either way the
    # job is gone.
    assert (out["jobId"] is None) == host.batch_events == (not emulator.runs)
    assert emulator.jobs == {} and len(_calls(emulator, "/jobs/create")) == 1
    assert len(_calls(emulator, "/jobs/delete")) == _times(host)
