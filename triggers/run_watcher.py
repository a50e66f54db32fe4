"""The workspace run watcher: one timer for the whole app notices when awaited runs end.

Every `WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS` the timer reads the registry of awaited runs
(entities/awaited_runs.py), and when the awaited runs have earned a list (workflow.watch.list_credit:
what they would have spent polling on their own) lists the active runs of the jobs those runs belong
to, page by page. A workflow whose run has left the active list gets the same
`runFinished` event the webhook endpoint raises; it confirms with runs/get and fetches the output.

Exactly one watcher runs per app: timer triggers are singletons across a scaled-out app (the host
holds a blob lease per timer function). If it stops, workflows still finish through their own sparse
safety-net polls. A second signal (watcher and webhook both) costs the workflow nothing.

Blocking Jobs API calls run in a thread; only Durable client calls run on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
from datetime import datetime, timezone
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import azure.durable_functions as df
import azure.functions as func

from orchestrators.create_job_and_run import RUN_FINISHED_EVENT
from telemetry.tracing import traced_trigger
from workflow import early_ends, policy, watch
from workflow.settings import WorkflowSettingError, watcher_interval

log = logging.getLogger(__name__)

bp = df.Blueprint()


def _interval_at_indexing() -> int:
    try:
        return watcher_interval(os.environ)
    except WorkflowSettingError as error:
        # Raising here would stop the worker indexing every function: log, and run no watcher.
        log.error("%s; the run watcher is off", error)
        return 0


INTERVAL = _interval_at_indexing()
# A six-field NCRONTAB tick; the watcher does nothing when off.
SCHEDULE = f"*/{INTERVAL} * * * * *" if INTERVAL and INTERVAL < 60 else "0 * * * * *"

# The seam through which the watcher reads the time; tests point it at a virtual clock.
utcnow: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731


class _Memory:
    """Per process (the timer runs on one instance at a time): what the last list cost, so the next
    accounts for other teams' runs on the same jobs; the list credit; when the last tick ran. A new
    process starts from the awaited runs' count and no credit, so it lists no more often than the
    runs' own polls would."""

    pages: Optional[int] = None
    credit: float = 0.0
    last_tick: Optional[float] = None

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pages, self.credit, self.last_tick = None, 0.0, None
        # What this process did at recent ticks, which the registry may not show yet (its signals
        # arrive after the control queue's latency): run -> when it told the workflow / saw it active.
        self.told: Dict[int, float] = {}
        self.seen: Dict[int, float] = {}

    def recall(self, awaited: Dict[int, dict]) -> None:
        """Correct a registry read that is older than this process's own last signals, so a stale
        read does not tell a workflow twice (or miss a run seen active again)."""
        for book in (self.told, self.seen):
            for run_id in [r for r in book if r not in awaited]:
                del book[run_id]
        for run_id, entry in awaited.items():
            told, seen = self.told.get(run_id), self.seen.get(run_id)
            signaled = entry.get("signaledAt")
            if told is not None and (seen is None or seen < told):
                if signaled is None or float(signaled) < told:
                    entry["signaledAt"] = told
                if entry.get("endedAt") is not None and float(entry["endedAt"]) <= told:
                    entry.pop("endedAt"), entry.pop("endEvent", None)  # told since it was noted
            elif seen is not None and signaled is not None and float(signaled) < seen:
                entry["signaledAt"] = None


memory = _Memory()


def check_every(age_seconds: float) -> float:
    """How often one awaited run would be polled on its own at this age."""
    return policy.own_check_interval(age_seconds)


def _list_active(plan: watch.ListPlan) -> Tuple[Set[int], int]:
    """(active run ids, list calls made): one job at a time, then one-time runs workspace-wide."""
    from databricks_jobs.client import get_jobs_client  # lazy: keeps requests out of the cold start

    client = get_jobs_client()
    active: Set[int] = set()
    calls = 0
    sources: List[dict] = [{"job_id": job_id} for job_id in plan.job_ids]
    if plan.one_time_runs:
        sources.append({"run_type": "SUBMIT_RUN"})
    for source in sources:
        for page in client.list_runs_pages(active_only=True, **source):
            calls += 1
            active.update(int(r["run_id"]) for r in page)
    return active, calls


async def _read_registry(client: df.DurableOrchestrationClient) -> Dict[int, dict]:
    responses = await asyncio.gather(*(
        client.read_entity_state(df.EntityId(watch.REGISTRY_ENTITY, str(shard))) for shard in range(watch.SHARDS)))
    return watch.merged(r.entity_state if r.entity_exists else None for r in responses)


async def _signal_registry(client: df.DurableOrchestrationClient, operation: str, run_ids: Iterable[int],
                           **extra) -> None:
    by_shard: Dict[str, List[int]] = {}
    for run_id in run_ids:
        by_shard.setdefault(watch.shard_of(run_id), []).append(run_id)
    for shard, ids in by_shard.items():
        await client.signal_entity(df.EntityId(watch.REGISTRY_ENTITY, shard), operation, {"runIds": ids, **extra})


async def tell_noted(client: df.DurableOrchestrationClient, awaited: Dict[int, dict], now: float) -> List[int]:
    """Tell the workflows of runs whose end Databricks notified before they were registered
    (workflow.early_ends): no list needed. Marks them told in `awaited` for the rest of the tick."""
    told = []
    for run_id, instance_id in early_ends.noted(awaited):
        try:
            await client.raise_event(instance_id, RUN_FINISHED_EVENT, {"runId": run_id, "source": "webhook"})
        except Exception:  # ended meanwhile: the list path forgets it when it is next due
            log.info("run watcher: workflow %s of notified run %s could not be told", instance_id, run_id)
        told.append(run_id)
        memory.told[run_id] = now
        awaited[run_id]["signaledAt"] = now
        awaited[run_id].pop("endedAt", None), awaited[run_id].pop("endEvent", None)
    if told:
        await _signal_registry(client, early_ends.END_TOLD, told, at=now)
    return told


async def watch_once(client: df.DurableOrchestrationClient, now: float, tick: float) -> dict:
    """One tick; returns what it did (for logs and tests)."""
    awaited = await _read_registry(client)
    memory.recall(awaited)
    for run_id in await tell_noted(client, awaited, now):
        del awaited[run_id]  # told this tick: nothing to list for
    # Time since the last tick earns credit, a missed or late tick included; no more than a minute's
    # worth after a long gap (the host was down: the runs' safety-net polls covered it).
    elapsed = tick if memory.last_tick is None else min(max(0.0, now - memory.last_tick), max(tick, 60.0))
    memory.last_tick = now
    plan = watch.list_plan(awaited)
    pages = memory.pages or max(plan.calls_at_least, math.ceil(len(awaited) / watch.RUNS_PER_PAGE))
    listing, memory.credit = watch.list_credit(memory.credit, awaited, now, elapsed=elapsed, tick=tick,
                                               pages=pages, check_every=check_every)
    if not awaited:
        return {"awaited": 0, "listed": False}
    if not listing:
        return {"awaited": len(awaited), "listed": False, "credit": memory.credit}
    refused = False
    try:
        active, calls = await asyncio.to_thread(_list_active, plan)
    except Exception as error:
        from databricks_jobs.errors import is_transient
        if is_transient(error):
            raise
        # Databricks refuses the watcher for good (a revoked credential, a permission change): tell
        # every workflow now, so each sees the refusal on its own runs/get and fails at once with it,
        # instead of at its next sparse safety-net poll.
        log.warning("run watcher: Databricks refused to list runs (%s); telling every awaited workflow", error)
        active, calls, refused = set(), 0, True
    else:
        memory.pages = max(calls, 1)
    decision = watch.decide(awaited, active, now, check_every=check_every)
    memory.seen.update((run_id, now) for run_id in awaited if run_id in active)
    told, gone = [], []
    for run_id, instance_id in decision.signal:
        try:
            await client.raise_event(instance_id, RUN_FINISHED_EVENT, {"runId": run_id, "source": "watcher"})
            told.append(run_id)
            memory.told[run_id] = now
        except Exception:
            # The workflow has ended (or been purged) without unregistering: forget the run.
            status = await client.get_status(instance_id)
            if status.runtime_status is None or status.runtime_status not in _RUNNING:
                gone.append(run_id)
            else:
                log.warning("run watcher: could not tell workflow %s that run %s ended", instance_id, run_id)
    if told:
        await _signal_registry(client, "signaled", told, at=now)
    if decision.seen_active:
        await _signal_registry(client, "seenActive", decision.seen_active)
    if gone:
        await _signal_registry(client, "unwatch", gone)
    if told or gone:
        log.info("run watcher: %d awaited, %d active, told %d workflow(s), forgot %d (%d list call(s))",
                 len(awaited), len(active), len(told), len(gone), calls)
    return {"awaited": len(awaited), "listed": True, "calls": calls, "told": told, "forgotten": gone,
            "credit": memory.credit, "refused": refused, "signaled": len(decision.signal)}


_RUNNING = frozenset({df.OrchestrationRuntimeStatus.Pending, df.OrchestrationRuntimeStatus.Running,
                      df.OrchestrationRuntimeStatus.ContinuedAsNew, df.OrchestrationRuntimeStatus.Suspended})


@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False)
@bp.durable_client_input(client_name="client")
@traced_trigger("timer watch_runs")
async def watch_runs(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    if not INTERVAL:
        # No listing, but a notification kept for a run registered since is still told (a minute's
        # tick at most; no Jobs API call).
        awaited = await _read_registry(client)
        await tell_noted(client, awaited, utcnow().timestamp())
        return
    from databricks_jobs.errors import DatabricksJobsError
    from telemetry.metrics import watcher_tick  # on first use: cold start

    try:
        watcher_tick(await watch_once(client, utcnow().timestamp(), INTERVAL))
    except DatabricksJobsError as error:
        # The next tick tries again; meanwhile workflows keep their own safety-net polls.
        watcher_tick(None, failed=True)
        log.warning("run watcher: this tick could not list runs: %s", error)
    except Exception:
        watcher_tick(None, failed=True)
        log.exception("run watcher tick failed")
