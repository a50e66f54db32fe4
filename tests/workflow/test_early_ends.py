"""Run-end notifications kept for runs not registered yet (workflow.early_ends), and the run
watcher's memory of its own recent signals, which a stale registry read may not show yet."""
import asyncio

import azure.durable_functions as df

from workflow import early_ends, watch

RUN, OTHER = 790000000000001, 790000000000002


def note(run=RUN, at=100.0, event="jobs.on_success"):
    return {"runId": run, "jobId": 7, "eventType": event, "at": at}


def watch_op(run=RUN, instance="wf-1", since=90.0):
    return {"runId": run, "instanceId": instance, "jobId": 7, "since": since}


def test_a_notification_before_the_registration_waits_for_it():
    state = early_ends.apply(None, "noteEnd", note())
    assert state["runs"] == {} and str(RUN) in state[early_ends.PENDING_KEY]
    state = early_ends.apply(state, "watch", watch_op())
    entry = state["runs"][str(RUN)]
    assert entry["endedAt"] == 100.0 and entry["endEvent"] == "jobs.on_success"
    assert early_ends.PENDING_KEY not in state
    assert early_ends.noted(watch.merged([state])) == [(RUN, "wf-1")]
    # Told: spent, and counted as a signal (the watcher does not tell again at once).
    state = early_ends.apply(state, "endTold", {"runIds": [RUN], "at": 130.0})
    assert early_ends.noted(watch.merged([state])) == []
    assert state["runs"][str(RUN)]["signaledAt"] == 130.0


def test_a_notification_for_a_registered_run_marks_it_at_once():
    # The endpoint's read of the registry was older than the registration.
    state = early_ends.apply(None, "watch", watch_op())
    state = early_ends.apply(state, "noteEnd", note())
    assert early_ends.noted(watch.merged([state])) == [(RUN, "wf-1")]


def test_repeated_deliveries_keep_the_first_and_other_operations_keep_what_waits():
    state = early_ends.apply(None, "noteEnd", note(at=100.0))
    state = early_ends.apply(state, "noteEnd", note(at=105.0, event="jobs.on_failure"))
    assert state[early_ends.PENDING_KEY][str(RUN)]["at"] == 100.0
    state = early_ends.apply(state, "watch", watch_op(run=OTHER))
    state = early_ends.apply(state, "unwatch", {"runId": OTHER})
    assert str(RUN) in state[early_ends.PENDING_KEY]


def test_kept_notifications_are_bounded_in_time_and_number():
    state = early_ends.apply(None, "noteEnd", note(run=1, at=0.0))
    state = early_ends.apply(state, "noteEnd", note(run=2, at=early_ends.PENDING_TTL_SECONDS + 1))
    assert list(state[early_ends.PENDING_KEY]) == ["2"]  # the first one expired
    for i in range(early_ends.PENDING_MAX_PER_SHARD + 50):
        state = early_ends.apply(state, "noteEnd", note(run=1000 + i, at=5000.0 + i))
    kept = state[early_ends.PENDING_KEY]
    assert len(kept) == early_ends.PENDING_MAX_PER_SHARD and str(1000) not in kept  # oldest dropped


# ---------------------------------------------------------------- the watcher's memory

class _StaleClient:
    """A Durable client whose registry reads never show the watcher's own signals (they are still
    on their way), and whose runs are never active."""

    def __init__(self, registry):
        self.registry, self.events, self.signals = registry, [], []

    async def read_entity_state(self, entity_id):
        from types import SimpleNamespace
        state = self.registry if entity_id.key == watch.shard_of(RUN) else None
        return SimpleNamespace(entity_exists=state is not None, entity_state=state)

    async def signal_entity(self, entity_id, operation, data=None):
        self.signals.append(operation)

    async def raise_event(self, instance_id, name, data=None):
        self.events.append((instance_id, data))

    async def get_status(self, instance_id):
        from types import SimpleNamespace
        return SimpleNamespace(runtime_status=df.OrchestrationRuntimeStatus.Running)


def _lists_show(monkeypatch, active):
    """Every tick lists (a busy watcher with credit to spare), in one call that sees `active()`."""
    from triggers import run_watcher

    monkeypatch.setattr(run_watcher, "_list_round", lambda choice, awaited, budget, now: run_watcher.ListRound(
        calls=1, active=set(active()), decided=set(awaited)))
    monkeypatch.setattr(run_watcher.watch, "earn_credit", lambda credit, *a, **k: 100.0)


def test_a_stale_registry_read_does_not_make_the_watcher_tell_a_workflow_twice(monkeypatch):
    from triggers import run_watcher

    registry = early_ends.apply(None, "watch", watch_op(since=1.0))
    client = _StaleClient(registry)
    _lists_show(monkeypatch, lambda: set())
    run_watcher.memory.reset()
    told = []
    for tick in range(1, 5):  # four ticks 15 s apart; the run left the active list (BLOCKED)
        result = asyncio.run(run_watcher.watch_once(client, 1200.0 + 15 * tick, 15))
        told += result.get("told", [])
    # Told once: the registry still says "never told", but this process remembers it did, and a
    # run out of the list is told again only after its own poll interval (policy.own_check_interval).
    assert told == [RUN] and len(client.events) == 1
    run_watcher.memory.reset()


def test_a_stale_read_does_not_hide_a_run_seen_active_again(monkeypatch):
    from triggers import run_watcher

    registry = early_ends.apply(None, "watch", watch_op(since=1.0))
    client = _StaleClient(registry)
    active = {"now": set()}
    _lists_show(monkeypatch, lambda: active["now"])
    run_watcher.memory.reset()
    asyncio.run(run_watcher.watch_once(client, 615.0, 15))       # out of the list: told
    active["now"] = {RUN}
    asyncio.run(run_watcher.watch_once(client, 630.0, 15))       # back in it (a retry)
    active["now"] = set()
    asyncio.run(run_watcher.watch_once(client, 645.0, 15))       # ended: told again at once
    assert len(client.events) == 2
    run_watcher.memory.reset()
