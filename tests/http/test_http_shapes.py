"""Every job shape from the two front doors a caller uses: the HTTP API and a Storage queue message
(delivered to the queue-triggered function as the host does, through devhost's admin endpoint), end to
end through devhost and the Jobs API emulator. An existing job named by jobName is looked up when the
workflow is asked for: exactly one match runs it, none or several is the caller's 422."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from databricks_jobs.client import get_jobs_client
from http_support import START, VALID
from triggers.queue_trigger import start_workflow_from_queue

CLUSTER = "0923-164208-meows279"
SHAPES = {
    "seed": VALID,
    "existing-job-by-id": None,  # filled in with a job made in the workspace first
    "existing-job-by-name": {"jobName": "defined-in-databricks", "notebookParams": {"day": "fri"}},
    "one-time": dict(VALID, jobSource="oneTime", jobName="adhoc"),
    "job-cluster": {"jobName": "on-a-job-cluster", "jobClusters": [{"job_cluster_key": "c", "new_cluster": {
        "spark_version": "15.4.x-scala2.12", "instance_pool_id": "pool-1", "num_workers": 1}}],
        "tasks": [{"task_key": "main", "job_cluster_key": "c", "notebook_task": {"notebook_path": "/Workspace/nb"}}]},
    "serverless": {"jobName": "serverless", "taskKey": "main", "notebookPath": "/Workspace/serverless/nb"},
    "multi-task-repaired": {"jobName": "dag", "taskKey": "b", "repair": {"maxAttempts": 1}, "tasks": [
        {"task_key": "a", "notebook_task": {"notebook_path": "/Workspace/a"}},
        {"task_key": "flaky_b", "depends_on": [{"task_key": "a"}], "notebook_task": {"notebook_path": "/Workspace/b"}},
        {"task_key": "b", "depends_on": [{"task_key": "flaky_b"}], "notebook_task": {"notebook_path": "/Workspace/c"}}]},
    "job-parameters": dict(VALID, jobName="parameterised", parameters=[{"name": "day", "default": "sun"}],
                           jobParameters={"day": "sat"}),
}


def _existing_job(name="defined-in-databricks"):
    return get_jobs_client().create_job({"name": name, "tasks": [
        {"task_key": "main", "existing_cluster_id": CLUSTER, "notebook_task": {"notebook_path": "/Workspace/existing"}}]})


def _body(shape):
    if shape == "existing-job-by-id":
        return {"jobId": _existing_job("by-id"), "notebookParams": {"day": "thu"}}
    if shape == "existing-job-by-name":
        _existing_job()
    return SHAPES[shape]


def _outputs(stack, instance_id):
    stack.host.run_until_complete(instance_id, max_virtual_seconds=10 * 86400)
    response = requests.get(f"{stack.base_url}/api/workflows/{instance_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_runs_end_to_end_over_http(stack, shape):
    body = _body(shape)
    started = requests.post(stack.base_url + START, json=body, timeout=10)
    assert started.status_code == 202, started.text
    out = _outputs(stack, started.json()["id"])
    assert out["resultState"] == "SUCCESS" and out["tasks"]
    assert (out["jobId"] is None) == (shape == "one-time")
    if shape == "existing-job-by-name":
        assert stack.emulator.jobs[out["jobId"]]["settings"]["name"] == "defined-in-databricks"
        assert json.loads(out["notebookResult"])["parameters"] == {"day": "fri"}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_runs_end_to_end_from_a_queue_message(stack, shape):
    message = {**_body(shape), "instanceId": f"queue-{shape}"}
    sent = requests.post(f"{stack.base_url}/admin/functions/{start_workflow_from_queue.build().get_function_name()}",
                         json={"input": json.dumps(message)}, timeout=10)
    assert sent.status_code == 202
    from triggers.queue_trigger import REQUEST_QUEUE
    from triggers.starter import derived_instance_id, queue_instance_key

    # A queue's instanceId is namespaced to its queue (issue 15).
    out = _outputs(stack, derived_instance_id("queue", queue_instance_key(REQUEST_QUEUE, f"queue-{shape}")))
    assert out["resultState"] == "SUCCESS"


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.json"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_documented_example_request_runs_to_success(stack, example):
    """docs/examples/ is what `python -m devhost demo --request` is pointed at: each must work."""
    body = json.loads(example.read_text("utf-8"))
    if example.stem.startswith("existing-job"):
        _existing_job(body["jobName"])  # docs/examples/README.md says to create it first
    started = requests.post(stack.base_url + START, json=body, timeout=10)
    assert started.status_code == 202, started.text
    out = _outputs(stack, started.json()["id"])
    assert out["resultState"] == "SUCCESS" and out["tasks"]
    assert len(out.get("repairs") or []) == (1 if "repair" in body else 0)


@pytest.mark.parametrize("jobs, fragment", [(0, "no job is named"), (2, "2 jobs are named")])
def test_a_job_name_that_matches_no_job_or_several_is_422_naming_the_field(stack, jobs, fragment):
    for _ in range(jobs):
        _existing_job("ambiguous")
    response = requests.post(stack.base_url + START, json={"jobName": "ambiguous"}, timeout=10)
    assert response.status_code == 422 and response.json()["field"] == "jobName"
    assert fragment in response.json()["error"] and stack.host.instance_ids() == []


def test_databricks_unreachable_during_the_lookup_is_503_and_starts_nothing(stack, monkeypatch):
    import databricks_jobs

    stack.emulator.faults.script(*["503"] * 20, path="*/jobs/list")
    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "0.5")
    databricks_jobs.reset_all()
    response = requests.post(stack.base_url + START, json={"jobName": "anything"}, timeout=30)
    assert response.status_code == 503 and response.json()["field"] == "jobName" and response.headers["Retry-After"]
    assert stack.host.instance_ids() == []


@pytest.mark.parametrize("body, field", [
    ({**VALID, "newCluster": {"spark_version": "15.4.x-scala2.12", "num_workers": 1}}, "newCluster"),
    ({"jobId": 7, "notebookPath": "/Workspace/nb", "taskKey": "main"}, "jobId"),
    ({"jobName": "x", "tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"},
                                 "depends_on": [{"task_key": "missing"}]}]}, "tasks[0].depends_on[0].task_key"),
    ({"jobName": "x", "tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"},
                                 "existing_cluster_id": "c1", "job_cluster_key": "k"}]}, "tasks[0]"),
    ({**VALID, "jobSource": "oneTime", "jobParameters": {"a": "b"}}, "jobParameters"),
    ({**VALID, "notebookParams": {"db_password": "hunter2"}}, "notebookParams.db_password"),
    ({"jobName": "x", "gitSource": {"git_url": "https://user:ghp_secret@github.com/a/b", "git_provider": "gitHub",
                                    "git_branch": "main"},
      "tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "nb", "source": "GIT"}}]}, "gitSource.git_url"),
])
def test_shapes_that_do_not_fit_together_are_400_naming_the_field_in_json_terms(stack, body, field):
    response = requests.post(stack.base_url + START, json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field, response.json()
    assert stack.host.instance_ids() == [] and stack.emulator.request_log == []
