"""secret_values: clean_secret strips, refuses what a header cannot carry, never echoes the value;
scrub removes known values and credential-looking text; the logging filter applies scrub."""
import logging
import pickle

import pytest

from databricks_jobs.errors import ConfigurationError
from databricks_jobs.secret_values import REDACTED, ScrubFilter, clean_secret, scrub, scrubbed_logger

PAT = "dapi0123456789abcdef0123456789abcdef"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiIyZmY4MTRhNiJ9.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize("raw", [PAT, f" {PAT}", f"{PAT}\n", f"\t{PAT}\r\n", f"  {PAT}  \n\n"])
def test_surrounding_whitespace_is_stripped(raw):
    assert clean_secret("DATABRICKS_TOKEN", raw) == PAT


@pytest.mark.parametrize("raw", [None, "", "   ", "\n"])
def test_unset_or_blank_is_none(raw):
    assert clean_secret("DATABRICKS_TOKEN", raw) is None


@pytest.mark.parametrize("raw", [
    "dapi0123 456789abcdef",        # inner space
    "dapi0123\n456789abcdef",       # inner newline: would split the header
    "dapi0123\x00456789abcdef",     # control character
    "dapi0123\u2013456789abcdef",   # non-ASCII (http.client's latin-1 error would hold the header)
    "dapi0123\u00a0456789abcdef",   # no-break space from a web page
])
def test_inner_whitespace_control_or_non_ascii_is_refused_without_the_value(raw):
    with pytest.raises(ConfigurationError) as raised:
        clean_secret("DATABRICKS_TOKEN", raw)
    error = raised.value
    assert error.setting == "DATABRICKS_TOKEN"
    assert str(error).startswith("Configuration error: DATABRICKS_TOKEN: contains whitespace")
    for text in (str(error), repr(error), pickle.dumps(error).decode("latin-1")):
        assert "dapi0123" not in text and "456789abcdef" not in text


@pytest.mark.parametrize("raw", ["@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/pat/)",
                                 "  @microsoft.keyvault(VaultName=v;SecretName=pat)\n"])
def test_an_unresolved_key_vault_reference_is_refused(raw):
    with pytest.raises(ConfigurationError, match="^Configuration error: WORKFLOW_COMPLETION_TOPIC_KEY: is an unresolved "
                                                 "Key Vault reference"):
        clean_secret("WORKFLOW_COMPLETION_TOPIC_KEY", raw)


@pytest.mark.parametrize("text, secret_part", [
    (f"GET https://adb-1.azuredatabricks.net/api failed: Authorization: Bearer {PAT}", PAT),
    (f"headers={{'Authorization': 'Bearer {JWT}', 'User-Agent': 'x'}}", JWT),
    (f'{{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}}', "dXNlcjpwYXNzd29yZA=="),
    (f"invalid header value b'Bearer  {PAT}\\n'", PAT),
    (f"token {PAT} rejected", PAT),
    (f"the token {JWT} expired", JWT),
    ("POST https://user:s3cr3t-pw@example.com/x", "s3cr3t-pw"),
    ('{"access_token": "abc.def-ghi", "expires_in": 3600}', "abc.def-ghi"),
    ("password=hunter2hunter2&user=me", "hunter2hunter2"),
    ("X-IDENTITY-HEADER: f1e2d3c4b5a6", "f1e2d3c4b5a6"),
    ("aeg-sas-key: Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
    ("https://app.azurewebsites.net/api/workflows/1?code=fUnCt1onKey==&x=1", "fUnCt1onKey"),
    (f"{PAT}-2 used", PAT),
])
def test_scrub_removes_credential_shapes(text, secret_part):
    cleaned = scrub(text)
    assert secret_part not in cleaned and REDACTED in cleaned
    assert scrub(cleaned) == cleaned  # idempotent: errors scrub again when unpickled


def test_scrub_removes_known_values_longest_first_and_keeps_ordinary_text():
    text = "token-part-one and token-part-one-and-two, status code: 503, Run 5 does not exist"
    cleaned = scrub(text, ["token-part-one", "token-part-one-and-two", "", None, "ab"])
    assert "token-part" not in cleaned
    assert cleaned.endswith("status code: 503, Run 5 does not exist")  # no credential shape here
    assert scrub("Databricks API error 400 INVALID_PARAMETER_VALUE: Job 4 does not exist.") == (
        "Databricks API error 400 INVALID_PARAMETER_VALUE: Job 4 does not exist.")


def test_scrub_takes_secrets_with_their_surrounding_whitespace():
    assert scrub("value was secret-value-1 here", [" secret-value-1\n"]) == f"value was {REDACTED} here"


def test_the_filter_scrubs_message_arguments_and_exception_text(caplog):
    logger = scrubbed_logger("tests.scrub_filter")
    assert scrubbed_logger("tests.scrub_filter") is logger
    assert sum(isinstance(f, ScrubFilter) for f in logger.filters) == 1  # attached once
    caplog.set_level(logging.DEBUG, logger="tests.scrub_filter")
    try:
        raise ValueError(f"Invalid header: Bearer {PAT}")
    except ValueError:
        logger.exception("call failed with %s", f"Authorization: Bearer {PAT}")
    record = caplog.records[-1]
    assert PAT not in record.getMessage() and PAT not in (record.exc_text or "")
    assert "ValueError" in record.exc_text and record.exc_info is None
    assert PAT not in caplog.text


@pytest.mark.parametrize("text, secret_part", [
    # where a JWT sits in real text: after a space, a quote, '=', ':', '.', a scheme, inside JSON
    (f'{{"raw": "{JWT}"}}', JWT),
    (f"id_token={JWT}&state=1", JWT),
    (f"header:{JWT}", JWT),
    (f"cached.{JWT} expired", JWT),
    (f"Authorization=Bearer%20{JWT}", JWT),
    (f"[{JWT}]", JWT),
    # user info after a scheme of any shape, also one with '+', '.' or '-' and one glued to a word
    ("git+https://user:s3cr3t-pw@github.com/x.git", "s3cr3t-pw"),
    ("see:abc.svn+ssh://me:hunter2hunter2@host/repo", "hunter2hunter2"),
    ("1https://me:hunter2hunter2@host/", "hunter2hunter2"),
])
def test_scrub_still_finds_tokens_where_they_sit_in_real_text(text, secret_part):
    """The linear-time patterns (bench/input_patterns.py) find what the backtracking ones found."""
    cleaned = scrub(text)
    assert secret_part not in cleaned and REDACTED in cleaned
    assert scrub(cleaned) == cleaned


def test_scrub_leaves_long_runs_that_hold_no_token_as_they_are():
    for text in ("eyJ-" * 500, "a." * 500 + "://x", "a://" + ":" * 500, "eyJabcdefgh.eyJ" + "a" * 500):
        assert scrub(text) == text
