import json

import pytest

from workflow.inputs import InputError, orchestration_input, parse_json_body, validate_request
from workflow.settings import WorkflowSettings

VALID = {"jobName": "nightly", "taskKey": "main", "notebookPath": "/Workspace/Users/a@b.c/nb",
         "existingClusterId": "0923-164208-meows279"}


def test_valid_input_gets_deployment_defaults():
    request = validate_request(dict(VALID), WorkflowSettings(default_timeout_seconds=3600, poll_interval_seconds=20))
    assert request.to_dict() == {**VALID, "notebookParams": {}, "timeoutSeconds": 3600, "pollIntervalSeconds": 20,
                                 "deleteJobOnCompletion": False}


def test_job_deletion_defaults_to_the_setting_and_the_input_overrides_it():
    keep, delete = WorkflowSettings(delete_job_on_completion=False), WorkflowSettings(delete_job_on_completion=True)
    assert validate_request(dict(VALID), delete).delete_job_on_completion is True
    assert validate_request(dict(VALID, deleteJobOnCompletion=False), delete).delete_job_on_completion is False
    assert validate_request(dict(VALID, deleteJobOnCompletion=True), keep).delete_job_on_completion is True
    assert WorkflowSettings.from_env({"WORKFLOW_DELETE_JOB_ON_COMPLETION": "True"}).delete_job_on_completion is True


def test_explicit_options_win_over_defaults():
    body = {**VALID, "notebookParams": {"day": "2026-11-24"}, "timeoutSeconds": 120, "pollIntervalSeconds": 5}
    assert validate_request(body, WorkflowSettings()).to_dict()["timeoutSeconds"] == 120


def test_orchestration_input_carries_options_the_orchestrator_must_not_read_itself():
    settings = WorkflowSettings(polls_per_execution=7, webhook_poll_interval_seconds=600)
    envelope = orchestration_input(validate_request(dict(VALID), settings), settings)
    assert envelope["options"] == {"pollsPerExecution": 7, "webhookPollIntervalSeconds": 600, "notify": False}
    assert "token" not in json.dumps(envelope)


BAD = [
    ({k: v for k, v in VALID.items() if k != "jobName"}, "jobName", "required"),
    ({k: v for k, v in VALID.items() if k != "existingClusterId"}, "existingClusterId", "required"),
    ({**VALID, "token": "dapi123"}, "token", "not a known input field"),
    ({**VALID, "jobName": 5}, "jobName", "not of type"),
    ({**VALID, "jobName": ""}, "jobName", "invalid"),
    ({**VALID, "notebookPath": "Users/me/nb"}, "notebookPath", "starts with '/'"),
    ({**VALID, "notebookPath": "/Users/../etc"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users//nb"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users/nb/"}, "notebookPath", "invalid"),
    ({**VALID, "notebookPath": "/Users/n\nb"}, "notebookPath", "invalid"),
    ({**VALID, "taskKey": "has space"}, "taskKey", "invalid"),
    ({**VALID, "notebookParams": {"a": 1}}, "notebookParams.a", "not of type"),
    ({**VALID, "notebookParams": ["a"]}, "notebookParams", "not of type"),
    ({**VALID, "notebookParams": {f"k{i}": "v" * 100 for i in range(99)}}, "notebookParams", "10000 bytes"),
    ({**VALID, "timeoutSeconds": 10}, "timeoutSeconds", "minimum"),
    ({**VALID, "timeoutSeconds": "60"}, "timeoutSeconds", "not of type"),
    ({**VALID, "pollIntervalSeconds": 1.5}, "pollIntervalSeconds", "not of type"),
    ({**VALID, "deleteJobOnCompletion": "yes"}, "deleteJobOnCompletion", "not of type"),
    (["not", "an", "object"], None, "not of type 'object'"),
]


@pytest.mark.parametrize("body, field, fragment", BAD)
def test_bad_input_names_the_field(body, field, fragment):
    with pytest.raises(InputError) as caught:
        validate_request(body, WorkflowSettings())
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert caught.value.status == 400


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
