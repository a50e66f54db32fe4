"""Workflow input: parsing, JSON Schema validation and defaults, shared by every entry point
(HTTP, Event Grid, queue). Errors name the offending field so callers get a clear 4xx."""
from __future__ import annotations

import hashlib
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


MAX_JSON_DEPTH = 32
JSON_MEDIA_TYPES = ("application/json",)


def require_json_content_type(content_type: Optional[str]) -> None:
    """415 unless the body is declared as JSON (`application/json` or a `+json` type)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_MEDIA_TYPES and not media.endswith("+json"):
        shown = media or "none"
        raise InputError(f"Content-Type must be application/json (got {shown})", "Content-Type", status=415)


def _object_without_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise InputError(f"request body has the key {json.dumps(key)} twice in one object", key)
        seen[key] = value
    return seen


def _depth(value: Any) -> int:
    """Nesting depth, counted without recursion (a hostile body must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json_body(raw: bytes | str | None, max_bytes: int) -> Any:
    """Decode a request body, refusing oversize, malformed, duplicate-key or too deeply nested
    JSON before anything else."""
    if raw is None or len(raw) == 0:
        raise InputError("request body is empty; expected a JSON object", None)
    if len(raw) > max_bytes:
        raise InputError(f"request body is {len(raw)} bytes; the limit is {max_bytes}", None, status=413)
    try:
        value = json.loads(raw, object_pairs_hook=_object_without_duplicates)
    except InputError:
        raise
    except RecursionError:
        raise InputError(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", None) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {exc}", None) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise InputError(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", None)
    return value


def json_path(parts) -> Optional[str]:
    """A location in JSON terms: `tasks[2].depends_on[0].task_key`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


_JSON_TYPE_OF = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
                 int: "an integer", float: "a number"}
_JSON_TYPE_NAMES = {"object": "an object", "array": "an array", "string": "a string", "boolean": "a boolean",
                    "null": "null", "integer": "an integer", "number": "a number"}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_OF.get(type(value), "a value")


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_of(error) -> Optional[str]:
    """Path of the offending field; for a missing or unknown property, that property."""
    parts = list(error.absolute_path)
    instance = error.instance
    if isinstance(instance, Mapping):
        if error.validator == "required":
            parts += [k for k in error.validator_value if k not in instance][:1]
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            patterns = error.schema.get("patternProperties", {})
            import re
            parts += sorted(k for k in instance if k not in allowed
                            and not any(re.search(p, k) for p in patterns))[:1]
    return json_path(parts)


def _message_of(error, field: Optional[str]) -> str:
    """The validation error in JSON terms (no Python reprs), naming the field."""
    name = f"'{field}'" if field else "the request"
    custom = error.schema.get("x-error") if isinstance(error.schema, Mapping) else None
    v, expected, instance = error.validator, error.validator_value, error.instance
    if custom:
        return f"{name} {custom}"
    if v == "required":
        return f"{name} is required"
    if v == "additionalProperties":
        return f"{name} is not a known field"
    if v == "pattern":
        description = error.schema.get("description") or f"must match {expected}"
        return f"{name} is invalid: {description}"
    if v == "type":
        wanted = " or ".join(_JSON_TYPE_NAMES.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
        return f"{name} must be {wanted}, not {_json_type(instance)}"
    if v == "enum":
        return f"{name} must be one of {', '.join(_shown(e) for e in expected)}"
    if v == "const":
        return f"{name} must be {_shown(expected)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                 "exclusiveMaximum": "less than"}[v]
        return f"{name} must be {words} {expected} (got {_shown(instance)})"
    if v in ("minLength", "maxLength"):
        return f"{name} must be {'at least' if v == 'minLength' else 'at most'} {expected} characters long"
    if v in ("minItems", "maxItems"):
        return f"{name} must have {'at least' if v == 'minItems' else 'at most'} {expected} items"
    if v in ("minProperties", "maxProperties"):
        return f"{name} must have {'at least' if v == 'minProperties' else 'at most'} {expected} entries"
    if v == "uniqueItems":
        return f"{name} must not repeat an item"
    if v == "propertyNames":
        return f"{name} has an invalid key"
    return f"{name} is invalid ({v})"


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


def _first_error(errors):
    """The most useful of several errors: the shallowest, and within oneOf/anyOf the deepest
    branch error (its message names a real field rather than 'matches no alternative')."""
    errors = sorted(errors, key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    from jsonschema.exceptions import best_match
    return best_match(errors) if errors[0].validator in ("oneOf", "anyOf") else errors[0]


def validate_request(body: Any, settings: Optional[WorkflowSettings] = None) -> WorkflowRequest:
    """Validate caller input against the schema and apply the deployment's defaults."""
    error = _first_error(_VALIDATOR.iter_errors(body))
    if error is not None:
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
    body = request.to_dict()
    return {
        "request": body,
        # Tells a repeated start of the same request (a replay) from a different one under the same key.
        "requestHash": hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest(),
        "options": {
            "pollsPerExecution": settings.polls_per_execution,
            "webhookPollIntervalSeconds": settings.webhook_poll_interval_seconds,
            "notify": notify,
        },
    }
