"""Who may do what over the HTTP API: the caller (callers/identity.py), its policy
(workflow/caller_policy.py) and its rate limits, counted from the task hub.

Kept apart from the routes so that each route adds one call: `caller_of(req)` before anything else,
`admit(...)` before a start, `visible(...)` before answering about an instance.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Optional

import azure.durable_functions as df
import azure.functions as func

from callers import identity
from callers.identity import Caller
from triggers.http_responses import json_response
from triggers.starter import RUNNING_STATUSES, owner_prefix, stored_input
from workflow import caller_policy
from workflow.caller_policy import Entry, Refusal

log = logging.getLogger(__name__)


class Denied(Exception):
    """The answer is already decided (401, 403, 429, 503); nothing starts."""

    def __init__(self, response: func.HttpResponse):
        self.response = response


def _unauthenticated(message: str) -> func.HttpResponse:
    return json_response(401, {"error": message, "field": "Authorization"},
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _misconfigured(error: Exception, retry_after: str = "300") -> func.HttpResponse:
    log.error("refusing the request: %s", error)
    return json_response(503, {"error": str(error), "setting": getattr(error, "setting", None)},
                         {"Retry-After": retry_after})


async def caller_of(req: func.HttpRequest) -> Caller:
    """The request's caller; Denied with 401 (no or a bad credential) or 503 (keys unreachable, or a
    WORKFLOW_AUTH_* setting wrong). Token validation may fetch keys: off the event loop."""
    try:
        config = identity.AuthConfig.from_env()
        if not config.required:
            return Caller.function_key()
        return await asyncio.to_thread(identity.identify, dict(req.headers.items()), config)
    except identity.AuthSettingError as error:
        raise Denied(_misconfigured(error)) from None
    except identity.KeysUnavailable as error:
        raise Denied(_misconfigured(error, "30")) from None
    except identity.Unauthenticated as error:
        raise Denied(_unauthenticated(str(error))) from None


async def policies() -> Optional[caller_policy.CallerPolicies]:
    """The deployment's policy document; Denied(503 naming the setting and JSON path) when bad. The
    first read may open a file and validates a schema: off the event loop (cached afterwards)."""
    try:
        return await asyncio.to_thread(caller_policy.from_env)
    except caller_policy.PolicyDocumentError as error:
        raise Denied(_misconfigured(error)) from None


def refused(refusal: Refusal) -> func.HttpResponse:
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    return json_response(refusal.status, refusal.to_dict(), headers)


async def entry_for_start(caller: Caller) -> Optional[Entry]:
    """The caller's policy entry when it may start at all (None without a document); Denied(403) otherwise."""
    document = await policies()
    why_not = caller_policy.may_start(document, caller.id, caller.roles, identity.RUN_ROLE, identity.ADMIN_ROLE,
                                      caller.kind != "functionKey")
    if why_not:
        raise Denied(json_response(403, {"error": why_not, "field": None, "rule": None}))
    if document is None:
        return None
    entry = document.entry_for(caller.id)
    if caller.is_admin and not entry.admin:
        entry = Entry(entry.rule, {**entry.value, "admin": True})
    return entry


async def check_rates(client: df.DurableOrchestrationClient, entry: Optional[Entry], owner: Optional[str],
                      now: datetime) -> None:
    """The caller's concurrency and start-rate limits, counted from the task hub (every worker sees
    the same store): instances whose id carries the caller's prefix."""
    if entry is None or not caller_policy.needs_counts(entry):
        return
    prefix = owner_prefix(owner) or None
    statuses = await client.get_status_by(runtime_status=list(RUNNING_STATUSES), instance_id_prefix=prefix)
    mine = [s for s in statuses if prefix is None or (s.instance_id or "").startswith(prefix)]
    running = sum(1 for s in mine if s.runtime_status in RUNNING_STATUSES)
    recent = []
    if entry.limit("startsPerMinute") is not None:
        since = now - timedelta(seconds=60)
        started = await client.get_status_by(created_time_from=since, instance_id_prefix=prefix)
        recent = [s.created_time.timestamp() for s in started
                  if (prefix is None or (s.instance_id or "").startswith(prefix))
                  and s.created_time is not None and s.created_time >= since]
    try:
        caller_policy.check_rates(entry, running, recent, now.timestamp())
    except Refusal as refusal:
        raise Denied(refused(refusal)) from None


async def owners_matter(caller: Caller) -> bool:
    """Whether workflows may have different owners: callers identify themselves, or a policy maps
    event sources and queues to callers. Otherwise (one team, function keys) there is one caller."""
    if caller.kind != "functionKey":
        return True
    try:
        return await asyncio.to_thread(caller_policy.from_env) is not None
    except caller_policy.PolicyDocumentError:
        return True


async def may_see(caller: Caller, status) -> bool:
    """The owner, a caller with the app role Workflows.Admin, or one whose policy entry says `admin`."""
    if caller.may_see(owner_of(status)):
        return True
    document = await policies()
    return document is not None and caller.id is not None and document.listed(caller.id) \
        and document.entry_for(caller.id).admin


def owner_of(status) -> Optional[str]:
    value = stored_input(getattr(status, "input_", None))
    return value.get("owner") if isinstance(value, dict) else None
