"""The workspace run watcher's policy: the registry of awaited runs, and when to list.

Pure (no Azure imports, no I/O, no clock): the entity, the timer trigger and the webhook endpoint
pass everything in.

The registry is a Durable entity, sharded by run id (`shard_of`) so that no one state grows large
and the webhook endpoint reads one shard to map a run to its workflow. Each shard's state is
`{"runs": {"<runId>": {"instanceId", "jobId", "since", "signaledAt"}}}` (times in epoch seconds).
Workflows signal `watch` once their run exists and `unwatch` when they end; the watcher signals
`signaled` for runs it told their workflow about and `seenActive` for runs that came back.

The watcher lists active runs (QUEUED, PENDING, RUNNING, TERMINATING) and tells a workflow whose
run has left that list (`runFinished`); the workflow confirms with runs/get. A run that left the
list without ending (BLOCKED, WAITING_FOR_RETRY) is told once, then again when it has been back in
the list, or after as long as its own poll would have waited at its age (`decide`).

When to list: a list call covers up to 25 runs where a workflow's own poll covers one. Each awaited
run earns the watcher what it would have spent polling on its own (`policy.own_check_interval`:
half a call per 15 s tick while it is young, a call per 5 minutes when it is hours old); a list is
made at a tick when the earnings cover its pages (`list_credit`). One run alone is listed exactly on
its own schedule; a batch of 25 or more earns a list every tick; and what a batch earns beyond its
lists pays for listing its last few runs every tick too, so the tail of a batch is noticed as soon
as its bulk. Over any period the watcher makes no more calls than the awaited runs would have made
polling on their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

REGISTRY_ENTITY = "awaitedRuns"
# Few shards: the watcher reads them all every tick; at 1,000 awaited runs each holds about 250.
SHARDS = 4
RUNS_PER_PAGE = 25  # jobs/runs/list answers at most 25 runs per call


def shard_of(run_id: int) -> str:
    return str(int(run_id) % SHARDS)


def empty_state() -> dict:
    return {"runs": {}}


def apply(state: Optional[Mapping[str, Any]], operation: str, data: Any) -> dict:
    """The registry shard's state after one operation (idempotent: signals arrive at least once)."""
    runs: Dict[str, dict] = {k: dict(v) for k, v in ((state or {}).get("runs") or {}).items()}
    data = data or {}
    if operation == "watch":
        key = str(int(data["runId"]))
        entry = runs.get(key) or {"signaledAt": None}
        entry.update(instanceId=data["instanceId"], jobId=data.get("jobId"), since=data.get("since"))
        runs[key] = entry
    elif operation == "unwatch":
        for run_id in _ids(data):
            runs.pop(run_id, None)
    elif operation == "signaled":
        for run_id in _ids(data):
            if run_id in runs:
                runs[run_id]["signaledAt"] = data.get("at")
    elif operation == "seenActive":
        for run_id in _ids(data):
            if run_id in runs:
                runs[run_id]["signaledAt"] = None
    else:
        raise ValueError(f"unknown registry operation {operation!r}")
    return {"runs": runs}


def _ids(data: Mapping[str, Any]) -> List[str]:
    ids = data.get("runIds")
    if ids is None and "runId" in data:
        ids = [data["runId"]]
    return [str(int(i)) for i in ids or ()]


def merged(states: Iterable[Optional[Mapping[str, Any]]]) -> Dict[int, dict]:
    """Every awaited run across the shards: run id -> entry."""
    out: Dict[int, dict] = {}
    for state in states:
        for key, entry in ((state or {}).get("runs") or {}).items():
            out[int(key)] = dict(entry)
    return out


@dataclass(frozen=True)
class ListPlan:
    """What one list round covers: the jobs whose active runs are listed one job at a time, and
    whether one-time runs (no job) need the workspace-wide list."""

    job_ids: Tuple[int, ...]
    one_time_runs: bool

    @property
    def calls_at_least(self) -> int:
        return len(self.job_ids) + (1 if self.one_time_runs else 0)


def list_plan(awaited: Mapping[int, dict]) -> ListPlan:
    """Runs of saved jobs are listed per job (`job_id=` keeps other teams' runs out of the pages);
    one-time runs, which have no job, by run type across the workspace."""
    jobs = sorted({int(e["jobId"]) for e in awaited.values() if e.get("jobId") is not None})
    return ListPlan(tuple(jobs), any(e.get("jobId") is None for e in awaited.values()))


# Earnings kept beyond this many seconds of listing every tick are dropped: a long-gone batch does
# not pay for hours of listing a later lone run.
CREDIT_HORIZON_SECONDS = 6 * 3600


def list_credit(credit: float, awaited: Mapping[int, dict], now: float, *, elapsed: float, tick: float,
                pages: int, check_every) -> Tuple[bool, float]:
    """(list now?, credit after): add what each awaited run would have spent polling on its own
    over the `elapsed` seconds since the last tick (`check_every(age_seconds)` is its poll interval
    at that age), and list when the credit covers the list's `pages` calls."""
    if not awaited:
        return False, 0.0
    earned = sum(elapsed / check_every(max(0.0, now - float(e.get("since") or now))) for e in awaited.values())
    cost = max(1, pages)
    credit = min(credit + earned, cost * CREDIT_HORIZON_SECONDS / tick)
    if credit >= cost:
        return True, credit - cost
    return False, credit


@dataclass
class Decision:
    signal: List[Tuple[int, str]] = field(default_factory=list)  # (run id, instance id) to tell
    seen_active: List[int] = field(default_factory=list)  # signalled runs that are active again


def decide(awaited: Mapping[int, dict], active: Set[int], now: float, *, check_every) -> Decision:
    """Which workflows to tell that their run left the active list. A run told before that has not
    been seen active since (it left the list without ending, or a retry came and went between two
    lists) is told again after its own poll interval at its age: never more often than it would
    have polled on its own."""
    decision = Decision()
    for run_id, entry in sorted(awaited.items()):
        signaled = entry.get("signaledAt")
        if run_id in active:
            if signaled is not None:
                decision.seen_active.append(run_id)
        elif signaled is None or \
                now - float(signaled) >= check_every(max(0.0, now - float(entry.get("since") or now))):
            decision.signal.append((run_id, entry["instanceId"]))
    return decision
