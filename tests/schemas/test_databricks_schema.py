"""workflow/schemas/databricks.schema.json: the Databricks Jobs API objects a request may carry.

Three kinds of test:
- valid job shapes modelled on the Databricks docs and SDK examples pass;
- each refusal names the field's JSON path and carries the schema's `x-error` message;
- fidelity: every object, property and enum value in the schema exists in databricks-sdk, so the schema
  cannot drift from Databricks' own definitions.

Validation goes through another schema that `$ref`s the definitions by a relative URI, resolved with a
`referencing.Registry`, the way the request schema (workflow/input.schema.json) will use them.
"""
from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import re
import typing
from pathlib import Path

import pytest
from databricks.sdk.service import compute, jobs
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "databricks.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text("utf-8"))
DEFS = SCHEMA["$defs"]

# A stand-in for the request schema. Its $id sits next to databricks.schema.json's, so the relative
# reference "databricks.schema.json#/$defs/Task" resolves to the registered document.
REQUEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.invalid/create-job-and-run/test-request.schema.json",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tasks": {"type": "array", "minItems": 1, "items": {"$ref": "databricks.schema.json#/$defs/Task"}},
        "job_clusters": {"type": "array", "items": {"$ref": "databricks.schema.json#/$defs/JobCluster"}},
        "environments": {"type": "array", "items": {"$ref": "databricks.schema.json#/$defs/JobEnvironment"}},
        "git_source": {"$ref": "databricks.schema.json#/$defs/GitSource"},
        "queue": {"$ref": "databricks.schema.json#/$defs/JobsQueue"},
        "parameters": {"type": "array", "items": {"$ref": "databricks.schema.json#/$defs/JobParameterDefinition"}},
        "job_parameters": {"$ref": "databricks.schema.json#/$defs/JobParameters"},
        "tags": {"$ref": "databricks.schema.json#/$defs/Tags"},
    },
}
REGISTRY = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
VALIDATOR = Draft202012Validator(REQUEST_SCHEMA, registry=REGISTRY)


def json_path(path) -> str:
    """tasks[2].depends_on[0].task_key; a key that is not a plain name is quoted: spark_conf["a.b"]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def parse_path(text: str) -> list:
    """The inverse of json_path for plain names and indexes: "tasks[0].new_cluster" -> ["tasks", 0, "new_cluster"]."""
    return [int(index) if index else name
            for name, index in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", text)]


def refusals(body) -> list:
    """Every error as (JSON path, x-error or None), the two things the request formatter reports."""
    found = []
    for error in VALIDATOR.iter_errors(body):
        message = error.schema.get("x-error") if isinstance(error.schema, dict) else None
        found.append((json_path(error.absolute_path), message))
    return sorted(found, key=lambda item: (item[0], item[1] or ""))


def assert_valid(body):
    assert refusals(body) == []


def x_error(pointer: str) -> str:
    """The x-error at a JSON pointer inside the schema, so tests name the rule, not a copy of its text."""
    node = SCHEMA
    for part in pointer.strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node["x-error"]


def task_rule(*fields) -> str:
    """The x-error of Task's allOf rule that forbids the pair `fields`."""
    for rule in DEFS["Task"]["allOf"]:
        if rule.get("not") == {"required": list(fields)}:
            return rule["x-error"]
    raise AssertionError(f"no rule forbids {fields}")


NOTEBOOK = {"notebook_path": "/Workspace/Users/someone@example.com/etl/load"}
CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 2}
SECRET_REF = "{{secrets/etl-scope/storage-key}}"
NO_CREDENTIAL = x_error("$defs/NoCredentialText")
SECRET_NAME = DEFS["SecretReference"]["x-error"]


def task(**fields):
    return {"task_key": "main", **fields}


def one_task(**fields):
    return {"tasks": [task(**fields)]}


# Fake credentials, built at run time so secret scanners do not flag this file.
FAKE_TOKENS = {
    "databricks PAT": "dapi" + "0123456789abcdef" * 2,
    "databricks PAT with suffix": "dapi" + "0123456789abcdef" * 2 + "-2",
    "github classic": "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8",
    "github app": "ghs_" + "A1b2C3d4E5" * 3 + "F6g7H8",
    "github fine-grained": "github_pat_" + "11ABCDEFG0" * 3 + "_xyz",
    "slack bot": "xoxb-" + "1234567890-abcdefghij",
    "aws access key id": "AKIA" + "ABCDEFGHIJ234567",
    "bearer header": "Bearer " + "abc.def-ghi_jkl~mno+pqr/stu=",
    "jwt": "eyJ" + "hbGciOiJSUzI1NiJ9" + ".eyJ" + "zdWIiOiJhYmMifQ" + ".c2lnbmF0dXJl",
    "storage connection string": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + "QUJD" * 8 + ";",
    "service bus connection string": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=x;SharedAccessKey=" + "QUJD" * 8,
    "sas url": "https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&sr=b&sig=" + "abcDEF123%2B" * 2,
    "pem private key": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE...",
}


# ----------------------------------------------------------------------------------------------------
# Valid job shapes (modelled on the Jobs API docs and databricks-sdk examples)

def test_multi_task_dag_on_existing_and_new_clusters_passes():
    assert_valid({"tasks": [
        task(task_key="Sessionize", description="Extracts session data from events",
             existing_cluster_id="0923-164208-meows279",
             spark_python_task={"python_file": "/Workspace/Shared/etl/sessionize.py", "parameters": ["--date", "{{job.start_time.iso_date}}"]},
             libraries=[{"whl": "/Volumes/main/etl/libs/sessionize-1.0-py3-none-any.whl"}],
             timeout_seconds=86400, max_retries=3, min_retry_interval_millis=2000, retry_on_timeout=False),
        task(task_key="Orders_Ingest", existing_cluster_id="0923-164208-meows279",
             notebook_task={"notebook_path": "/Workspace/Shared/etl/orders", "source": "WORKSPACE"},
             libraries=[{"maven": {"coordinates": "org.jsoup:jsoup:1.7.2", "exclusions": ["slf4j:slf4j"]}}]),
        task(task_key="Match", depends_on=[{"task_key": "Orders_Ingest"}, {"task_key": "Sessionize"}], run_if="ALL_SUCCESS",
             new_cluster={"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_D3_v2",
                          "spark_conf": {"spark.speculation": "true"},
                          "azure_attributes": {"availability": "SPOT_WITH_FALLBACK_AZURE", "first_on_demand": 1, "spot_bid_max_price": -1},
                          "autoscale": {"min_workers": 2, "max_workers": 16}},
             notebook_task={"notebook_path": "/Workspace/Shared/etl/match", "base_parameters": {"name": "John Doe", "age": "35"}},
             email_notifications={"on_failure": ["oncall@example.com"]},
             notification_settings={"alert_on_last_attempt": True},
             webhook_notifications={"on_failure": [{"id": "0481e838-0a59-4eff-9541-a4ca6f149574"}]},
             health={"rules": [{"metric": "RUN_DURATION_SECONDS", "op": "GREATER_THAN", "value": 3600}]}),
        task(task_key="Cleanup", depends_on=[{"task_key": "Match"}], run_if="ALL_DONE", notebook_task=NOTEBOOK),
    ], "tags": {"team": "data-eng", "cost-center": "1234"}, "queue": {"enabled": True}})


def test_job_cluster_on_an_instance_pool_passes():
    assert_valid({
        "job_clusters": [{"job_cluster_key": "pool_cluster", "new_cluster": {
            "spark_version": "15.4.x-scala2.12", "instance_pool_id": "0101-120000-brick1-pool-ABCD1234",
            "driver_instance_pool_id": "0101-120000-brick1-pool-ABCD1234", "num_workers": 4,
            "data_security_mode": "SINGLE_USER", "single_user_name": "someone@example.com", "runtime_engine": "PHOTON",
            "custom_tags": {"owner": "etl"}, "spark_env_vars": {"PYSPARK_PYTHON": "/databricks/python3/bin/python3"},
            "init_scripts": [{"workspace": {"destination": "/Shared/init/setup.sh"}},
                             {"volumes": {"destination": "/Volumes/main/etl/init/more.sh"}},
                             {"abfss": {"destination": "abfss://init@myaccount.dfs.core.windows.net/setup.sh"}}],
            "cluster_log_conf": {"volumes": {"destination": "/Volumes/main/etl/logs"}},
            "enable_elastic_disk": True}}],
        "tasks": [task(task_key="a", job_cluster_key="pool_cluster", notebook_task=NOTEBOOK),
                  task(task_key="b", job_cluster_key="pool_cluster", depends_on=[{"task_key": "a"}],
                       spark_python_task={"python_file": "dbfs:/FileStore/etl/b.py"})],
    })


def test_single_node_cluster_of_kind_classic_preview_passes():
    assert_valid(one_task(notebook_task=NOTEBOOK, new_cluster={
        "kind": "CLASSIC_PREVIEW", "is_single_node": True, "use_ml_runtime": True,
        "spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_NC6s_v3", "autotermination_minutes": 0}))


def test_serverless_notebook_without_compute_passes():
    assert_valid(one_task(notebook_task=NOTEBOOK))


def test_serverless_python_wheel_and_script_with_an_environment_pass():
    assert_valid({
        "environments": [
            {"environment_key": "default", "spec": {"environment_version": "2", "dependencies": [
                "/Workspace/Users/someone@example.com/dist/my_pkg-0.1-py3-none-any.whl", "pandas==2.2.2",
                "my-lib @ git+https://github.com/example/my-lib@v1.2.0"]}},
            {"environment_key": "legacy", "spec": {"client": "1"}},
        ],
        "tasks": [
            task(task_key="wheel", environment_key="default",
                 python_wheel_task={"package_name": "my_pkg", "entry_point": "run", "named_parameters": {"date": "2026-11-24"}}),
            task(task_key="script", environment_key="legacy",
                 spark_python_task={"python_file": "/Workspace/Shared/etl/report.py", "parameters": ["--full"]}),
        ],
    })


def test_sql_tasks_pass():
    assert_valid({"tasks": [
        task(task_key="query", sql_task={"warehouse_id": "d1184f2c5e9f8a3b", "query": {"query_id": "4ec0e2a0-7a4e-4d9e-a3b5-fd8a5b0c1e2d"},
                                         "parameters": {"day": "{{job.start_time.iso_date}}"}}),
        task(task_key="file", sql_task={"warehouse_id": "d1184f2c5e9f8a3b", "file": {"path": "/Workspace/Shared/sql/load.sql", "source": "WORKSPACE"}}),
        task(task_key="alert", sql_task={"warehouse_id": "d1184f2c5e9f8a3b", "alert": {
            "alert_id": "a1b2", "subscriptions": [{"user_name": "someone@example.com"}, {"destination_id": "dest-1"}]}}),
        task(task_key="dashboard", sql_task={"warehouse_id": "d1184f2c5e9f8a3b", "dashboard": {
            "dashboard_id": "dash-1", "custom_subject": "Daily numbers", "pause_subscriptions": False}}),
    ]})


def test_run_job_task_with_job_parameters_passes():
    assert_valid({
        "tasks": [task(run_job_task={"job_id": 481000000000001, "job_parameters": {"day": "2026-11-24", "region.name": "west"}})],
        "parameters": [{"name": "day", "default": "2026-11-24"}, {"name": "api_token", "default": "{{secrets/etl/api-token}}"}],
        "job_parameters": {"day": "2026-11-25"},
    })


def test_git_source_with_notebooks_from_the_repository_passes():
    assert_valid({
        "git_source": {"git_url": "https://github.com/databricks/databricks-sdk-py", "git_provider": "gitHub",
                       "git_branch": "main", "sparse_checkout": {"patterns": ["examples"]}},
        "tasks": [task(task_key="nb", notebook_task={"notebook_path": "examples/notebook", "source": "GIT"}),
                  task(task_key="sql", sql_task={"warehouse_id": "w1", "file": {"path": "queries/daily.sql", "source": "GIT"}})],
    })
    assert_valid({"git_source": {"git_url": "https://dev.azure.com/org/project/_git/repo",
                                 "git_provider": "azureDevOpsServices", "git_tag": "v1.0"}, "tasks": [task(notebook_task=NOTEBOOK)]})


def test_every_library_kind_passes():
    assert_valid(one_task(notebook_task=NOTEBOOK, existing_cluster_id="0923-164208-meows279", libraries=[
        {"jar": "abfss://libs@myaccount.dfs.core.windows.net/lib.jar"},
        {"egg": "/Workspace/Shared/libs/old.egg"},
        {"whl": "/Volumes/main/etl/libs/pkg-1.0-py3-none-any.whl"},
        {"requirements": "/Workspace/Shared/requirements.txt"},
        {"pypi": {"package": "simplejson==3.8.0", "repo": "https://pypi.example.com/simple"}},
        {"maven": {"coordinates": "org.jsoup:jsoup:1.7.2", "repo": "https://repo1.maven.org/maven2"}},
        {"cran": {"package": "ada", "repo": "https://cran.us.r-project.org"}},
    ]))


def test_secret_references_and_names_of_secrets_pass():
    """Keys that merely name or locate a secret, and keys that only resemble secret words, are not secrets."""
    assert_valid(one_task(notebook_task={**NOTEBOOK, "base_parameters": {
        "secret_scope": "etl", "secret_key_name": "storage-key", "max_tokens": "512", "tokenizer": "bert-base",
        "compass": "north", "pathology": "x", "kansas": "y", "token_url": "https://login.example.com/token"}},
        new_cluster={**CLUSTER, "spark_conf": {
            "spark.hadoop.fs.azure.account.auth.type.acct.dfs.core.windows.net": "OAuth",
            "spark.hadoop.fs.azure.sas.token.provider.type.acct.dfs.core.windows.net":
                "org.apache.hadoop.fs.azurebfs.sas.FixedSASTokenProvider",
            "spark.databricks.passthrough.enabled": "false",
            "spark.hadoop.fs.azure.account.oauth2.client.secret.acct.dfs.core.windows.net": SECRET_REF,
            "fs.azure.account.key.acct.dfs.core.windows.net": SECRET_REF},
            "spark_env_vars": {"DB_PASSWORD": SECRET_REF, "PWD": "/databricks/driver"}}))


# ----------------------------------------------------------------------------------------------------
# Refusals: JSON path + x-error

def test_two_kinds_of_compute_are_refused_naming_both_fields():
    compute_values = {"existing_cluster_id": "0923-164208-meows279", "new_cluster": CLUSTER,
                      "job_cluster_key": "shared", "environment_key": "default"}
    for first, second in itertools.combinations(compute_values, 2):
        body = {"tasks": [task(notebook_task=NOTEBOOK), task(task_key="two", notebook_task=NOTEBOOK,
                                                                **{first: compute_values[first], second: compute_values[second]})]}
        message = task_rule(first, second)
        assert first in message and second in message
        assert refusals(body) == [("tasks[1]", message)]


@pytest.mark.parametrize("task_type, body", [
    ("spark_python_task", {"python_file": "/Workspace/Shared/etl/report.py"}),
    ("python_wheel_task", {"package_name": "my_pkg", "entry_point": "run"}),
])
def test_python_tasks_need_compute_or_an_environment(task_type, body):
    assert refusals(one_task(**{task_type: body})) == [("tasks[0]", x_error(f"$defs/Task/dependentSchemas/{task_type}"))]
    assert "environment_key" in x_error(f"$defs/Task/dependentSchemas/{task_type}")
    for compute_field, value in [("existing_cluster_id", "0923-164208-meows279"), ("new_cluster", CLUSTER),
                                 ("job_cluster_key", "shared"), ("environment_key", "default")]:
        assert_valid(one_task(**{task_type: body, compute_field: value}))


def test_sql_task_needs_a_warehouse_and_exactly_one_thing_to_run():
    assert refusals(one_task(sql_task={"query": {"query_id": "q1"}})) == [
        ("tasks[0].sql_task", x_error("$defs/SqlTask/allOf/0"))]
    assert refusals(one_task(sql_task={"warehouse_id": "w1"})) == [("tasks[0].sql_task", x_error("$defs/SqlTask/allOf/1"))]
    assert refusals(one_task(sql_task={"warehouse_id": "w1", "query": {"query_id": "q1"}, "dashboard": {"dashboard_id": "d"}})) == [
        ("tasks[0].sql_task", x_error("$defs/SqlTask/allOf/1"))]
    assert refusals(one_task(sql_task={"warehouse_id": "w1", "alert": {"alert_id": "a"}, "parameters": {"a": "b"}})) == [
        ("tasks[0].sql_task", x_error("$defs/SqlTask/allOf/2"))]


def test_no_task_type_or_two_task_types_are_refused():
    assert refusals({"tasks": [task(notebook_task=NOTEBOOK), task(task_key="empty", existing_cluster_id="0923-164208-meows279")]}) == [
        ("tasks[1]", x_error("$defs/Task/allOf/0"))]
    assert refusals(one_task(notebook_task=NOTEBOOK, run_job_task={"job_id": 1})) == [
        ("tasks[0]", task_rule("notebook_task", "run_job_task"))]
    assert refusals(one_task(spark_python_task={"python_file": "a.py"}, python_wheel_task={"package_name": "p", "entry_point": "e"},
                             existing_cluster_id="0923-164208-meows279")) == [
        ("tasks[0]", task_rule("spark_python_task", "python_wheel_task"))]


def test_unknown_and_unsupported_task_keys_are_refused_not_ignored():
    for extra in [{"notebok_task": NOTEBOOK}, {"spark_jar_task": {"main_class_name": "Main"}}, {"token": "x"}]:
        errors = refusals(one_task(notebook_task=NOTEBOOK, **extra))
        assert errors == [("tasks[0]", None)]
        (error,) = VALIDATOR.iter_errors(one_task(notebook_task=NOTEBOOK, **extra))
        assert error.validator == "additionalProperties"


@pytest.mark.parametrize("cluster_extra, path", [
    ({"num_worker": 2}, "tasks[0].new_cluster"),
    ({"aws_attributes": {"availability": "SPOT"}}, "tasks[0].new_cluster"),
    ({"docker_image": {"url": "example.azurecr.io/img:1", "basic_auth": {"username": "u", "password": "p"}}},
     "tasks[0].new_cluster.docker_image"),
    ({"azure_attributes": {"log_analytics_info": {"log_analytics_workspace_id": "w", "log_analytics_primary_key": "k"}}},
     "tasks[0].new_cluster.azure_attributes"),
])
def test_cluster_spec_refuses_typos_and_fields_that_carry_secrets(cluster_extra, path):
    errors = list(VALIDATOR.iter_errors(one_task(notebook_task=NOTEBOOK, new_cluster={**CLUSTER, **cluster_extra})))
    assert [(json_path(e.absolute_path), e.validator) for e in errors] == [(path, "additionalProperties")]


def test_cluster_spec_rules():
    def cluster_errors(**spec):
        return refusals(one_task(notebook_task=NOTEBOOK, new_cluster=spec))
    assert cluster_errors(**CLUSTER, autoscale={"min_workers": 1, "max_workers": 4}) == [
        ("tasks[0].new_cluster", x_error("$defs/ClusterSpec/allOf/0"))]
    assert cluster_errors(node_type_id="Standard_D4ds_v5", num_workers=1) == [("tasks[0].new_cluster", x_error("$defs/ClusterSpec/allOf/1"))]
    assert cluster_errors(spark_version="15.4.x-scala2.12", num_workers=1) == [("tasks[0].new_cluster", x_error("$defs/ClusterSpec/allOf/2"))]
    assert cluster_errors(policy_id="ABC123", num_workers=1) == []  # the policy may fix version and node type
    assert cluster_errors(**CLUSTER, is_single_node=True) == [
        ("tasks[0].new_cluster", x_error("$defs/ClusterSpec/dependentSchemas/is_single_node"))]
    assert cluster_errors(**CLUSTER, autotermination_minutes=5) == [
        ("tasks[0].new_cluster.autotermination_minutes", x_error("$defs/ClusterSpec/properties/autotermination_minutes/allOf/0"))]
    assert cluster_errors(**CLUSTER, azure_attributes={"spot_bid_max_price": 0}) == [
        ("tasks[0].new_cluster.azure_attributes.spot_bid_max_price", x_error("$defs/AzureAttributes/properties/spot_bid_max_price/allOf/0"))]
    assert cluster_errors(**CLUSTER, init_scripts=[{"workspace": {"destination": "/a.sh"}, "dbfs": {"destination": "dbfs:/a.sh"}}]) == [
        ("tasks[0].new_cluster.init_scripts[0]", x_error("$defs/InitScriptInfo/allOf/0"))]
    assert cluster_errors(**CLUSTER, custom_tags={f"t{i}": "v" for i in range(46)}) == [
        ("tasks[0].new_cluster.custom_tags", x_error("$defs/ClusterSpec/properties/custom_tags/allOf/1"))]
    assert cluster_errors(**CLUSTER, spark_conf={"spark.speculation": True}) == [
        ("tasks[0].new_cluster.spark_conf[\"spark.speculation\"]", None)]


def test_key_rules_name_the_field():
    key_error = x_error("$defs/Key/allOf/0")
    assert refusals({"tasks": [task(notebook_task=NOTEBOOK), task(task_key="b", notebook_task=NOTEBOOK),
                               task(task_key="c", notebook_task=NOTEBOOK, depends_on=[{"task_key": "a b"}])]}) == [
        ("tasks[2].depends_on[0].task_key", key_error)]
    for bad in ["", "has space", "dotted.key", "k" * 101, "main\n", "tâche"]:
        assert refusals(one_task(task_key=bad, notebook_task=NOTEBOOK)) == [("tasks[0].task_key", key_error)], bad
    assert refusals(one_task(notebook_task=NOTEBOOK, existing_cluster_id="0923 164208")) == [
        ("tasks[0].existing_cluster_id", x_error("$defs/ClusterId/allOf/0"))]


def test_source_decides_whether_a_path_is_absolute_or_relative():
    assert refusals(one_task(notebook_task={"notebook_path": "Users/me/nb", "source": "WORKSPACE"})) == [
        ("tasks[0].notebook_task.notebook_path", x_error("$defs/NotebookTask/allOf/0/then/properties/notebook_path"))]
    assert refusals(one_task(notebook_task={"notebook_path": "/Repos/me/nb", "source": "GIT"})) == [
        ("tasks[0].notebook_task.notebook_path", x_error("$defs/NotebookTask/allOf/1/then/properties/notebook_path"))]
    assert refusals(one_task(existing_cluster_id="0923-164208-meows279",
                             spark_python_task={"python_file": "/etl/run.py", "source": "GIT"})) == [
        ("tasks[0].spark_python_task.python_file", x_error("$defs/SparkPythonTask/allOf/0/then/properties/python_file"))]


def test_other_exactly_one_rules():
    assert refusals(one_task(notebook_task=NOTEBOOK, existing_cluster_id="0923-164208-meows279",
                             libraries=[{"whl": "/a.whl", "pypi": {"package": "b"}}])) == [
        ("tasks[0].libraries[0]", x_error("$defs/Library/allOf/0"))]
    assert refusals(one_task(python_wheel_task={"package_name": "p", "entry_point": "e", "parameters": ["a"], "named_parameters": {"a": "b"}},
                             environment_key="default")) == [("tasks[0].python_wheel_task", x_error("$defs/PythonWheelTask/allOf/0"))]
    assert refusals({"git_source": {"git_url": "https://github.com/o/r", "git_provider": "gitHub", "git_branch": "main", "git_tag": "v1"},
                     "tasks": [task(notebook_task=NOTEBOOK)]}) == [("git_source", x_error("$defs/GitSource/allOf/0"))]
    assert refusals({"environments": [{"environment_key": "e", "spec": {"dependencies": ["pandas"]}}],
                     "tasks": [task(notebook_task=NOTEBOOK)]}) == [("environments[0].spec", x_error("$defs/Environment/allOf/0"))]
    assert refusals({"tags": {f"t{i}": "v" for i in range(26)}, "tasks": [task(notebook_task=NOTEBOOK)]}) == [
        ("tags", x_error("$defs/Tags/allOf/1"))]
    assert refusals(one_task(notebook_task=NOTEBOOK, webhook_notifications={"on_start": [{"id": str(i)} for i in range(4)]})) == [
        ("tasks[0].webhook_notifications.on_start", x_error("$defs/WebhookNotifications/properties/on_start/allOf/0"))]


# ----------------------------------------------------------------------------------------------------
# Secrets never travel in requests

@pytest.mark.parametrize("url", [
    "https://someone:ghp-not-a-real-token@github.com/org/repo.git",
    "https://oauth2:abc123@gitlab.example.com/org/repo.git",
    "https://personal-access-token@dev.azure.com/org/project/_git/repo",
])
def test_git_url_with_user_info_is_refused(url):
    body = {"git_source": {"git_url": url, "git_provider": "gitHub", "git_branch": "main"}, "tasks": [task(notebook_task=NOTEBOOK)]}
    assert refusals(body) == [("git_source.git_url", x_error("$defs/GitSource/properties/git_url/allOf/0"))]


def test_library_urls_with_a_password_are_refused_but_abfss_at_signs_are_not():
    uri_error = x_error("$defs/LibraryUri/allOf/0")
    assert refusals(one_task(notebook_task=NOTEBOOK, existing_cluster_id="0923-164208-meows279",
                             libraries=[{"pypi": {"package": "p", "repo": "https://build:s3cret@pypi.example.com/simple"}}])) == [
        ("tasks[0].libraries[0].pypi.repo", uri_error)]
    assert refusals({"environments": [{"environment_key": "e", "spec": {"environment_version": "2", "dependencies": [
        "--index-url https://build:s3cret@pypi.example.com/simple"]}}], "tasks": [task(notebook_task=NOTEBOOK)]}) == [
        ("environments[0].spec.dependencies[0]", uri_error)]


SECRET_LOOKING_KEYS = [
    "password", "DB_PASSWORD", "dbPassword", "db.passwd", "passphrase", "client_secret", "SECRET",
    "spark.hadoop.fs.azure.account.oauth2.client.secret.acct.dfs.core.windows.net",
    "fs.azure.account.key.acct.dfs.core.windows.net", "spark.hadoop.fs.azure.sas.fixed.token.acct.dfs.core.windows.net",
    "fs.azure.sas.container.acct.blob.core.windows.net", "GITHUB_TOKEN", "access_token", "apiKey", "API-KEY",
    "x-api-key", "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "storage_key", "private_key", "credentials",
    "Authorization", "connection_string", "ConnStr", "SAS", "DATABRICKS_PAT",
]


@pytest.mark.parametrize("key", SECRET_LOOKING_KEYS)
@pytest.mark.parametrize("where", ["spark_env_vars", "spark_conf", "base_parameters", "named_parameters", "sql_parameters",
                                   "job_parameters", "run_job_parameters"])
def test_secret_looking_keys_need_a_secret_reference(key, where):
    def body(value):
        entry = {key: value}
        if where in ("spark_env_vars", "spark_conf"):
            return one_task(notebook_task=NOTEBOOK, new_cluster={**CLUSTER, where: entry}), f"tasks[0].new_cluster.{where}"
        if where == "base_parameters":
            return one_task(notebook_task={**NOTEBOOK, "base_parameters": entry}), "tasks[0].notebook_task.base_parameters"
        if where == "named_parameters":
            return (one_task(environment_key="e", python_wheel_task={"package_name": "p", "entry_point": "e", "named_parameters": entry}),
                    "tasks[0].python_wheel_task.named_parameters")
        if where == "sql_parameters":
            return one_task(sql_task={"warehouse_id": "w", "query": {"query_id": "q"}, "parameters": entry}), "tasks[0].sql_task.parameters"
        if where == "run_job_parameters":
            return one_task(run_job_task={"job_id": 1, "job_parameters": entry}), "tasks[0].run_job_task.job_parameters"
        return {"tasks": [task(notebook_task=NOTEBOOK)], "job_parameters": entry}, "job_parameters"

    refused, map_path = body("hunter2")
    assert refusals(refused) == [(json_path([*parse_path(map_path), key]), SECRET_NAME)]
    assert_valid(body(SECRET_REF)[0])


def test_job_parameter_definitions_with_secret_names_need_a_secret_reference():
    assert refusals({"parameters": [{"name": "api_token", "default": "hunter2"}], "tasks": [task(notebook_task=NOTEBOOK)]}) == [
        ("parameters[0].default", SECRET_NAME)]
    assert refusals({"job_parameters": {"bad name": "x"}, "tasks": [task(notebook_task=NOTEBOOK)]}) == [
        ("job_parameters", x_error("$defs/ParameterName/allOf/0"))]


@pytest.mark.parametrize("kind", sorted(FAKE_TOKENS))
def test_token_shaped_values_are_refused_in_every_string_map_and_parameter_list(kind):
    token = FAKE_TOKENS[kind]
    assert refusals({"tags": {"note": token}, "tasks": [task(notebook_task=NOTEBOOK)]}) == [("tags.note", NO_CREDENTIAL)]
    assert refusals(one_task(notebook_task={**NOTEBOOK, "base_parameters": {"input": f"x {token} y"}})) == [
        ("tasks[0].notebook_task.base_parameters.input", NO_CREDENTIAL)]
    assert refusals(one_task(existing_cluster_id="0923-164208-meows279",
                             spark_python_task={"python_file": "/a.py", "parameters": ["--auth", token]})) == [
        ("tasks[0].spark_python_task.parameters[1]", NO_CREDENTIAL)]
    assert refusals(one_task(notebook_task=NOTEBOOK, new_cluster={**CLUSTER, "custom_tags": {"k": token}})) == [
        ("tasks[0].new_cluster.custom_tags.k", NO_CREDENTIAL)]


def test_ordinary_values_are_not_mistaken_for_tokens():
    assert_valid(one_task(notebook_task={**NOTEBOOK, "base_parameters": {
        "sha": "0123456789abcdef0123456789abcdef01234567", "id": "dapi-docs", "path": "/Volumes/main/raw/2026-11-24",
        "url": "https://acct.blob.core.windows.net/c/f.csv", "words": "bearer bonds", "date": "{{job.start_time.iso_date}}"}}))


# ----------------------------------------------------------------------------------------------------
# The schema itself

BRIEF_DEFS = ["Task", "JobCluster", "JobEnvironment", "ClusterSpec", "Library", "GitSource", "JobsQueue",
              "JobParameterDefinition", "JobParameters", "Tags", "StringMap"]


def test_schema_is_valid_draft_2020_12_with_the_agreed_id_and_definitions():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://example.invalid/create-job-and-run/databricks.schema.json"
    assert set(BRIEF_DEFS) <= set(DEFS)


def subschemas(node, pointer=""):
    """Every schema object in the document with its JSON pointer."""
    if isinstance(node, dict):
        yield pointer, node
        for key, value in node.items():
            if key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
                for name, sub in value.items():
                    yield from subschemas(sub, f"{pointer}/{key}/{name}")
            elif key in ("allOf", "anyOf", "oneOf"):
                for index, sub in enumerate(value):
                    yield from subschemas(sub, f"{pointer}/{key}/{index}")
            elif key in ("items", "not", "if", "then", "else", "propertyNames", "additionalProperties"):
                yield from subschemas(value, f"{pointer}/{key}")


REPORTING_RULES = {"pattern", "not", "oneOf", "anyOf", "maxProperties", "maxItems"}


def test_every_rule_whose_validator_message_would_be_unreadable_carries_an_x_error():
    """pattern/not/oneOf/anyOf/max* messages quote regexes or whole instances; these rules must speak for themselves.
    Subschemas under `if` and `not` report nothing of their own, so they are exempt."""
    silent = set()
    for pointer, node in subschemas(SCHEMA):
        if "/if" in pointer or "/not" in pointer or pointer.startswith("/$defs/SecretLookingName"):
            continue
        if REPORTING_RULES & set(node) and "x-error" not in node:
            silent.add(pointer)
    assert silent == set()


def test_x_errors_are_json_terms_that_read_after_a_field_path():
    messages = [node["x-error"] for _, node in subschemas(SCHEMA) if "x-error" in node]
    assert len(messages) > 30
    for message in messages:
        assert message and message[0].islower(), message
        assert not re.search(r"\b(None|True|False)\b|\{'|'\}|\\\\", message), message


def test_patterns_use_only_syntax_shared_by_ecma_262_and_python():
    patterns = [node["pattern"] for _, node in subschemas(SCHEMA) if "pattern" in node]
    patterns += [key for _, node in subschemas(SCHEMA) for key in node.get("patternProperties", {})]
    assert patterns
    for pattern in patterns:
        re.compile(pattern)
        assert not re.search(r"\(\?[aiLmsux]|\(\?P|\\[AZz]|\(\?#", pattern), pattern


def test_the_secret_name_rule_is_one_regex():
    (key_pattern,) = DEFS["SecretAwareStringMap"]["patternProperties"]
    assert DEFS["SecretLookingName"]["pattern"] == key_pattern


# ----------------------------------------------------------------------------------------------------
# Fidelity to databricks-sdk

SDK_MODULES = {"jobs": jobs, "compute": compute}
OBJECT_DEFS = {name: schema for name, schema in DEFS.items() if "x-databricks-sdk" in schema}
ENUM_FIELDS_SEEN: set = set()


def sdk_class(qualified: str):
    module, name = qualified.split(".")
    return getattr(SDK_MODULES[module], name)


def sdk_name(cls) -> str:
    return f"{cls.__module__.rsplit('.', 1)[1]}.{cls.__name__}"


def facets(schema) -> dict:
    """What a property schema allows, following $ref and allOf: JSON types, enum/const values, SDK class, items."""
    found = {"types": set(), "values": None, "sdk": None, "items": None}
    stack = [schema]
    while stack:
        node = stack.pop()
        if "$ref" in node:
            stack.append(DEFS[node["$ref"].rsplit("/", 1)[1]])
        stack.extend(node.get("allOf", []))
        if "type" in node:
            found["types"].add(node["type"])
        if "enum" in node or "const" in node:
            found["values"] = set(node.get("enum", [node.get("const")]))
        found["sdk"] = found["sdk"] or node.get("x-databricks-sdk")
        found["items"] = found["items"] or node.get("items")
    return found


def check_against_hint(hint, schema, where: str):
    if typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    got = facets(schema)
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        ENUM_FIELDS_SEEN.add(where)
        assert got["values"] and got["values"] <= {member.value for member in hint}, f"{where}: {got['values']} not in {hint}"
    elif dataclasses.is_dataclass(hint):
        assert got["sdk"] == sdk_name(hint), f"{where}: refers to {got['sdk']}, the SDK says {sdk_name(hint)}"
    elif origin is list:
        assert got["types"] == {"array"}, where
        check_against_hint(typing.get_args(hint)[0], got["items"], f"{where}[]")
    elif origin is dict:
        assert typing.get_args(hint) == (str, str) and "object" in got["types"], where
    else:
        expected = {str: "string", int: "integer", bool: "boolean", float: "number"}[hint]
        assert got["types"] == {expected}, f"{where}: {got['types']} but the SDK says {hint.__name__}"


def check_object_against_sdk(name: str):
    schema = OBJECT_DEFS[name]
    cls = sdk_class(schema["x-databricks-sdk"])
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    assert schema["additionalProperties"] is False, f"{name} must refuse unknown keys"
    assert set(schema["properties"]) <= set(fields), f"{name}: not in {cls.__name__}: {set(schema['properties']) - set(fields)}"
    for prop, sub in schema["properties"].items():
        check_against_hint(hints[prop], sub, f"{name}.{prop}")
    # Fields the SDK cannot do without are required here too (at the top or in an allOf rule).
    mandatory = {f.name for f in fields.values()
                 if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    required = set(schema.get("required", []))
    for rule in schema.get("allOf", []):
        required |= set(rule.get("required", []))
    assert mandatory <= required, f"{name}: the SDK requires {mandatory - required}"


@pytest.mark.parametrize("name", sorted(OBJECT_DEFS))
def test_every_property_is_a_field_of_the_sdk_dataclass_with_the_same_type(name):
    check_object_against_sdk(name)


@pytest.mark.parametrize("name", sorted(OBJECT_DEFS))
def test_rules_only_mention_declared_properties(name):
    schema = OBJECT_DEFS[name]
    declared = set(schema["properties"])
    mentioned = set(schema.get("dependentSchemas", {}))
    for pointer, node in subschemas(schema):
        if pointer.startswith("/properties/"):
            continue
        mentioned |= set(node.get("required", [])) | set(node.get("properties", {}))
    assert mentioned <= declared, f"{name}: rules name {mentioned - declared}"


def test_every_object_with_properties_is_tied_to_an_sdk_dataclass():
    untied = [name for name, schema in DEFS.items() if "properties" in schema and "x-databricks-sdk" not in schema]
    assert untied == []


def test_enum_fields_were_checked():
    """Guards the fidelity test itself: the enum branch ran for the fields that have SDK enums."""
    for name in sorted(OBJECT_DEFS):
        check_object_against_sdk(name)
    assert {"Task.run_if", "NotebookTask.source", "GitSource.git_provider", "ClusterSpec.data_security_mode",
            "ClusterSpec.runtime_engine", "AzureAttributes.availability", "JobsHealthRule.metric"} <= ENUM_FIELDS_SEEN
