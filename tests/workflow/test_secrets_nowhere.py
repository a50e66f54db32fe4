"""A token never enters orchestration input, history, custom status, outputs, notifications, errors
or logs, even when a secret is stored with a paste mistake (a trailing newline, a leading space),
which once made `requests` raise an InvalidHeader quoting the header (token and all) into every
activity failure. Whole workflows, both host modes, each credential source."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

import databricks_jobs
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings
from workflow_support import REQUEST, SECRET_TOKEN

PADDINGS = {"trailing-newline": SECRET_TOKEN + "\n", "leading-space": " " + SECRET_TOKEN,
            "both": " \t" + SECRET_TOKEN + "\r\n"}


@pytest.fixture
def sent(monkeypatch):
    from activities import notifications

    captured = []
    monkeypatch.setattr(notifications, "notify", lambda payload: captured.append(payload) or {})
    return captured


@pytest.fixture
def key_vault_holding(monkeypatch):
    """DATABRICKS_AUTH=key_vault with the vault answering `value` for the secret (the SecretClient's
    HTTP is replaced; the app's own reading, cleaning and caching of the value all run)."""
    from azure.keyvault.secrets import SecretClient

    def hold(value):
        monkeypatch.setenv("DATABRICKS_AUTH", "key_vault")
        monkeypatch.setenv("DATABRICKS_KEY_VAULT_URL", "https://my-vault.vault.azure.net")
        monkeypatch.setenv("DATABRICKS_KEY_VAULT_SECRET_NAME", "dbx-pat")
        monkeypatch.delenv("DATABRICKS_TOKEN", raising=False)
        monkeypatch.setattr(SecretClient, "get_secret",
                            lambda self, name, version=None, **kw: SimpleNamespace(value=value, name=name))
        databricks_jobs.reset_all()

    return hold


def _everything(host, instance_id, sent, caplog, emulator) -> str:
    return json.dumps([host.executions(instance_id), host.get_status(instance_id, show_history=True,
                                                                     show_history_output=True),
                       sent]) + caplog.text + json.dumps(emulator.request_log)


def _run(host, **overrides):
    settings = WorkflowSettings()
    request = validate_request({**REQUEST, **overrides}, settings)
    iid = host.start_new(ORCHESTRATOR_NAME, None, orchestration_input(request, settings, notify=True))
    return host.run_until_complete(iid, max_virtual_seconds=86400)


@pytest.mark.parametrize("source", ["setting", "key_vault"])
@pytest.mark.parametrize("padding", list(PADDINGS))
def test_a_padded_secret_works_and_the_token_appears_nowhere(host, emulator, sent, caplog, monkeypatch,
                                                             key_vault_holding, source, padding):
    caplog.set_level(logging.DEBUG)
    if source == "setting":
        monkeypatch.setenv("DATABRICKS_TOKEN", PADDINGS[padding])
        databricks_jobs.reset_all()
    else:
        key_vault_holding(PADDINGS[padding])
    ok = _run(host)
    failed = _run(host, notebookPath="/Workspace/Users/me/fail_load")  # error texts travel too
    assert ok["output"]["resultState"] == "SUCCESS" and failed["output"]["resultState"] == "FAILED"
    assert len(sent) >= 2 and caplog.records
    for status in (ok, failed):
        assert SECRET_TOKEN not in _everything(host, status["instanceId"], sent, caplog, emulator)


@pytest.mark.parametrize("source", ["setting", "key_vault"])
def test_a_secret_with_whitespace_inside_fails_the_workflow_at_once_naming_the_setting(
        host, emulator, sent, caplog, monkeypatch, key_vault_holding, source, clock):
    caplog.set_level(logging.DEBUG)
    broken = SECRET_TOKEN[:10] + " " + SECRET_TOKEN[10:]
    if source == "setting":
        monkeypatch.setenv("DATABRICKS_TOKEN", broken)
        databricks_jobs.reset_all()
    else:
        key_vault_holding(broken)
    started = clock.now()
    status = _run(host)
    assert status["runtimeStatus"] == "Failed" and clock.now() == started  # no retry waits: it cannot heal
    setting = "DATABRICKS_TOKEN" if source == "setting" else "DATABRICKS_KEY_VAULT_SECRET_NAME"
    assert setting in json.dumps(status["output"])
    everything = _everything(host, status["instanceId"], sent, caplog, emulator)
    assert SECRET_TOKEN[:10] not in everything and SECRET_TOKEN[10:] not in everything


def _vault_refusing(status):
    from azure.core.exceptions import HttpResponseError

    def refuse(self, name, version=None, **kw):
        response = SimpleNamespace(status_code=status, reason="Forbidden", headers={}, text=lambda: "",
                                   request=SimpleNamespace(method="GET", url="https://my-vault.vault.azure.net"))
        raise HttpResponseError(message=f"({status}) Caller is not authorized", response=response)
    return refuse


def _no_managed_identity(monkeypatch):
    from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

    def unavailable(self, *scopes, **kwargs):
        raise CredentialUnavailableError(message="ManagedIdentityCredential authentication unavailable.")
    monkeypatch.setattr(ManagedIdentityCredential, "get_token", unavailable)
    monkeypatch.setattr(ManagedIdentityCredential, "get_token_info", unavailable, raising=False)


@pytest.mark.parametrize("problem, setting", [
    ("auth-mode", "DATABRICKS_AUTH"),
    ("pat-without-token", "DATABRICKS_TOKEN"),
    ("http-host", "DATABRICKS_HOST"),
    ("api-version", "DATABRICKS_JOBS_API_VERSION"),
    ("key-vault-403", "DATABRICKS_KEY_VAULT_URL"),
    ("no-managed-identity", "DATABRICKS_AUTH"),
])
def test_what_cannot_heal_ends_a_started_workflow_at_once_naming_the_setting(
        host, emulator, clock, monkeypatch, key_vault_holding, problem, setting):
    """The start route refuses these with 503 (tests/http); when the settings change under workflows
    already started, each ends at its next activity instead of waiting out retries or its deadline."""
    from azure.keyvault.secrets import SecretClient

    settings = WorkflowSettings()
    body = orchestration_input(validate_request(dict(REQUEST), settings), settings)
    if problem == "auth-mode":
        monkeypatch.setenv("DATABRICKS_AUTH", "bogus")
    elif problem == "pat-without-token":
        monkeypatch.delenv("DATABRICKS_TOKEN")
    elif problem == "http-host":
        monkeypatch.setenv("DATABRICKS_HOST", "http://adb-1234567890123456.7.azuredatabricks.net")
    elif problem == "api-version":
        monkeypatch.setenv("DATABRICKS_JOBS_API_VERSION", "3.0")
    elif problem == "key-vault-403":
        key_vault_holding(SECRET_TOKEN)
        monkeypatch.setattr(SecretClient, "get_secret", _vault_refusing(403))
    else:
        monkeypatch.setenv("DATABRICKS_AUTH", "managed_identity")
        _no_managed_identity(monkeypatch)
    databricks_jobs.reset_all()
    started = clock.now()
    status = host.run_until_complete(host.start_new(ORCHESTRATOR_NAME, None, body), max_virtual_seconds=86400)
    assert status["runtimeStatus"] == "Failed" and clock.now() == started
    assert status["customStatus"]["step"] == "createJob"
    assert setting in status["output"] and "Traceback" not in status["output"]
    assert emulator.request_log == []
