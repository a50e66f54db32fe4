"""What names one job definition (issue 14 §2, issue 15 §4): the fingerprint covers what defines the
job, not what varies per run; the same definition written in any order, with defaults spelled out or
left out, is one definition; any real difference is another; tag keys the app uses are refused."""
import json
import re

import pytest

from workflow import jobspec
from workflow.inputs import DATABRICKS_SCHEMA, InputError, validate_request
from workflow.jobspec import DEFINITION_TAG, RUN_KEY_TAG, fingerprint
from workflow.settings import WorkflowSettings

SEED = {"jobName": "nightly", "taskKey": "main", "notebookPath": "/Workspace/Users/a@b.c/nb",
        "existingClusterId": "0923-164208-meows279"}
CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 2}
MULTI = {
    "jobName": "etl", "taskKey": "report",
    "jobClusters": [{"job_cluster_key": "big", "new_cluster": CLUSTER},
                    {"job_cluster_key": "small", "new_cluster": {**CLUSTER, "num_workers": 1}}],
    "tasks": [
        {"task_key": "extract", "job_cluster_key": "big", "notebook_task": {"notebook_path": "/Workspace/etl/extract"}},
        {"task_key": "clean", "job_cluster_key": "small", "notebook_task": {"notebook_path": "/Workspace/etl/clean"}},
        {"task_key": "report", "depends_on": [{"task_key": "extract"}, {"task_key": "clean"}],
         "job_cluster_key": "small", "notebook_task": {"notebook_path": "/Workspace/etl/report"}}],
    "parameters": [{"name": "day", "default": "today"}, {"name": "region", "default": "eu"}],
    "tags": {"team": "a", "cost": "x"},
}


def definition(body, settings=WorkflowSettings()):
    """The fingerprint createJob tags the job with (no webhooks configured)."""
    job = validate_request(dict(body), settings).plan["job"]
    return fingerprint({**job, "tags": {**(job.get("tags") or {}), DEFINITION_TAG: ""}})


# -- what varies per run is not part of the definition ------------------------------------------------

def test_each_requests_own_deadline_uses_one_saved_job():
    """Cause 3: `timeout_seconds = timeoutSeconds + 300` made every deadline a definition of its own."""
    deadlines = {definition({**SEED, "timeoutSeconds": t}) for t in (600, 3600, 7201, 86400, 2_592_000)}
    assert len(deadlines) == 1
    job = validate_request({**SEED, "timeoutSeconds": 600}).plan["job"]
    # The job keeps a backstop that stops a run its workflow no longer watches, one fixed ceiling.
    assert job["timeout_seconds"] == jobspec.SHARED_JOB_TIMEOUT_SECONDS == 2_592_000 + 300


def test_per_run_values_are_not_part_of_the_definition():
    base = definition(SEED)
    for per_run in ({"notebookParams": {"day": "mon"}}, {"pollIntervalSeconds": 17}, {"repair": {"maxAttempts": 2}}):
        assert definition({**SEED, **per_run}) == base, per_run


def test_a_private_job_and_a_one_time_run_keep_the_requests_own_deadline():
    # Neither is shared, so the deadline splits nothing, and the backstop follows the request.
    private = validate_request({**SEED, "timeoutSeconds": 600, "deleteJobOnCompletion": True}).plan["job"]
    one_time = validate_request({**SEED, "timeoutSeconds": 600, "jobSource": "oneTime"}).plan["submit"]
    assert private["timeout_seconds"] == one_time["timeout_seconds"] == 600 + 300


# -- canonical form ------------------------------------------------------------------------------------

def _permuted(body):
    """The same definition: tasks, depends_on, clusters, parameters and every object's keys reordered."""
    def reorder(value):
        if isinstance(value, dict):
            return {k: reorder(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reorder(v) for v in value]
        return value

    out = reorder(body)
    for field in ("tasks", "jobClusters", "parameters"):
        out[field] = list(reversed(out[field]))
    for task in out["tasks"]:
        if "depends_on" in task:
            task["depends_on"] = list(reversed(task["depends_on"]))
    return out


def _defaulted(body):
    """The same definition with Databricks' defaults spelled out."""
    out = json.loads(json.dumps(body))
    out["maxConcurrentRuns"] = 1000  # the app's own default, given explicitly
    out["queue"] = {"enabled": True}
    for task in out["tasks"]:
        task.update({"run_if": "ALL_SUCCESS", "timeout_seconds": 0, "max_retries": 0, "min_retry_interval_millis": 0,
                     "retry_on_timeout": False, "disabled": False, "email_notifications": {}, "libraries": []})
        task["notebook_task"]["source"] = "WORKSPACE"
        task["notebook_task"]["base_parameters"] = {}
    return out


def test_order_of_tasks_depends_on_clusters_parameters_and_keys_does_not_split_a_definition():
    assert definition(_permuted(MULTI)) == definition(MULTI)


def test_defaults_spelled_out_or_left_out_are_one_definition():
    assert definition(_defaulted(MULTI)) == definition(MULTI)
    assert definition(_defaulted(_permuted(MULTI))) == definition(MULTI)


def test_the_job_settings_databricks_adds_are_its_documented_defaults():
    job = validate_request(dict(MULTI)).plan["job"]
    returned = json.loads(json.dumps(job))
    returned.update({"format": "MULTI_TASK", "email_notifications": {}, "webhook_notifications": {},
                     "notification_settings": {}, "tags": {**job["tags"], DEFINITION_TAG: "x", RUN_KEY_TAG: "y"}})
    assert fingerprint(returned) == fingerprint(job)


@pytest.mark.parametrize("change", [
    lambda b: b["tasks"][0]["notebook_task"].update(notebook_path="/Workspace/etl/other"),
    lambda b: b["tasks"][2].update(depends_on=[{"task_key": "extract"}]),
    lambda b: b["tasks"][1].update(run_if="ALL_DONE"),
    lambda b: b["tasks"][1].update(max_retries=1),
    lambda b: b["tasks"][1].update(timeout_seconds=60),
    lambda b: b["jobClusters"][0]["new_cluster"].update(num_workers=3),
    lambda b: b["parameters"][0].update(default="yesterday"),
    lambda b: b["tags"].update(team="b"),
    lambda b: b.update(maxConcurrentRuns=1),
    lambda b: b.update(queue={"enabled": False}),
    lambda b: b.update(jobName="etl-2"),
], ids=["notebook", "depends_on", "run_if", "max_retries", "task_timeout", "cluster", "parameter", "tag",
        "max_concurrent_runs", "queue", "name"])
def test_a_real_difference_is_another_definition(change):
    body = json.loads(json.dumps(MULTI))
    change(body)
    assert definition(body) != definition(MULTI)


def test_run_as_and_tags_in_the_settings_split_definitions():
    # A caller's runAs and tags (issue 15 §3) reach the job settings: callers do not share jobs by accident.
    job = validate_request(dict(SEED)).plan["job"]
    as_b = {**job, "run_as": {"service_principal_name": "b-sp"}}
    assert len({fingerprint(job), fingerprint(as_b), fingerprint({**as_b, "tags": {"team": "b"}})}) == 3


def test_cluster_fields_the_service_fills_in_count_only_where_the_definition_gives_them():
    job = validate_request(dict(MULTI)).plan["job"]
    returned = json.loads(json.dumps(job))
    for cluster in returned["job_clusters"]:
        cluster["new_cluster"].update(azure_attributes={"availability": "ON_DEMAND_AZURE"}, enable_elastic_disk=True,
                                      data_security_mode="SINGLE_USER")
    assert fingerprint(returned, reference=job) == fingerprint(job)
    # Where the definition gives one, a change to it is drift.
    asked = json.loads(json.dumps(job))
    asked["job_clusters"][0]["new_cluster"]["data_security_mode"] = "USER_ISOLATION"
    assert fingerprint(returned, reference=asked) != fingerprint(asked)


# -- tag keys the app uses for itself --------------------------------------------------------------

@pytest.mark.parametrize("extra, field", [
    ({"tags": {"team": "a", "durable_job_definition": "forged"}}, "tags.durable_job_definition"),
    ({"tags": {"Durable_Run_Key": "x"}}, "tags.Durable_Run_Key"),
    ({"newCluster": {**CLUSTER, "custom_tags": {"durable_job_definition": "x"}}, "existingClusterId": None},
     "newCluster.custom_tags.durable_job_definition"),
    ({"notebookPath": None, "existingClusterId": None,
      "jobClusters": [{"job_cluster_key": "big", "new_cluster": {**CLUSTER, "custom_tags": {"durable_x": "1"}}}],
      "tasks": [{"task_key": "report", "job_cluster_key": "big",
                 "notebook_task": {"notebook_path": "/Workspace/etl/report"}}]},
     "jobClusters[0].new_cluster.custom_tags.durable_x"),
])
def test_tag_keys_the_app_uses_are_refused_naming_the_field(extra, field):
    body = {k: v for k, v in {**SEED, **extra}.items() if v is not None}
    with pytest.raises(InputError) as refused:
        validate_request(body)
    assert (refused.value.status, refused.value.field) == (400, field)
    assert "reserved" in refused.value.message and "durable_" in refused.value.message


def test_the_schema_reserves_exactly_the_prefix_the_app_uses():
    pattern = DATABRICKS_SCHEMA["$defs"]["UnreservedTagKey"]["not"]["pattern"]
    for key in (DEFINITION_TAG, RUN_KEY_TAG, "DURABLE_x", jobspec.RESERVED_TAG_PREFIX):
        assert re.search(pattern, key)
    for key in ("team", "durable", "my_durable_x"):
        assert not re.search(pattern, key)


def test_unset_notification_entries_are_no_difference():
    job = validate_request(dict(SEED)).plan["job"]
    hooks = {"on_start": [{"id": "b"}, {"id": "a"}], "on_success": [{"id": "a"}]}
    returned = {**job, "edit_mode": "EDITABLE",
                "email_notifications": {"no_alert_for_skipped_runs": False, "on_failure": []},
                "webhook_notifications": {**hooks, "on_failure": []}}
    asked = {**job, "webhook_notifications": {"on_success": [{"id": "a"}], "on_start": [{"id": "a"}, {"id": "b"}]}}
    assert fingerprint(returned) == fingerprint(asked)
    assert fingerprint({**returned, "email_notifications": {"on_failure": ["ops@contoso.com"]}}) != fingerprint(asked)


def test_the_shared_jobs_ceiling_follows_the_longest_deadline_a_request_may_ask():
    from workflow.inputs import INPUT_SCHEMA
    assert INPUT_SCHEMA["properties"]["timeoutSeconds"]["maximum"] == jobspec.MAX_TIMEOUT_SECONDS
