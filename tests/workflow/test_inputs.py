import json

import pytest

from workflow.inputs import InputError, orchestration_input, parse_json_body, validate_request
from workflow.settings import WorkflowSettings

VALID = {"jobName": "nightly", "taskKey": "main", "notebookPath": "/Workspace/Users/a@b.c/nb",
         "existingClusterId": "0923-164208-meows279"}


def test_the_seed_request_is_a_one_task_job_to_create_and_reuse_with_deployment_defaults():
    plan = validate_request(dict(VALID), WorkflowSettings(default_timeout_seconds=3600, poll_interval_seconds=20)).plan
    assert plan["jobSource"] == "create" and plan["jobName"] == "nightly" and plan["taskKey"] == "main"
    assert (plan["timeoutSeconds"], plan["pollIntervalSeconds"], plan["deleteJobOnCompletion"]) == (3600, 20, False)
    assert plan["job"] == {
        "name": "nightly",
        "tasks": [{"task_key": "main", "notebook_task": {"notebook_path": "/Workspace/Users/a@b.c/nb"},
                   "existing_cluster_id": "0923-164208-meows279"}],
        # Shared by every workflow of this definition: each gets its own run, queued when busy.
        "queue": {"enabled": True}, "max_concurrent_runs": 1000,
        # The workflow deadline cancels the run; the job's own timeout is the backstop, one fixed
        # ceiling for a shared job (the longest deadline + 300 s), so deadlines do not split it.
        "timeout_seconds": 2_592_000 + 300,
    }
    assert plan["submit"] is None and plan["notebookParams"] == {}


def test_notebook_params_travel_with_the_run_not_the_job_so_the_job_is_reused():
    one = validate_request(dict(VALID, notebookParams={"day": "1"}), WorkflowSettings()).plan
    two = validate_request(dict(VALID, notebookParams={"day": "2"}), WorkflowSettings()).plan
    assert one["job"] == two["job"] and one["notebookParams"] == {"day": "1"}


def test_job_deletion_defaults_to_the_setting_and_the_input_overrides_it():
    keep, delete = WorkflowSettings(delete_job_on_completion=False), WorkflowSettings(delete_job_on_completion=True)
    assert validate_request(dict(VALID), delete).plan["deleteJobOnCompletion"] is True
    assert validate_request(dict(VALID, deleteJobOnCompletion=False), delete).plan["deleteJobOnCompletion"] is False
    assert validate_request(dict(VALID, deleteJobOnCompletion=True), keep).plan["deleteJobOnCompletion"] is True
    assert WorkflowSettings.from_env({"WORKFLOW_DELETE_JOB_ON_COMPLETION": "True"}).delete_job_on_completion is True
    # An existing job is never deleted, whatever the setting says.
    assert validate_request({"jobId": 7}, delete).plan["deleteJobOnCompletion"] is False


def test_explicit_options_win_over_defaults():
    body = {**VALID, "notebookParams": {"day": "2026-11-24"}, "timeoutSeconds": 120, "pollIntervalSeconds": 5}
    assert validate_request(body, WorkflowSettings()).to_dict()["timeoutSeconds"] == 120


def test_orchestration_input_carries_options_the_orchestrator_must_not_read_itself():
    settings = WorkflowSettings(polls_per_execution=7, webhook_poll_interval_seconds=600)
    envelope = orchestration_input(validate_request(dict(VALID), settings), settings)
    assert envelope["options"] == {"pollsPerExecution": 7, "webhookPollIntervalSeconds": 600, "notify": False,
                                   "watcher": True}
    assert "token" not in json.dumps(envelope)


BAD = [
    ({k: v for k, v in VALID.items() if k != "jobName"}, "jobName", "required"),
    ({k: v for k, v in VALID.items() if k != "taskKey"}, "taskKey", "is required with notebookPath"),
    ({**VALID, "token": "dapi123"}, "token", "not a known field"),
    ({**VALID, "jobName": 5}, "jobName", "must be a string, not an integer"),
    ({**VALID, "jobName": ""}, "jobName", "must be at least 1 characters long"),
    ({**VALID, "notebookPath": "Users/me/nb"}, "notebookPath", "starts with '/'"),
    ({**VALID, "notebookPath": "/Users/../etc"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users//nb"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users/nb/"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users/n\nb"}, "notebookPath", "invalid"),
    ({**VALID, "taskKey": "has space"}, "taskKey", "invalid"),
    # Python's $ also matches before a final newline; the patterns must not let one through.
    ({**VALID, "taskKey": "main\n"}, "taskKey", "invalid"),
    ({**VALID, "jobName": "nightly\n"}, "jobName", "invalid"),
    ({**VALID, "existingClusterId": "0923-164208-meows279\n"}, "existingClusterId", "invalid"),
    ({**VALID, "notebookPath": "/Users/me/nb\n"}, "notebookPath", "invalid"),
    ({**VALID, "notebookParams": {"a": 1}}, "notebookParams.a", "must be a string, not an integer"),
    ({**VALID, "notebookParams": ["a"]}, "notebookParams", "must be an object, not an array"),
    ({**VALID, "notebookParams": {f"k{i}": "v" * 100 for i in range(99)}}, "notebookParams", "10000 bytes"),
    ({**VALID, "timeoutSeconds": 10}, "timeoutSeconds", "must be at least 60 (got 10)"),
    ({**VALID, "timeoutSeconds": "60"}, "timeoutSeconds", "must be an integer, not a string"),
    ({**VALID, "timeoutSeconds": True}, "timeoutSeconds", "must be an integer, not a boolean"),
    ({**VALID, "pollIntervalSeconds": 1.5}, "pollIntervalSeconds", "must be an integer, not a number"),
    ({**VALID, "deleteJobOnCompletion": "yes"}, "deleteJobOnCompletion", "must be a boolean, not a string"),
    (["not", "an", "object"], None, "the request must be an object, not an array"),
]


@pytest.mark.parametrize("body, field, fragment", BAD)
def test_bad_input_names_the_field(body, field, fragment):
    with pytest.raises(InputError) as caught:
        validate_request(body, WorkflowSettings())
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert caught.value.status == 400
    # JSON terms only: no Python reprs such as True, None or 'a' quoting.
    assert not any(word in caught.value.message for word in ("True", "False", "None", "is not of type"))


@pytest.mark.parametrize("raw, fragment", [
    (b'{"jobName": "a", "jobName": "b"}', 'the key "jobName" twice'),
    (b"[" * 5000 + b"]" * 5000, "nested more than"),
    (b"[" * 100_000, "nested more than"),       # deeper than Python's own recursion limit
    (b'{"a": ' + b"[" * 33 + b"1" + b"]" * 33 + b"}", "nested more than"),   # just past the limit
])
def test_hostile_json_gets_a_clear_400(raw, fragment):
    with pytest.raises(InputError) as caught:
        parse_json_body(raw, 10_000_000)
    assert caught.value.status == 400 and fragment in caught.value.message


@pytest.mark.parametrize("content_type, ok", [
    ("application/json", True), ("application/json; charset=utf-8", True), ("application/cloudevents+json", True),
    ("text/plain", False), ("application/x-www-form-urlencoded", False), (None, False), ("", False),
])
def test_only_json_content_is_accepted(content_type, ok):
    from workflow.inputs import require_json_content_type

    if ok:
        require_json_content_type(content_type)
    else:
        with pytest.raises(InputError) as caught:
            require_json_content_type(content_type)
        assert caught.value.status == 415 and caught.value.field == "Content-Type"


@pytest.mark.parametrize("raw, status, fragment", [
    (b"", 400, "empty"),
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"x" * 2000, 413, "limit is 1024"),
])
def test_body_parsing_refuses_empty_malformed_and_oversize(raw, status, fragment):
    with pytest.raises(InputError) as caught:
        parse_json_body(raw, 1024)
    assert caught.value.status == status and fragment in caught.value.message and caught.value.field is None


def test_settings_are_checked_and_name_the_setting():
    with pytest.raises(ValueError, match="WORKFLOW_POLL_INTERVAL_SECONDS"):
        WorkflowSettings.from_env({"WORKFLOW_POLL_INTERVAL_SECONDS": "soon"})
    with pytest.raises(ValueError, match="WORKFLOW_POLLS_PER_EXECUTION"):
        WorkflowSettings.from_env({"WORKFLOW_POLLS_PER_EXECUTION": "1"})
    with pytest.raises(ValueError, match="WORKFLOW_DELETE_JOB_ON_COMPLETION"):
        WorkflowSettings.from_env({"WORKFLOW_DELETE_JOB_ON_COMPLETION": "sometimes"})


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize("value", [JWT, f"Bearer {JWT}", f"token={JWT}", f'"{JWT}"', f"x.{JWT}", f"a:{JWT}"])
def test_a_token_is_still_refused_where_it_sits_in_real_text(value):
    """The JWT pattern is looked for only where a run of base64url characters begins (linear time,
    bench/input_patterns.py); a token starts such a run wherever it appears in real text."""
    with pytest.raises(InputError, match="looks like a token") as refused:
        validate_request(dict(VALID, notebookParams={"day": value}), WorkflowSettings())
    assert refused.value.field == "notebookParams.day"


@pytest.mark.parametrize("uri", ["https://me:pw@pypi.example/simple", "a://:pw@host", "git+https://u:p@github.com/x"])
def test_user_info_in_a_library_url_is_still_refused(uri):
    task = {"task_key": "main", "notebook_task": {"notebook_path": "/Workspace/nb"}, "libraries": [{"whl": uri}]}
    with pytest.raises(InputError, match="user name and password"):
        validate_request({"jobName": "x", "tasks": [task]}, WorkflowSettings())


def test_event_shaped_values_are_held_to_the_body_limits():
    from workflow.inputs import check_json_value

    check_json_value({"a": "x" * 100}, 200, "data")
    with pytest.raises(InputError, match="'data' is 1[0-9]{2} bytes as JSON; the limit is 100") as big:
        check_json_value({"a": "x" * 100}, 100, "data")
    assert big.value.status == 413 and big.value.field == "data"
    deep = "x"
    for _ in range(5000):  # deeper than the recursion limit: checked without recursing
        deep = [deep]
    with pytest.raises(InputError, match="nested more than 32 levels"):
        check_json_value(deep, 1 << 20, "data")
