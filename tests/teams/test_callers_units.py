"""Caller identity, the policy's decisions, the queue's caller and the emulator's run_as, one by one."""
from __future__ import annotations

import base64
import json

import pytest

from callers import identity
from callers_support import A, B, SP_A, SP_B, policy_document
from devhost import __main__ as devhost_cli
from devhost.entra import DevEntra, issue_token
from jobs_emulator import JobsEmulator
from jobs_emulator.errors import ApiError
from workflow import caller_policy, jobspec
from workflow.inputs import validate_request


def principal(claims) -> str:
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_client_principal_headers_count_only_when_app_service_authentication_is_on():
    header = {"X-MS-CLIENT-PRINCIPAL": principal([
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": A},
        {"typ": "roles", "val": "Workflows.Run"}])}
    off = identity.AuthConfig.from_env({})
    assert identity.identify(header, off).kind == "functionKey"  # single-team: ignored
    on = identity.AuthConfig.from_env({"WEBSITE_AUTH_ENABLED": "true"})
    caller = identity.identify(header, on)
    assert (caller.id, caller.kind, caller.roles) == (A, "easyauth", frozenset({"Workflows.Run"}))
    with pytest.raises(identity.Unauthenticated):
        identity.identify({}, on)


@pytest.mark.parametrize("v1", [False, True], ids=["v2", "v1"])
def test_v1_and_v2_tokens_name_the_caller_with_its_app_and_roles(dev_key, v1):
    entra = DevEntra(key=dev_key)
    entra.start()
    try:
        config = identity.AuthConfig.from_env(entra.app_settings())
        token = issue_token(A, app_id="app-1", roles=["Workflows.Run"], key=dev_key, v1=v1)
        caller = identity.TokenValidator(config).validate(token)
        assert (caller.id, caller.app_id, caller.roles, caller.tenant_id) == (
            A, "app-1", frozenset({"Workflows.Run"}), entra.tenant_id)
        fetched = len(entra.requests)
        validator = identity.TokenValidator(config)
        validator.validate(token), validator.validate(token)
        assert len(entra.requests) == fetched + 2  # one metadata and one key set fetch per validator
    finally:
        entra.stop()


def test_unreachable_keys_are_a_503_not_a_401(dev_key):
    config = identity.AuthConfig.from_env({"WORKFLOW_AUTH_TENANT_ID": "t", "WORKFLOW_AUTH_AUDIENCE": "api://x",
                                          "WORKFLOW_AUTH_METADATA_URL": "http://127.0.0.1:9/none"})
    with pytest.raises(identity.KeysUnavailable):
        identity.TokenValidator(config).validate(issue_token(A, key=dev_key))


@pytest.mark.parametrize("env, setting", [
    ({"WORKFLOW_AUTH_TENANT_ID": "t"}, "WORKFLOW_AUTH_AUDIENCE"),
    ({"WORKFLOW_AUTH_AUDIENCE": "api://x"}, "WORKFLOW_AUTH_TENANT_ID"),
    ({"WORKFLOW_AUTH_TENANT_ID": "t", "WORKFLOW_AUTH_AUDIENCE": "a", "WORKFLOW_AUTH_METADATA_URL": "http://x.example/m"},
     "WORKFLOW_AUTH_METADATA_URL"),
])
def test_auth_settings_errors_name_the_setting(env, setting):
    with pytest.raises(identity.AuthSettingError) as caught:
        identity.AuthConfig.from_env(env)
    assert caught.value.setting == setting


def test_devhost_token_command_prints_a_token_the_app_accepts(dev_key, monkeypatch, capsys, tmp_path):
    key_file = tmp_path / "k.pem"
    monkeypatch.setenv("DEVHOST_ENTRA_KEY_FILE", str(key_file))
    assert devhost_cli.main(["token", "--oid", B, "--appid", "app-b", "--role", "Workflows.Run"]) == 0
    token = capsys.readouterr().out.strip()
    from devhost.entra import load_or_create_key
    entra = DevEntra(key=load_or_create_key(key_file))
    entra.start()
    try:
        caller = identity.TokenValidator(identity.AuthConfig.from_env(entra.app_settings())).validate(token)
        assert (caller.id, caller.app_id, caller.roles) == (B, "app-b", frozenset({"Workflows.Run"}))
    finally:
        entra.stop()


# -- the policy's decisions ----------------------------------------------------------------------------

def entry_of(who=B, job_of_b=7):
    return caller_policy.parse(json.dumps(policy_document(job_of_b))).entry_for(who)


def check(body, who=B):
    caller_policy.check_request(entry_of(who), validate_request(body).body)


def test_new_clusters_must_name_an_allowed_policy_and_pool():
    body = {"jobName": "team-b-x", "taskKey": "main", "notebookPath": "/Workspace/Teams/b/x",
            "newCluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 1}}
    with pytest.raises(caller_policy.Refusal) as caught:
        check(body)
    assert caught.value.field == "newCluster.policy_id" and caught.value.rule == f"callers.{B}.compute.policyIds"


def test_unlisted_callers_get_default_where_everything_left_out_is_refused():
    with pytest.raises(caller_policy.Refusal) as caught:
        check({"jobId": 7}, who="someone-else")
    assert caught.value.rule == "default.existingJobs.ids" and "left out" in caught.value.message


def test_one_time_runs_and_git_sources_need_their_rules():
    document = policy_document(7)
    document["callers"][B]["create"]["oneTime"] = False
    entry = caller_policy.parse(json.dumps(document)).entry_for(B)
    body = validate_request({"jobSource": "oneTime", "taskKey": "main", "notebookPath": "/Workspace/Teams/b/x"}).body
    with pytest.raises(caller_policy.Refusal) as caught:
        caller_policy.check_request(entry, body)
    assert caught.value.field == "jobSource" and caught.value.rule.endswith("create.oneTime")


def test_the_plan_takes_the_callers_run_as_tags_and_budget_policy():
    document = policy_document(7)
    document["callers"][B]["budgetPolicyId"] = "bp-b"
    entry = caller_policy.parse(json.dumps(document)).entry_for(B)
    plan = validate_request({"jobName": "team-b-x", "taskKey": "main", "notebookPath": "/Workspace/Teams/b/x",
                             "tags": {"team": "forged", "cost": "1"}}).plan
    job = caller_policy.apply_to_plan(entry, plan)["job"]
    assert job["run_as"] == {"service_principal_name": SP_B} and job["budget_policy_id"] == "bp-b"
    assert job["tags"] == {"team": "b", "cost": "1"}
    other = caller_policy.apply_to_plan(caller_policy.parse(json.dumps(document)).entry_for(A), plan)["job"]
    assert jobspec.fingerprint(job) != jobspec.fingerprint(other)  # two callers never share a job by accident


@pytest.mark.parametrize("document, path", [
    ({"callers": {"x": {"existingJobs": {"ids": ["1"]}}}}, "callers.x.existingJobs.ids[0]"),
    ({"callers": {"x": {"tags": {"durable_job_definition": "f"}}}}, "callers.x.tags"),
    ({"sources": {"topic": "x"}}, "sources"),
    ({"callers": {"x": {"runas": "typo"}}}, "callers.x.runas"),
])
def test_a_bad_document_names_the_json_path(document, path):
    with pytest.raises(caller_policy.PolicyDocumentError) as caught:
        caller_policy.parse(json.dumps(document))
    assert caught.value.path == path and "WORKFLOW_CALLER_POLICIES" in str(caught.value)


def test_rates_over_a_limit_answer_429_with_retry_after_naming_the_limit():
    document = policy_document(7)
    document["callers"][B]["limits"]["startsPerMinute"] = 2
    entry = caller_policy.parse(json.dumps(document)).entry_for(B)
    caller_policy.check_rates(entry, 3, [100.0], 130.0)
    with pytest.raises(caller_policy.Refusal) as caught:
        caller_policy.check_rates(entry, 3, [100.0, 120.0], 130.0)
    assert caught.value.status == 429 and caught.value.retry_after == 31
    assert caught.value.rule == f"callers.{B}.limits.startsPerMinute"


# -- the queue's caller --------------------------------------------------------------------------------

def test_a_queue_maps_to_its_caller_and_its_instance_ids_to_its_namespace(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from triggers import queue_trigger
    from triggers.starter import instance_id_for, queue_instance_key

    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps(policy_document(7)))

    class Client:
        started = []

        async def get_status(self, instance_id, show_input=False):
            return SimpleNamespace(runtime_status=None)

        async def start_new(self, name, instance_id, data, version=None):
            self.started.append((instance_id, data))
            return instance_id

    body = {"jobName": "team-b-x", "taskKey": "main", "notebookPath": "/Workspace/Teams/b/x",
            "existingClusterId": "0923-164208-meows279", "instanceId": "http-squatted"}
    message = SimpleNamespace(id="m-1", get_body=lambda: json.dumps(body).encode(), dequeue_count=1)
    client = Client()
    asyncio.run(queue_trigger.handle_message(message, client))
    (instance_id, envelope), = client.started
    assert envelope["owner"] == B and envelope["request"]["job"]["run_as"] == {"service_principal_name": SP_B}
    assert instance_id == instance_id_for(B, "queue", queue_instance_key(queue_trigger.REQUEST_QUEUE, "http-squatted"))
    refused = dict(body, notebookPath="/Workspace/Teams/a/payroll")
    bad = SimpleNamespace(id="m-2", get_body=lambda: json.dumps(refused).encode(), dequeue_count=1)
    with pytest.raises(queue_trigger.QueueMessageError) as caught:
        asyncio.run(queue_trigger.handle_message(bad, client))
    assert caught.value.field == "notebookPath" and len(client.started) == 1


# -- the emulator's run_as -----------------------------------------------------------------------------

@pytest.mark.parametrize("run_as, status", [
    ({"service_principal_name": SP_A}, None),
    ({"service_principal_name": "unknown-sp"}, 400),
    ({"service_principal_name": SP_B}, 403),  # no "Service principal: User" on it
    ({"user_name": "someone@example.com"}, 403),
    ({"user_name": "x", "service_principal_name": SP_A}, 400),
])
def test_the_emulator_validates_and_records_run_as(run_as, status):
    emulator = JobsEmulator(clock=lambda: 1000.0, service_principals={SP_A: True, SP_B: False})
    settings = {"name": "x", "run_as": run_as, "tasks": [{"task_key": "t", "existing_cluster_id": "c",
                                                          "notebook_task": {"notebook_path": "/x"}}]}
    if status is None:
        job_id = emulator.store.create_job(settings, "2.1")["job_id"]
        view = emulator.store.get_job({"job_id": job_id}, "2.1")
        assert view["run_as_user_name"] == SP_A and view["run_as_owner"] is False
        return
    with pytest.raises(ApiError) as caught:
        emulator.store.create_job(settings, "2.1")
    assert caught.value.status == status
    with pytest.raises(ApiError):
        emulator.store.submit_run({"run_name": "x", "run_as": run_as, "tasks": settings["tasks"]}, "2.1")


def test_an_event_grid_topic_maps_to_its_caller_and_a_refused_event_is_kept_as_invalid(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from triggers import event_grid

    document = policy_document(7)
    document["sources"]["eventgrid:/topics/team-a"] = A
    monkeypatch.setenv("WORKFLOW_CALLER_POLICIES", json.dumps(document))
    monkeypatch.setenv("WORKFLOW_INVALID_EVENT_QUEUE", "")
    started = []

    class Client:
        async def get_status(self, instance_id, show_input=False):
            return SimpleNamespace(runtime_status=None)

        async def start_new(self, name, instance_id, data, version=None):
            started.append((instance_id, data))
            return instance_id

    def event(path, event_id):
        data = {"jobName": "team-a-x", "taskKey": "main", "notebookPath": path, "existingClusterId": "0923-164208-meows279"}
        return event_grid.ReceivedEvent("eventgrid", event_id, "/topics/team-a", event_grid.REQUESTED_EVENT_TYPE, "s",
                                        data, {})
    asyncio.run(event_grid.handle_event(event("/Workspace/Teams/a/x", "e-1"), Client()))
    assert started[0][1]["owner"] == A and started[0][0] == event_grid.instance_id_for(event("", "e-1"), A)
    assert asyncio.run(event_grid.handle_event(event("/Workspace/Teams/b/x", "e-2"), Client())) is None
    assert len(started) == 1
