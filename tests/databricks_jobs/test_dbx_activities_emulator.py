"""The activities over the real client against the Jobs API emulator. Activities run at least once,
so each side effect is shown to happen once when its activity runs twice: one saved job per
definition, one run per run key, one repair per failed round."""
import json

import pytest

from activities import jobs
from activities.jobs import createJob, getJobRun, getJobRunOutput, repairRun, runJobNow, submitRun
from databricks_jobs import DatabricksApiError
from dbx_emulator_support import CLUSTER, calls

JOB = {"name": "nightly-load", "tasks": [{"task_key": "main", "existing_cluster_id": CLUSTER,
                                          "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}],
       "queue": {"enabled": True}, "max_concurrent_runs": 1000, "timeout_seconds": 3900}
CREATE_INPUT = {"instanceId": "instance-abc", "runKey": "run-key-abc", "job": JOB}


@pytest.fixture
def client(emulator_client):
    return emulator_client


def test_one_definition_makes_one_saved_job_however_many_workflows_start(client, emulator):
    first = createJob(dict(CREATE_INPUT))
    assert first == {"jobId": first["jobId"], "created": True, "webhooks": False}
    for run_key in ("run-key-2", "run-key-3"):
        jobs.known_jobs.clear()  # as if each start ran in another process
        assert createJob({**CREATE_INPUT, "runKey": run_key})["jobId"] == first["jobId"]
    assert list(emulator.jobs) == [first["jobId"]] and len(calls(emulator, "/jobs/create")) == 1
    # Another definition under the same name is another job.
    other = createJob({**CREATE_INPUT, "job": {**JOB, "max_concurrent_runs": 5}})
    assert other["created"] and other["jobId"] != first["jobId"]


def test_the_jobs_api_calls_per_start_do_not_grow_with_earlier_workflows(client, emulator):
    createJob(dict(CREATE_INPUT))
    for n in range(20):
        runJobNow({"runKey": f"k{n}", "jobId": createJob({**CREATE_INPUT, "runKey": f"k{n}"})["jobId"]})
    emulator.clear_request_log()
    jobs.known_jobs.clear()  # a cold process: one list by name finds the one job
    createJob({**CREATE_INPUT, "runKey": "late"})
    assert [r["path"].rsplit("/", 1)[-1] for r in emulator.request_log] == ["list"]
    emulator.clear_request_log()
    createJob({**CREATE_INPUT, "runKey": "later"})  # warm: nothing at all
    assert emulator.request_log == []


def test_two_first_starts_that_both_created_the_job_converge_on_the_oldest(client, emulator):
    # A concurrent first start created the definition's job a moment before ours did.
    theirs = createJob(dict(CREATE_INPUT))["jobId"]
    jobs.known_jobs.clear()
    # Make our list miss theirs once (the race window), so that we create a second one.
    real_find = client.find_jobs
    calls_seen = []

    def find_jobs_missing_theirs_once(name, *, tag=None):
        found = real_find(name, tag=tag)
        calls_seen.append(len(found))
        return [] if len(calls_seen) == 1 else found

    client.find_jobs = find_jobs_missing_theirs_once
    ours = createJob({**CREATE_INPUT, "runKey": "run-key-2"})
    assert ours == {"jobId": theirs, "created": False, "webhooks": False}
    assert list(emulator.jobs) == [theirs]  # ours was deleted before any run used it
    assert len(calls(emulator, "/jobs/create")) == 2 and len(calls(emulator, "/jobs/delete")) == 1


def test_a_lost_create_reply_is_found_by_the_repeated_activity(client, emulator):
    emulator.faults.script("drop_after", path="*/jobs/create")
    with pytest.raises(DatabricksApiError):
        createJob(dict(CREATE_INPUT))  # the job exists but the activity could not learn its id
    again = createJob(dict(CREATE_INPUT))  # what the orchestrator's activity retry does
    assert again["created"] is False and list(emulator.jobs) == [again["jobId"]]


def test_a_private_job_is_the_workflow_runs_own(client, emulator):
    first = createJob({**CREATE_INPUT, "private": True})
    second = createJob({**CREATE_INPUT, "private": True})
    other = createJob({**CREATE_INPUT, "runKey": "run-key-xyz", "private": True})
    assert first["jobId"] == second["jobId"] != other["jobId"]
    assert emulator.jobs[first["jobId"]]["settings"]["tags"] == {"durable_run_key": "run-key-abc"}


def test_run_job_now_twice_returns_the_same_run_with_its_parameters(client, emulator):
    job_id = createJob(dict(CREATE_INPUT))["jobId"]
    first = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    second = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    assert first == second and set(first) == {"runId", "runPageUrl"}
    assert list(emulator.runs) == [first["runId"]]
    assert emulator.run(first["runId"])["overriding_parameters"] == {"notebook_params": {"day": "mon"}}


def test_run_job_now_passes_job_parameters_and_queues(client, emulator):
    job_id = createJob({**CREATE_INPUT, "job": {**JOB, "parameters": [{"name": "day", "default": "sun"}]}})["jobId"]
    run = runJobNow({"runKey": "k", "jobId": job_id, "jobParameters": {"day": "mon"}, "queue": {"enabled": True}})
    values = {p["name"]: p.get("value") for p in emulator.run(run["runId"])["job_parameters"]}
    assert values == {"day": "mon"}
    assert calls(emulator, "/jobs/run-now")[-1]["body"]["queue"] == {"enabled": True}


def test_submit_run_twice_makes_one_one_time_run(client, emulator):
    body = {"run_name": "adhoc", "tasks": JOB["tasks"], "timeout_seconds": 3900, "queue": {"enabled": True}}
    first = submitRun({"runKey": "run-key-abc", "submit": body})
    second = submitRun({"runKey": "run-key-abc", "submit": body})
    assert first == second == {"runId": first["runId"], "webhooks": False}
    assert list(emulator.runs) == [first["runId"]] and not emulator.jobs  # no saved job
    assert emulator.run(first["runId"])["run_type"] == "SUBMIT_RUN"


def _failed_run(client, emulator, vclock):
    job = {**JOB, "tasks": [{"task_key": "flaky_load", "existing_cluster_id": CLUSTER,
                             "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}]}
    job_id = createJob({**CREATE_INPUT, "job": job})["jobId"]
    run_id = runJobNow({"runKey": "k", "jobId": job_id})["runId"]
    vclock.advance(3600)
    summary = getJobRun({"runId": run_id})
    assert (summary["lifeCycleState"], summary["resultState"]) == ("INTERNAL_ERROR", "FAILED")
    return run_id


def test_repair_run_twice_repairs_once_and_the_run_succeeds(client, emulator, vclock):
    run_id = _failed_run(client, emulator, vclock)
    first = repairRun({"runId": run_id, "repairsSeen": 0})
    second = repairRun({"runId": run_id, "repairsSeen": 0})  # the activity ran again
    assert first["repairId"] == second["repairId"] and second["repeated"] is True
    assert len(calls(emulator, "/runs/repair")) == 1
    vclock.advance(3600)
    summary = getJobRun({"runId": run_id, "includeHistory": True})
    assert (summary["lifeCycleState"], summary["resultState"]) == ("TERMINATED", "SUCCESS")
    assert summary["repairs"] == [first["repairId"]]


def test_outputs_of_every_task_in_one_activity(client, emulator, vclock):
    job = {**JOB, "tasks": [
        {"task_key": "extract", "existing_cluster_id": CLUSTER,
         "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/extract"}},
        {"task_key": "report", "depends_on": [{"task_key": "extract"}], "existing_cluster_id": CLUSTER,
         "spark_python_task": {"python_file": "/Workspace/Users/me@contoso.com/report.py"}}]}
    job_id = createJob({**CREATE_INPUT, "job": job})["jobId"]
    run_id = runJobNow({"runKey": "k", "jobId": job_id})["runId"]
    vclock.advance(3600)
    tasks = getJobRun({"runId": run_id})["tasks"]
    assert {t["taskKey"]: t["type"] for t in tasks} == {"extract": "notebook_task", "report": "spark_python_task"}
    outputs = getJobRunOutput({"tasks": [{"taskKey": t["taskKey"], "runId": t["runId"]} for t in tasks]})["tasks"]
    by_key = {o["taskKey"]: o for o in outputs}
    assert json.loads(by_key["extract"]["notebookResult"])["task_key"] == "extract"
    assert by_key["report"]["noNotebookOutput"] is True and "notebookResult" not in by_key["report"]
