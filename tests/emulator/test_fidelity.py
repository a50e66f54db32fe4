"""Fidelity: responses validate against the vendored OpenAPI file, and the official SDK drives it.

Deliberate deviations from spec/azure-databricks-openapi.yml (reference §7, "Spec-fidelity issues"):
- The file lists 404 for an unknown run on runs/get and runs/get-output; real Databricks answers
  400 INVALID_PARAMETER_VALUE "Run N does not exist", and so does the emulator.
- The `Run` schema lacks `status`, `next_page_token`, `has_more`, `job_run_id`, `run_duration`,
  `queue_duration`; the emulator sends them (as 2.2 does). The schemas allow extra properties.
- `listJobs` documents `limit` max 25 (old 2.1); the emulator accepts up to 100 like the service.
- The file's examples use strings for int64 ids; the emulator sends integers, as the schemas say.
- 401 bodies use error_code "UNAUTHENTICATED"; some real endpoints send the integer 401 there, which
  the file's `Error` schema (string) would reject.
"""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "azure-databricks-openapi.yml"
SPEC_URI = "urn:azure-databricks-openapi"
NB = "/Workspace/Users/dev@example.com/"

# jsonschema ignores unknown formats; the file says int32/int64, so check the ranges for real.
FORMATS = FormatChecker()


@FORMATS.checks("int64")
def _int64(value):
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMATS.checks("int32")
def _int32(value):
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@pytest.fixture(scope="module")
def spec_validator():
    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    registry = Registry().with_resource(SPEC_URI, Resource(contents=spec, specification=DRAFT202012))

    def validator(path: str, method: str, status: str) -> Draft202012Validator:
        escaped = path.replace("~", "~0").replace("/", "~1")
        pointer = f"#/paths/{escaped}/{method}/responses/{status}"
        response = spec["paths"][path][method]["responses"][status]
        if "$ref" in response:  # shared responses like BadRequest
            pointer = response["$ref"]
        schema = {"$ref": f"{SPEC_URI}{pointer}/content/application~1json/schema"}
        return Draft202012Validator(schema, registry=registry, format_checker=FORMATS)

    return validator


def _valid(validator, body):
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("notebook", ["etl", "fail_x", "crash_x", "skip_x", "timeout_x", "queued_x"])
def test_responses_match_the_openapi_schemas(spec_validator, api, clock, version, notebook):
    hooks = {"on_success": [{"id": "d"}]}
    create = api.post("create", {
        "name": "fidelity", "tags": {"durable_instance_id": "i-1"}, "webhook_notifications": hooks,
        "tasks": [{"task_key": "main", "existing_cluster_id": "c-1",
                   "notebook_task": {"notebook_path": NB + notebook, "base_parameters": {"a": "b"}}}]}, version)
    _valid(spec_validator("/2.1/jobs/create", "post", "200"), api.ok(create))
    job_id = create.json()["job_id"]
    run_now = api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": f"t-{version}-{notebook}",
                                          "notebook_params": {"a": "c"}}, version))
    _valid(spec_validator("/2.1/jobs/run-now", "post", "200"), run_now)
    run_validator = spec_validator("/2.1/jobs/runs/get", "get", "200")
    output_validator = spec_validator("/2.1/jobs/runs/get-output", "get", "200")
    for _ in range(6):  # every phase the run goes through, then terminal
        run = api.run(run_now["run_id"], version)
        _valid(run_validator, run)
        task_run_id = run["tasks"][0]["run_id"]
        _valid(run_validator, api.run(task_run_id, version))
        _valid(output_validator, api.ok(api.get("runs/get-output", version, run_id=task_run_id)))
        clock.advance(1)
    _valid(spec_validator("/2.1/jobs/list", "get", "200"), api.ok(api.get("list", version, name="fidelity")))
    _valid(spec_validator("/2.1/jobs/list", "get", "200"),
           api.ok(api.get("list", version, expand_tasks="true", limit=25)))
    _valid(spec_validator("/2.1/jobs/get", "get", "200"), api.ok(api.get("get", version, job_id=job_id)))
    _valid(spec_validator("/2.1/jobs/runs/cancel", "post", "200"),
           api.ok(api.post("runs/cancel", {"run_id": run_now["run_id"]}, version)))
    _valid(spec_validator("/2.1/jobs/delete", "post", "200"), api.ok(api.post("delete", {"job_id": job_id}, version)))


def test_error_bodies_match_the_error_schema(spec_validator, emulator, api):
    import requests
    bad = spec_validator("/2.1/jobs/runs/get", "get", "400")
    r = api.get("runs/get", run_id=42)
    assert r.status_code == 400  # the file says 404 here; the real service says 400 (see module doc)
    _valid(bad, r.json())
    r = requests.get(f"{emulator.base_url}/api/2.1/jobs/runs/get?run_id=1", timeout=5)
    _valid(spec_validator("/2.1/jobs/runs/get", "get", "401"), r.json())
    emulator.faults.script("429", "500")
    _valid(spec_validator("/2.1/jobs/runs/get", "get", "429"), api.get("runs/get", run_id=1).json())
    _valid(spec_validator("/2.1/jobs/runs/get", "get", "500"), api.get("runs/get", run_id=1).json())


def test_int64_format_is_enforced_by_the_checker(spec_validator):
    # guards the guard: an id past int64 must fail validation
    errors = list(spec_validator("/2.1/jobs/create", "post", "200").iter_errors({"job_id": 2**63}))
    assert errors
    # and the nested #/components/schemas refs really resolve: a bad enum deep inside is caught
    bogus = {"run_id": 1, "state": {"life_cycle_state": "BOGUS"}, "tasks": [{"run_id": "1"}]}
    assert len(list(spec_validator("/2.1/jobs/runs/get", "get", "200").iter_errors(bogus))) == 2


@pytest.fixture
def workspace(emulator):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    config = Config(host=emulator.base_url, token="dev", auth_type="pat",
                    retry_timeout_seconds=5, http_timeout_seconds=5)
    return WorkspaceClient(config=config)


def test_databricks_sdk_drives_create_run_wait_output(workspace, emulator, clock):
    from databricks.sdk.errors import InvalidParameterValue, NotFound
    from databricks.sdk.service import jobs

    created = workspace.jobs.create(
        name="sdk-e2e", tags={"durable_instance_id": "abc"},
        tasks=[jobs.Task(task_key="main", existing_cluster_id="c-1",
                         notebook_task=jobs.NotebookTask(notebook_path=NB + "etl", base_parameters={"a": "1"}))])
    assert isinstance(created.job_id, int)
    waiter = workspace.jobs.run_now(job_id=created.job_id, idempotency_token="sdk-token",
                                    notebook_params={"b": "2"})
    assert workspace.jobs.run_now(job_id=created.job_id, idempotency_token="sdk-token").run_id == waiter.run_id
    clock.advance(10)  # the virtual clock makes the waiter's first poll see the end
    run = waiter.result(timeout=timedelta(seconds=30))
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.SUCCESS
    assert run.status.state == jobs.RunLifecycleStateV2State.TERMINATED
    run = workspace.jobs.get_run(waiter.run_id)
    task = run.tasks[0]
    assert task.task_key == "main" and task.run_id != run.run_id
    output = workspace.jobs.get_run_output(task.run_id)
    assert output.notebook_output.result and '"b": "2"' in output.notebook_output.result
    with pytest.raises(InvalidParameterValue, match="multiple tasks"):
        workspace.jobs.get_run_output(run.run_id)
    # The SDK remaps the 400 for an unknown run to ResourceDoesNotExist (a NotFound).
    with pytest.raises(NotFound):
        workspace.jobs.get_run(123)
    assert [j.job_id for j in workspace.jobs.list(name="SDK-E2E")] == [created.job_id]
    workspace.jobs.delete(created.job_id)
    probes = [e for e in emulator.request_log if e["path"] == "/.well-known/databricks-config"]
    assert all(e["status"] == 404 for e in probes)  # newer SDKs probe it at start


def test_databricks_sdk_merges_2_2_task_pages_and_cancels(workspace, api, clock):
    from databricks.sdk.service import jobs
    job_id = api.create_job(tasks=130)
    run_id = api.run_now(job_id)
    run = workspace.jobs.get_run(run_id)
    assert len(run.tasks) == 130
    workspace.jobs.cancel_run(run_id)
    clock.advance(5)
    assert workspace.jobs.get_run(run_id).state.result_state == jobs.RunResultState.CANCELED


def test_databricks_sdk_retries_a_429(workspace, emulator):
    from jobs_emulator import Faults
    emulator.faults = Faults(retry_after=0)  # the SDK still adds up to 1 s of jitter
    emulator.faults.script("429")
    assert list(workspace.jobs.list()) == []
    assert [e["status"] for e in emulator.request_log if e["path"].endswith("/jobs/list")] == [429, 200]


# -- issue #9 / #10 endpoints ---------------------------------------------------------------------------

CLUSTER_SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 1}


def test_new_endpoints_match_the_openapi_schemas(spec_validator, api, clock):
    dag = {"name": "dag", "tasks": [
        {"task_key": "a", "existing_cluster_id": "c-1", "notebook_task": {"notebook_path": NB + "etl"}},
        {"task_key": "fail_b", "existing_cluster_id": "c-1", "depends_on": [{"task_key": "a"}],
         "notebook_task": {"notebook_path": NB + "etl"}},
        {"task_key": "c", "existing_cluster_id": "c-1", "depends_on": [{"task_key": "fail_b"}],
         "notebook_task": {"notebook_path": NB + "etl"}}]}
    job_id = api.ok(api.post("create", dag, "2.1"))["job_id"]
    _valid(spec_validator("/2.1/jobs/update", "post", "200"),
           api.ok(api.post("update", {"job_id": job_id, "new_settings": {"timeout_seconds": 600}}, "2.1")))
    _valid(spec_validator("/2.1/jobs/reset", "post", "200"),
           api.ok(api.post("reset", {"job_id": job_id, "new_settings": dag}, "2.1")))
    run_id = api.run_now(job_id, version="2.1")
    submitted = api.ok(api.post("runs/submit", {"run_name": "once", "tasks": dag["tasks"][:1]}, "2.1"))
    _valid(spec_validator("/2.1/jobs/runs/submit", "post", "200"), submitted)
    list_validator = spec_validator("/2.1/jobs/runs/list", "get", "200")
    run_validator = spec_validator("/2.1/jobs/runs/get", "get", "200")
    for _ in range(8):  # every phase of a DAG that fails half way
        _valid(list_validator, api.ok(api.get("runs/list", "2.1", expand_tasks="true")))
        _valid(list_validator, api.ok(api.get("runs/list", "2.1", active_only="true")))
        _valid(run_validator, api.run(run_id, "2.1", include_history="true"))
        _valid(run_validator, api.run(submitted["run_id"], "2.1"))
        clock.advance(1.5)
    assert api.run(run_id)["state"]["result_state"] == "FAILED"


@pytest.fixture
def sdk_jobs(workspace):
    from databricks.sdk.service import compute, jobs
    return workspace, jobs, compute


def test_databricks_sdk_submits_and_waits(sdk_jobs, clock):
    workspace, jobs, _ = sdk_jobs
    waiter = workspace.jobs.submit(run_name="one-off", idempotency_token="submit-1", tasks=[
        jobs.SubmitTask(task_key="main", existing_cluster_id="c-1",
                        notebook_task=jobs.NotebookTask(notebook_path=NB + "etl"))])
    assert workspace.jobs.submit(run_name="one-off", idempotency_token="submit-1", tasks=[
        jobs.SubmitTask(task_key="main", notebook_task=jobs.NotebookTask(notebook_path=NB + "etl"))]
    ).run_id == waiter.run_id
    clock.advance(10)
    run = waiter.result(timeout=timedelta(seconds=30))
    assert run.run_type == jobs.RunType.SUBMIT_RUN and run.state.result_state == jobs.RunResultState.SUCCESS
    assert run.job_id and run.run_name == "one-off"


def test_databricks_sdk_dag_with_job_cluster_serverless_python_and_job_parameters(sdk_jobs, clock):
    from databricks.sdk.errors import OperationFailed
    workspace, jobs, compute = sdk_jobs
    job = workspace.jobs.create(
        name="sdk-dag",
        parameters=[jobs.JobParameterDefinition(name="day", default="mon")],
        job_clusters=[jobs.JobCluster(job_cluster_key="shared", new_cluster=compute.ClusterSpec(**CLUSTER_SPEC))],
        environments=[jobs.JobEnvironment(environment_key="py", spec=compute.Environment(
            environment_version="2", dependencies=["requests"]))],
        tasks=[jobs.Task(task_key="ingest", job_cluster_key="shared",
                         notebook_task=jobs.NotebookTask(notebook_path=NB + "ingest")),
               jobs.Task(task_key="score", environment_key="py", depends_on=[jobs.TaskDependency(task_key="ingest")],
                         spark_python_task=jobs.SparkPythonTask(python_file="/Workspace/jobs/score.py")),
               jobs.Task(task_key="flaky_publish", job_cluster_key="shared",
                         depends_on=[jobs.TaskDependency(task_key="score")],
                         notebook_task=jobs.NotebookTask(notebook_path=NB + "publish"))])
    waiter = workspace.jobs.run_now(job_id=job.job_id, job_parameters={"day": "tue"})
    clock.advance(60)
    # The SDK's waiter treats INTERNAL_ERROR as a failure: that is how a failed task surfaces.
    with pytest.raises(OperationFailed, match="Task flaky_publish failed with message"):
        waiter.result(timeout=timedelta(seconds=30))
    run = workspace.jobs.get_run(waiter.run_id, include_history=True)
    assert [(t.task_key, t.state.result_state.value) for t in run.tasks] == [
        ("ingest", "SUCCESS"), ("score", "SUCCESS"), ("flaky_publish", "FAILED")]
    assert run.job_parameters == [jobs.JobParameter(name="day", default="mon", value="tue")]
    assert run.overriding_parameters is None  # RunParameters has no job_parameters
    score = next(t for t in run.tasks if t.task_key == "score")
    assert workspace.jobs.get_run_output(score.run_id).logs
    repair = workspace.jobs.repair_run(run_id=run.run_id, rerun_all_failed_tasks=True,
                                       latest_repair_id=run.repair_history[-1].id if len(run.repair_history) > 1
                                       else None)
    clock.advance(60)
    repaired = repair.result(timeout=timedelta(seconds=30))
    assert repaired.state.result_state == jobs.RunResultState.SUCCESS
    history = workspace.jobs.get_run(run.run_id, include_history=True).repair_history
    assert [h.type for h in history] == [jobs.RepairHistoryItemType.ORIGINAL, jobs.RepairHistoryItemType.REPAIR]
    assert history[1].id == repair.response.repair_id


def test_databricks_sdk_reset_and_update(sdk_jobs):
    workspace, jobs, _ = sdk_jobs
    job = workspace.jobs.create(name="before", tasks=[jobs.Task(
        task_key="a", existing_cluster_id="c-1", notebook_task=jobs.NotebookTask(notebook_path=NB + "a"))])
    workspace.jobs.reset(job.job_id, jobs.JobSettings(name="after", tasks=[jobs.Task(
        task_key="b", existing_cluster_id="c-1", notebook_task=jobs.NotebookTask(notebook_path=NB + "b"))]))
    workspace.jobs.update(job.job_id, new_settings=jobs.JobSettings(timeout_seconds=600, tasks=[jobs.Task(
        task_key="c", existing_cluster_id="c-1", notebook_task=jobs.NotebookTask(notebook_path=NB + "c"))]),
        fields_to_remove=["tasks/b"])
    settings = workspace.jobs.get(job.job_id).settings
    assert (settings.name, settings.timeout_seconds, [t.task_key for t in settings.tasks]) == ("after", 600, ["c"])


def test_databricks_sdk_lists_active_runs_across_pages(sdk_jobs, api, emulator):
    workspace, jobs, _ = sdk_jobs
    job_id = api.create_job(NB + "slow_etl", max_concurrent_runs=100)
    run_ids = [api.run_now(job_id) for _ in range(30)]
    emulator.reset_call_counts()
    listed = [r.run_id for r in workspace.jobs.list_runs(active_only=True, limit=25)]
    assert listed == run_ids[::-1]
    assert emulator.call_counts() == {("GET", "runs/list"): 2}
