"""The workspace run watcher: one timer for the whole app notices when awaited runs end.

Every `WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS` the timer reads the registry of awaited runs
(entities/awaited_runs.py) and, when the awaited runs have earned it (workflow.watch.earn_credit:
what they would have spent polling on their own), lists the active runs, the cheaper of two ways
(workflow.watch.choose_lists): one list per awaited job plus one of the workspace's one-time runs,
or one workspace-wide list. A workflow whose run has left the active list gets the same
`runFinished` event the webhook endpoint raises; it confirms with runs/get and fetches the output.
Each list's failure is its own (`_scope`): a transient one waits for the next tick, a refused job
list concerns that job's workflows only, and only a refusal of the watcher itself (401, or 403 on
a workspace-wide list) is told to every workflow, with the error.

Exactly one watcher runs per app: timer triggers are singletons across a scaled-out app (the host
holds a blob lease per timer function). If it stops, workflows still finish through their own sparse
safety-net polls. A second signal (watcher and webhook both) costs the workflow nothing.

Blocking Jobs API calls run in a thread; only Durable client calls run on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
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
    """Per process (the timer runs on one instance at a time): what each list last showed beside
    the awaited runs (workflow.watch.Sighting, by list), the list credit, when the last tick ran.
    A new process starts knowing nothing and with no credit, so it lists no more often than the
    runs' own polls would."""

    sightings: Dict[str, watch.Sighting]
    credit: float = 0.0
    last_tick: Optional[float] = None

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sightings, self.credit, self.last_tick = {}, 0.0, None
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

# A workspace list refused for itself (not for the caller: a 400 or 404) is not tried again while
# this sighting is trusted: the per-job lists serve meanwhile.
_UNUSABLE = 10 ** 9


def check_every(age_seconds: float) -> float:
    """How often one awaited run would be polled on its own at this age."""
    return policy.own_check_interval(age_seconds)


@dataclass
class ListRound:
    """What one round of lists learnt (workflow.watch.ListChoice says which lists)."""

    calls: int = 0  # list calls made, a failed one included
    active: Set[int] = field(default_factory=set)  # run ids seen active, in any list
    decided: Set[int] = field(default_factory=set)  # awaited runs whose list was complete
    failed: Dict[int, str] = field(default_factory=dict)  # awaited run -> why its list was refused
    refused: Optional[str] = None  # Databricks refused the watcher itself (401, workspace 403)
    interrupted: Optional[str] = None  # a list failed transiently: the rest wait for the next tick
    unfinished: List[str] = field(default_factory=list)  # lists stopped before their end


def _scope(error: Exception, source: watch.ListSource) -> str:
    """Whom a failed list concerns: "transient" (try at a later tick), "workspace" (the watcher
    itself is refused: a 401, a 403 on a workspace-wide list, a credential or setting that must
    change) or "list" (this list only: a 400/404/403 for one job, e.g. a deleted job)."""
    from databricks_jobs.errors import DatabricksApiError, is_transient

    if is_transient(error):
        return "transient"
    if isinstance(error, DatabricksApiError):
        if error.status == 401 or (error.status == 403 and source.job_id is None):
            return "workspace"
        return "list"
    return "workspace"  # ConfigurationError, CredentialError: nothing can be listed


def _list_round(choice: watch.ListChoice, awaited: Dict[int, dict], budget: int, now: float) -> ListRound:
    """Make the chosen lists, page by page, never more than `budget` calls (the credit); a
    workspace list stops once it has cost what the per-job lists would have. Each list's outcome
    is its own: see `_scope`. Only the client's typed errors are caught: anything else is a bug,
    and the tick fails with it."""
    from databricks_jobs.client import get_jobs_client  # lazy: keeps requests out of the cold start
    from databricks_jobs.errors import DatabricksJobsError

    client = get_jobs_client()
    out = ListRound()
    for source in choice.sources:
        cap = min(budget, choice.alternative) if source.is_workspace else budget
        covered = {run_id for run_id, entry in awaited.items() if source.covers(entry)}
        listed: List[dict] = []
        token: Optional[str] = None
        seen_tokens: Set[str] = set()
        complete = False
        try:
            while out.calls < cap:
                out.calls += 1  # counted before the call: a failed call was made too
                runs, token = client.list_runs_page(active_only=True, page_token=token, **source.params())
                listed.extend(runs)
                if token is None or token in seen_tokens:
                    complete = True
                    break
                seen_tokens.add(token)
        except DatabricksJobsError as error:
            scope = _scope(error, source)
            if scope == "transient":
                out.interrupted = str(error)
                log.warning("run watcher: listing %s failed for now (%s); the next tick lists again", source.key, error)
                break
            if scope == "workspace":
                out.refused = str(error)
                break
            if source.is_workspace:
                memory.sightings[source.key] = watch.Sighting(_UNUSABLE, now)
                log.warning("run watcher: the workspace-wide list was refused (%s); listing per job", error)
                break
            # A deleted job (400), a job this app may no longer see (403): its workflows find out
            # on their own runs/get; the other jobs' lists go on.
            log.warning("run watcher: listing %s was refused (%s); telling its %d workflow(s)",
                        source.key, error, len(covered))
            out.failed.update((run_id, str(error)) for run_id in covered)
            continue
        out.active.update(int(r["run_id"]) for r in listed)
        watch.learn(memory.sightings, source, listed, awaited, complete=complete, now=now)
        if not complete:
            out.unfinished.append(source.key)
            break  # the credit is spent (or the workspace list costs more than per-job lists)
        out.decided |= covered
    return out


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
    watch.forget_stale(memory.sightings, now)
    if not awaited:
        memory.credit = 0.0
        return {"awaited": 0, "listed": False}
    choice = watch.choose_lists(awaited, memory.sightings, now)
    memory.credit = watch.earn_credit(memory.credit, awaited, now, elapsed=elapsed, tick=tick, pages=choice.pages,
                                      check_every=check_every)
    if memory.credit < choice.pages:
        return {"awaited": len(awaited), "listed": False, "credit": memory.credit, "pages": choice.pages}
    lists = await asyncio.to_thread(_list_round, choice, awaited, int(memory.credit), now)
    # Paid after the fact, for the calls made: a list that failed before its end costs only what it made.
    memory.credit = max(0.0, memory.credit - lists.calls)
    errors: Dict[int, str] = dict(lists.failed)
    if lists.refused is not None:
        # Databricks refuses the watcher for good (a revoked credential, a permission change): tell
        # every workflow now, so each sees the refusal on its own runs/get and fails at once with it,
        # instead of at its next sparse safety-net poll.
        log.warning("run watcher: Databricks refused to list runs (%s); telling every awaited workflow",
                    lists.refused)
        subject, active = awaited, set()
        errors = {run_id: lists.refused for run_id in awaited}
    else:
        known = lists.decided | set(lists.failed) | (lists.active & awaited.keys())
        subject, active = {r: awaited[r] for r in known}, lists.active
    decision = watch.decide(subject, active, now, check_every=check_every)
    memory.seen.update((run_id, now) for run_id in subject if run_id in active)
    told, gone = [], []
    for run_id, instance_id in decision.signal:
        event = {"runId": run_id, "source": "watcher"}
        if run_id in errors:
            event["listError"] = errors[run_id]  # what the watcher met; the workflow's runs/get decides
        try:
            await client.raise_event(instance_id, RUN_FINISHED_EVENT, event)
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
        log.info("run watcher: %d awaited, %d active, told %d workflow(s), forgot %d (%d list call(s), %s)",
                 len(awaited), len(active), len(told), len(gone), lists.calls,
                 "workspace-wide" if choice.workspace else f"{len(choice.sources)} list(s)")
    return {"awaited": len(awaited), "listed": True, "calls": lists.calls, "told": told, "forgotten": gone,
            "credit": memory.credit, "refused": lists.refused, "interrupted": lists.interrupted,
            "workspace": choice.workspace, "pages": choice.pages, "unfinished": lists.unfinished,
            "failedLists": sorted({e for e in lists.failed.values()}), "signaled": len(decision.signal)}


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
    from telemetry.metrics import watcher_tick  # on first use: cold start

    try:
        watcher_tick(await watch_once(client, utcnow().timestamp(), INTERVAL))
    except Exception:
        # List failures are handled per list inside the tick; anything here is unexpected (the
        # Durable client, a bug). Nobody is told anything: workflows keep their safety-net polls.
        watcher_tick(None, failed=True)
        log.exception("run watcher tick failed")
