import pickle

import pytest

from databricks_jobs.client import parse_error_body
from databricks_jobs.errors import ConfigurationError, CredentialError, DatabricksApiError, classify_error_text, is_transient


def test_text_starts_with_the_documented_prefix():
    error = DatabricksApiError(400, "INVALID_PARAMETER_VALUE", "Run 7 does not exist")
    assert str(error) == "Databricks API error 400 INVALID_PARAMETER_VALUE: Run 7 does not exist"


@pytest.mark.parametrize("error", [
    DatabricksApiError(503, "TEMPORARILY_UNAVAILABLE", "try later", request_id="req-1"),
    DatabricksApiError(0, "TRANSPORT_ERROR", "GET jobs/runs/get failed"),
])
def test_api_error_survives_pickling_with_text_and_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DatabricksApiError
    assert str(copy) == str(error)
    assert (copy.status, copy.error_code, copy.message, copy.request_id) == (
        error.status, error.error_code, error.message, error.request_id)


def test_configuration_error_names_the_setting_and_pickles():
    error = ConfigurationError("DATABRICKS_HOST", "is required")
    assert str(error) == "Configuration error: DATABRICKS_HOST: is required"
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.setting == "DATABRICKS_HOST"


@pytest.mark.parametrize("status, body, expected", [
    (400, '{"error_code": "INVALID_PARAMETER_VALUE", "message": "Run 5 does not exist", '
          '"details": [{"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": "abc-123"}]}',
     ("INVALID_PARAMETER_VALUE", "Run 5 does not exist", "abc-123")),
    # legacy endpoints send the status as an integer error_code
    (404, '{"error_code": 404, "message": "Job 3 does not exist."}', ("NOT_FOUND", "Job 3 does not exist.", None)),
    (500, '{"error": "Internal error, please retry"}', ("INTERNAL_ERROR", "Internal error, please retry", None)),
    (400, "COULD_NOT_ACQUIRE_LOCK: the resource is locked", ("COULD_NOT_ACQUIRE_LOCK", "the resource is locked", None)),
    (502, "<html><head><title>502 Bad Gateway</title></head><body></body></html>", ("UNKNOWN", "502 Bad Gateway", None)),
    (503, "<html><body><pre>Service &amp; friends unavailable</pre></body></html>",
     ("TEMPORARILY_UNAVAILABLE", "Service & friends unavailable", None)),
    (429, "", ("TOO_MANY_REQUESTS", "Too Many Requests", None)),
    (418, "teapot", ("UNKNOWN", "teapot", None)),
])
def test_error_body_shapes(status, body, expected):
    assert parse_error_body(status, body, "Too Many Requests") == expected


def test_long_messages_are_clipped():
    code, message, _ = parse_error_body(500, "x" * 10_000)
    assert len(message) < 2100


# -- kinds and transience (issue 7 §2) ---------------------------------------------------------------

@pytest.mark.parametrize("transient, text", [
    (False, "Credential error: DATABRICKS_KEY_VAULT_SECRET_NAME: the vault has no secret named 'pat'"),
    (True, "Credential temporarily unavailable: DATABRICKS_KEY_VAULT_SECRET_NAME: the vault has no secret named 'pat'"),
])
def test_credential_error_text_says_whether_it_heals_and_pickles(transient, text):
    error = CredentialError("DATABRICKS_KEY_VAULT_SECRET_NAME", "the vault has no secret named 'pat'", transient=transient)
    assert str(error) == text and error.transient is transient and is_transient(error) is transient
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.setting, copy.transient) == (CredentialError, text, error.setting, transient)


@pytest.mark.parametrize("status, code, transient", [
    (0, "TRANSPORT_ERROR", True),
    (429, "REQUEST_LIMIT_EXCEEDED", True),
    (429, "TOO_MANY_REQUESTS", True),
    (500, "INTERNAL_ERROR", True),
    (502, "UNKNOWN", True),
    (503, "TEMPORARILY_UNAVAILABLE", True),
    (504, "DEADLINE_EXCEEDED", True),
    (400, "COULD_NOT_ACQUIRE_LOCK", True),
    (400, "TEMPORARILY_UNAVAILABLE", True),
    (400, "REQUEST_LIMIT_EXCEEDED", True),
    (400, "INVALID_PARAMETER_VALUE", False),
    (401, "UNAUTHENTICATED", False),
    (403, "PERMISSION_DENIED", False),
    (404, "RESOURCE_DOES_NOT_EXIST", False),
    (409, "RESOURCE_CONFLICT", False),
    (200, "INVALID_RESPONSE", False),
])
def test_api_error_transience_by_status_and_code(status, code, transient):
    error = DatabricksApiError(status, code, "m")
    assert error.transient is transient and is_transient(error) is transient
    assert pickle.loads(pickle.dumps(error)).transient is transient


def test_configuration_errors_and_foreign_exceptions_are_not_transient():
    assert ConfigurationError("DATABRICKS_HOST", "is required").transient is False
    assert not is_transient(ConfigurationError("DATABRICKS_HOST", "is required"))
    for foreign in (ValueError("x"), ConnectionError("x"), TimeoutError("x"), KeyError("x")):
        assert is_transient(foreign) is False


def test_messages_are_scrubbed_when_the_error_is_built():
    pat = "dapi0123456789abcdef0123456789abcdef"
    errors = [
        DatabricksApiError(400, "INVALID_PARAMETER_VALUE", f"header Authorization: Bearer {pat} refused"),
        ConfigurationError("DATABRICKS_HOST", f"'https://user:{pat}@adb-1.azuredatabricks.net' is not valid"),
        CredentialError("DATABRICKS_AUTH", f"token {pat} refused", transient=True),
    ]
    for error in errors:
        for text in (str(error), repr(error), pickle.dumps(error).decode("latin-1")):
            assert pat not in text


@pytest.mark.parametrize("error", [
    ConfigurationError("DATABRICKS_TOKEN", "is required when DATABRICKS_AUTH=pat"),
    CredentialError("DATABRICKS_AUTH", "no managed identity"),
    CredentialError("DATABRICKS_KEY_VAULT_URL", "Key Vault failed (HTTP 503)", transient=True),
    DatabricksApiError(0, "TRANSPORT_ERROR", "GET jobs/runs/get failed after 11 attempts: ReadTimeout"),
    DatabricksApiError(503, "TEMPORARILY_UNAVAILABLE", "busy"),
    DatabricksApiError(400, "INVALID_PARAMETER_VALUE", "Run 5 does not exist"),
])
def test_the_text_an_orchestrator_sees_classifies_like_the_exception(error):
    # The host's layout: Reason "Activity function 'x' failed: <Type>: <message>", Details after a newline.
    text = f"Activity function 'getJobRun' failed: {type(error).__name__}: {error} \n Traceback ..."
    found = classify_error_text(text)
    assert found is not None and found.transient is error.transient
    if isinstance(error, DatabricksApiError):
        assert (found.kind, found.status, found.error_code) == ("databricks_api", error.status, error.error_code)
    else:
        assert found.setting == error.setting
        assert found.kind == ("configuration" if isinstance(error, ConfigurationError) else "credential")


def test_text_classification_takes_the_earliest_error_and_knows_no_others():
    nested = ("Configuration error: DATABRICKS_TOKEN: is required; earlier it said "
              "Databricks API error 503 TEMPORARILY_UNAVAILABLE: busy")
    assert classify_error_text(nested).kind == "configuration"
    assert classify_error_text("ValueError: getJobRun input is missing 'runId'") is None
    assert classify_error_text("") is None
