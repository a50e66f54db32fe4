"""The whole workflow in virtual time while the Jobs API emulator injects faults on every API path:
throttling (429/503 with Retry-After), 500s, connections dropped before processing and replies lost
after it (`drop_after`). Whatever the client's retries and the orchestrator's activity retries do,
the caller must get the run's real outcome, with one job and one run on Databricks.

The client's retry waits are recorded, not slept (its injectable sleep, on a fake clock that the
DATABRICKS_RETRY_MAX_SECONDS budget is measured against), and durable timers run in virtual time,
so each workflow takes well under a second of wall time."""
from __future__ import annotations

import json

import pytest

import databricks_jobs
from databricks_jobs import client as client_module
from databricks_jobs.client import JobsClient
from databricks_jobs.credentials import get_token_provider
from databricks_jobs.settings import get_settings
from jobs_emulator import Behavior, Faults, Scenario

NOTEBOOK = "/Workspace/Users/me@contoso.com/load_under_faults"
ALL_KINDS = ("429", "503", "500", "drop", "drop_after")  # no "slow": it would sleep for real
RETRY_BUDGET_SECONDS = "5"  # small: some faulty streaks outlast it and fail an activity attempt
TASK_FAILED = 6  # history EventType
# Long enough for a dozen or so polls, so that faults land on every step, not only on a few calls.
LONGER_RUN = Scenario(rules=[("*", Behavior(phases=(("PENDING", 60), ("RUNNING", 240), ("TERMINATING", 5))))])


@pytest.fixture(params=["2.1", "2.2"])
def api_version(request):
    return request.param


@pytest.fixture
def fake_sleep(monkeypatch, databricks_env, emulator, api_version, sleeps):
    """Install, as the process-wide client the activities use, the client built from settings
    (small retry budget, the chosen API version) with recorded instead of real sleeps."""
    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", RETRY_BUDGET_SECONDS)
    monkeypatch.setenv("DATABRICKS_JOBS_API_VERSION", api_version)
    databricks_jobs.reset_all()
    built = JobsClient.from_settings(get_settings(), get_token_provider(), sleep_func=sleeps, clock=sleeps.clock)
    assert built.api_url == f"{emulator.base_url}/api/{api_version}"
    client_module._client.override(built)
    yield sleeps
    databricks_jobs.reset_all()


def _requests(emulator, suffix):
    return [r for r in emulator.request_log if r["path"].endswith(suffix)]


def _failed_activities(host, instance_id):
    return [e["Reason"] for x in host.executions(instance_id) for e in x["history"]
            if e["EventType"] == TASK_FAILED]


def _assert_one_job_one_successful_run(status, emulator):
    """Completed with the run's own result; one job, one run, output asked of the task run only."""
    assert status["runtimeStatus"] == "Completed", json.dumps(status.get("output"))[:2000]
    out = status["output"]
    assert (out["lifeCycleState"], out["resultState"]) == ("TERMINATED", "SUCCESS")

    # Idempotency under retries and lost replies: a lost create/run-now reply must not duplicate.
    assert list(emulator.jobs) == [out["jobId"]]
    assert list(emulator.runs) == [out["runId"]]
    run = emulator.run(out["runId"])
    assert run["state"]["life_cycle_state"] == "TERMINATED"  # nothing left running
    (task,) = run["tasks"]

    # The default notebook result echoes the run it came from: the output is this run's.
    assert json.loads(out["notebookResult"]) == {
        "status": "OK", "notebook_path": NOTEBOOK, "task_key": "main",
        "job_run_id": out["runId"], "parameters": {}}

    # get-output was only ever asked for the task run id, faulted attempts included.
    fetched = _requests(emulator, "/runs/get-output")
    assert fetched and {r["query"]["run_id"] for r in fetched} == {str(task["run_id"])}
    assert any(r["status"] == 200 for r in fetched)
    # Every run-now attempt carried the same token: the workflow run's key.
    assert len({r["body"]["idempotency_token"] for r in _requests(emulator, "/jobs/run-now") if r["body"]}) == 1
    # The one job is the shared job of this definition, tagged with its fingerprint.
    assert emulator.jobs[out["jobId"]]["settings"]["tags"]["durable_job_definition"]


# At this rate seeds 1-60 all succeeded on both API versions and both host modes when the file was
# last changed (with the run watcher on). These five
# also put faults on the POSTs (lost create/run-now replies, drops, 500s) and fail whole activity
# attempts, so both the client's retries and the orchestrator's activity retries are exercised.
@pytest.mark.parametrize("seed", [1, 7, 13, 22, 28])
def test_random_faults_on_every_path_still_give_one_job_one_run_and_the_result(
        seed, fake_sleep, run_workflow, emulator, host):
    emulator.faults = Faults(rate=0.3, kinds=ALL_KINDS, seed=seed, retry_after=1)
    emulator.scenario = LONGER_RUN

    status = run_workflow(notebookPath=NOTEBOOK)

    _assert_one_job_one_successful_run(status, emulator)
    faulted = [r for r in emulator.request_log if r["fault"]]
    assert len(faulted) >= 3, "the test means something only if faults were injected"
    assert any(r["method"] == "POST" for r in faulted), "and only if some hit create or run-now"
    # Throttling waited for Retry-After (recorded, not slept).
    if any(r["fault"] in ("429", "503") and r["method"] == "GET" for r in faulted):
        assert 1 in fake_sleep.sleeps


def test_lost_run_now_replies_beyond_the_clients_retries_still_make_one_run(
        fake_sleep, run_workflow, emulator, host):
    # More lost replies than one activity's client retries allow (urllib3 total=10, and the 5 s
    # budget): the runJobNow activity fails, the orchestrator runs it again, and the run key it
    # sends as the token makes that attempt find the run the lost replies created.
    emulator.faults.script(*["drop_after"] * 12, path="*/jobs/run-now")
    status = run_workflow(notebookPath=NOTEBOOK)
    _assert_one_job_one_successful_run(status, emulator)
    failures = _failed_activities(host, status["instanceId"])
    assert failures and all("runJobNow" in f for f in failures)
    assert len(_requests(emulator, "/jobs/run-now")) > 12


def test_a_lost_create_reply_is_repaired_by_the_activity_retry_without_a_second_job(
        fake_sleep, run_workflow, emulator, host):
    # jobs/create is not retried by the client (no idempotency token); the createJob activity's
    # second attempt finds the job by name and definition tag instead of creating another.
    emulator.faults.script("drop_after", path="*/jobs/create")
    status = run_workflow(notebookPath=NOTEBOOK)
    _assert_one_job_one_successful_run(status, emulator)
    assert len(_requests(emulator, "/jobs/create")) == 1
    failures = _failed_activities(host, status["instanceId"])
    if host.activities_twice:
        assert failures == []  # the duplicate execution already found the job: nothing to retry
    else:
        (failure,) = failures
        assert "createJob" in failure and "TRANSPORT_ERROR" in failure
