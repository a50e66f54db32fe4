"""Token providers: caching and refresh, real azure-identity ManagedIdentityCredential against a
loopback App Service identity endpoint, Key Vault through `responses`, and no token in logs."""
import json
import logging
import threading
import time
from types import SimpleNamespace

import pytest
import responses
from azure.core.credentials import AccessToken
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from activities.jobs import createJob, getJobRun
from databricks_jobs.credentials import (
    DATABRICKS_SCOPE,
    MANAGEMENT_SCOPE,
    EntraTokenProvider,
    KeyVaultPatProvider,
    StaticTokenProvider,
    get_token_provider,
)

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
VAULT = "https://my-vault.vault.azure.net"
KV_CHALLENGE = ('Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
                'resource="https://vault.azure.net"')
KV_PAT = "dapi-from-key-vault-0123456789"
RESOURCE_ID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Databricks/workspaces/ws"


class FakeCredential:
    def __init__(self, lifetime=3600.0, clock=time.time):
        self.calls = []
        self.lifetime = lifetime
        self.clock = clock
        self.lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self.lock:
            self.calls.append(scopes)
            return AccessToken(f"entra-{len(self.calls)}", int(self.clock() + self.lifetime))


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def run_payload(run_id=1):
    return {"run_id": run_id, "job_id": 2, "state": {"life_cycle_state": "RUNNING", "state_message": ""},
            "run_page_url": "https://adb/#job/2/run/1", "start_time": 1700000000000, "end_time": 0,
            "tasks": [{"task_key": "main", "run_id": 3, "attempt_number": 0,
                       "state": {"life_cycle_state": "RUNNING"}, "start_time": 1700000000000}]}


# -- caching --------------------------------------------------------------------------------------

def test_entra_token_is_cached_and_refreshed_five_minutes_before_expiry():
    clock = Clock()
    credential = FakeCredential(lifetime=3600, clock=clock)
    provider = EntraTokenProvider(credential, clock=clock)
    assert provider.token() == provider.token() == "entra-1"
    assert credential.calls == [(DATABRICKS_SCOPE,)]
    clock.now += 3600 - 301
    assert provider.token() == "entra-1"
    clock.now += 2
    assert provider.token() == "entra-2"


def test_a_short_lived_token_is_refreshed_at_half_life_not_every_call():
    clock = Clock()
    credential = FakeCredential(lifetime=120, clock=clock)
    provider = EntraTokenProvider(credential, clock=clock)
    provider.token()
    clock.now += 59
    assert provider.token() == "entra-1"
    clock.now += 2
    assert provider.token() == "entra-2"


def test_concurrent_callers_share_one_fetch():
    credential = FakeCredential()
    provider = EntraTokenProvider(credential)
    barrier = threading.Barrier(32)
    seen = []

    def call():
        barrier.wait()
        seen.append(provider.token())

    threads = [threading.Thread(target=call) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(credential.calls) == 1 and set(seen) == {"entra-1"}


def test_invalidate_fetches_again():
    credential = FakeCredential()
    provider = EntraTokenProvider(credential)
    provider.token()
    provider.invalidate()
    assert provider.token() == "entra-2"


def test_workspace_resource_id_adds_the_management_token_header():
    credential = FakeCredential()
    provider = EntraTokenProvider(credential, workspace_resource_id=RESOURCE_ID)
    headers = provider.extra_headers()
    assert headers == {"X-Databricks-Azure-Workspace-Resource-Id": RESOURCE_ID,
                       "X-Databricks-Azure-SP-Management-Token": "entra-1"}
    assert credential.calls == [(MANAGEMENT_SCOPE,)]
    assert provider.extra_headers() == headers and len(credential.calls) == 1


def test_key_vault_pat_is_reused_for_its_ttl_and_reread_after_invalidate():
    clock = Clock(0)
    values = iter(["pat-1", "pat-2", "pat-3"])
    reads = []

    class Secrets:
        def get_secret(self, name):
            reads.append(name)
            return SimpleNamespace(value=next(values))

    provider = KeyVaultPatProvider(Secrets(), "dbx-pat", ttl_seconds=600, clock=clock)
    assert provider.token() == provider.token() == "pat-1"
    clock.now = 601
    assert provider.token() == "pat-2"
    provider.invalidate()
    assert provider.token() == "pat-3"
    assert reads == ["dbx-pat"] * 3 and provider.extra_headers() == {}


def test_static_pat_provider_hides_its_token():
    provider = StaticTokenProvider("dapi-abc")
    assert provider.token() == "dapi-abc" and "dapi-abc" not in repr(provider)


# -- real ManagedIdentityCredential against the loopback identity endpoint ---------------------------

@pytest.fixture
def databricks(loopback):
    return loopback(lambda request: (200, {}, run_payload(int(request["query"].get("run_id", 1)))))


def test_a_thousand_activity_calls_fetch_the_managed_identity_token_once(identity_endpoint, databricks, configure):
    configure(host=databricks.base_url, auth="managed_identity")
    for run_id in range(1000):
        assert getJobRun({"runId": run_id})["runId"] == run_id
    assert len(identity_endpoint.fetches()) == 1
    fetch = identity_endpoint.fetches()[0]
    assert fetch["query"]["resource"] == DATABRICKS_SCOPE[: -len("/.default")]
    assert fetch["headers"]["x-identity-header"] == identity_endpoint.SECRET
    calls = databricks.calls("/api/2.1/jobs/runs/get")
    assert len(calls) == 1000
    assert {c["headers"]["authorization"] for c in calls} == {"Bearer " + identity_endpoint.issued[0]}


def test_user_assigned_identity_sends_its_client_id(identity_endpoint, databricks, configure):
    configure(host=databricks.base_url, auth="managed_identity", managed_identity_client_id="11111111-2222-3333-4444-555555555555")
    getJobRun({"runId": 1})
    assert identity_endpoint.fetches()[0]["query"]["client_id"] == "11111111-2222-3333-4444-555555555555"


def test_workspace_resource_id_headers_with_managed_identity(identity_endpoint, databricks, configure):
    configure(host=databricks.base_url, auth="managed_identity", azure_workspace_resource_id=RESOURCE_ID)
    for run_id in range(5):
        getJobRun({"runId": run_id})
    headers = databricks.calls("/api/2.1/jobs/runs/get")[-1]["headers"]
    assert headers["x-databricks-azure-workspace-resource-id"] == RESOURCE_ID
    assert headers["x-databricks-azure-sp-management-token"].startswith("mi-token-")
    assert "management.core.windows.net" in headers["x-databricks-azure-sp-management-token"]
    assert len(identity_endpoint.fetches()) == 2  # one per scope, for all five calls


# -- Key Vault through `responses`, its credential the real ManagedIdentityCredential --------------

@pytest.fixture
def key_vault(identity_endpoint):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(identity_endpoint.server.base_url)
        secret_url = f"{VAULT}/secrets/dbx-pat/"  # SecretClient asks for the latest version with a trailing slash
        # SecretClient first asks without a token, learns the scope from the challenge, then authenticates.
        mock.get(secret_url, status=401, headers={"WWW-Authenticate": KV_CHALLENGE}, json={"error": {"code": "Unauthorized"}})
        mock.get(secret_url, json={"value": KV_PAT, "id": f"{secret_url}0123456789abcdef", "attributes": {"enabled": True}})
        yield mock


def test_key_vault_pat_is_read_with_the_managed_identity(key_vault, identity_endpoint, configure):
    configure(host=HOST, auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat")
    run = key_vault.get(HOST + "/api/2.1/jobs/runs/get", json=run_payload())
    for _ in range(3):
        getJobRun({"runId": 1})
    vault_calls = [c for c in key_vault.calls if c.request.url.startswith(VAULT)]
    assert len(vault_calls) == 2  # the challenge round trip, once for the process
    assert vault_calls[1].request.headers["Authorization"].startswith("Bearer mi-token-")
    assert [f["query"]["resource"] for f in identity_endpoint.fetches()] == ["https://vault.azure.net"]
    assert {c.request.headers["Authorization"] for c in run.calls} == {"Bearer " + KV_PAT}
    assert isinstance(get_token_provider(), KeyVaultPatProvider)


def test_key_vault_provider_with_secret_client_rereads_after_ttl(key_vault, identity_endpoint):
    clock = Clock(0)
    provider = KeyVaultPatProvider(SecretClient(VAULT, ManagedIdentityCredential()), "dbx-pat", 60, clock=clock)
    assert provider.token() == KV_PAT
    key_vault.get(f"{VAULT}/secrets/dbx-pat/", json={"value": "dapi-rotated", "id": f"{VAULT}/secrets/dbx-pat/2"})
    clock.now = 61
    # responses serves registered answers in order and repeats the last one
    assert provider.token() == "dapi-rotated"
    assert provider.token() == "dapi-rotated"
    assert len([c for c in key_vault.calls if c.request.url.startswith(VAULT)]) == 3


# -- no token in logs or outputs ---------------------------------------------------------------------

def test_no_token_appears_in_logs_or_activity_outputs(identity_endpoint, databricks, configure, caplog, key_vault):
    caplog.set_level(logging.DEBUG)
    key_vault.add_passthru(databricks.base_url)
    configure(host=databricks.base_url, auth="managed_identity", azure_workspace_resource_id=RESOURCE_ID)
    outputs = [getJobRun({"runId": 1})]

    configure(host=HOST, auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat",
              azure_workspace_resource_id=None)
    key_vault.get(HOST + "/api/2.0/preview/scim/v2/Me", json={"userName": "app-sp"})
    key_vault.get(HOST + "/api/2.2/jobs/list", json={"jobs": []})
    key_vault.post(HOST + "/api/2.1/jobs/create", json={"job_id": 5})
    key_vault.get(HOST + "/api/2.1/jobs/runs/get", json=run_payload())
    outputs.append(createJob({"instanceId": "i-1", "runKey": "k-1", "private": True, "job": {
        "name": "nb", "tasks": [{"task_key": "main", "existing_cluster_id": "0923-abc",
                                 "notebook_task": {"notebook_path": "/Users/me/nb"}}]}}))
    outputs.append(getJobRun({"runId": 1}))

    secrets = set(identity_endpoint.issued) | {KV_PAT, identity_endpoint.SECRET}
    assert len(secrets) == 5 and all(secrets)  # Databricks, management and vault tokens, PAT, header
    text = caplog.text + json.dumps(outputs)
    assert "Databricks GET jobs/runs/get -> 200" in caplog.text  # the client did log at DEBUG
    for secret in secrets:
        assert secret not in text


# -- which provider the settings choose ---------------------------------------------------------------

@pytest.mark.parametrize("env, provider_type, credential_type", [
    ({"auth": "managed_identity"}, EntraTokenProvider, "ManagedIdentityCredential"),
    ({"auth": "default_azure_credential", "managed_identity_client_id": "11111111-2222-3333-4444-555555555555"},
     EntraTokenProvider, "DefaultAzureCredential"),
    ({"auth": "key_vault", "key_vault_url": VAULT, "key_vault_secret_name": "pat"}, KeyVaultPatProvider, None),
    ({"auth": "pat", "token": "dapi-local"}, StaticTokenProvider, None),
])
def test_settings_choose_the_provider(configure, env, provider_type, credential_type):
    configure(host=HOST, **env)
    provider = get_token_provider()
    assert type(provider) is provider_type and get_token_provider() is provider
    if credential_type:
        assert type(provider._credential).__name__ == credential_type
