"""Azure Databricks Jobs API access for the function app: settings, credentials, HTTP client.

No Azure Functions imports here; `activities/` wraps this package."""
from .errors import ConfigurationError, DatabricksApiError

__all__ = ["ConfigurationError", "DatabricksApiError", "reset_all"]


def reset_all() -> None:
    """Forget the process-wide settings, token provider and client (tests, re-configuration)."""
    from .client import reset_jobs_client
    from .credentials import reset_token_provider
    from .settings import reset_settings

    reset_jobs_client()
    reset_token_provider()
    reset_settings()
