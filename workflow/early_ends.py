"""Run-end notifications that arrive before their run is registered, kept until it is.

A workflow registers its run with a signal to the registry of awaited runs (workflow.watch), and
the Durable extension delivers that signal only after the workflow's episode is saved and the
entity's control queue is polled: seconds, sometimes tens of seconds. A short run can end, and
Databricks can notify the app, before then. Databricks documents no retry of a notification, so
one answered "no workflow waits for this run" would be lost and the workflow would wait for its
sparse safety-net poll.

So the webhook endpoint signals `noteEnd` for a run it cannot map, and the registry shard keeps the
notification under `pendingEnds`. When the run's `watch` arrives, the entry takes the notification
along (`endedAt`, `endEvent`), and the run watcher's next tick tells the workflow (`noted`) with
no Jobs API call. A `noteEnd` for a run already registered (the endpoint's read of the registry
was older than the registration) marks the entry at once.

Bounded: a notification that no run claims within PENDING_TTL_SECONDS is dropped (it belonged to
a manual run of the job, or a workflow that no longer exists), and a shard keeps at most
PENDING_MAX_PER_SHARD, the oldest dropped first.

Pure (no Azure imports, no I/O, no clock): times come in the operations' inputs.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from workflow import watch

PENDING_KEY = "pendingEnds"
# Registration follows run-now by one signal's latency; an hour covers a host under heavy load.
PENDING_TTL_SECONDS = 3600.0
# About 90 bytes each: at most ~18 KB of a shard's state (the whole state is rewritten per batch).
PENDING_MAX_PER_SHARD = 200
NOTE_END = "noteEnd"
END_TOLD = "endTold"


def apply(state: Optional[Mapping[str, Any]], operation: str, data: Any) -> dict:
    """The registry shard's state after one operation: watch.apply's, plus the notifications kept
    for runs not registered yet (idempotent, like every registry operation)."""
    data = data or {}
    pending: Dict[str, dict] = {k: dict(v) for k, v in ((state or {}).get(PENDING_KEY) or {}).items()}
    if operation == NOTE_END:
        new = {"runs": {k: dict(v) for k, v in ((state or {}).get("runs") or {}).items()}}
        key = str(int(data["runId"]))
        note = {"jobId": data.get("jobId"), "eventType": data.get("eventType"), "at": float(data["at"])}
        if key in new["runs"]:
            _mark(new["runs"][key], note)
        else:
            earlier = pending.get(key)
            pending[key] = note if earlier is None or earlier["at"] > note["at"] else earlier
        now: Optional[float] = note["at"]
    elif operation == END_TOLD:
        # The watcher told these workflows: the notification is spent, and it counts as a signal.
        new = watch.apply(state, "signaled", data)
        for key in watch_ids(data):
            if key in new["runs"]:
                new["runs"][key].pop("endedAt", None)
                new["runs"][key].pop("endEvent", None)
        now = None
    else:
        new = watch.apply(state, operation, data)
        now = None  # pruning reads only the endpoint's own clock (the `at` of noteEnd)
        if operation == "watch":
            key = str(int(data["runId"]))
            note = pending.pop(key, None)
            if note is not None:
                _mark(new["runs"][key], note)
    pending = _bounded(pending, now)
    if pending:
        new[PENDING_KEY] = pending
    return new


def watch_ids(data: Mapping[str, Any]) -> List[str]:
    ids = data.get("runIds")
    if ids is None and "runId" in data:
        ids = [data["runId"]]
    return [str(int(i)) for i in ids or ()]


def _mark(entry: dict, note: Mapping[str, Any]) -> None:
    if entry.get("endedAt") is None or float(entry["endedAt"]) > note["at"]:
        entry["endedAt"] = note["at"]
        entry["endEvent"] = note.get("eventType")


def _bounded(pending: Dict[str, dict], now: Optional[float]) -> Dict[str, dict]:
    if now is not None:
        pending = {k: v for k, v in pending.items() if now - float(v["at"]) <= PENDING_TTL_SECONDS}
    if len(pending) > PENDING_MAX_PER_SHARD:
        newest = sorted(pending.items(), key=lambda kv: float(kv[1]["at"]))[-PENDING_MAX_PER_SHARD:]
        pending = dict(newest)
    return pending


def noted(awaited: Mapping[int, dict]) -> List[Tuple[int, str]]:
    """(run id, instance id) of registered runs whose end was notified and not yet told."""
    return [(run_id, entry["instanceId"]) for run_id, entry in sorted(awaited.items())
            if entry.get("endEvent") is not None or entry.get("endedAt") is not None]
