"""Issue 15 through devhost with --auth: two callers, a policy, the emulator behind."""
from __future__ import annotations

import base64
import json

import pytest
import requests

from callers_support import A, B, C, CLUSTER, SP_B, TOKEN
from jobs_emulator import Behavior, Scenario
from triggers.starter import derived_instance_id

START = "/api/workflows/create-job-and-run"


def seed(team: str, **extra) -> dict:
    return {"jobName": f"team-{team}-load", "taskKey": "main", "notebookPath": f"/Workspace/Teams/{team}/load",
            "existingClusterId": CLUSTER, **extra}


def call(teams, method, path, who=None, body=None, headers=None):
    headers = dict(headers or {})
    if who is not None:
        headers["Authorization"] = f"Bearer {teams.tokens[who]}"
    return requests.request(method, teams.base_url + path, json=body, headers=headers, timeout=10)


def start(teams, who, body, **headers):
    return call(teams, "POST", START, who, body, headers)


def jobs_api_calls(teams, suffix):
    return [r for r in teams.emulator.request_log if r["path"].endswith(suffix)]


def test_b_gets_404_on_as_status_cancel_and_outputs_as_for_an_unknown_id(teams):
    teams.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 600),)))])
    started = start(teams, A, seed("a"), **{"Idempotency-Key": "nightly-2026-03-01"})
    assert started.status_code == 202
    ids = started.json()["id"]
    teams.host.run_until_idle()
    unknown = call(teams, "GET", "/api/workflows/0123456789abcdef0123456789abcdef", B)
    assert unknown.status_code == 404

    def same_as_unknown(response, instance_id):
        assert response.status_code == 404
        assert response.json() == {"error": f"no workflow instance '{instance_id}'", "field": "instanceId"}
        assert unknown.json()["error"].replace("0123456789abcdef0123456789abcdef", instance_id) == response.json()["error"]

    same_as_unknown(call(teams, "GET", f"/api/workflows/{ids}", B), ids)
    same_as_unknown(call(teams, "POST", f"/api/workflows/{ids}/cancel", B), ids)
    # The id today's scheme would have given that key: computable, and nobody's.
    computed = derived_instance_id("http", "nightly-2026-03-01")
    same_as_unknown(call(teams, "GET", f"/api/workflows/{computed}", B), computed)
    assert not jobs_api_calls(teams, "/runs/cancel")  # B's cancel reached nothing

    teams.host.run_until_complete(ids)
    same_as_unknown(call(teams, "GET", f"/api/workflows/{ids}", B), ids)  # the outputs too
    mine = call(teams, "GET", f"/api/workflows/{ids}", A)
    assert mine.status_code == 200 and mine.json()["resultState"] == "SUCCESS"
    assert call(teams, "GET", f"/api/workflows/{ids}", "admin").status_code == 200
    # The owner is recorded as the caller's object id, and no token is anywhere in the instance.
    stored = teams.host.get_status(ids, show_input=True)
    envelope = stored["input"] if isinstance(stored["input"], dict) else json.loads(stored["input"])
    assert envelope["owner"] == A
    assert teams.tokens[A] not in json.dumps(stored) and "Bearer" not in json.dumps(stored)


def test_the_same_idempotency_key_from_two_callers_starts_two_workflows(teams):
    key = {"Idempotency-Key": "run-1"}
    first_a, first_b = start(teams, A, seed("a"), **key), start(teams, B, seed("b"), **key)
    assert first_a.status_code == first_b.status_code == 202
    assert first_a.json()["id"] != first_b.json()["id"]
    assert sorted(teams.host.instance_ids()) == sorted([first_a.json()["id"], first_b.json()["id"]])
    again = start(teams, B, seed("b"), **key)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first_b.json()["id"]
    # B reusing its own key for another body: 422, about B's key only.
    reused = start(teams, B, seed("b", notebookParams={"day": "2"}), **key)
    assert reused.status_code == 422 and reused.json()["field"] == "Idempotency-Key"
    # A key only A used tells B nothing: B starts its own workflow.
    fresh = start(teams, B, seed("b"), **{"Idempotency-Key": "only-a-used-this"})
    start(teams, A, seed("a"), **{"Idempotency-Key": "only-a-used-this"})
    assert fresh.status_code == 202 and "Idempotent-Replayed" not in fresh.headers
    assert len(teams.host.instance_ids()) == 4


def test_a_job_outside_bs_policy_gets_403_the_same_whether_or_not_it_exists(teams):
    existing = start(teams, B, {"jobId": teams.job_of_a})
    missing = start(teams, B, {"jobId": 987654321})
    for response in (existing, missing):
        assert response.status_code == 403
        assert response.json()["field"] == "jobId" and response.json()["rule"] == f"callers.{B}.existingJobs.ids"
    assert existing.json()["error"].replace(str(teams.job_of_a), "N") == missing.json()["error"].replace("987654321", "N")
    by_name = start(teams, B, {"jobName": "team-a-payroll"})
    by_missing_name = start(teams, B, {"jobName": "team-a-nothing"})
    assert by_name.status_code == by_missing_name.status_code == 403
    assert by_name.json()["rule"] == f"callers.{B}.existingJobs.names"
    nested = start(teams, B, {"jobName": "team-b-wrapper", "tasks": [
        {"task_key": "inner", "run_job_task": {"job_id": teams.job_of_a}}]})
    assert nested.status_code == 403 and nested.json()["field"] == "tasks[0].run_job_task.job_id"
    # Decided before any lookup: Databricks was never asked, and nothing started.
    assert not jobs_api_calls(teams, "/jobs/list") and not jobs_api_calls(teams, "/jobs/get")
    assert teams.host.instance_ids() == []
    allowed = start(teams, B, {"jobId": teams.job_of_b})
    assert allowed.status_code == 202


@pytest.mark.parametrize("body, field, rule", [
    (seed("b", notebookPath="/Workspace/Teams/a/load"), "notebookPath", "create.pathPrefixes"),
    (seed("b", existingClusterId="0101-other-cluster"), "existingClusterId", "compute.clusterIds"),
    (seed("b", libraries=[{"pypi": {"package": "requests"}}]), "libraries", "create.libraries"),
    (seed("b", notebookParams={"token": "{{secrets/team-a/token}}"}), "notebookParams.token", "secretScopes"),
    (seed("b", timeoutSeconds=3600, notebookParams={"token": "{{secrets/team-b/token}}"}), None, None),
], ids=["path", "cluster", "libraries", "secret-scope", "allowed"])
def test_a_request_the_policy_does_not_allow_names_the_field_and_the_rule(teams, body, field, rule):
    response = start(teams, B, body)
    if rule is None:
        assert response.status_code == 202
        return
    assert response.status_code == 403
    assert response.json()["field"] == field and response.json()["rule"] == f"callers.{B}.{rule}"
    assert rule in response.json()["error"] and teams.host.instance_ids() == []


def test_bs_created_job_and_one_time_run_run_as_bs_service_principal(teams):
    instance_id = start(teams, B, seed("b")).json()["id"]
    teams.host.run_until_complete(instance_id)
    outputs = call(teams, "GET", f"/api/workflows/{instance_id}", B).json()
    assert outputs["resultState"] == "SUCCESS"
    job = teams.emulator.store.jobs[outputs["jobId"]]
    assert job.settings["run_as"] == {"service_principal_name": SP_B}
    assert job.settings["tags"]["team"] == "b"
    run = requests.get(f"{teams.emulator.base_url}/api/2.1/jobs/runs/get", params={"run_id": outputs["runId"]},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert run["run_as_user_name"] == SP_B
    one_time = start(teams, B, seed("b", jobSource="oneTime")).json()["id"]
    teams.host.run_until_complete(one_time)
    outputs = call(teams, "GET", f"/api/workflows/{one_time}", B).json()
    assert outputs["resultState"] == "SUCCESS"
    submits = jobs_api_calls(teams, "/runs/submit")
    assert len(submits) == 1 and submits[0]["body"]["run_as"] == {"service_principal_name": SP_B}


def test_a_forged_client_principal_header_without_a_token_gets_401(teams):
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": A},
        {"typ": "roles", "val": "Workflows.Admin"}]}).encode()).decode()
    forged = {"X-MS-CLIENT-PRINCIPAL": principal, "X-MS-CLIENT-PRINCIPAL-ID": A, "X-MS-CLIENT-PRINCIPAL-NAME": "a"}
    response = call(teams, "POST", START, None, seed("a"), forged)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert call(teams, "GET", "/api/workflows/0123456789abcdef0123456789abcdef", None, None, forged).status_code == 401
    assert teams.host.instance_ids() == []


@pytest.mark.parametrize("problem", ["expired", "audience", "signature", "malformed"])
def test_a_token_that_does_not_hold_gets_401_and_starts_nothing(teams, problem):
    from cryptography.hazmat.primitives.asymmetric import rsa

    from devhost.entra import issue_token
    token = {"expired": lambda: issue_token(A, key=teams.key, lifetime_seconds=-600),
             "audience": lambda: issue_token(A, key=teams.key, audience="api://someone-else"),
             "signature": lambda: issue_token(A, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
             "malformed": lambda: "not.a.token"}[problem]()
    response = call(teams, "POST", START, None, seed("a"), {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and teams.host.instance_ids() == []


def test_an_authenticated_caller_without_a_role_or_policy_entry_gets_403(teams):
    response = start(teams, C, seed("a"))
    assert response.status_code == 403 and C in response.json()["error"] and teams.host.instance_ids() == []


def test_bs_fifth_concurrent_workflow_over_a_limit_of_4_gets_429(teams):
    teams.emulator.scenario = Scenario(rules=[("*", Behavior(phases=(("RUNNING", 3600),)))])
    for day in range(4):
        assert start(teams, B, seed("b", notebookParams={"day": str(day)}), **{"Idempotency-Key": f"day-{day}"}
                     ).status_code == 202
    teams.host.run_until_idle()
    # A retry of a start that already happened is answered as a replay, never refused by the limit.
    replay = start(teams, B, seed("b", notebookParams={"day": "0"}), **{"Idempotency-Key": "day-0"})
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    fifth = start(teams, B, seed("b", notebookParams={"day": "5"}))
    assert fifth.status_code == 429 and int(fifth.headers["Retry-After"]) > 0
    assert fifth.json()["rule"] == f"callers.{B}.limits.concurrentWorkflows"
    assert "concurrentWorkflows" in fifth.json()["error"]
    assert len(teams.host.instance_ids()) == 4
    assert start(teams, A, seed("a")).status_code == 202  # A has no such limit


def test_a_bad_policy_document_answers_503_naming_the_setting_and_the_path(teams, monkeypatch):
    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps({"callers": {A: {"limits": {"concurrentWorkflows": -1}}}}))
    response = start(teams, A, seed("a"))
    assert response.status_code == 503 and response.json()["setting"] == "WORKFLOW_CALLER_POLICIES"
    assert f"callers.{A}.limits.concurrentWorkflows" in response.json()["error"]
    assert teams.host.instance_ids() == []


def test_starts_per_minute_are_counted_from_the_task_hub_and_free_up_a_minute_later(teams, monkeypatch):
    from callers_support import policy_document
    document = policy_document(teams.job_of_b)
    document["callers"][B]["limits"] = {"startsPerMinute": 2}
    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps(document))
    assert [start(teams, B, seed("b", notebookParams={"n": str(n)})).status_code for n in range(2)] == [202, 202]
    third = start(teams, B, seed("b", notebookParams={"n": "3"}))
    assert third.status_code == 429 and third.json()["rule"] == f"callers.{B}.limits.startsPerMinute"
    assert 1 <= int(third.headers["Retry-After"]) <= 61
    assert start(teams, A, seed("a")).status_code == 202  # another caller's starts do not count
    teams.clock.advance_to(teams.clock.now() + 61)
    assert start(teams, B, seed("b", notebookParams={"n": "4"})).status_code == 202


def test_the_task_hub_query_filters_by_prefix_status_and_creation_time(teams):
    from devhost.management import _filtered
    statuses = [{"instanceId": "oabc-1", "runtimeStatus": "Running", "createdTime": "2026-03-01T00:00:00Z"},
                {"instanceId": "oabc-2", "runtimeStatus": "Completed", "createdTime": "2026-03-01T00:05:00Z"},
                {"instanceId": "odef-3", "runtimeStatus": "Running", "createdTime": "2026-03-01T00:05:00Z"}]
    assert [s["instanceId"] for s in _filtered(statuses, {"instanceIdPrefix": "oabc-"})] == ["oabc-1", "oabc-2"]
    assert [s["instanceId"] for s in _filtered(statuses, {"instanceIdPrefix": "oabc-", "runtimeStatus": "Running"})] \
        == ["oabc-1"]
    assert [s["instanceId"] for s in _filtered(statuses, {"createdTimeFrom": "2026-03-01T00:01:00Z"})] \
        == ["oabc-2", "odef-3"]


def test_a_caller_whose_policy_entry_says_admin_sees_every_workflow(teams, monkeypatch):
    from callers_support import policy_document
    instance_id = start(teams, A, seed("a")).json()["id"]
    assert call(teams, "GET", f"/api/workflows/{instance_id}", C).status_code == 404
    document = policy_document(teams.job_of_b)
    document["callers"][C] = {"admin": True}
    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps(document))
    assert call(teams, "GET", f"/api/workflows/{instance_id}", C).status_code == 202


def test_a_new_job_definition_past_bs_saved_jobs_limit_gets_403_and_a_known_one_still_runs(teams, monkeypatch):
    from callers_support import policy_document
    document = policy_document(teams.job_of_b)
    document["callers"][B]["limits"] = {"savedJobs": 2}
    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps(document))
    for name in ("one", "two"):
        assert start(teams, B, seed("b", jobName=f"team-b-{name}")).status_code == 202
        teams.host.run_until_idle()
        # Starts seconds apart: the entity has its signal (first starts that cross may both pass; design.md).
        teams.host.settle_signals()
    third = start(teams, B, seed("b", jobName="team-b-three"))
    assert third.status_code == 403 and third.json()["rule"] == f"callers.{B}.limits.savedJobs"
    assert "savedJobs" in third.json()["error"]
    # Other starts of a definition it already has reuse that job: not refused, no new saved job.
    assert start(teams, B, seed("b", jobName="team-b-one", notebookParams={"day": "2"})).status_code == 202
    # A private job is deleted when its workflow ends, and a one-time run keeps none: neither counts.
    assert start(teams, B, seed("b", jobName="team-b-four", deleteJobOnCompletion=True)).status_code == 202
    teams.host.run_until_idle()
    assert len(teams.host.instance_ids()) == 4
    saved = [j for j in teams.emulator.store.jobs.values()
             if j.settings.get("tags", {}).get("team") == "b" and "durable_job_definition" in j.settings["tags"]]
    assert sorted(j.settings["name"] for j in saved) == ["team-b-one", "team-b-two"]
    assert start(teams, A, seed("a", jobName="team-a-three")).status_code == 202  # A has no such limit
