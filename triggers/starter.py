"""Starting workflows exactly once, shared by every entry point (HTTP, Event Grid, queue).

Every caller delivers at least once, so a start is keyed by a deterministic instance id derived
from the caller's own request identity; a second delivery finds the instance and starts nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Optional

import azure.durable_functions as df

from entities.caller_definitions import ENTITY as DEFINITIONS_ENTITY
from orchestrators import versions
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow import caller_policy
from workflow.inputs import InputError, WorkflowRequest, orchestration_input as build_input

log = logging.getLogger(__name__)

# Instance ids we accept from callers: generated ids are 32 hex digits, derived ones below. At most
# 64 characters, so that the id itself is the run-now idempotency token and the job tag the
# webhook endpoint maps back to its instance (both Databricks fields are limited to 64 here).
INSTANCE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


# Instances that are not finished: a start with their id is a duplicate, events still reach them.
RUNNING_STATUSES = frozenset({df.OrchestrationRuntimeStatus.Pending, df.OrchestrationRuntimeStatus.Running,
                              df.OrchestrationRuntimeStatus.ContinuedAsNew})


def derived_instance_id(source: str, key: str) -> str:
    """A stable instance id for a caller-supplied request identity (event id, message id,
    Idempotency-Key). Hashed so any key yields a valid, bounded id."""
    digest = hashlib.sha256(f"{source}\x00{key}".encode("utf-8")).hexdigest()[:32]
    return f"{source}-{digest}"


def owner_prefix(owner: Optional[str]) -> str:
    """The start of every instance id of one caller's workflows, so that the task hub can count them
    (an instance query by id prefix) without reading inputs. A hash: it reveals nothing about the caller,
    and no caller can pick it for another."""
    if owner is None:
        return ""
    return "o" + hashlib.sha256(f"owner\x00{owner}".encode("utf-8")).hexdigest()[:12] + "-"


def instance_id_for(owner: Optional[str], source: str, key: Optional[str]) -> Optional[str]:
    """The instance id of a start. Without caller identities (single-team mode): a new id (None: the
    extension draws one) or, for a request identity, `derived_instance_id` as before. With an owner:
    the owner's prefix and either 32 random hex digits or a hash of (source, owner, key), so the same
    Idempotency-Key from two callers names two workflows, and no caller can compute an id that
    lands in another caller's namespace."""
    if owner is None:
        return derived_instance_id(source, key) if key is not None else None
    if key is None:
        return owner_prefix(owner) + uuid.uuid4().hex
    digest = hashlib.sha256(f"{source}\x00{owner}\x00{key}".encode("utf-8")).hexdigest()[:32]
    return f"{owner_prefix(owner)}{source[0]}{digest}"


def queue_instance_key(queue: str, given: str) -> str:
    """A queue-supplied instance id, namespaced to its queue: it can never name an HTTP or Event
    Grid workflow (those ids derive from other sources) nor one of another queue."""
    return f"{queue}\x00instanceId\x00{given}"


class JobLookupUnavailable(Exception):
    """Databricks could not be asked which job a name means right now; try the start again."""


def _jobs_named(name: str) -> list:
    from databricks_jobs.client import get_jobs_client  # lazy: keeps requests out of the cold start
    return get_jobs_client().find_jobs_by_name(name)


async def resolve_job(request: WorkflowRequest) -> WorkflowRequest:
    """An existing job named by jobName becomes the job with that id, when exactly one job has the
    name; otherwise the caller hears it now (422 naming jobName and how many matched), not from a
    workflow that fails later. Databricks' own errors: a 4xx is the caller's (422), a transient one
    raises JobLookupUnavailable, a configuration or credential error propagates."""
    if not request.needs_job_lookup:
        return request
    from databricks_jobs.errors import DatabricksApiError

    name = request.body["jobName"]
    try:
        # Blocking HTTP with sleeping retries: never on the worker's event loop.
        jobs = await asyncio.to_thread(_jobs_named, name)
    except DatabricksApiError as error:
        if error.transient:
            raise JobLookupUnavailable(str(error)) from None
        raise InputError(f"Databricks refused to list the jobs named {json.dumps(name)}: {error}", "jobName",
                         status=422) from None
    if len(jobs) != 1:
        found = "no job is" if not jobs else f"{len(jobs)} jobs are"
        advice = "check the name" if not jobs else "give jobId to say which"
        raise InputError(f"{found} named {json.dumps(name)} in the workspace; {advice}", "jobName", status=422)
    return request.with_job_id(int(jobs[0]["job_id"]))


@dataclass(frozen=True)
class StartResult:
    instance_id: str
    started: bool  # False: an instance with this id already existed, nothing new was started
    different_request: bool = False  # that instance was started for a different request


def stored_input(value):
    """An instance's input as the status reports it (the extension returns it as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _request_hash_of(value) -> Optional[str]:
    value = stored_input(value)
    return value.get("requestHash") if isinstance(value, dict) else None


async def start_once(client: df.DurableOrchestrationClient, orchestration_input: dict,
                     instance_id: Optional[str] = None) -> StartResult:
    """Start the workflow unless an instance with `instance_id` already exists. A repeat whose
    request differs from the one that started the instance is reported, not replayed."""
    if instance_id is None:
        new_id = await client.start_new(ORCHESTRATOR_NAME, None, orchestration_input, version=versions.CURRENT)
        return StartResult(new_id, True)
    status = await client.get_status(instance_id, show_input=True)
    if status.runtime_status is not None:
        log.info("duplicate start for instance %s ignored (%s)", instance_id, status.runtime_status.value)
        theirs = _request_hash_of(getattr(status, "input_", None))
        different = theirs is not None and theirs != orchestration_input.get("requestHash")
        return StartResult(instance_id, False, different)
    try:
        await client.start_new(ORCHESTRATOR_NAME, instance_id, orchestration_input, version=versions.CURRENT)
    except Exception:
        # Two deliveries raced past the status check: the extension refuses the second start of
        # a running instance, which is exactly the dedupe we want.
        status = await client.get_status(instance_id)
        if status.runtime_status is None:
            raise
        log.info("duplicate start for instance %s lost the race and was ignored", instance_id)
        return StartResult(instance_id, False)
    return StartResult(instance_id, True)


def _definitions_entity(owner: str) -> df.EntityId:
    return df.EntityId(DEFINITIONS_ENTITY, owner_prefix(owner).rstrip("-"))


async def check_saved_jobs(client: df.DurableOrchestrationClient, entry, owner: Optional[str],
                           orchestration_input: dict) -> None:
    """The policy's `limits.savedJobs` for a start: raises `workflow.caller_policy.Refusal` (403) when
    the start would keep a saved job for a new definition past the caller's ceiling. Counted in the
    caller's `callerDefinitions` entity, whose read may lag a just-recorded addition by the
    extension's signal latency: two first starts of new definitions at once may both pass."""
    if entry is None or owner is None or entry.limit("savedJobs") is None:
        return
    definition = caller_policy.saved_job_definition(orchestration_input["request"])
    if definition is None:
        return
    state = await client.read_entity_state(_definitions_entity(owner))
    known = state.entity_state if state.entity_exists and isinstance(state.entity_state, list) else []
    caller_policy.check_saved_jobs(entry, known, definition)


async def record_saved_job_definition(client: df.DurableOrchestrationClient, entry, owner: Optional[str],
                                      orchestration_input: dict) -> None:
    """After a start: remember its definition for `limits.savedJobs` (a repeated signal adds nothing)."""
    if entry is None or owner is None or entry.limit("savedJobs") is None:
        return
    definition = caller_policy.saved_job_definition(orchestration_input["request"])
    if definition is not None:
        await client.signal_entity(_definitions_entity(owner), "add", definition)


def _as_input_error(refusal: caller_policy.Refusal) -> InputError:
    return InputError(f"{refusal.message} (refused by the caller policy)", refusal.field)


async def checked_event_input(client: df.DurableOrchestrationClient, request: WorkflowRequest, settings, *,
                              owner: Optional[str], entry) -> dict:
    """The orchestration input of an event- or queue-started workflow (it notifies when it ends), with
    the caller policy applied: the request is checked before any job lookup (the answer must not
    depend on whether a job exists), then `jobName` is resolved, then the saved-jobs ceiling. A
    refusal raises InputError naming the field and the rule."""
    if entry is not None:
        try:
            caller_policy.check_request(entry, request.body)
        except caller_policy.Refusal as refusal:
            raise _as_input_error(refusal) from None
    # A transient Databricks error raises JobLookupUnavailable: the host retries the delivery.
    request = await resolve_job(request)
    envelope = build_input(request, settings, notify=True, owner=owner, policy=entry)
    try:
        await check_saved_jobs(client, entry, owner, envelope)
    except caller_policy.Refusal as refusal:
        raise _as_input_error(refusal) from None
    return envelope
