"""The error responses of the emulator, in the Databricks shape."""

from __future__ import annotations


class ApiError(Exception):
    """An error response in the Databricks shape."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict | None = None):
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def invalid_state(message: str) -> ApiError:
    # INVALID_STATE is what Databricks uses when a request conflicts with the state of a resource
    # (e.g. the job creation rate limit, KB "job-rate-limit"); it is a 400.
    return ApiError(400, "INVALID_STATE", message)
