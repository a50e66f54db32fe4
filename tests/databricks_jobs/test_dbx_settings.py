import dataclasses

import pytest

from databricks_jobs import ConfigurationError
from databricks_jobs.settings import SETTINGS, Settings, check_configuration, get_settings

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"


def settings(**values):
    return Settings.from_env({"DATABRICKS_" + k.upper(): v for k, v in values.items()})


def test_defaults():
    s = settings(host=HOST)
    assert s.host == HOST
    assert s.api_base_url == HOST + "/api/2.1"
    assert s.auth == "managed_identity"
    assert (s.key_vault_cache_seconds, s.http_timeout_seconds, s.retry_max_seconds) == (3600, 30, 120)
    assert s.managed_identity_client_id is None and s.notification_destination_id is None


def test_the_settings_table_lists_exactly_what_is_read_with_matching_defaults():
    read = []

    class Recording(dict):
        def get(self, key, default=None):
            read.append(key)
            return super().get(key, default)

    Settings.from_env(Recording(DATABRICKS_HOST=HOST))
    assert sorted(set(read)) == sorted(s.name for s in SETTINGS)
    assert len(SETTINGS) == len({s.name for s in SETTINGS})
    assert all(s.meaning for s in SETTINGS)
    parsed = settings(host=HOST)
    assert str(parsed.jobs_api_version) == dict((s.name, s.default) for s in SETTINGS)["DATABRICKS_JOBS_API_VERSION"]


def test_read_at_first_use_not_at_import(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", HOST)
    monkeypatch.setenv("DATABRICKS_JOBS_API_VERSION", "2.2")
    assert get_settings().api_base_url == HOST + "/api/2.2"
    assert get_settings() is get_settings()


def test_missing_host_fails_at_first_use_naming_the_setting():
    with pytest.raises(ConfigurationError, match="^Configuration error: DATABRICKS_HOST: is required"):
        get_settings()


@pytest.mark.parametrize("values, setting", [
    ({}, "DATABRICKS_HOST"),
    ({"host": "http://adb-1.azuredatabricks.net"}, "DATABRICKS_HOST"),
    ({"host": "http://10.0.0.4:8080"}, "DATABRICKS_HOST"),
    ({"host": HOST + "/api/2.1"}, "DATABRICKS_HOST"),
    ({"host": "https://user:pw@adb-1.azuredatabricks.net"}, "DATABRICKS_HOST"),
    ({"host": "ftp://adb-1.azuredatabricks.net"}, "DATABRICKS_HOST"),
    ({"host": HOST, "auth": "password"}, "DATABRICKS_AUTH"),
    ({"host": HOST, "auth": "pat"}, "DATABRICKS_TOKEN"),
    ({"host": HOST, "auth": "pat", "token": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/pat/)"},
     "DATABRICKS_TOKEN"),
    ({"host": HOST, "auth": "key_vault", "key_vault_secret_name": "pat"}, "DATABRICKS_KEY_VAULT_URL"),
    ({"host": HOST, "auth": "key_vault", "key_vault_url": "http://v.vault.azure.net", "key_vault_secret_name": "pat"},
     "DATABRICKS_KEY_VAULT_URL"),
    ({"host": HOST, "auth": "key_vault", "key_vault_url": "https://v.vault.azure.net"}, "DATABRICKS_KEY_VAULT_SECRET_NAME"),
    ({"host": HOST, "jobs_api_version": "2.0"}, "DATABRICKS_JOBS_API_VERSION"),
    ({"host": HOST, "http_timeout_seconds": "soon"}, "DATABRICKS_HTTP_TIMEOUT_SECONDS"),
    ({"host": HOST, "retry_max_seconds": "-1"}, "DATABRICKS_RETRY_MAX_SECONDS"),
    ({"host": HOST, "key_vault_cache_seconds": "0"}, "DATABRICKS_KEY_VAULT_CACHE_SECONDS"),
    ({"host": HOST, "auth": "pat", "token": "dapi1", "azure_workspace_resource_id": "/subscriptions/x"},
     "DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID"),
])
def test_bad_configuration_names_the_setting(values, setting):
    with pytest.raises(ConfigurationError) as raised:
        settings(**values)
    assert raised.value.setting == setting
    assert str(raised.value).startswith(f"Configuration error: {setting}: ")


@pytest.mark.parametrize("host, normalised", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.10.0.3", "http://127.10.0.3"),
    ("http://[::1]:9000/", "http://[::1]:9000"),
    ("http://localhost:5000", "http://localhost:5000"),
    ("adb-1.azuredatabricks.net/", "https://adb-1.azuredatabricks.net"),
    (HOST + "/", HOST),
])
def test_loopback_may_use_http_and_hosts_are_normalised(host, normalised):
    assert settings(host=host).host == normalised


def test_auth_mode_is_case_insensitive_and_the_pat_is_never_printed():
    s = settings(host=HOST, auth=" PAT ", token="dapi-secret-value")
    assert s.auth == "pat" and s.token == "dapi-secret-value"
    assert "dapi-secret-value" not in repr(s)
    assert dataclasses.is_dataclass(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.host = "https://elsewhere"  # type: ignore[misc]


# -- check_configuration: every setting, every auth-mode requirement, no network (issue 7 §2) -------

GUID = "11111111-2222-3333-4444-555555555555"
VAULT = "https://my-vault.vault.azure.net"
KV_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://my-vault.vault.azure.net/secrets/dbx/)"
PAT = "dapi0123456789abcdef0123456789abcdef"


def env(**values):
    return {"DATABRICKS_HOST": HOST, **{"DATABRICKS_" + k.upper(): v for k, v in values.items()}}


@pytest.fixture
def no_network(monkeypatch):
    """Any socket use fails the test: check_configuration must decide from the values alone."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("check_configuration opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("values, setting", [
    ({"auth": "bogus"}, "DATABRICKS_AUTH"),
    ({"auth": "pat"}, "DATABRICKS_TOKEN"),
    ({"auth": "pat", "token": "   "}, "DATABRICKS_TOKEN"),
    ({"auth": "pat", "token": KV_REFERENCE}, "DATABRICKS_TOKEN"),
    ({"auth": "pat", "token": "dapi0123 456789"}, "DATABRICKS_TOKEN"),
    ({"auth": "pat", "token": "dapi0123\n456789"}, "DATABRICKS_TOKEN"),
    ({"host": "http://adb-1.azuredatabricks.net"}, "DATABRICKS_HOST"),
    ({"host": KV_REFERENCE}, "DATABRICKS_HOST"),
    ({"jobs_api_version": "3.0"}, "DATABRICKS_JOBS_API_VERSION"),
    ({"http_timeout_seconds": "0"}, "DATABRICKS_HTTP_TIMEOUT_SECONDS"),
    ({"http_timeout_seconds": "-5"}, "DATABRICKS_HTTP_TIMEOUT_SECONDS"),
    ({"http_timeout_seconds": "inf"}, "DATABRICKS_HTTP_TIMEOUT_SECONDS"),
    ({"retry_max_seconds": "nan"}, "DATABRICKS_RETRY_MAX_SECONDS"),
    ({"key_vault_cache_seconds": "-1"}, "DATABRICKS_KEY_VAULT_CACHE_SECONDS"),
    ({"managed_identity_client_id": "my-identity"}, "DATABRICKS_MANAGED_IDENTITY_CLIENT_ID"),
    ({"managed_identity_client_id": KV_REFERENCE}, "DATABRICKS_MANAGED_IDENTITY_CLIENT_ID"),
    ({"auth": "key_vault", "key_vault_url": VAULT + "/secrets/dbx", "key_vault_secret_name": "dbx"},
     "DATABRICKS_KEY_VAULT_URL"),
    ({"auth": "key_vault", "key_vault_url": "my-vault", "key_vault_secret_name": "dbx"}, "DATABRICKS_KEY_VAULT_URL"),
    ({"auth": "key_vault", "key_vault_url": VAULT, "key_vault_secret_name": "dbx pat"}, "DATABRICKS_KEY_VAULT_SECRET_NAME"),
    ({"auth": "key_vault", "key_vault_url": VAULT, "key_vault_secret_name": "dbx_pat"}, "DATABRICKS_KEY_VAULT_SECRET_NAME"),
    ({"azure_workspace_resource_id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"},
     "DATABRICKS_AZURE_WORKSPACE_RESOURCE_ID"),
    ({"notification_destination_id": "dest 1"}, "DATABRICKS_NOTIFICATION_DESTINATION_ID"),
    ({"notification_destination_id": KV_REFERENCE}, "DATABRICKS_NOTIFICATION_DESTINATION_ID"),
    ({"auth": "managed_identity", "token": KV_REFERENCE}, "DATABRICKS_TOKEN"),  # a broken reference anywhere
])
def test_check_configuration_refuses_each_bad_setting_by_name(no_network, values, setting):
    with pytest.raises(ConfigurationError) as raised:
        check_configuration(env(**values))
    assert raised.value.setting == setting
    assert str(raised.value).startswith(f"Configuration error: {setting}: ")


def test_check_configuration_never_echoes_a_token(no_network):
    for token in ("dapi0123 456789abcdef", "dapi0123\r\n456789abcdef"):
        with pytest.raises(ConfigurationError) as raised:
            check_configuration(env(auth="pat", token=token))
        assert "dapi0123" not in str(raised.value) and "456789" not in repr(raised.value)


@pytest.mark.parametrize("values", [
    {},
    {"auth": "pat", "token": f"  {PAT}\n"},
    {"auth": "managed_identity", "managed_identity_client_id": GUID,
     "azure_workspace_resource_id": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Databricks/workspaces/ws"},
    {"auth": "default_azure_credential"},
    {"auth": "key_vault", "key_vault_url": VAULT + "/", "key_vault_secret_name": "dbx-pat"},
    {"host": "http://127.0.0.1:8000", "auth": "pat", "token": "dev"},
    {"jobs_api_version": " 2.2 ", "http_timeout_seconds": "2.5", "notification_destination_id": "dest-0001"},
])
def test_check_configuration_accepts_good_settings_without_network(no_network, values):
    settings = check_configuration(env(**values))
    assert settings == Settings.from_env(env(**values))


def test_the_pat_is_stripped_and_kept_only_in_pat_mode():
    assert check_configuration(env(auth="pat", token=f" {PAT}\r\n")).token == PAT
    # Another mode neither keeps it nor fails on a leftover value it never sends.
    assert check_configuration(env(auth="managed_identity", token="left over")).token is None


def test_the_key_vault_url_is_normalised():
    assert check_configuration(env(auth="key_vault", key_vault_url=VAULT + "/", key_vault_secret_name="p")).key_vault_url == VAULT


def test_check_configuration_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", HOST)
    monkeypatch.setenv("DATABRICKS_AUTH", "bogus")
    with pytest.raises(ConfigurationError, match="^Configuration error: DATABRICKS_AUTH: "):
        check_configuration()
    monkeypatch.setenv("DATABRICKS_AUTH", "managed_identity")
    assert check_configuration().auth == "managed_identity"


@pytest.mark.parametrize("host, url", [
    ("https://adb-1234567890123456.7.azuredatabricks.net",
     "https://adb-1234567890123456.7.azuredatabricks.net/?o=1234567890123456#job/5/run/6"),
    ("https://adb-1234567890123456.7.azuredatabricks.net.evil.example", None),  # no workspace id to take
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/#job/5/run/6"),
])
def test_the_run_page_url_is_the_one_runs_get_reports(host, url):
    from databricks_jobs.settings import Settings

    settings = Settings.from_env({"DATABRICKS_HOST": host, "DATABRICKS_AUTH": "pat", "DATABRICKS_TOKEN": "dapi-x"})
    assert settings.run_page_url(5, 6) == (url or host + "/#job/5/run/6")
