"""Workflow input: parsing, JSON Schema validation and defaults, shared by every entry point
(HTTP, Event Grid, queue). Errors name the offending field so callers get a clear 4xx."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from jsonschema import Draft202012Validator

from workflow.settings import WorkflowSettings

INPUT_SCHEMA: dict = json.loads((Path(__file__).with_name("input.schema.json")).read_text("utf-8"))
_VALIDATOR = Draft202012Validator(INPUT_SCHEMA)

# run-now documents notebook_params as at most 10,000 bytes of JSON.
MAX_NOTEBOOK_PARAMS_BYTES = 10_000


class InputError(ValueError):
    """A caller's mistake: `field` is a JSON-pointer-like dotted path, or None for the whole body."""

    def __init__(self, message: str, field: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def to_dict(self) -> dict:
        return {"error": self.message, "field": self.field}


def parse_json_body(raw: bytes | str | None, max_bytes: int) -> Any:
    """Decode a request body, refusing oversize or malformed JSON before anything else."""
    if raw is None or len(raw) == 0:
        raise InputError("request body is empty; expected a JSON object", None)
    if len(raw) > max_bytes:
        raise InputError(f"request body is {len(raw)} bytes; the limit is {max_bytes}", None, status=413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {exc}", None) from None


def _field_of(error) -> Optional[str]:
    """Dotted path of the offending field; for a missing or unknown property, that property."""
    parts = [str(p) for p in error.absolute_path]
    instance = error.instance
    if isinstance(instance, Mapping):
        if error.validator == "required":
            parts += [k for k in error.validator_value if k not in instance][:1]
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            parts += sorted(k for k in instance if k not in allowed)[:1]
    return ".".join(parts) or None


def _message_of(error, field: Optional[str]) -> str:
    if error.validator == "required":
        return f"'{field}' is required"
    if error.validator == "additionalProperties":
        return f"'{field}' is not a known input field"
    if error.validator == "pattern":
        description = error.schema.get("description") or f"must match {error.validator_value}"
        return f"'{field}' is invalid: {description}"
    return f"'{field}' is invalid: {error.message}" if field else error.message


@dataclass(frozen=True)
class WorkflowRequest:
    """A validated request with every default resolved, so the orchestrator reads no settings."""

    job_name: str
    task_key: str
    notebook_path: str
    existing_cluster_id: str
    notebook_params: Mapping[str, str]
    timeout_seconds: int
    poll_interval_seconds: int
    delete_job_on_completion: bool = False

    def to_dict(self) -> dict:
        return {
            "jobName": self.job_name,
            "taskKey": self.task_key,
            "notebookPath": self.notebook_path,
            "existingClusterId": self.existing_cluster_id,
            "notebookParams": dict(self.notebook_params),
            "timeoutSeconds": self.timeout_seconds,
            "pollIntervalSeconds": self.poll_interval_seconds,
            "deleteJobOnCompletion": self.delete_job_on_completion,
        }


def validate_request(body: Any, settings: Optional[WorkflowSettings] = None) -> WorkflowRequest:
    """Validate caller input against the schema and apply the deployment's defaults."""
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        field = _field_of(error)
        raise InputError(_message_of(error, field), field)
    params = body.get("notebookParams") or {}
    if len(json.dumps(params).encode("utf-8")) > MAX_NOTEBOOK_PARAMS_BYTES:
        raise InputError(f"'notebookParams' is over {MAX_NOTEBOOK_PARAMS_BYTES} bytes as JSON", "notebookParams")
    settings = settings or WorkflowSettings.from_env()
    return WorkflowRequest(
        job_name=body["jobName"],
        task_key=body["taskKey"],
        notebook_path=body["notebookPath"],
        existing_cluster_id=body["existingClusterId"],
        notebook_params=params,
        timeout_seconds=body.get("timeoutSeconds", settings.default_timeout_seconds),
        poll_interval_seconds=body.get("pollIntervalSeconds", settings.poll_interval_seconds),
        delete_job_on_completion=body.get("deleteJobOnCompletion", settings.delete_job_on_completion),
    )


def orchestration_input(request: WorkflowRequest, settings: Optional[WorkflowSettings] = None, *,
                        notify: bool = False) -> dict:
    """The orchestrator's input: the request plus deployment options it must not read itself.
    `notify`: report the outputs through the notifyCompletion activity when the workflow ends."""
    settings = settings or WorkflowSettings.from_env()
    return {
        "request": request.to_dict(),
        "options": {
            "pollsPerExecution": settings.polls_per_execution,
            "webhookPollIntervalSeconds": settings.webhook_poll_interval_seconds,
            "notify": notify,
        },
    }
