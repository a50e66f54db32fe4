"""The activities over the real client against the Jobs API emulator: repeated executions (at
least once) create one job and start one run."""
import pytest

from activities.jobs import INSTANCE_TAG, RUN_KEY_TAG, createJob, runJobNow
from databricks_jobs import DatabricksApiError
from dbx_emulator_support import CLUSTER, calls

CREATE_INPUT = {"instanceId": "instance-abc", "runKey": "run-key-abc", "jobName": "nightly-load", "taskKey": "main",
                "notebookPath": "/Workspace/Users/me@contoso.com/load", "existingClusterId": CLUSTER}


@pytest.fixture
def client(emulator_client):
    return emulator_client


def test_create_job_activity_twice_for_one_instance_creates_one_job(client, emulator):
    first = createJob(dict(CREATE_INPUT))
    second = createJob(dict(CREATE_INPUT))
    assert first == {"jobId": first["jobId"], "created": True, "webhooks": False}
    assert second == {"jobId": first["jobId"], "created": False, "webhooks": False}
    assert list(emulator.jobs) == [first["jobId"]]
    assert emulator.jobs[first["jobId"]]["settings"]["tags"] == {INSTANCE_TAG: "instance-abc",
                                                                 RUN_KEY_TAG: "run-key-abc"}
    assert len(calls(emulator, "/jobs/create")) == 1
    # Another workflow run with the same job name gets its own job: the run key, not the name, decides.
    other = createJob({**CREATE_INPUT, "instanceId": "instance-xyz", "runKey": "run-key-xyz"})
    assert other["created"] and other["jobId"] != first["jobId"]


def test_create_job_activity_repeated_after_a_lost_create_reply_finds_the_job(client, emulator):
    emulator.faults.script("drop_after", path="*/jobs/create")
    with pytest.raises(DatabricksApiError):
        createJob(dict(CREATE_INPUT))  # the job exists but the activity could not learn its id
    again = createJob(dict(CREATE_INPUT))  # what the orchestrator's activity retry does
    assert again["created"] is False and list(emulator.jobs) == [again["jobId"]]


def test_run_job_now_activity_twice_returns_the_same_run(client, emulator):
    job_id = createJob(dict(CREATE_INPUT))["jobId"]
    first = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    second = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    assert first == second == {"runId": first["runId"]}
    assert list(emulator.runs) == [first["runId"]]
    assert emulator.run(first["runId"])["overriding_parameters"] == {"notebook_params": {"day": "mon"}}
