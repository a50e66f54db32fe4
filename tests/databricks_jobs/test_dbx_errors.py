import pickle

import pytest

from databricks_jobs.client import parse_error_body
from databricks_jobs.errors import ConfigurationError, DatabricksApiError


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
