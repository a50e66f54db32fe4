"""The job definitions the app keeps a saved job for, per caller: a Durable entity per caller
(`callerDefinitions@<owner prefix>`), read at a start to enforce the policy's `limits.savedJobs`.

Why an entity: jobs/list cannot filter by tag, so counting a caller's saved jobs in Databricks
would page through every job of the workspace on a start; the entity serializes its additions and
lives in the task hub the app already has."""
from __future__ import annotations

import azure.durable_functions as df

ENTITY = "callerDefinitions"
# A bound on the state, far above any sensible savedJobs limit: a caller can never grow it without end.
MAX_DEFINITIONS = 10_000

bp = df.Blueprint()


def apply(state: list, operation: str, definition) -> list:
    if operation == "add" and isinstance(definition, str) and definition not in state \
            and len(state) < MAX_DEFINITIONS:
        return state + [definition]
    return state


@bp.entity_trigger(context_name="context", entity_name=ENTITY)
def caller_definitions(context: df.DurableEntityContext) -> None:
    context.set_state(apply(list(context.get_state(list) or []), context.operation_name, context.get_input()))
