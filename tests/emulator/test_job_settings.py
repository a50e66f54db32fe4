"""jobs/create validation, jobs/reset and jobs/update, workspace limits, and deleted jobs."""

import pytest

from .conftest import Api

NB = "/Workspace/Users/dev@example.com/"
CLUSTER = "0923-164208-meows279"
NEW_CLUSTER = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 2}


def notebook(key, path="etl", **extra):
    return {"task_key": key, "notebook_task": {"notebook_path": NB + path}, **extra}


def script(key, **extra):
    return {"task_key": key, "spark_python_task": {"python_file": "/Workspace/jobs/score.py"}, **extra}


def error(response):
    assert response.status_code == 400, response.text
    return response.json()["error_code"], response.json()["message"]


# -- compute and task validation ---------------------------------------------------------------------

def test_job_clusters_serverless_and_existing_clusters_are_accepted(api):
    job_id = api.ok(api.post("create", {
        "name": "compute",
        "job_clusters": [{"job_cluster_key": "shared", "new_cluster": NEW_CLUSTER}],
        "environments": [{"environment_key": "py", "spec": {"client": "1", "dependencies": ["requests==2.32.3"]}}],
        "tasks": [notebook("on_job_cluster", job_cluster_key="shared"),
                  notebook("on_new_cluster", new_cluster={**NEW_CLUSTER, "num_workers": 0}),
                  notebook("on_pool", new_cluster={"spark_version": "15.4.x-scala2.12", "instance_pool_id": "p-1",
                                                   "autoscale": {"min_workers": 1, "max_workers": 4}}),
                  notebook("serverless_notebook"),
                  script("serverless_script", environment_key="py"),
                  script("cluster_script", existing_cluster_id=CLUSTER, libraries=[{"pypi": {"package": "x"}}]),
                  {"task_key": "sql", "sql_task": {"warehouse_id": "wh-1", "file": {"path": "/q.sql"}}}]}))["job_id"]
    settings = api.ok(api.get("get", job_id=job_id))["settings"]
    assert settings["job_clusters"][0]["job_cluster_key"] == "shared"
    first = settings["tasks"][0]
    # server-side defaults the API returns (databricks/cli testserver)
    assert (first["run_if"], first["timeout_seconds"], first["email_notifications"]) == ("ALL_SUCCESS", 0, {})


@pytest.mark.parametrize("tasks, extra, message", [
    ([notebook("a", job_cluster_key="nope")], {},
     "Job cluster 'nope' is not defined in field 'job_clusters'."),
    ([script("s")], {},
     "An environment is required for serverless task s. Please define one using `environments` and "
     "`environment_key`. For more details, please refer to the API documentation at "
     "https://docs.databricks.com/api/workspace/jobs/create"),
    ([script("s", environment_key="ghost")], {}, "Environment 'ghost' is not defined in field 'environments'."),
    ([notebook("a", libraries=[{"pypi": {"package": "x"}}])], {},
     "Libraries field is not supported for serverless task, please specify libraries in environment."),
    ([{"task_key": "j", "spark_jar_task": {"main_class_name": "Main"}}], {},
     "One of job_cluster_key, new_cluster, or existing_cluster_id must be specified."),
    ([notebook("a", existing_cluster_id=CLUSTER, new_cluster=NEW_CLUSTER)], {},
     "Task a can use only one of job_cluster_key, new_cluster or existing_cluster_id, got existing_cluster_id, "
     "new_cluster."),
    ([notebook("a", new_cluster={"node_type_id": "x", "num_workers": 1})], {},
     "Missing required field: settings.tasks.new_cluster.spark_version"),
    ([notebook("a", new_cluster={"spark_version": "15.4.x-scala2.12", "num_workers": 1})], {},
     "Missing required field: settings.tasks.new_cluster.node_type_id"),
    ([notebook("a", new_cluster={"spark_version": "15.4.x-scala2.12", "node_type_id": "x"})], {},
     "Missing required field: settings.tasks.new_cluster.size"),
    ([notebook("a", job_cluster_key="c")], {"job_clusters": [{"job_cluster_key": "c", "new_cluster": {}}]},
     "Missing required field: settings.job_clusters.new_cluster.spark_version"),
    ([{"task_key": "q", "sql_task": {"query": {"query_id": "q-1"}}}], {},
     "Missing required field: settings.tasks.sql_task.warehouse_id"),
    ([notebook("a", depends_on=[{"task_key": "a"}])], {},
     "Invalid dependency graph, task 'a' can not reference itself."),
    ([notebook("a", depends_on=[{"task_key": "ghost"}])], {},
     "Invalid dependency graph, task 'a' depends on task 'ghost' which does not exist."),
    ([notebook("a", depends_on=[{"task_key": "c"}]), notebook("b", depends_on=[{"task_key": "a"}]),
      notebook("c", depends_on=[{"task_key": "b"}])], {},
     "Invalid dependency graph, the tasks form a cycle: a -> c -> b -> a."),
    ([notebook("a", depends_on=[{}])], {}, "Missing required field: settings.tasks.depends_on.task_key"),
    ([notebook("a", run_if="SOMETIMES")], {}, None),
    ([notebook("a", max_retries=-2)], {}, None),
    ([{"task_key": "a"}], {}, "Task a must specify one task type, e.g. notebook_task."),
    ([{"task_key": "a", "pipeline_task": {"pipeline_id": "p"}}], {}, None),
    ([{"task_key": "r", "run_job_task": {"job_id": 42}}], {}, "Job 42 does not exist."),
    ([notebook("a")], {"parameters": [{"name": "bad name", "default": "x"}]}, None),
    ([notebook("a")], {"parameters": [{"name": "day"}]}, "Missing required field: settings.parameters.default"),
    ([notebook("a")], {"git_source": {"git_url": "https://example.com/repo.git"}},
     "git_source.git_provider must be one of: github,gitlab,bitbucketcloud,gitlabenterpriseedition,"
     "bitbucketserver,azuredevopsservices,githubenterprise,awscodecommit"),
])
def test_create_refuses_invalid_settings_with_the_real_errors(api, tasks, extra, message):
    code, text = error(api.post("create", {"name": "bad", "tasks": tasks, **extra}))
    assert code == "INVALID_PARAMETER_VALUE"
    if message:
        assert text == message


# -- reset and update --------------------------------------------------------------------------------

def test_reset_replaces_every_setting(api):
    job_id = api.create_job(tags={"team": "a"}, max_concurrent_runs=3, version="2.1")
    api.ok(api.post("reset", {"job_id": job_id, "new_settings": {"name": "renamed", "tasks": [notebook("x")]}},
                    version="2.1"))
    settings = api.ok(api.get("get", job_id=job_id))["settings"]
    assert settings["name"] == "renamed" and "tags" not in settings
    assert settings["max_concurrent_runs"] == 1 and [t["task_key"] for t in settings["tasks"]] == ["x"]
    assert error(api.post("reset", {"job_id": job_id})) == ("INVALID_PARAMETER_VALUE",
                                                           "Missing required field: new_settings")
    assert error(api.post("reset", {"job_id": 1, "new_settings": {}}))[1] == "Job 1 does not exist."
    code, _ = error(api.post("reset", {"job_id": job_id, "new_settings": {"tasks": [notebook("a", job_cluster_key="x")]}}))
    assert code == "INVALID_PARAMETER_VALUE"
    assert api.ok(api.get("get", job_id=job_id))["settings"]["name"] == "renamed"  # a refused reset changes nothing


def test_update_merges_arrays_by_key_and_removes_fields(api):
    job_id = api.ok(api.post("create", {
        "name": "u", "tags": {"a": "1"}, "timeout_seconds": 60,
        "job_clusters": [{"job_cluster_key": "c1", "new_cluster": NEW_CLUSTER},
                         {"job_cluster_key": "c2", "new_cluster": NEW_CLUSTER}],
        "tasks": [notebook("a", job_cluster_key="c1"), notebook("b", job_cluster_key="c2"), notebook("c")]}))["job_id"]
    api.ok(api.post("update", {"job_id": job_id,
                               "new_settings": {"tasks": [notebook("b", "other", job_cluster_key="c1"), notebook("d")],
                                                "tags": {"b": "2"}},
                               "fields_to_remove": ["timeout_seconds", "tasks/c", "job_clusters/c2"]}))
    settings = api.ok(api.get("get", job_id=job_id))["settings"]
    assert [t["task_key"] for t in settings["tasks"]] == ["a", "b", "d"]
    assert settings["tasks"][1]["notebook_task"]["notebook_path"] == NB + "other"
    assert [c["job_cluster_key"] for c in settings["job_clusters"]] == ["c1"]
    assert settings["tags"] == {"b": "2"} and settings["timeout_seconds"] == 0
    for body, text in [({"fields_to_remove": ["tasks/ghost"]}, "Cannot remove tasks/ghost: no entry with task_key 'ghost'."),
                       ({"fields_to_remove": ["tags/a"]}, None),
                       ({"new_settings": {"tasks": [notebook("e", job_cluster_key="c2")]}},
                        "Job cluster 'c2' is not defined in field 'job_clusters'.")]:
        code, message = error(api.post("update", {"job_id": job_id, **body}))
        assert code == "INVALID_PARAMETER_VALUE" and (text is None or message == text)


def test_a_new_timeout_applies_to_active_runs(api, clock):
    job_id = api.create_job(NB + "slow_thing")
    run_id = api.run_now(job_id)
    clock.advance(10)
    api.ok(api.post("update", {"job_id": job_id, "new_settings": {"timeout_seconds": 15}}))
    clock.advance(5)
    assert api.life(run_id) == ("TERMINATED", "TIMEDOUT")


# -- limits ----------------------------------------------------------------------------------------------

def test_saved_jobs_quota(make_emulator):
    _, api = make_emulator(max_jobs=2)
    first = api.create_job()
    api.create_job()
    code, message = error(api.post("create", {"name": "third"}))
    assert code == "QUOTA_EXCEEDED"
    assert message == ("The quota for the number of jobs has been reached. The current quota is 2. This quota is "
                       "only applied to jobs created through the UI or through the /jobs/create endpoint, which are "
                       "displayed in the Jobs UI")
    one_time = {"tasks": [notebook("t")]}
    assert api.ok(api.post("runs/submit", one_time))["run_id"]  # one-time runs are not saved jobs
    api.ok(api.post("delete", {"job_id": first}))
    assert api.create_job()


def test_job_creation_rate_limit_over_a_sliding_window(make_emulator, clock):
    _, api = make_emulator(job_creation_rate_limit=3, job_creation_rate_window=60)
    api.create_job()
    clock.advance(30)
    api.create_job()
    api.ok(api.post("runs/submit", {"tasks": [notebook("t")]}))  # one-time runs count
    code, message = error(api.post("create", {"name": "fourth"}))
    assert (code, message) == ("INVALID_STATE", "There were already 3 jobs created in past 60 seconds, exceeding "
                                                "rate limit: 3 job creations per 60 seconds.")
    assert error(api.post("runs/submit", {"tasks": [notebook("t")]}))[0] == "INVALID_STATE"
    clock.advance(30)  # the first creation left the window
    assert api.create_job()


def test_limits_default_to_the_documented_workspace_limits(emulator):
    store = emulator.store
    assert (store.max_jobs, store.job_creation_rate_limit, store.job_creation_rate_window) == (10_000, 10_000, 3600)


# -- deleted jobs ----------------------------------------------------------------------------------------

def test_a_deleted_jobs_runs_disappear_and_active_ones_are_cancelled(emulator, api, clock):
    job_id = api.create_job(NB + "slow_etl")
    done = api.run_now(job_id)
    clock.advance(60)
    active = api.run_now(job_id)
    clock.advance(1)
    task_run = api.run(done)["tasks"][0]["run_id"]
    api.ok(api.post("delete", {"job_id": job_id}))
    for path, run_id in (("runs/get", done), ("runs/get", active), ("runs/get-output", task_run)):
        assert error(api.get(path, run_id=run_id)) == ("INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist")
    assert "runs" not in api.ok(api.get("runs/list"))
    clock.advance(1)
    assert emulator.run(active)["state"]["result_state"] == "CANCELED"  # terminated asynchronously
    assert error(api.post("run-now", {"job_id": job_id})) == ("INVALID_PARAMETER_VALUE",
                                                             f"Job {job_id} does not exist.")
    assert error(api.post("run-now", {"job_id": job_id, "idempotency_token": "x"}))[1] == f"Job {job_id} does not exist."


def test_keep_runs_of_deleted_jobs_keeps_them_readable_and_running(make_emulator, clock):
    emu, api = make_emulator(keep_runs_of_deleted_jobs=True)
    job_id = api.create_job(NB + "slow_etl")
    run_id = api.run_now(job_id, idempotency_token="tok")
    clock.advance(1)
    api.ok(api.post("delete", {"job_id": job_id}))
    assert api.life(run_id) == ("PENDING", None)
    clock.advance(60)
    assert api.life(run_id) == ("TERMINATED", "SUCCESS")
    assert [r["run_id"] for r in api.ok(api.get("runs/list", job_id=job_id))["runs"]] == [run_id]
    task_run = api.run(run_id)["tasks"][0]["run_id"]
    assert "notebook_output" in api.ok(api.get("runs/get-output", run_id=task_run))
    assert api.ok(api.post("run-now", {"job_id": job_id, "idempotency_token": "tok"}))["run_id"] == run_id
    assert error(api.post("run-now", {"job_id": job_id}))[1] == f"Job {job_id} does not exist."


def test_job_limits_can_be_set_on_the_command_line():
    from jobs_emulator.__main__ import build_parser
    args = build_parser().parse_args(["--max-jobs", "5", "--job-creation-rate-limit", "2",
                                      "--job-creation-rate-window", "10", "--keep-runs-of-deleted-jobs"])
    assert (args.max_jobs, args.job_creation_rate_limit, args.job_creation_rate_window,
            args.keep_runs_of_deleted_jobs) == (5, 2, 10.0, True)
    with pytest.raises(ValueError):
        from jobs_emulator import JobsEmulator
        JobsEmulator(job_creation_rate_window=0)


def test_unauthenticated_calls_to_new_endpoints_are_refused(emulator):
    anonymous = Api(emulator.base_url, token=None)
    for path in ("reset", "update", "runs/submit", "runs/repair"):
        assert anonymous.post(path, {}).status_code == 401
    assert anonymous.get("runs/list").status_code == 401
