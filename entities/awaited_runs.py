"""The registry of awaited runs: a Durable entity per shard (`awaitedRuns@<n>`).

Which Databricks run each waiting workflow waits for, so that the workspace run watcher and the
Databricks webhook endpoint find the workflow of a run without a Jobs API call per run and without
scanning the task hub. The state transitions are workflow.watch.apply, plus the run-end
notifications kept for runs not registered yet (workflow.early_ends); why an entity (and not an
instance query or a table) is in docs/design.md."""
from __future__ import annotations

import azure.durable_functions as df

from workflow import early_ends, watch

bp = df.Blueprint()


@bp.entity_trigger(context_name="context", entity_name=watch.REGISTRY_ENTITY)
def awaited_runs(context: df.DurableEntityContext) -> None:
    state = context.get_state(watch.empty_state)
    context.set_state(early_ends.apply(state, context.operation_name, context.get_input()))
