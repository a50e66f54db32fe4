"""Every job shape teams run, end to end in virtual time: the real orchestrator and activities on
devhost, the Jobs API emulator behind real HTTP. Each test runs in both host modes (every activity
executed twice and events batched, or not; conftest.py), and the shapes also run under injected
faults: whatever happens, one run per workflow and at most one saved job per definition."""
from __future__ import annotations

import json

import pytest

from databricks_jobs.client import get_jobs_client
from jobs_emulator import Faults
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings

CLUSTER = "0923-164208-meows279"
NOTEBOOK = "/Workspace/Users/me@contoso.com/load"


def _start(host, body, settings=WorkflowSettings()):
    return host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(validate_request(body, settings), settings))


def _run(host, body, settings=WorkflowSettings()):
    return host.run_until_complete(_start(host, body, settings), max_virtual_seconds=10 * 86400)


def _calls(emulator, endpoint):
    """Calls to an endpoint such as "create" or "runs/submit" (the emulator counts them by route)."""
    return sum(n for (method, name), n in emulator.call_counts().items() if name == endpoint)


SEED = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": NOTEBOOK, "existingClusterId": CLUSTER}
MULTI_TASK = {
    "jobName": "etl-with-a-flaky-step",
    "taskKey": "report",
    "jobClusters": [{"job_cluster_key": "etl", "new_cluster": {
        "spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 2}}],
    "tasks": [
        {"task_key": "extract", "job_cluster_key": "etl", "notebook_task": {"notebook_path": "/Workspace/etl/extract"}},
        {"task_key": "flaky_transform", "depends_on": [{"task_key": "extract"}], "job_cluster_key": "etl",
         "notebook_task": {"notebook_path": "/Workspace/etl/transform"}},
        {"task_key": "report", "depends_on": [{"task_key": "flaky_transform"}], "job_cluster_key": "etl",
         "notebook_task": {"notebook_path": "/Workspace/etl/report"}},
    ],
}
SERVERLESS = {
    "jobName": "serverless-mix",
    "taskKey": "notebook",
    "environments": [{"environment_key": "default", "spec": {"client": "2", "dependencies": ["pandas==2.2.2"]}}],
    "tasks": [
        {"task_key": "notebook", "notebook_task": {"notebook_path": "/Workspace/serverless/nb"}},
        {"task_key": "wheel", "environment_key": "default",
         "python_wheel_task": {"package_name": "acme_etl", "entry_point": "main"}},
    ],
}


def test_the_seed_request_creates_one_job_then_reuses_it_for_every_later_workflow(host, emulator):
    first = _run(host, dict(SEED, notebookParams={"day": "mon"}))["output"]
    second = _run(host, dict(SEED, notebookParams={"day": "tue"}))["output"]
    assert first["resultState"] == second["resultState"] == "SUCCESS"
    assert first["jobId"] == second["jobId"] and list(emulator.jobs) == [first["jobId"]]
    assert first["runId"] != second["runId"]
    # Parameters travel with each run, not with the shared job.
    assert json.loads(second["notebookResult"])["parameters"] == {"day": "tue"}
    assert _calls(emulator, "create") == 1


def test_concurrent_workflows_of_one_definition_each_get_their_own_run(host, emulator):
    ids = [_start(host, dict(SEED, notebookParams={"n": str(n)})) for n in range(5)]
    outputs = [host.run_until_complete(i, max_virtual_seconds=86400)["output"] for i in ids]
    assert {o["resultState"] for o in outputs} == {"SUCCESS"}  # none SKIPPED for concurrency
    assert len({o["runId"] for o in outputs}) == 5 and len({o["jobId"] for o in outputs}) == 1


def test_an_existing_job_runs_as_it_is_defined_with_this_runs_parameters(host, emulator):
    job_id = get_jobs_client().create_job({"name": "defined-by-terraform", "tasks": [
        {"task_key": "main", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": NOTEBOOK}}]})
    before = emulator.jobs[job_id]["settings"]
    out = _run(host, {"jobId": job_id, "notebookParams": {"day": "wed"}})["output"]
    assert out["resultState"] == "SUCCESS" and out["jobId"] == job_id
    assert json.loads(out["notebookResult"])["parameters"] == {"day": "wed"}
    assert emulator.jobs[job_id]["settings"] == before and _calls(emulator, "create") == 1  # ours only


def test_job_parameters_reach_the_run(host, emulator):
    out = _run(host, dict(SEED, jobName="parameterised", parameters=[{"name": "day", "default": "sun"}],
                          jobParameters={"day": "mon"}))["output"]
    values = {p["name"]: p.get("value") for p in emulator.run(out["runId"])["job_parameters"]}
    assert out["resultState"] == "SUCCESS" and values == {"day": "mon"}
    assert json.loads(out["notebookResult"])["parameters"]["day"] == "mon"  # pushed down as a widget


def test_a_one_time_run_saves_no_job(host, emulator):
    out = _run(host, dict(SEED, jobSource="oneTime", jobName="adhoc-backfill", notebookParams={"day": "thu"}))["output"]
    assert out["resultState"] == "SUCCESS" and out["jobId"] is None
    assert emulator.jobs == {} and _calls(emulator, "runs/submit") >= 1
    assert emulator.run(out["runId"])["run_type"] == "SUBMIT_RUN"
    assert json.loads(out["notebookResult"])["parameters"] == {"day": "thu"}


def test_a_job_cluster_and_a_failing_task_repaired_into_success(host, emulator):
    out = _run(host, dict(MULTI_TASK, repair={"maxAttempts": 1}))["output"]
    assert out["resultState"] == "SUCCESS"
    [repair] = out["repairs"]
    assert repair["failedTasks"] == ["flaky_transform"] and repair["resultStateBefore"] == "FAILED"
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    assert set(tasks) == {"extract", "flaky_transform", "report"}
    assert {t["resultState"] for t in tasks.values()} == {"SUCCESS"}
    assert json.loads(out["notebookResult"])["task_key"] == "report"  # taskKey names the output task
    assert len(emulator.runs) == 1 and len(emulator.jobs) == 1


def test_without_repair_the_failed_task_says_why_and_its_dependents_did_not_run(host, emulator):
    out = _run(host, MULTI_TASK)["output"]
    assert out["resultState"] == "FAILED" and "repairs" not in out
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    assert tasks["flaky_transform"]["resultState"] == "FAILED" and tasks["flaky_transform"]["error"]
    assert tasks["report"]["databricksResultState"] == "UPSTREAM_FAILED" and tasks["report"]["noNotebookOutput"]
    assert out["error"] == tasks["flaky_transform"]["error"]  # the failing task's error, for the caller


def test_serverless_notebook_and_wheel_tasks(host, emulator):
    out = _run(host, SERVERLESS)["output"]
    assert out["resultState"] == "SUCCESS"
    tasks = {t["taskKey"]: t for t in out["tasks"]}
    assert tasks["wheel"]["noNotebookOutput"] is True and tasks["notebook"]["notebookResult"]
    created = next(iter(emulator.jobs.values()))["settings"]
    assert all("existing_cluster_id" not in t and "new_cluster" not in t for t in created["tasks"])


SHAPES = {
    "seed": SEED,
    "one-time": dict(SEED, jobSource="oneTime", jobName="adhoc"),
    "multi-task-repaired": dict(MULTI_TASK, repair={"maxAttempts": 1}),
    "serverless": SERVERLESS,
    "job-parameters": dict(SEED, jobName="parameterised", parameters=[{"name": "day", "default": "sun"}],
                           jobParameters={"day": "mon"}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_under_twenty_percent_faults_each_shape_makes_one_run_and_at_most_one_job(shape, host, emulator, monkeypatch,
                                                                                 sleeps):
    import databricks_jobs
    from databricks_jobs import client as client_module
    from databricks_jobs.credentials import get_token_provider
    from databricks_jobs.settings import get_settings

    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "2")  # some faulty streaks outlast the client
    databricks_jobs.reset_all()
    # The client's retry waits are recorded, not slept (the budget runs on the recorder's clock).
    client_module._client.override(client_module.JobsClient.from_settings(
        get_settings(), get_token_provider(), sleep_func=sleeps, clock=sleeps.clock))
    emulator.faults = Faults(rate=0.2, kinds=("429", "503", "500", "drop", "drop_after"), seed=11, retry_after=1)
    outputs = [_run(host, SHAPES[shape])["output"] for _ in range(3)]
    assert {o["resultState"] for o in outputs} == {"SUCCESS"}
    assert len(emulator.runs) == 3 and len({o["runId"] for o in outputs}) == 3  # one run per workflow
    assert len(emulator.jobs) <= 1  # one saved job per definition (none for a one-time run)
    assert any(r["fault"] for r in emulator.request_log)
