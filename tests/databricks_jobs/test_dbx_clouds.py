"""Sovereign clouds: the Azure Resource Manager scope and the storage queue host come from the
cloud AZURE_CLOUD names (databricks_jobs/clouds.py), never from public-Azure literals."""
import time

import pytest
from azure.core.credentials import AccessToken

from databricks_jobs import clouds
from databricks_jobs.credentials import MANAGEMENT_SCOPE, build_token_provider
from databricks_jobs.errors import ConfigurationError
from databricks_jobs.settings import Settings
from messaging import storage_queues

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
RESOURCE_ID = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Databricks/workspaces/ws"


@pytest.mark.parametrize("value, scope, queue_host", [
    (None, "https://management.core.windows.net//.default", "st1.queue.core.windows.net"),
    ("", "https://management.core.windows.net//.default", "st1.queue.core.windows.net"),
    ("AzureCloud", "https://management.core.windows.net//.default", "st1.queue.core.windows.net"),
    ("AzurePublicCloud", "https://management.core.windows.net//.default", "st1.queue.core.windows.net"),
    ("azureusgovernment", "https://management.core.usgovcloudapi.net//.default", "st1.queue.core.usgovcloudapi.net"),
    ("AzureChinaCloud", "https://management.core.chinacloudapi.cn//.default", "st1.queue.core.chinacloudapi.cn"),
])
def test_each_cloud_has_its_resource_manager_scope_and_storage_suffix(value, scope, queue_host):
    cloud = clouds.cloud_named(value)
    assert cloud.resource_manager_scope == scope
    assert cloud.storage_service_uri("st1", "queue") == f"https://{queue_host}"


def test_public_cloud_scope_is_unchanged_for_existing_callers():
    assert MANAGEMENT_SCOPE == "https://management.core.windows.net//.default"


def test_an_unknown_cloud_is_a_configuration_error_naming_the_setting():
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"DATABRICKS_HOST": HOST, "AZURE_CLOUD": "AzureGermanCloud"})
    assert caught.value.setting == "AZURE_CLOUD" and "AzureGermanCloud" in caught.value.problem


class ScopeRecorder:
    def __init__(self):
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return AccessToken(f"token-{len(self.scopes)}", int(time.time()) + 3600)


@pytest.mark.parametrize("cloud, scope", [
    (None, "https://management.core.windows.net//.default"),
    ("AzureUSGovernment", "https://management.core.usgovcloudapi.net//.default"),
    ("AzureChinaCloud", "https://management.core.chinacloudapi.cn//.default"),
])
def test_the_management_token_is_asked_for_the_configured_clouds_audience(monkeypatch, cloud, scope):
    env = {"DATABRICKS_HOST": HOST, "DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID": RESOURCE_ID}
    if cloud:
        env["AZURE_CLOUD"] = cloud
    settings = Settings.from_env(env)
    recorder = ScopeRecorder()
    monkeypatch.setattr("databricks_jobs.credentials.azure_credential", lambda *_a, **_k: recorder)
    provider = build_token_provider(settings)
    headers = provider.extra_headers()
    assert headers["X-Databricks-Azure-SP-Management-Token"] == "token-1"
    # One token, for this cloud's Resource Manager: no public-Azure scope asked in another cloud.
    assert recorder.scopes == [scope]


class FakeQueueClient:
    made = []

    def __init__(self, account_url, queue_name, credential=None, **kwargs):
        self.account_url = account_url
        FakeQueueClient.made.append(account_url)

    def create_queue(self):
        pass


@pytest.fixture
def fake_queue_client(monkeypatch):
    import azure.storage.queue

    FakeQueueClient.made = []
    monkeypatch.setattr(azure.storage.queue, "QueueClient", FakeQueueClient)
    monkeypatch.setattr(storage_queues, "_identity_credential", lambda env, connection: object())
    storage_queues.reset_cache()
    yield FakeQueueClient
    storage_queues.reset_cache()


@pytest.mark.parametrize("cloud, host", [
    (None, "https://st1.queue.core.windows.net"),
    ("AzureUSGovernment", "https://st1.queue.core.usgovcloudapi.net"),
    ("AzureChinaCloud", "https://st1.queue.core.chinacloudapi.cn"),
])
def test_an_account_name_connection_uses_the_clouds_storage_suffix(fake_queue_client, cloud, host):
    env = {"AzureWebJobsStorage__accountName": "st1"}
    if cloud:
        env["AZURE_CLOUD"] = cloud
    storage_queues.queue_client("q", "AzureWebJobsStorage", env)
    assert fake_queue_client.made == [host]


def test_a_configured_service_uri_wins_over_the_account_name(fake_queue_client):
    env = {"AzureWebJobsStorage__accountName": "st1", "AZURE_CLOUD": "AzureChinaCloud",
           "AzureWebJobsStorage__queueServiceUri": "https://st1.queue.example.internal"}
    storage_queues.queue_client("q", "AzureWebJobsStorage", env)
    assert fake_queue_client.made == ["https://st1.queue.example.internal"]


def test_an_unknown_cloud_refuses_to_build_a_queue_host(fake_queue_client):
    with pytest.raises(storage_queues.QueueConfigurationError, match="AZURE_CLOUD"):
        storage_queues.queue_client("q", "AzureWebJobsStorage",
                                    {"AzureWebJobsStorage__accountName": "st1", "AZURE_CLOUD": "Mars"})
    assert fake_queue_client.made == []
