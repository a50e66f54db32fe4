"""The two exceptions the Databricks side raises.

Durable Functions Python only carries an activity failure's text to the orchestrator, so
`str(DatabricksApiError)` has a fixed prefix (docs/design.md) that `workflow.policy` parses.
Both exceptions pickle with their attributes intact."""
from __future__ import annotations

from typing import Optional

# Transport failures (connection refused or reset, timeouts) that outlived the client's retries
# have no HTTP status; 0 keeps them inside the one exception type without pretending a status.
TRANSPORT_ERROR_STATUS = 0
TRANSPORT_ERROR_CODE = "TRANSPORT_ERROR"


class ConfigurationError(Exception):
    """A `DATABRICKS_*` setting is missing or invalid; the message starts with its name."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")

    def __reduce__(self):
        return (type(self), (self.setting, self.problem))


class DatabricksApiError(Exception):
    """A Databricks REST call failed: HTTP status, Databricks `error_code` and `message`."""

    def __init__(self, status: int, error_code: str, message: str, request_id: Optional[str] = None):
        self.status = int(status)
        self.error_code = str(error_code)
        self.message = str(message)
        self.request_id = request_id
        super().__init__(f"Databricks API error {self.status} {self.error_code}: {self.message}")

    def __reduce__(self):
        # Exception's default pickling replays self.args (the formatted text) into __init__.
        return (type(self), (self.status, self.error_code, self.message, self.request_id))

    @property
    def is_transport_error(self) -> bool:
        return self.status == TRANSPORT_ERROR_STATUS
