"""Issue 7 §2: credential failures become CredentialError by TYPE and STATUS, naming the setting to
fix, permanent or transient. The real ManagedIdentityCredential talks to the loopback App Service
identity endpoint; Key Vault answers through `responses`. azure-core's retry waits go through the
recorded sleep, so a throttled endpoint costs no wall time."""
import json
import pickle

import pytest
import requests
import responses
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from urllib3.exceptions import MaxRetryError, NameResolutionError

from activities.jobs import getJobRun
from databricks_jobs.credentials import AZURE_RETRY_TOTAL, EntraTokenProvider, build_token_provider
from databricks_jobs.errors import CredentialError, is_transient
from databricks_jobs.settings import check_configuration

HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
VAULT = "https://my-vault.vault.azure.net"
SECRET_URL = f"{VAULT}/secrets/dbx-pat/"
KV_CHALLENGE = ('Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
                'resource="https://vault.azure.net"')
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
MSI = "/msi/token"


def settings(**values):
    return check_configuration({"DATABRICKS_HOST": HOST, **{"DATABRICKS_" + k.upper(): v for k, v in values.items()}})


def msi_error(status):
    # What the App Service endpoint sends on failure (statusCode/message, which msal reads).
    return (status, {}, {"statusCode": status, "message": "An unexpected error occured while fetching the AAD Token."})


class Raising:
    """A TokenCredential that fails with a given azure-identity exception."""

    def __init__(self, exc):
        self.exc = exc

    def get_token(self, *scopes, **kwargs):
        raise self.exc


# -- managed identity ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_failing_identity_endpoint_is_transient(identity_endpoint, sleeps, status):
    identity_endpoint.server.script(MSI, *[msi_error(status)] * 10)
    provider = build_token_provider(settings(auth="managed_identity"), sleep_func=sleeps)
    with pytest.raises(CredentialError) as raised:
        provider.token()
    error = raised.value
    assert (error.setting, error.transient) == ("DATABRICKS_AUTH", True)
    assert str(error).startswith(f"Credential temporarily unavailable: DATABRICKS_AUTH: the token service for the "
                                 f"app's system-assigned identity failed (HTTP {status})")
    # azure-core retried a few times, waiting through the recorded sleep, then gave up.
    assert 1 < len(identity_endpoint.fetches()) <= AZURE_RETRY_TOTAL + 1
    assert sleeps.sleeps and all(wait < 60 for wait in sleeps.sleeps)


def test_a_throttled_identity_endpoint_that_recovers_gives_a_token(identity_endpoint, sleeps):
    identity_endpoint.server.script(MSI, msi_error(429))
    provider = build_token_provider(settings(auth="managed_identity"), sleep_func=sleeps)
    assert provider.token() == identity_endpoint.issued[0]
    assert len(identity_endpoint.fetches()) == 2


def test_a_dropped_identity_connection_is_transient(identity_endpoint, sleeps):
    identity_endpoint.server.script(MSI, *["drop"] * 10)
    provider = build_token_provider(settings(auth="managed_identity"), sleep_func=sleeps)
    with pytest.raises(CredentialError) as raised:
        provider.token()
    assert raised.value.transient and raised.value.setting == "DATABRICKS_AUTH"


@pytest.mark.parametrize("client_id, setting", [(CLIENT_ID, "DATABRICKS_MANAGED_IDENTITY_CLIENT_ID"),
                                                (None, "DATABRICKS_AUTH")])
def test_an_identity_endpoint_refusing_the_identity_is_permanent(identity_endpoint, sleeps, client_id, setting):
    identity_endpoint.server.script(MSI, msi_error(400))
    provider = build_token_provider(settings(auth="managed_identity", managed_identity_client_id=client_id),
                                    sleep_func=sleeps)
    with pytest.raises(CredentialError) as raised:
        provider.token()
    assert (raised.value.setting, raised.value.transient) == (setting, False)
    assert str(raised.value).startswith(f"Credential error: {setting}: ")
    assert len(identity_endpoint.fetches()) == 1  # a 400 is not retried


def test_no_managed_identity_in_this_environment_is_permanent():
    unavailable = CredentialUnavailableError("ManagedIdentityCredential authentication unavailable, no response "
                                             "from the IMDS endpoint.")
    with pytest.raises(CredentialError) as raised:
        EntraTokenProvider(Raising(unavailable)).token()
    assert str(raised.value).startswith("Credential error: DATABRICKS_AUTH: no managed identity is available in this "
                                        "environment (CredentialUnavailableError: ManagedIdentityCredential")
    assert not is_transient(raised.value)


def test_other_authentication_failures_are_permanent_and_name_the_identity():
    failed = ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included credentials.")
    with pytest.raises(CredentialError) as raised:
        EntraTokenProvider(Raising(failed), client_id=CLIENT_ID).token()
    assert not raised.value.transient
    assert raised.value.problem.startswith(f"no Entra ID token for the user-assigned identity {CLIENT_ID} "
                                           "(ClientAuthenticationError: DefaultAzureCredential failed")


def test_a_credential_failure_crosses_the_activity_boundary_as_text_without_its_cause(identity_endpoint, configure):
    identity_endpoint.server.script(MSI, msi_error(400))
    configure(host=HOST, auth="managed_identity")
    with pytest.raises(CredentialError) as raised:
        getJobRun({"runId": 1})
    error = raised.value
    # Raised outside the except block: no third-party exception rides along in a traceback.
    assert error.__cause__ is None and error.__context__ is None
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and str(copy).startswith("Credential error: DATABRICKS_AUTH: ")


# -- Key Vault ------------------------------------------------------------------------------------

@pytest.fixture
def vault(identity_endpoint):
    """Key Vault through `responses`: `answer(...)` registers what follows the auth challenge."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(identity_endpoint.server.base_url)
        mock.get(SECRET_URL, status=401, headers={"WWW-Authenticate": KV_CHALLENGE}, json={"error": {"code": "Unauthorized"}})
        yield mock


def kv_error(code, message, inner=None):
    error = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


def read_pat(sleeps, client_id=None):
    provider = build_token_provider(settings(auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat",
                                             managed_identity_client_id=client_id), sleep_func=sleeps)
    with pytest.raises(CredentialError) as raised:
        provider.token()
    return raised.value


def vault_calls(mock):
    return [c for c in mock.calls if c.request.url.startswith(VAULT)]


def test_no_such_secret_names_the_secret_setting(vault, sleeps):
    vault.get(SECRET_URL, status=404, json=kv_error(
        "SecretNotFound", "A secret with (name/id) dbx-pat was not found in this key vault."))
    error = read_pat(sleeps)
    assert (error.setting, error.transient) == ("DATABRICKS_KEY_VAULT_SECRET_NAME", False)
    assert "no secret named 'dbx-pat'" in error.problem and "HTTP 404" in error.problem
    assert len(vault_calls(vault)) == 2  # the challenge and one read: a 404 is not retried


@pytest.mark.parametrize("status, code, inner", [(403, "Forbidden", "ForbiddenByRbac"),
                                                 (403, "Forbidden", "ForbiddenByFirewall"),
                                                 (401, "Unauthorized", "AKV10032")])
def test_no_permission_on_the_vault_is_permanent_and_names_the_vault(vault, sleeps, status, code, inner):
    vault.get(SECRET_URL, status=status, json=kv_error(code, "Caller is not authorized to perform action.", inner))
    error = read_pat(sleeps, client_id=CLIENT_ID)
    assert (error.setting, error.transient) == ("DATABRICKS_KEY_VAULT_URL", False)
    assert error.problem.startswith(f"the user-assigned identity {CLIENT_ID} may not read secrets in this vault")
    assert "Key Vault Secrets User" in error.problem


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_throttled_or_failing_vault_is_transient(vault, sleeps, status):
    vault.get(SECRET_URL, status=status, headers={"Retry-After": "2"}, json=kv_error("Throttled", "slow down"))
    error = read_pat(sleeps)
    assert (error.setting, error.transient) == ("DATABRICKS_KEY_VAULT_URL", True)
    assert str(error).startswith(f"Credential temporarily unavailable: DATABRICKS_KEY_VAULT_URL: Key Vault failed "
                                 f"(HTTP {status})")
    assert 2 < len(vault_calls(vault)) <= AZURE_RETRY_TOTAL + 2  # azure-core retried, through the recorded sleep
    assert sleeps.sleeps


def test_an_unreachable_vault_is_transient(vault, sleeps):
    vault.get(SECRET_URL, body=requests.exceptions.ConnectionError("connection refused"))
    error = read_pat(sleeps)
    assert (error.setting, error.transient) == ("DATABRICKS_KEY_VAULT_URL", True)


def test_a_vault_host_that_does_not_resolve_is_permanent(vault, sleeps):
    unresolvable = NameResolutionError("my-vault.vault.azure.net", None, OSError("Name or service not known"))
    vault.get(SECRET_URL, body=requests.exceptions.ConnectionError(MaxRetryError(None, SECRET_URL, unresolvable)))
    error = read_pat(sleeps)
    assert (error.setting, error.transient) == ("DATABRICKS_KEY_VAULT_URL", False)
    assert "does not resolve" in error.problem


def test_an_identity_failure_while_reading_the_vault_is_an_identity_error(vault, identity_endpoint, sleeps):
    identity_endpoint.server.script(MSI, *[msi_error(503)] * 10)
    error = read_pat(sleeps)
    assert (error.setting, error.transient) == ("DATABRICKS_AUTH", True)


def test_key_vault_errors_cross_the_activity_boundary_by_kind(vault, configure):
    vault.get(SECRET_URL, status=404, json=kv_error("SecretNotFound", "not found"))
    configure(host=HOST, auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat")
    with pytest.raises(CredentialError) as raised:
        getJobRun({"runId": 1})
    assert str(raised.value).startswith("Credential error: DATABRICKS_KEY_VAULT_SECRET_NAME: the vault has no secret")
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    json.dumps(str(raised.value))  # plain text, as it travels into history
