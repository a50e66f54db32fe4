"""Issue 7 §1: a secret with a pasted newline or space never ends up in an error or a log line.

Whitespace is planted in each credential source (the PAT setting, a Key Vault secret through
`responses`, the managed-identity token endpoint on loopback). Around the value it is stripped and
the calls work; inside it the value is refused, naming the setting. Either way no part of the value
appears in the exception's text, repr or pickle, or in any log record; nor does a token that a
server or a transport exception quotes back."""
import logging
import pickle

import pytest
import requests
import responses

from activities.jobs import getJobRun
from databricks_jobs import client as client_module
from databricks_jobs.client import JobsClient
from databricks_jobs.credentials import get_token_provider
from databricks_jobs.errors import ConfigurationError, CredentialError, DatabricksApiError
from databricks_jobs.settings import get_settings

VAULT = "https://my-vault.vault.azure.net"
SECRET_URL = f"{VAULT}/secrets/dbx-pat/"
KV_CHALLENGE = ('Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
                'resource="https://vault.azure.net"')
PAT = "dapi0123456789abcdef0123456789abcdef"
# Halves of the PAT: neither may appear anywhere once a space or newline is planted between them.
HEAD, TAIL = PAT[:14], PAT[14:]
RUN = {"run_id": 1, "job_id": 2, "state": {"life_cycle_state": "RUNNING"}, "tasks": []}


def everything_said(error, caplog):
    """Every text the error and the logs expose."""
    texts = [str(error), repr(error), pickle.dumps(error).decode("latin-1"), caplog.text]
    texts += [str(arg) for arg in error.args]
    for record in caplog.records:
        texts += [record.getMessage(), record.exc_text or ""]
    return "\n".join(texts)


def assert_not_said(text, *secrets):
    for secret in secrets:
        assert secret not in text


@pytest.fixture(autouse=True)
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def databricks(loopback):
    return loopback(lambda request: (200, {}, RUN))


# -- DATABRICKS_TOKEN ---------------------------------------------------------------------------

@pytest.mark.parametrize("planted", [f" {PAT}", f"{PAT}\n", f"\t{PAT} \r\n"])
def test_a_pat_setting_with_whitespace_around_it_is_stripped(configure, databricks, planted):
    configure(host=databricks.base_url, auth="pat", token=planted)
    assert getJobRun({"runId": 1})["runId"] == 1
    assert databricks.calls("/api/2.1/jobs/runs/get")[0]["headers"]["authorization"] == f"Bearer {PAT}"


@pytest.mark.parametrize("planted", [f"{HEAD} {TAIL}", f"{HEAD}\n{TAIL}", f"{HEAD}\r\n{TAIL}\n"])
def test_a_pat_setting_with_whitespace_inside_is_refused_without_showing_it(configure, databricks, caplog, planted):
    configure(host=databricks.base_url, auth="pat", token=planted)
    with pytest.raises(ConfigurationError) as raised:
        getJobRun({"runId": 1})
    assert str(raised.value).startswith("Configuration error: DATABRICKS_TOKEN: contains whitespace")
    assert_not_said(everything_said(raised.value, caplog), HEAD, TAIL)
    assert databricks.requests == []  # nothing was sent


# -- a Key Vault secret -------------------------------------------------------------------------

@pytest.fixture
def key_vault(identity_endpoint, databricks):
    """Key Vault through `responses` (identity endpoint and Databricks pass through to loopback);
    `serve(value)` sets what the secret holds."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(identity_endpoint.server.base_url)
        mock.add_passthru(databricks.base_url)

        def serve(value):
            mock.get(SECRET_URL, status=401, headers={"WWW-Authenticate": KV_CHALLENGE}, json={"error": {"code": "Unauthorized"}})
            mock.get(SECRET_URL, json={"value": value, "id": f"{SECRET_URL}0123456789abcdef", "attributes": {"enabled": True}})

        mock.serve = serve
        yield mock


@pytest.mark.parametrize("planted", [f"{PAT}\n", f"  {PAT}\r\n"])
def test_a_key_vault_secret_with_whitespace_around_it_is_stripped(key_vault, databricks, configure, planted):
    key_vault.serve(planted)
    configure(host=databricks.base_url, auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat")
    assert getJobRun({"runId": 1})["runId"] == 1
    assert databricks.calls("/api/2.1/jobs/runs/get")[0]["headers"]["authorization"] == f"Bearer {PAT}"
    assert PAT not in repr(get_token_provider()) + repr(get_settings())


@pytest.mark.parametrize("planted", [f"{HEAD} {TAIL}", f"{HEAD}\n{TAIL}\n", f"{HEAD}\x00{TAIL}"])
def test_a_key_vault_secret_with_whitespace_inside_is_refused_without_showing_it(
        key_vault, databricks, configure, caplog, identity_endpoint, planted):
    key_vault.serve(planted)
    configure(host=databricks.base_url, auth="key_vault", key_vault_url=VAULT, key_vault_secret_name="dbx-pat")
    with pytest.raises(ConfigurationError) as raised:
        getJobRun({"runId": 1})
    assert str(raised.value).startswith(
        "Configuration error: DATABRICKS_KEY_VAULT_SECRET_NAME: the value of Key Vault secret 'dbx-pat' contains whitespace")
    assert_not_said(everything_said(raised.value, caplog), HEAD, TAIL, *identity_endpoint.issued)
    assert databricks.requests == []


# -- the managed identity's token endpoint ------------------------------------------------------

def test_a_managed_identity_token_with_whitespace_around_it_is_stripped(identity_endpoint, databricks, configure):
    identity_endpoint.wrap_token = lambda token: f" {token}\n"
    configure(host=databricks.base_url, auth="managed_identity")
    assert getJobRun({"runId": 1})["runId"] == 1
    sent = databricks.calls("/api/2.1/jobs/runs/get")[0]["headers"]["authorization"]
    assert sent == f"Bearer {identity_endpoint.issued[0]}"
    assert identity_endpoint.issued[0] not in repr(get_token_provider())


def test_a_managed_identity_token_with_whitespace_inside_is_refused_without_showing_it(
        identity_endpoint, databricks, configure, caplog):
    identity_endpoint.wrap_token = lambda token: f"{token[:12]}\n {token[12:]}"
    configure(host=databricks.base_url, auth="managed_identity")
    with pytest.raises(CredentialError) as raised:
        getJobRun({"runId": 1})
    assert not raised.value.transient
    assert str(raised.value).startswith("Credential error: DATABRICKS_AUTH: the token service returned")
    token = identity_endpoint.issued[0]
    assert_not_said(everything_said(raised.value, caplog), token[:12], token[12:], identity_endpoint.SECRET)
    assert databricks.requests == []


# -- text that quotes a token back ---------------------------------------------------------------

class RawTokens:
    """A provider that hands the client whatever it was given, uncleaned (a custom provider)."""

    def __init__(self, token, headers=None):
        self._token, self._headers = token, headers or {}

    def token(self):
        return self._token

    def invalidate(self):
        pass

    def extra_headers(self):
        return dict(self._headers)


def test_the_client_strips_a_header_value_from_any_provider(databricks, sleeps):
    # Untouched, requests would refuse it with an InvalidHeader that quotes the token.
    client = JobsClient(databricks.base_url, RawTokens(f"{PAT}\n"), sleep_func=sleeps, clock=sleeps.clock)
    assert client.get_run(1) == RUN
    assert databricks.requests[0]["headers"]["authorization"] == f"Bearer {PAT}"


@pytest.mark.parametrize("token, headers", [
    (f"{HEAD} {TAIL}", {}),
    (f"{HEAD}\n{TAIL}", {}),
    (PAT, {"X-Databricks-Azure-SP-Management-Token": f"{HEAD}\r\n{TAIL}"}),
])
def test_the_client_refuses_an_unclean_header_from_any_provider(databricks, caplog, sleeps, token, headers):
    client = JobsClient(databricks.base_url, RawTokens(token, headers), sleep_func=sleeps, clock=sleeps.clock)
    with pytest.raises(CredentialError) as raised:
        client.get_run(1)
    assert str(raised.value).startswith("Credential error: DATABRICKS_AUTH: the token provider returned")
    assert_not_said(everything_said(raised.value, caplog), HEAD, TAIL)
    assert databricks.requests == []


def test_an_error_body_that_quotes_the_token_is_scrubbed(loopback, caplog, sleeps):
    echo = loopback(lambda request: (400, {"x-request-id": "req-7"}, {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": f"bad request with headers {{'authorization': '{request['headers']['authorization']}'}}; "
                   f"token was {request['headers']['authorization'].split()[1]}"}))
    token = "opaque-token-without-a-known-shape"
    client = JobsClient(echo.base_url, RawTokens(token), sleep_func=sleeps, clock=sleeps.clock)
    with pytest.raises(DatabricksApiError) as raised:
        client.get_run(1)
    assert (raised.value.status, raised.value.request_id) == (400, "req-7")
    assert raised.value.message.startswith("bad request with headers")
    assert_not_said(everything_said(raised.value, caplog), token)


@pytest.mark.parametrize("exception", [
    requests.exceptions.ConnectionError(f"('Connection aborted.', 'Authorization: Bearer {PAT}')"),
    requests.exceptions.ReadTimeout(f"read timed out; sent headers {{'Authorization': 'Bearer {PAT}'}}"),
    requests.exceptions.InvalidHeader(f"Invalid leading whitespace in header value: 'Bearer  {PAT}'"),
    requests.exceptions.SSLError(f"certificate verify failed for request with Bearer {PAT}"),
])
def test_a_transport_exception_that_quotes_the_token_is_reported_by_type_only(
        databricks, caplog, sleeps, monkeypatch, exception):
    client = JobsClient(databricks.base_url, RawTokens(PAT), sleep_func=sleeps, clock=sleeps.clock)

    def fail(*args, **kwargs):
        raise exception

    monkeypatch.setattr(client._session, "request", fail)
    with pytest.raises((DatabricksApiError, CredentialError)) as raised:
        client.get_run(1)
    error = raised.value
    said = everything_said(error, caplog)
    assert_not_said(said, PAT, HEAD, TAIL)
    assert type(exception).__name__ in str(error)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    if isinstance(error, DatabricksApiError):
        assert str(error).startswith("Databricks API error 0 TRANSPORT_ERROR: GET jobs/runs/get failed after ")
        assert "run_id" not in str(error)  # the path without its query


def test_no_token_reaches_the_logs_of_a_run_with_retries(identity_endpoint, loopback, configure, caplog, sleeps):
    server = loopback(lambda request: (200, {"x-request-id": "r-1"}, RUN))
    server.script("/api/2.1/jobs/runs/get", (503, {"Retry-After": "0"}, {"error_code": "TEMPORARILY_UNAVAILABLE",
                                                                        "message": "busy"}), "drop")
    configure(host=server.base_url, auth="managed_identity")
    client_module._client.override(JobsClient.from_settings(get_settings(), get_token_provider(),
                                                            sleep_func=sleeps, clock=sleeps.clock))
    assert getJobRun({"runId": 1})["runId"] == 1
    assert len(server.calls("/api/2.1/jobs/runs/get")) == 3 and len(sleeps.sleeps) == 1
    assert "retrying" in caplog.text and "request id r-1" in caplog.text  # the attempts were logged
    assert_not_said(caplog.text, *identity_endpoint.issued, identity_endpoint.SECRET)
