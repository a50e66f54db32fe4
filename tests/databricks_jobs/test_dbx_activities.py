"""The activity functions, called as the Functions host would (the registered user function)."""
import hashlib
import json
import pickle

import pytest
import responses
from responses import matchers

from activities import jobs
from activities.jobs import bp, cancelRun, createJob, deleteJob, getJobRun, getJobRunOutput, runJobNow
from databricks_jobs import ConfigurationError, DatabricksApiError
from workflow.jobspec import DEFINITION_TAG, RUN_KEY_TAG, fingerprint

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
API = HOST + "/api/2.1/jobs"
LIST = HOST + "/api/2.2/jobs/list"  # the lookup always lists through 2.2: 100 jobs a page
ME = HOST + "/api/2.0/preview/scim/v2/Me"
APP = "app-sp-0001"  # the app's identity: creator_user_name of the jobs it creates
LONG_ID = "orchestration-" + "x" * 80
JOB = {"name": "nightly", "tasks": [{"task_key": "main", "existing_cluster_id": "0923-164208-meows279",
                                     "notebook_task": {"notebook_path": "/Workspace/Users/me/nb"}}],
       "queue": {"enabled": True}, "max_concurrent_runs": 1000, "timeout_seconds": 3900}
CREATE_INPUT = {"instanceId": "abc123", "runKey": "run-key-1", "job": JOB}


@pytest.fixture
def mocked(pat_env):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(ME, json={"userName": APP, "id": "1"})
        yield mock


def listed(*jobs_):
    """jobs/list?expand_tasks=true: each job with its creator and settings (`settings` given whole,
    or a name and tags that stand for the settings of JOB)."""
    out = []
    for job_id, name, tags, *rest in jobs_:
        settings = rest[0] if rest else {**JOB, "name": name, "tags": tags}
        out.append({"job_id": job_id, "created_time": 1_700_000_000_000 + job_id, "creator_user_name": APP,
                    "settings": settings})
    return {"jobs": out}


def test_blueprint_registers_the_activities_by_name():
    names = {}
    for builder in bp._function_builders:
        function = builder.build()
        binding = json.loads(function.get_function_json())["bindings"][0]
        names[function.get_function_name()] = (binding["type"], binding["activity"], binding["name"])
    assert names == {name: ("activityTrigger", name, "request")
                     for name in ("createJob", "runJobNow", "submitRun", "getJobRun", "getJobRunOutput", "repairRun",
                                  "cancelRun", "deleteJob")}


def _definition_tag(job=JOB, destination=None):
    return fingerprint(jobs.job_settings(job, tag=(DEFINITION_TAG, ""), notification_destination_id=destination))


def test_create_job_creates_the_definitions_job_tagged_with_its_fingerprint_when_none_exists(mocked):
    # Same name, another definition (an older version of the notebook job): not this one.
    mocked.get(LIST, json=listed((9, "nightly", {DEFINITION_TAG: "an-older-definition"})),
               match=[matchers.query_param_matcher({"name": "nightly", "limit": "100", "expand_tasks": "true"})])
    create = mocked.post(API + "/create", json={"job_id": 42})
    assert createJob(CREATE_INPUT) == {"jobId": 42, "created": True, "webhooks": False}
    body = json.loads(create.calls[0].request.body)
    assert body == {**JOB, "tags": {DEFINITION_TAG: _definition_tag()}}


def test_create_job_reuses_the_job_of_the_same_definition(mocked):
    mocked.get(LIST, json=listed((9, "nightly", {DEFINITION_TAG: _definition_tag()})))
    create = mocked.post(API + "/create", json={"job_id": 42})
    assert createJob(CREATE_INPUT) == {"jobId": 9, "created": False, "webhooks": False}
    assert create.call_count == 0
    # Known from now on in this process: no Jobs API call at all for the next start.
    calls_before = len(mocked.calls)
    assert createJob({**CREATE_INPUT, "runKey": "run-key-2"})["jobId"] == 9
    assert len(mocked.calls) == calls_before


def test_a_private_job_is_tagged_with_the_workflow_runs_key_and_never_reused(mocked):
    mocked.get(LIST, json=listed((9, "nightly", {DEFINITION_TAG: _definition_tag()})))
    create = mocked.post(API + "/create", json={"job_id": 42})
    assert createJob({**CREATE_INPUT, "private": True})["jobId"] == 42
    assert json.loads(create.calls[0].request.body)["tags"] == {RUN_KEY_TAG: "run-key-1"}


def test_create_job_re_executed_creates_one_job(mocked):
    state = {"jobs": []}

    def list_jobs(request):
        return 200, {}, json.dumps(listed(*state["jobs"]))

    def create_job(request):
        body = json.loads(request.body)
        state["jobs"].append((len(state["jobs"]) + 1, body["name"], body["tags"], body))
        return 200, {}, json.dumps({"job_id": len(state["jobs"])})

    mocked.add_callback("GET", LIST, callback=list_jobs)
    mocked.add_callback("POST", API + "/create", callback=create_job)
    first = createJob(CREATE_INPUT)
    jobs.known_jobs.clear()  # another process: nothing cached
    second = createJob(CREATE_INPUT)
    assert first == {"jobId": 1, "created": True, "webhooks": False}
    assert second == {"jobId": 1, "created": False, "webhooks": False}
    assert len(state["jobs"]) == 1


def test_create_job_subscribes_the_notification_destination(mocked, configure):
    configure(notification_destination_id="0a1b2c3d-dest")
    mocked.get(LIST, json={})
    create = mocked.post(API + "/create", json={"job_id": 3})
    assert createJob(CREATE_INPUT) == {"jobId": 3, "created": True, "webhooks": True}
    body = json.loads(create.calls[0].request.body)
    assert body["webhook_notifications"] == {event: [{"id": "0a1b2c3d-dest"}] for event in ("on_start", "on_success", "on_failure")}
    assert body["tags"][DEFINITION_TAG] == _definition_tag(destination="0a1b2c3d-dest") != _definition_tag()


@pytest.mark.parametrize("run_key, token", [
    ("run-key-1", "run-key-1"),
    (LONG_ID, hashlib.sha256(LONG_ID.encode()).hexdigest()),
])
def test_run_job_now_sends_the_run_key_as_its_idempotency_token(mocked, run_key, token):
    mocked.post(API + "/run-now", json={"run_id": 77, "number_in_job": 77}, match=[matchers.json_params_matcher(
        {"job_id": 42, "idempotency_token": token, "notebook_params": {"a": "1"}})])
    # The run page link comes with the run id, as runs/get would report it, without a call.
    assert runJobNow({"runKey": run_key, "jobId": 42, "notebookParams": {"a": "1"}}) == {
        "runId": 77, "runPageUrl": HOST + "/?o=1234567890123456#job/42/run/77"}


def test_get_job_run_summarises_a_running_run_without_result_state(mocked):
    mocked.get(API + "/runs/get", json={
        "run_id": 1, "job_id": 2, "run_name": "nightly", "number_in_job": 1,
        "state": {"life_cycle_state": "RUNNING", "state_message": "In run", "user_cancelled_or_timedout": False},
        "run_page_url": "https://adb/#job/2/run/1", "start_time": 1700000000000, "end_time": 0,
        "tasks": [
            {"task_key": "main", "run_id": 3, "attempt_number": 0, "state": {"life_cycle_state": "TERMINATED",
             "result_state": "FAILED"}, "start_time": 1700000000000, "notebook_task": {"notebook_path": "/nb"}},
            {"task_key": "main", "run_id": 4, "attempt_number": 1, "state": {"life_cycle_state": "RUNNING"},
             "start_time": 1700000100000},
        ],
    }, match=[matchers.query_param_matcher({"run_id": "1"})])
    assert getJobRun({"runId": 1}) == {
        "runId": 1, "jobId": 2, "lifeCycleState": "RUNNING", "stateMessage": "In run",
        "runPageUrl": "https://adb/#job/2/run/1", "startTime": 1700000000000, "endTime": 0,
        "tasks": [
            {"taskKey": "main", "runId": 3, "attemptNumber": 0, "lifeCycleState": "TERMINATED",
             "resultState": "FAILED", "startTime": 1700000000000, "runPageUrl": None, "type": "notebook_task"},
            {"taskKey": "main", "runId": 4, "attemptNumber": 1, "lifeCycleState": "RUNNING",
             "resultState": None, "startTime": 1700000100000, "runPageUrl": None, "type": None},
        ],
    }


def test_get_job_run_carries_result_state_and_the_2_2_status(mocked):
    status = {"state": "TERMINATED", "termination_details": {"code": "SUCCESS", "type": "SUCCESS", "message": ""}}
    mocked.get(API + "/runs/get", json={"run_id": 1, "job_id": 2, "status": status, "start_time": 5, "end_time": 9,
                                        "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}})
    summary = getJobRun({"runId": 1})
    assert (summary["resultState"], summary["status"], summary["endTime"], summary["tasks"]) == ("SUCCESS", status, 9, [])
    assert summary["stateMessage"] == ""


def test_get_job_run_output_reads_the_task_run(mocked):
    mocked.get(API + "/runs/get-output", json={
        "notebook_output": {"result": "{\"rows\": 3}", "truncated": False}, "metadata": {"run_id": 3}},
        match=[matchers.query_param_matcher({"run_id": "3"})])
    assert getJobRunOutput({"runId": 3}) == {"runId": 3, "notebookResult": "{\"rows\": 3}", "truncated": False}


def test_get_job_run_output_of_several_tasks_in_one_call_says_which_have_no_notebook_output(mocked):
    mocked.get(API + "/runs/get-output", json={"notebook_output": {"result": "7"}},
               match=[matchers.query_param_matcher({"run_id": "3"})])
    mocked.get(API + "/runs/get-output", json={"logs": "hello from a python script"},
               match=[matchers.query_param_matcher({"run_id": "4"})])
    # Each task also says how big its result is and whether the copy is all of it (workflow/results.py).
    assert getJobRunOutput({"tasks": [{"taskKey": "nb", "runId": 3}, {"taskKey": "py", "runId": 4}]}) == {"tasks": [
        {"taskKey": "nb", "runId": 3, "notebookResult": "7", "notebookResultBytes": 1, "notebookResultTruncated": False},
        {"taskKey": "py", "runId": 4, "noNotebookOutput": True, "notebookResultBytes": 0,
         "notebookResultTruncated": False}]}


def test_get_job_run_output_of_a_failed_task(mocked):
    mocked.get(API + "/runs/get-output", json={"notebook_output": {}, "error": "ZeroDivisionError: division by zero",
                                               "error_trace": "Traceback ..."})
    assert getJobRunOutput({"runId": 3}) == {"runId": 3, "truncated": False,
                                             "error": "ZeroDivisionError: division by zero", "errorTrace": "Traceback ..."}


def test_cancel_run(mocked):
    mocked.post(API + "/runs/cancel", json={}, match=[matchers.json_params_matcher({"run_id": 5})])
    assert cancelRun({"runId": 5}) == {"runId": 5, "canceled": True}


def test_delete_job_is_idempotent(mocked):
    delete = mocked.post(API + "/delete", json={}, match=[matchers.json_params_matcher({"job_id": 9})])
    assert deleteJob({"jobId": 9}) == {"jobId": 9, "deleted": True}
    assert delete.call_count == 1
    # A repeated attempt after the job is gone has met its goal.
    mocked.replace(responses.POST, API + "/delete", status=400,
                   json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Job 9 does not exist."})
    assert deleteJob({"jobId": 9}) == {"jobId": 9, "deleted": True}


def test_delete_job_reports_other_failures(mocked):
    mocked.post(API + "/delete", status=403, json={"error_code": "PERMISSION_DENIED", "message": "not yours"})
    with pytest.raises(DatabricksApiError, match="403 PERMISSION_DENIED"):
        deleteJob({"jobId": 9})


def test_errors_cross_the_activity_boundary_as_text(mocked):
    mocked.get(API + "/runs/get-output", status=400, json={
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Retrieving the output of runs with multiple tasks is not supported. "
                   "Please retrieve the output of each individual task run instead."})
    with pytest.raises(DatabricksApiError) as raised:
        getJobRunOutput({"runId": 1})
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy).startswith("Databricks API error 400 INVALID_PARAMETER_VALUE: Retrieving the output")


def test_input_may_arrive_as_json_text(mocked):
    mocked.post(API + "/runs/cancel", json={})
    assert cancelRun(json.dumps({"runId": 5})) == {"runId": 5, "canceled": True}


@pytest.mark.parametrize("activity, request_", [
    (createJob, {k: v for k, v in CREATE_INPUT.items() if k != "job"}),
    (runJobNow, {"jobId": 1}),
    (getJobRun, {}),
])
def test_missing_input_is_named(pat_env, activity, request_):
    with pytest.raises(ValueError, match="missing"):
        activity(request_)


@pytest.mark.parametrize("env, setting", [
    ({"host": None}, "DATABRICKS_HOST"),
    ({"host": "http://adb-1.azuredatabricks.net"}, "DATABRICKS_HOST"),
    ({"auth": "pat", "token": None}, "DATABRICKS_TOKEN"),
    ({"auth": "oauth"}, "DATABRICKS_AUTH"),
])
def test_bad_configuration_fails_the_first_activity_call_naming_the_setting(configure, env, setting):
    configure(**{"host": HOST, "auth": "pat", "token": "dapi-x", **env})
    with pytest.raises(ConfigurationError, match=f"^Configuration error: {setting}: "):
        getJobRun({"runId": 1})


@pytest.mark.parametrize("run_as, reused", [
    ({"service_principal_name": APP}, True),   # a job runs as its creator unless told otherwise
    ({"user_name": "someone@contoso.com"}, False),  # changed by hand to run as someone else: drift
])
def test_a_run_as_naming_the_creator_is_what_the_service_fills_in(mocked, run_as, reused):
    settings = {**JOB, "tags": {DEFINITION_TAG: _definition_tag()}, "run_as": run_as}
    mocked.get(LIST, json=listed((9, "nightly", None, settings)))
    mocked.post(API + "/create", json={"job_id": 42})
    assert createJob(CREATE_INPUT)["jobId"] == (9 if reused else 42)


def test_an_output_over_its_share_with_no_results_storage_names_the_setting(mocked, monkeypatch):
    """A cut output must be kept somewhere: with the results connection unset, getJobRunOutput
    fails permanently, naming the setting, before anything large is returned."""
    from databricks_jobs.errors import ConfigurationError
    from messaging import result_blobs
    from workflow.policy import failure_kind

    monkeypatch.setenv("WORKFLOW_RESULTS_CONNECTION", "RESULTS_STORAGE_UNSET")
    monkeypatch.delenv("RESULTS_STORAGE_UNSET", raising=False)
    result_blobs.reset_cache()
    mocked.get(API + "/runs/get-output", json={"notebook_output": {"result": "x" * 70_000}})
    with pytest.raises(ConfigurationError) as raised:
        getJobRunOutput({"tasks": [{"taskKey": "nb", "runId": 3}], "instanceId": "i-1", "taskCount": 1})
    assert str(raised.value).startswith("Configuration error: WORKFLOW_RESULTS_CONNECTION:")
    assert failure_kind(str(raised.value)) == "permanent"
    # Within its share nothing is written, so no storage is needed at all.
    mocked.get(API + "/runs/get-output", json={"notebook_output": {"result": "x" * 60_000}})
    [task] = getJobRunOutput({"tasks": [{"taskKey": "nb", "runId": 3}], "instanceId": "i-1", "taskCount": 1})["tasks"]
    assert task["notebookResultBytes"] == 60_000 and task["notebookResultTruncated"] is False


def test_the_inline_share_shrinks_with_the_task_count_the_orchestrator_names(mocked):
    mocked.get(API + "/runs/get-output", json={"notebook_output": {"result": "x" * 3000}})
    # One task of a 100-task run (as a fetch of one task at a time would ask): 262144 / 100 bytes.
    [task] = getJobRunOutput({"tasks": [{"taskKey": "nb", "runId": 3}], "taskCount": 100})["tasks"]
    assert len(task["notebookResult"]) == 2621 and task["notebookResultTruncated"] is True
    assert task["notebookResultBytes"] == 3000
