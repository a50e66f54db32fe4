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

Which lists (`choose_lists`): a list per awaited job (and one of the workspace's one-time runs), or
one workspace-wide list, whichever is estimated cheaper from what the lists last showed beside the
awaited runs (`Sighting`, forgotten after SIGHTING_TTL_SECONDS so the estimates follow the
workspace as it is now).

When to list: a list call covers up to 25 runs where a workflow's own poll covers one. Each awaited
run earns the watcher what it would have spent polling on its own (`policy.own_check_interval`:
half a call per 15 s tick while it is young, a call per 5 minutes when it is hours old); a round of
lists is made at a tick when the earnings cover its estimated pages (`earn_credit`), and paid for
the calls it made. One run alone is listed exactly on its own schedule; a batch of 25 or more earns
a list every tick; and what a batch earns beyond its lists pays for listing its last few runs every
tick too, so the tail of a batch is noticed as soon as its bulk. Over any period, whatever the mix
of jobs, the watcher makes no more calls than the awaited runs would have made polling on their own.
"""
from __future__ import annotations

import math
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


ONE_TIME_RUN_TYPE = "SUBMIT_RUN"  # runs/list's run_type of a one-time run (runs/submit)


@dataclass(frozen=True)
class ListSource:
    """One list of active runs (runs/list?active_only=true): one job's (`job_id`), the workspace's
    one-time runs (`run_type` SUBMIT_RUN: they have no saved job to list by), or, with neither,
    every active run of the workspace, other teams' included."""

    job_id: Optional[int] = None
    run_type: Optional[str] = None

    @property
    def is_workspace(self) -> bool:
        return self.job_id is None and self.run_type is None

    @property
    def key(self) -> str:
        if self.job_id is not None:
            return f"job:{self.job_id}"
        return "oneTime" if self.run_type else "workspace"

    def params(self) -> Dict[str, Any]:
        """runs/list's filters for this list."""
        if self.job_id is not None:
            return {"job_id": self.job_id}
        return {"run_type": self.run_type} if self.run_type else {}

    def covers(self, entry: Mapping[str, Any]) -> bool:
        """Whether this list shows the awaited run `entry` when it is active."""
        if self.is_workspace:
            return True
        if self.job_id is None:
            return entry.get("jobId") is None
        return entry.get("jobId") is not None and int(entry["jobId"]) == self.job_id


WORKSPACE = ListSource()
ONE_TIME = ListSource(run_type=ONE_TIME_RUN_TYPE)


def pages_for(runs: int) -> int:
    """Calls a list of `runs` active runs takes (an empty list is one call too)."""
    return max(1, math.ceil(runs / RUNS_PER_PAGE))


@dataclass(frozen=True)
class Sighting:
    """What a list last showed beside the awaited runs: `others` active runs the registry does not
    await (other teams', other apps', runs already told), `at` when. An incomplete list (stopped
    with pages left) counts a page more than it saw: a lower bound."""

    others: int
    at: float


# A sighting is trusted this long; then the list it describes is estimated afresh, so a busy
# workspace that has quietened (or a quiet one that got busy) is re-learnt at least this often.
SIGHTING_TTL_SECONDS = 900.0


@dataclass(frozen=True)
class ListChoice:
    """The lists of one round, what they are expected to cost (calls), and what the other way
    would have cost: a workspace list is abandoned once it has cost that much."""

    sources: Tuple[ListSource, ...]
    pages: int
    alternative: int

    @property
    def workspace(self) -> bool:
        return len(self.sources) == 1 and self.sources[0].is_workspace


def fresh(memory: Mapping[str, Sighting], now: float) -> Dict[str, Sighting]:
    """The sightings still trusted at `now` (the others are forgotten: re-learnt when listed)."""
    return {k: v for k, v in memory.items() if now - v.at < SIGHTING_TTL_SECONDS}


def choose_lists(awaited: Mapping[int, dict], memory: Mapping[str, Sighting], now: float) -> ListChoice:
    """The cheaper way to learn which awaited runs are still active: a list per awaited job (and
    one of the workspace's one-time runs, when any is awaited), or one list of the whole
    workspace. Each list is estimated at the awaited runs it covers plus the others it showed when
    last listed (`memory`, trusted for SIGHTING_TTL_SECONDS; none known: none assumed, which the
    first list corrects). Awaited runs are all counted as active, as they may be. The per-job
    lists also bound the workspace's others from below. Ties go to the per-job lists, whose pages
    hold no other jobs' runs."""
    memory = fresh(memory, now)
    counts: Dict[ListSource, int] = {}
    for entry in awaited.values():
        source = ONE_TIME if entry.get("jobId") is None else ListSource(job_id=int(entry["jobId"]))
        counts[source] = counts.get(source, 0) + 1
    per_list = tuple(sorted(counts, key=lambda s: (s.job_id is None, s.job_id or 0)))
    others = {s: memory[s.key].others if s.key in memory else 0 for s in per_list}
    per_list_pages = sum(pages_for(counts[s] + others[s]) for s in per_list)
    workspace_others = max(memory[WORKSPACE.key].others if WORKSPACE.key in memory else 0, sum(others.values()))
    workspace_pages = pages_for(len(awaited) + workspace_others)
    if workspace_pages < per_list_pages:
        return ListChoice((WORKSPACE,), workspace_pages, per_list_pages)
    return ListChoice(per_list, per_list_pages, workspace_pages)


def learn(memory: Dict[str, Sighting], source: ListSource, listed: Iterable[Mapping[str, Any]],
          awaited: Mapping[int, dict], *, complete: bool, now: float) -> None:
    """Remember what a list showed beside the awaited runs (`listed`: runs/list's run objects).
    A complete workspace list also shows every awaited job's others and the one-time runs'."""
    listed = [r for r in listed if int(r["run_id"]) not in awaited]
    memory[source.key] = Sighting(len(listed) + (0 if complete else RUNS_PER_PAGE), now)
    if source.is_workspace and complete:
        jobs = {int(e["jobId"]) for e in awaited.values() if e.get("jobId") is not None}
        by_job: Dict[int, int] = {j: 0 for j in jobs}
        one_time = 0
        for run in listed:
            if run.get("run_type") == ONE_TIME_RUN_TYPE:
                one_time += 1
            elif run.get("job_id") is not None and int(run["job_id"]) in by_job:
                by_job[int(run["job_id"])] += 1
        for job, count in by_job.items():
            memory[ListSource(job_id=job).key] = Sighting(count, now)
        memory[ONE_TIME.key] = Sighting(one_time, now)


def forget_stale(memory: Dict[str, Sighting], now: float) -> None:
    """Drop sightings no longer trusted (the memory stays as small as the jobs lately listed)."""
    for key in [k for k, v in memory.items() if now - v.at >= SIGHTING_TTL_SECONDS]:
        del memory[key]


# Earnings kept beyond this many seconds of listing every tick are dropped: a long-gone batch does
# not pay for hours of listing a later lone run.
CREDIT_HORIZON_SECONDS = 6 * 3600


def earn_credit(credit: float, awaited: Mapping[int, dict], now: float, *, elapsed: float, tick: float,
                pages: int, check_every) -> float:
    """The credit after adding what each awaited run would have spent polling on its own over the
    `elapsed` seconds since the last tick (`check_every(age_seconds)` is its poll interval at that
    age); kept to CREDIT_HORIZON_SECONDS of listing `pages` calls every tick. Nothing awaited: 0."""
    if not awaited:
        return 0.0
    earned = sum(elapsed / check_every(max(0.0, now - float(e.get("since") or now))) for e in awaited.values())
    return min(credit + earned, max(1, pages) * CREDIT_HORIZON_SECONDS / tick)


def list_credit(credit: float, awaited: Mapping[int, dict], now: float, *, elapsed: float, tick: float,
                pages: int, check_every) -> Tuple[bool, float]:
    """(list now?, credit after): `earn_credit`, and a list when the credit covers its `pages`
    calls, paid in advance (the watcher itself pays for the calls it made, after making them)."""
    credit = earn_credit(credit, awaited, now, elapsed=elapsed, tick=tick, pages=pages, check_every=check_every)
    cost = max(1, pages)
    if awaited and credit >= cost:
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
