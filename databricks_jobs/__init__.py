"""Azure Databricks Jobs API access for the function app: settings, credentials, HTTP client.

No Azure Functions imports here; `activities/` wraps this package. Every error it raises is a
`ConfigurationError`, a `CredentialError` or a `DatabricksApiError` (errors.py), each with a fixed
text and a `transient` flag; `is_transient(exc)` answers for Python callers."""
from .errors import ConfigurationError, CredentialError, DatabricksApiError, DatabricksJobsError, is_transient
from .secret_values import clean_secret, scrub

__all__ = ["ConfigurationError", "CredentialError", "DatabricksApiError", "DatabricksJobsError", "clean_secret",
           "is_transient", "reset_all", "scrub"]


def reset_all() -> None:
    """Forget the process-wide settings, token provider, client and start budget (tests, re-configuration)."""
    from . import start_budget
    from .client import reset_jobs_client
    from .credentials import reset_token_provider
    from .settings import reset_settings

    reset_jobs_client()
    reset_token_provider()
    reset_settings()
    start_budget.reset()
