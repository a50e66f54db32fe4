"""The activities over the real client against the Jobs API emulator. Activities run at least once,
so each side effect is shown to happen once when its activity runs twice: one saved job per
definition, one run per run key, one repair per failed round."""
import json

import pytest

from activities import jobs
from activities.jobs import createJob, getJobRun, getJobRunOutput, repairRun, runJobNow, submitRun
from databricks_jobs import DatabricksApiError
from dbx_emulator_support import CLUSTER, calls

JOB = {"name": "nightly-load", "tasks": [{"task_key": "main", "existing_cluster_id": CLUSTER,
                                          "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}],
       "queue": {"enabled": True}, "max_concurrent_runs": 1000, "timeout_seconds": 3900}
CREATE_INPUT = {"instanceId": "instance-abc", "runKey": "run-key-abc", "job": JOB}


@pytest.fixture
def client(emulator_client):
    return emulator_client


def test_one_definition_makes_one_saved_job_however_many_workflows_start(client, emulator):
    first = createJob(dict(CREATE_INPUT))
    assert first == {"jobId": first["jobId"], "created": True, "webhooks": False}
    for run_key in ("run-key-2", "run-key-3"):
        jobs.known_jobs.clear()  # as if each start ran in another process
        assert createJob({**CREATE_INPUT, "runKey": run_key})["jobId"] == first["jobId"]
    assert list(emulator.jobs) == [first["jobId"]] and len(calls(emulator, "/jobs/create")) == 1
    # Another definition under the same name is another job.
    other = createJob({**CREATE_INPUT, "job": {**JOB, "max_concurrent_runs": 5}})
    assert other["created"] and other["jobId"] != first["jobId"]


def test_the_jobs_api_calls_per_start_do_not_grow_with_earlier_workflows(client, emulator):
    createJob(dict(CREATE_INPUT))
    for n in range(20):
        runJobNow({"runKey": f"k{n}", "jobId": createJob({**CREATE_INPUT, "runKey": f"k{n}"})["jobId"]})
    emulator.clear_request_log()
    jobs.known_jobs.clear()  # a cold process: who am I (once per process), then one list by name
    createJob({**CREATE_INPUT, "runKey": "late"})
    assert [r["path"].rsplit("/", 1)[-1] for r in emulator.request_log] == ["Me", "list"]
    assert emulator.request_log[1]["query"]["limit"] == "100" and emulator.request_log[1]["path"].startswith("/api/2.2/")
    emulator.clear_request_log()
    createJob({**CREATE_INPUT, "runKey": "later"})  # warm: nothing at all
    assert emulator.request_log == []


def test_two_first_starts_that_both_created_the_job_converge_on_the_oldest(client, emulator):
    # A concurrent first start created the definition's job a moment before ours did.
    theirs = createJob(dict(CREATE_INPUT))["jobId"]
    jobs.known_jobs.clear()
    # Make our list miss theirs once (the race window), so that we create a second one.
    real_find = client.find_jobs
    calls_seen = []

    def find_jobs_missing_theirs_once(name, *, tag=None, expand_tasks=False):
        found = real_find(name, tag=tag, expand_tasks=expand_tasks)
        calls_seen.append(len(found))
        return [] if len(calls_seen) == 1 else found

    client.find_jobs = find_jobs_missing_theirs_once
    ours = createJob({**CREATE_INPUT, "runKey": "run-key-2"})
    assert ours == {"jobId": theirs, "created": False, "webhooks": False}
    assert list(emulator.jobs) == [theirs]  # ours was deleted before any run used it
    assert len(calls(emulator, "/jobs/create")) == 2 and len(calls(emulator, "/jobs/delete")) == 1


def test_a_lost_create_reply_is_found_by_the_repeated_activity(client, emulator):
    emulator.faults.script("drop_after", path="*/jobs/create")
    with pytest.raises(DatabricksApiError):
        createJob(dict(CREATE_INPUT))  # the job exists but the activity could not learn its id
    again = createJob(dict(CREATE_INPUT))  # what the orchestrator's activity retry does
    assert again["created"] is False and list(emulator.jobs) == [again["jobId"]]


def test_a_private_job_is_the_workflow_runs_own(client, emulator):
    first = createJob({**CREATE_INPUT, "private": True})
    second = createJob({**CREATE_INPUT, "private": True})
    other = createJob({**CREATE_INPUT, "runKey": "run-key-xyz", "private": True})
    assert first["jobId"] == second["jobId"] != other["jobId"]
    assert emulator.jobs[first["jobId"]]["settings"]["tags"] == {"durable_run_key": "run-key-abc"}


def test_run_job_now_twice_returns_the_same_run_with_its_parameters(client, emulator):
    job_id = createJob(dict(CREATE_INPUT))["jobId"]
    first = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    second = runJobNow({"runKey": "run-key-abc", "jobId": job_id, "notebookParams": {"day": "mon"}})
    assert first == second and set(first) == {"runId", "runPageUrl"}
    assert list(emulator.runs) == [first["runId"]]
    assert emulator.run(first["runId"])["overriding_parameters"] == {"notebook_params": {"day": "mon"}}


def test_run_job_now_passes_job_parameters_and_queues(client, emulator):
    job_id = createJob({**CREATE_INPUT, "job": {**JOB, "parameters": [{"name": "day", "default": "sun"}]}})["jobId"]
    run = runJobNow({"runKey": "k", "jobId": job_id, "jobParameters": {"day": "mon"}, "queue": {"enabled": True}})
    values = {p["name"]: p.get("value") for p in emulator.run(run["runId"])["job_parameters"]}
    assert values == {"day": "mon"}
    assert calls(emulator, "/jobs/run-now")[-1]["body"]["queue"] == {"enabled": True}


def test_submit_run_twice_makes_one_one_time_run(client, emulator):
    body = {"run_name": "adhoc", "tasks": JOB["tasks"], "timeout_seconds": 3900, "queue": {"enabled": True}}
    first = submitRun({"runKey": "run-key-abc", "submit": body})
    second = submitRun({"runKey": "run-key-abc", "submit": body})
    assert first == second == {"runId": first["runId"], "webhooks": False}
    assert list(emulator.runs) == [first["runId"]] and not emulator.jobs  # no saved job
    assert emulator.run(first["runId"])["run_type"] == "SUBMIT_RUN"


def _failed_run(client, emulator, vclock):
    job = {**JOB, "tasks": [{"task_key": "flaky_load", "existing_cluster_id": CLUSTER,
                             "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/load"}}]}
    job_id = createJob({**CREATE_INPUT, "job": job})["jobId"]
    run_id = runJobNow({"runKey": "k", "jobId": job_id})["runId"]
    vclock.advance(3600)
    summary = getJobRun({"runId": run_id})
    assert (summary["lifeCycleState"], summary["resultState"]) == ("INTERNAL_ERROR", "FAILED")
    return run_id


def test_repair_run_twice_repairs_once_and_the_run_succeeds(client, emulator, vclock):
    run_id = _failed_run(client, emulator, vclock)
    first = repairRun({"runId": run_id, "repairsSeen": 0})
    second = repairRun({"runId": run_id, "repairsSeen": 0})  # the activity ran again
    assert first["repairId"] == second["repairId"] and second["repeated"] is True
    assert len(calls(emulator, "/runs/repair")) == 1
    vclock.advance(3600)
    summary = getJobRun({"runId": run_id, "includeHistory": True})
    assert (summary["lifeCycleState"], summary["resultState"]) == ("TERMINATED", "SUCCESS")
    assert summary["repairs"] == [first["repairId"]]


def test_outputs_of_every_task_in_one_activity(client, emulator, vclock):
    job = {**JOB, "tasks": [
        {"task_key": "extract", "existing_cluster_id": CLUSTER,
         "notebook_task": {"notebook_path": "/Workspace/Users/me@contoso.com/extract"}},
        {"task_key": "report", "depends_on": [{"task_key": "extract"}], "existing_cluster_id": CLUSTER,
         "spark_python_task": {"python_file": "/Workspace/Users/me@contoso.com/report.py"}}]}
    job_id = createJob({**CREATE_INPUT, "job": job})["jobId"]
    run_id = runJobNow({"runKey": "k", "jobId": job_id})["runId"]
    vclock.advance(3600)
    tasks = getJobRun({"runId": run_id})["tasks"]
    assert {t["taskKey"]: t["type"] for t in tasks} == {"extract": "notebook_task", "report": "spark_python_task"}
    outputs = getJobRunOutput({"tasks": [{"taskKey": t["taskKey"], "runId": t["runId"]} for t in tasks]})["tasks"]
    by_key = {o["taskKey"]: o for o in outputs}
    assert json.loads(by_key["extract"]["notebookResult"])["task_key"] == "extract"
    assert by_key["report"]["noNotebookOutput"] is True and "notebookResult" not in by_key["report"]


# -- saved jobs belong to the app (issue 15 §4) and converge however ids are ordered (issue 14 §2) --

def _job_created_by(emulator, identity_token, settings):
    """A job created by another identity, straight through the Jobs API."""
    import requests
    r = requests.post(f"{emulator.base_url}/api/2.1/jobs/create", json=settings,
                      headers={"Authorization": f"Bearer {identity_token}"}, timeout=10)
    r.raise_for_status()
    return r.json()["job_id"]


@pytest.fixture
def two_identities(emulator):
    """The app's token, and a second caller's (a person or team with workspace access)."""
    from dbx_emulator_support import TOKEN
    emulator.identities.update({TOKEN: "app-sp-0001", "dapi-someone-else": "mallory@contoso.com"})
    emulator.tokens.add("dapi-someone-else")
    return "dapi-someone-else"


def test_a_job_with_a_forged_definition_tag_made_by_another_identity_is_not_adopted(client, emulator, two_identities,
                                                                                   caplog):
    # Another identity plants a job with this definition's exact settings and tag (learnt from a
    # job it can see), before the definition's first start.
    planted = createJob(dict(CREATE_INPUT))["jobId"]
    settings = emulator.jobs[planted]["settings"]
    client.delete_job(planted)
    jobs.known_jobs.clear()
    forged = _job_created_by(emulator, two_identities, settings)
    emulator.clear_request_log()
    caplog.set_level("WARNING")
    ours = createJob({**CREATE_INPUT, "runKey": "victim"})
    assert ours["created"] is True and ours["jobId"] != forged
    assert emulator.jobs[ours["jobId"]]["creator_user_name"] == "app-sp-0001"
    assert f"job {forged} carries the tag durable_job_definition" in caplog.text
    assert "mallory" not in caplog.text
    # Cost: who am I, the lookup, the create, the convergence lookup; nothing deleted.
    assert [r["path"].rsplit("/", 1)[-1] for r in emulator.request_log] == ["Me", "list", "create", "list"]


def test_a_shared_job_edited_by_hand_is_not_reused_and_the_drift_is_logged(client, emulator, caplog):
    first = createJob(dict(CREATE_INPUT))["jobId"]
    # Someone changes the notebook of the shared job in the UI.
    edited = dict(emulator.jobs[first]["settings"])
    edited["tasks"] = [{**edited["tasks"][0], "notebook_task": {"notebook_path": "/Workspace/Users/x/evil"}}]
    client.reset_job(first, edited)
    jobs.known_jobs.clear()
    caplog.set_level("WARNING")
    second = createJob({**CREATE_INPUT, "runKey": "after-edit"})
    assert second["created"] is True and second["jobId"] != first
    assert f"job {first} was changed since the app created it (fields: tasks[main])" in caplog.text
    assert "/Workspace/Users/x/evil" not in caplog.text  # names of fields, never values
    assert set(emulator.jobs) == {first, second["jobId"]}  # the edited job is left alone
    # The fresh job is reused from then on.
    jobs.known_jobs.clear()
    assert createJob({**CREATE_INPUT, "runKey": "later"})["jobId"] == second["jobId"]


def test_a_job_settings_round_trip_through_databricks_still_matches_its_definition(client, emulator):
    # Databricks fills in defaults, reorders depends_on and drops apply_policy_default_values: none
    # of it is drift.
    job = {**JOB, "job_clusters": [{"job_cluster_key": "c", "new_cluster": {
        "spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 1,
        "policy_id": "p1", "apply_policy_default_values": True}}],
        "tasks": [{"task_key": "z", "job_cluster_key": "c", "notebook_task": {"notebook_path": "/Workspace/z"}},
                  {"task_key": "a", "job_cluster_key": "c", "notebook_task": {"notebook_path": "/Workspace/a"}},
                  {"task_key": "m", "job_cluster_key": "c", "depends_on": [{"task_key": "z"}, {"task_key": "a"}],
                   "notebook_task": {"notebook_path": "/Workspace/m"}}]}
    first = createJob({**CREATE_INPUT, "job": job})["jobId"]
    stored = emulator.jobs[first]["settings"]
    assert [d["task_key"] for d in stored["tasks"][2]["depends_on"]] == ["a", "z"]  # the service's order
    assert stored["tasks"][0]["notebook_task"]["source"] == "WORKSPACE"
    jobs.known_jobs.clear()
    assert createJob({**CREATE_INPUT, "job": job, "runKey": "again"}) == {"jobId": first, "created": False,
                                                                         "webhooks": False}


@pytest.mark.emulator_options(job_ids="descending")
def test_racing_first_starts_converge_on_the_oldest_job_when_ids_go_down(client, emulator, vclock):
    # Nothing documents that Databricks ids grow with creation time: the oldest is by created_time.
    theirs = createJob(dict(CREATE_INPUT))["jobId"]
    jobs.known_jobs.clear()
    vclock.advance(2)  # ours is created later, and gets a LOWER id
    real_find = client.find_jobs
    seen = []

    def missing_theirs_once(name, *, tag=None, expand_tasks=False):
        found = real_find(name, tag=tag, expand_tasks=expand_tasks)
        seen.append(len(found))
        return [] if len(seen) == 1 else found

    client.find_jobs = missing_theirs_once
    ours = createJob({**CREATE_INPUT, "runKey": "run-key-2"})
    assert ours == {"jobId": theirs, "created": False, "webhooks": False}
    assert list(emulator.jobs) == [theirs]
    deleted = calls(emulator, "/jobs/delete")
    assert len(deleted) == 1 and deleted[0]["body"]["job_id"] < theirs  # ours: younger, lower id


def test_lookup_only_finds_a_private_job_and_never_creates_one(client, emulator):
    """What a workflow stopped while createJob ran asks, to delete the job that call may have made."""
    lookup = {**CREATE_INPUT, "private": True, "lookupOnly": True}
    assert createJob(dict(lookup)) == {"jobId": None, "created": False, "webhooks": False}
    assert not calls(emulator, "/jobs/create")
    made = createJob({**CREATE_INPUT, "private": True})["jobId"]
    assert createJob(dict(lookup))["jobId"] == made and len(calls(emulator, "/jobs/create")) == 1


def test_a_warm_worker_stops_using_a_hand_edited_job_within_minutes(client, emulator, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(jobs.known_jobs, "clock", lambda: now[0])
    first = createJob(dict(CREATE_INPUT))["jobId"]
    edited = dict(emulator.jobs[first]["settings"], max_concurrent_runs=1)
    client.reset_job(first, edited)
    emulator.clear_request_log()
    assert createJob({**CREATE_INPUT, "runKey": "k2"})["jobId"] == first  # known: no call at all
    assert emulator.request_log == []
    now[0] += jobs.KNOWN_JOB_SECONDS
    fresh = createJob({**CREATE_INPUT, "runKey": "k3"})
    assert fresh["created"] and fresh["jobId"] != first
    # The identity is known for the process's life; only the lookup and the create were needed.
    assert [r["path"].rsplit("/", 1)[-1] for r in emulator.request_log] == ["list", "create", "list"]
