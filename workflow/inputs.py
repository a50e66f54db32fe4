"""Workflow input: parsing, JSON Schema validation and defaults, shared by every entry point
(HTTP, Event Grid, queue). Errors name the offending field so callers get a clear 4xx."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from workflow import jobspec
from workflow.settings import WorkflowSettings

_HERE = Path(__file__).resolve().parent
INPUT_SCHEMA: dict = json.loads((_HERE / "input.schema.json").read_text("utf-8"))
DATABRICKS_SCHEMA: dict = json.loads((_HERE / "schemas" / "databricks.schema.json").read_text("utf-8"))
_validator = None
_validator_lock = threading.Lock()


def _get_validator():
    """Built on first use: jsonschema costs import time the function app's cold start does not need.
    Entry points validate on worker threads (off the event loop), so the first build is locked."""
    global _validator
    with _validator_lock:
        if _validator is None:
            from jsonschema import Draft202012Validator
            from referencing import Registry, Resource

            registry = Registry().with_resource(DATABRICKS_SCHEMA["$id"], Resource.from_contents(DATABRICKS_SCHEMA))
            _validator = Draft202012Validator(INPUT_SCHEMA, registry=registry)
        return _validator

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


def check_json_value(value: Any, max_bytes: int, field: Optional[str] = None) -> None:
    """The limits of `parse_json_body` for JSON that arrives already decoded (Event Grid and
    CloudEvents data, which the Functions worker parses): at most `max_bytes` as compact JSON and
    `MAX_JSON_DEPTH` levels deep. Depth is checked first, without recursion, so that measuring the
    size cannot exhaust the stack."""
    if _depth(value) > MAX_JSON_DEPTH:
        raise InputError(f"{_named(field)} is nested more than {MAX_JSON_DEPTH} levels deep", field)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise InputError(f"{_named(field)} is {size} bytes as JSON; the limit is {max_bytes}", field, status=413)


def _named(field: Optional[str]) -> str:
    return f"'{field}'" if field else "the request"


_credential_pattern = None


def looks_like_credential(text: str) -> bool:
    """True when `text` holds one of the credential shapes the request schema refuses
    (`NoCredentialText`): the same pattern, so what a caller is refused for is also what is kept
    out of any copy of their input."""
    global _credential_pattern
    if _credential_pattern is None:
        import re

        _credential_pattern = re.compile(DATABRICKS_SCHEMA["$defs"]["NoCredentialText"]["not"]["pattern"])
    return bool(_credential_pattern.search(text))


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
    """Path of the offending field; for a missing or unknown property, that property; for a rule
    over several fields, the field its schema names (`x-field`)."""
    parts = list(error.absolute_path)
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if schema.get("x-field"):
        return json_path(parts + [schema["x-field"]])
    if schema.get("x-names-key") and isinstance(instance, str):
        return json_path(parts + [instance])  # a propertyNames rule: the offending key is the field
    if isinstance(instance, Mapping):
        if error.validator == "required":
            parts += [k for k in error.validator_value if k not in instance][:1]
        elif error.validator == "additionalProperties":
            import re
            allowed = set(error.schema.get("properties", {}))
            patterns = error.schema.get("patternProperties", {})
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
    """A validated request with every default resolved, so the orchestrator reads no settings.
    `body` is what the caller sent plus those defaults; `plan` is what the orchestrator runs."""

    body: Mapping[str, Any]
    resolved_job_id: Optional[int] = None  # an existing job named by jobName, looked up at start

    @property
    def plan(self) -> dict:
        plan = jobspec.plan_of(self.body)
        if self.resolved_job_id is not None:
            plan["jobId"] = self.resolved_job_id
        return plan

    @property
    def job_source(self) -> str:
        return jobspec.job_source(self.body)

    @property
    def needs_job_lookup(self) -> bool:
        """An existing job named only by jobName: the entry point resolves it to an id first."""
        return self.job_source == jobspec.EXISTING and self.body.get("jobId") is None and self.resolved_job_id is None

    def with_job_id(self, job_id: int) -> "WorkflowRequest":
        return WorkflowRequest(self.body, int(job_id))

    def to_dict(self) -> dict:
        return self.plan


def _first_error(errors):
    """The most useful of several errors: the shallowest; one that carries its own message
    (`x-error`) over a generic one at the same depth."""
    errors = sorted(errors, key=lambda e: (len(e.absolute_path), e.validator != "type",
                                           "x-error" not in (e.schema or {}), list(map(str, e.absolute_path))))
    return errors[0] if errors else None


def validate_request(body: Any, settings: Optional[WorkflowSettings] = None) -> WorkflowRequest:
    """Validate caller input against the schema and apply the deployment's defaults."""
    error = _first_error(_get_validator().iter_errors(body))
    if error is not None:
        field = _field_of(error)
        raise InputError(_message_of(error, field), field)
    params = body.get("notebookParams") or {}
    if len(json.dumps(params).encode("utf-8")) > MAX_NOTEBOOK_PARAMS_BYTES:
        raise InputError(f"'notebookParams' is over {MAX_NOTEBOOK_PARAMS_BYTES} bytes as JSON", "notebookParams")
    try:
        jobspec.check_references(body)
    except jobspec.PlanError as problem:
        raise InputError(problem.message, problem.field) from None
    settings = settings or WorkflowSettings.from_env()
    resolved = dict(body)
    resolved.setdefault("timeoutSeconds", settings.default_timeout_seconds)
    resolved.setdefault("pollIntervalSeconds", settings.poll_interval_seconds)
    if jobspec.job_source(body) == jobspec.CREATE:
        resolved.setdefault("deleteJobOnCompletion", settings.delete_job_on_completion)
    return WorkflowRequest(resolved)


def validated_body(raw: bytes | str | None, settings: WorkflowSettings) -> WorkflowRequest:
    """`parse_json_body` and `validate_request` together: what an entry point runs on a worker
    thread (`asyncio.to_thread`), since schema validation of a large body takes milliseconds to
    tens of milliseconds of CPU that must not hold the event loop serving every other request."""
    return validate_request(parse_json_body(raw, settings.max_body_bytes), settings)


def orchestration_input(request: WorkflowRequest, settings: Optional[WorkflowSettings] = None, *,
                        notify: bool = False, owner: Optional[str] = None, policy=None) -> dict:
    """The orchestrator's input: the request plus deployment options it must not read itself.
    `notify`: report the outputs through the notifyCompletion activity when the workflow ends.
    `owner`: the caller's id (never a secret), recorded so only it (or an admin) sees the workflow.
    `policy`: the caller's `workflow.caller_policy.Entry`, whose runAs, tags and budget policy the plan takes."""
    settings = settings or WorkflowSettings.from_env()
    plan = request.plan
    if policy is not None:
        from workflow.caller_policy import apply_to_plan

        plan = apply_to_plan(policy, plan)
    envelope = {
        "request": plan,
        # Tells a repeated start of the same request (a replay) from a different one under the same key.
        "requestHash": hashlib.sha256(json.dumps(dict(request.body), sort_keys=True).encode("utf-8")).hexdigest(),
        "options": {
            "pollsPerExecution": settings.polls_per_execution,
            "webhookPollIntervalSeconds": settings.webhook_poll_interval_seconds,
            "watcher": settings.run_watcher_interval_seconds > 0,
            "notify": notify,
        },
    }
    if owner is not None:
        envelope["owner"] = owner
    return envelope
