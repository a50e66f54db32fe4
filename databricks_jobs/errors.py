"""Every error this package raises is one of three types, each saying whether it can heal.

Durable Functions Python carries only an activity failure's TEXT to the orchestrator, so each type
has a fixed, documented text (docs/design.md) that names what it is, and `classify_error_text`
reads it back; Python callers use `is_transient(exc)` instead.

| type | text | transient |
|---|---|---|
| `ConfigurationError` | `Configuration error: <SETTING>: <problem>` | never: a setting must change |
| `CredentialError` | `Credential error: <SETTING>: <problem>` | no |
| `CredentialError(transient=True)` | `Credential temporarily unavailable: <SETTING>: <problem>` | yes |
| `DatabricksApiError` | `Databricks API error <status> <CODE>: <message>` | status 0 (transport failure after the client's own retries), 429, 5xx, or a code in `TRANSIENT_ERROR_CODES` |

Texts are scrubbed of secrets (`secret_values.scrub`) when the error is built. The errors pickle
with their attributes intact and never chain the third-party exception they replace (its text
could quote a token), so a traceback shows only what is here."""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

from .secret_values import scrub

# Transport failures (connection refused or reset, timeouts) that outlived the client's retries
# have no HTTP status; 0 keeps them inside the one exception type without pretending a status.
TRANSPORT_ERROR_STATUS = 0
TRANSPORT_ERROR_CODE = "TRANSPORT_ERROR"

# Databricks error codes that mean "try again later" whatever the status (COULD_NOT_ACQUIRE_LOCK
# comes with a 400; Airflow's Databricks hook retries it too: hooks/databricks_base.py _retryable_error).
TRANSIENT_ERROR_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "COULD_NOT_ACQUIRE_LOCK"})


class DatabricksJobsError(Exception):
    """Base of the package's errors; `transient` says whether the same call may succeed later."""

    transient: bool = False


class ConfigurationError(DatabricksJobsError):
    """A setting is missing or invalid. Never heals by retrying: the setting must change."""

    def __init__(self, setting: str, problem: str):
        self.setting = str(setting)
        self.problem = scrub(str(problem))
        super().__init__(f"Configuration error: {self.setting}: {self.problem}")

    def __reduce__(self):
        return (type(self), (self.setting, self.problem))


class CredentialError(DatabricksJobsError):
    """No token could be obtained. `setting` names what to fix (DATABRICKS_AUTH,
    DATABRICKS_MANAGED_IDENTITY_CLIENT_ID, DATABRICKS_KEY_VAULT_URL, DATABRICKS_KEY_VAULT_SECRET_NAME);
    `transient` is True when the token service was throttled, failing or unreachable."""

    def __init__(self, setting: str, problem: str, transient: bool = False):
        self.setting = str(setting)
        self.problem = scrub(str(problem))
        self.transient = bool(transient)
        prefix = "Credential temporarily unavailable" if self.transient else "Credential error"
        super().__init__(f"{prefix}: {self.setting}: {self.problem}")

    def __reduce__(self):
        return (type(self), (self.setting, self.problem, self.transient))


class DatabricksApiError(DatabricksJobsError):
    """A Databricks REST call failed: HTTP status, Databricks `error_code` and `message`.

    Status 0 with code TRANSPORT_ERROR: no HTTP answer after the client's own retries."""

    def __init__(self, status: int, error_code: str, message: str, request_id: Optional[str] = None):
        self.status = int(status)
        self.error_code = str(error_code)
        self.message = scrub(str(message))
        self.request_id = request_id
        super().__init__(f"Databricks API error {self.status} {self.error_code}: {self.message}")

    def __reduce__(self):
        # Exception's default pickling replays self.args (the formatted text) into __init__.
        return (type(self), (self.status, self.error_code, self.message, self.request_id))

    @property
    def is_transport_error(self) -> bool:
        return self.status == TRANSPORT_ERROR_STATUS

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return (self.status == TRANSPORT_ERROR_STATUS or self.status == 429 or self.status >= 500
                or self.error_code in TRANSIENT_ERROR_CODES)


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the operation that raised `exc` may succeed. Only this package's errors
    are judged; any other exception is False (not known to heal)."""
    return isinstance(exc, DatabricksJobsError) and bool(exc.transient)


class ErrorText(NamedTuple):
    """What `classify_error_text` found: kind is "configuration", "credential" or "databricks_api"."""

    kind: str
    transient: bool
    setting: Optional[str] = None
    status: Optional[int] = None
    error_code: Optional[str] = None


_SETTING = r"([A-Za-z_][A-Za-z0-9_]*)"
_TEXT_PATTERNS = (
    ("configuration", re.compile(r"\bConfiguration error: " + _SETTING + ":")),
    ("credential", re.compile(r"\bCredential error: " + _SETTING + ":")),
    ("credential_transient", re.compile(r"\bCredential temporarily unavailable: " + _SETTING + ":")),
    ("databricks_api", re.compile(r"\bDatabricks API error (\d{1,3}) ([A-Za-z0-9_]*):")),
)


def classify_error_text(text: str) -> Optional[ErrorText]:
    """The error this package raised, read back from a failure's text (an activity failure as the
    orchestrator sees it: `Activity function 'x' failed: <Type>: <text> ...`); None when the text
    holds none of the package's error texts. The earliest match in the text wins."""
    found = []
    for kind, pattern in _TEXT_PATTERNS:
        match = pattern.search(text or "")
        if match:
            found.append((match.start(), kind, match))
    if not found:
        return None
    _, kind, match = min(found, key=lambda item: item[0])
    if kind == "databricks_api":
        error = DatabricksApiError(int(match.group(1)), match.group(2), "")
        return ErrorText("databricks_api", error.transient, status=error.status, error_code=error.error_code)
    if kind == "configuration":
        return ErrorText("configuration", False, setting=match.group(1))
    return ErrorText("credential", kind == "credential_transient", setting=match.group(1))
