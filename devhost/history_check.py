"""Replay the current orchestrator code over RECORDED histories (DEVELOPMENT TOOL).

Keep the histories of real runs as test fixtures (``json.dump(host.executions(id), f)``) and check
them after every change to the orchestrator: a change that would break instances in flight when it
is deployed fails the check, the way the extension would fail those instances.

For each recorded execution the orchestrator runs ONCE over the whole history (what the
extension sends after a redeploy), and its actions are replayed against the history as the
extension's out-of-process shim and DTFx do (``devhost.extension``): actions are handed to DTFx
one top-level action at a time, each gets the next sequence id, and every TaskScheduled,
TimerCreated and EventSent event of the history must meet an action with its sequence id, of the
same kind and (for activities) the same name, compared case-insensitively
(DTFx TaskOrchestrationContext.HandleTaskScheduledEvent / HandleTimerCreatedEvent /
HandleEventSentEvent). Those findings carry ``source="extension"`` and the message DTFx would
fail the instance with.

devhost is stricter on top (``source="devhost"``): the activity input and the timer's fire time
must also equal the recorded ones (DTFx compares neither, so a changed input silently diverges
from what already ran), and an orchestrator that now raises where the recorded run did not is
reported.

    from devhost.history_check import check_history
    result = check_history(app, json.loads(Path("tests/fixtures/run.json").read_text()))
    assert result.ok, result.report()

``python -m devhost.history_check module:app history.json`` prints the report (exit 1 on problems).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union


from . import extension as ext
from .functions import index_functions
from .replay import (CONTINUE_AS_NEW, EVENT_RAISED, EVENT_SENT, EXECUTION_STARTED,
                     TASK_COMPLETED, TASK_FAILED, TASK_SCHEDULED, TIMER_CREATED, TIMER_FIRED,
                     parse_timestamp, run_orchestrator)

SCHEDULING_EVENTS = (TASK_SCHEDULED, TIMER_CREATED, EVENT_SENT)


@dataclass
class Divergence:
    execution: int            # index of the execution in the recording
    sequence_id: Optional[int]
    source: str               # "extension" (Azure would fail the instance) or "devhost" (stricter)
    message: str

    def __str__(self) -> str:
        where = f"execution {self.execution}" + (
            f", sequence id {self.sequence_id}" if self.sequence_id is not None else "")
        return f"[{self.source}] {where}: {self.message}"


@dataclass
class HistoryCheck:
    divergences: List[Divergence] = field(default_factory=list)
    executions_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.divergences

    def report(self) -> str:
        if self.ok:
            return f"{self.executions_checked} recorded execution(s) replay without divergence"
        return "\n".join(str(d) for d in self.divergences)


def _executions(recorded: Union[str, Path, Sequence[Any]]) -> List[List[Dict[str, Any]]]:
    if isinstance(recorded, (str, Path)):
        recorded = json.loads(Path(recorded).read_text("utf-8"))
    items = list(recorded)
    if items and isinstance(items[0], dict) and "EventType" in items[0]:
        return [items]  # one bare history
    return [list(e["history"]) if isinstance(e, dict) else list(e) for e in items]


def check_history(app, recorded: Union[str, Path, Sequence[Any]], *,
                  long_timer_fields: bool = True) -> HistoryCheck:
    """Replay ``app``'s orchestrator over each recorded execution; see the module docstring.

    ``recorded``: what ``ReplayHost.executions(id)`` returns (or a path to it saved as JSON), or
    one bare history list."""
    functions = index_functions(app)
    result = HistoryCheck()
    for number, history in enumerate(_executions(recorded)):
        result.executions_checked += 1
        result.divergences.extend(_check_execution(functions, number, history, long_timer_fields))
    return result


def _invoke(functions, history: List[Dict[str, Any]], long_timer_fields: bool):
    started = next(e for e in history if e["EventType"] == EXECUTION_STARTED)
    name = started.get("Name")
    info = functions.get(name)
    if info is None or info.trigger_type != "orchestrationTrigger":
        return None, f"no orchestrator named '{name}' in the current app"
    stored = started.get("Input")
    try:
        input_token = json.loads(stored) if stored is not None else None
    except ValueError:
        input_token = stored
    ctx = {"history": history, "input": input_token,
           "instanceId": (started.get("OrchestrationInstance") or {}).get("InstanceId", "check"),
           "isReplaying": False, "parentInstanceId": None,
           "upperSchemaVersion": 1, "upperSchemaVersionNew": 2,
           "defaultHttpAsyncRequestSleepTimeMillseconds": 30000}
    if long_timer_fields:
        ctx["longRunningTimerIntervalDuration"] = "3.00:00:00"
        ctx["maximumShortTimerDuration"] = "6.00:00:00"
    return run_orchestrator(info, json.dumps(ctx))


def _check_execution(functions, number: int, history: List[Dict[str, Any]],
                     long_timer_fields: bool) -> List[Divergence]:
    found: List[Divergence] = []
    state, error = _invoke(functions, history, long_timer_fields)
    recorded_failure = any(e["EventType"] == 1 and e.get("OrchestrationStatus") == "Failed"
                           for e in history)
    if state is None:
        return [Divergence(number, None, "devhost", f"the orchestrator cannot replay: {error}")]
    if error is not None and not recorded_failure:
        found.append(Divergence(number, None, "devhost",
                                f"the orchestrator now raises on replay: {error}"))
    top = (state.get("actions") or [[]])[0] if state.get("actions") else []
    replay = _ShimReplay(top)
    for event in history:
        kind = event.get("EventType")
        if kind in SCHEDULING_EVENTS:
            problem = replay.check_scheduled(event)
            if problem is not None:
                source, message = problem
                found.append(Divergence(number, event.get("EventId"), source, message))
                if source == "extension":
                    return found  # DTFx fails the instance at the first one
        elif kind == CONTINUE_AS_NEW:
            continue
        else:
            replay.apply(event)
    return found


class _ShimReplay:
    """The extension's replay of one action list, with DTFx's sequence numbering."""

    def __init__(self, top: List[Dict[str, Any]]) -> None:
        self.top = top
        self.flat = [leaf for action in top for leaf in ext.leaves(action)]
        self.spans = []
        index = 0
        for action in top:
            count = len(ext.leaves(action))
            self.spans.append((action, list(range(index, index + count))))
            index += count
        self.next_id = 0
        self.produced: Dict[int, Dict[str, Any]] = {}   # sequence id -> what the code produced
        self.leaf_of: Dict[int, int] = {}               # sequence id -> leaf index
        self.done: Dict[int, bool] = {}
        self.retries: Dict[int, Dict[str, Any]] = {}    # leaf -> {"attempt", "max", "final"}
        self.waiters: Dict[str, List[int]] = {}
        self.buffered: Dict[str, int] = {}
        self.position = 0
        self.invoked = 0
        self._advance()

    # -- producing actions (EXT OutOfProcOrchestrationShim.InvokeAPIFromAction)

    def _take_id(self, leaf: Optional[int], produced: Dict[str, Any]) -> int:
        sid = self.next_id
        self.next_id += 1
        self.produced[sid] = produced
        if leaf is not None:
            self.leaf_of[sid] = leaf
        return sid

    def _invoke(self, leaf: int) -> None:
        action = self.flat[leaf]
        kind = action.get("actionType")
        if kind in (ext.CALL_ACTIVITY, ext.CALL_ACTIVITY_WITH_RETRY):
            self._take_id(leaf, {"kind": TASK_SCHEDULED, "name": action.get("functionName"),
                                 "input": action.get("input")})
            if kind == ext.CALL_ACTIVITY_WITH_RETRY:
                options = action.get("retryOptions") or {}
                self.retries[leaf] = {"attempt": 1, "final": None,
                                      "max": int(options.get("maxNumberOfAttempts", 1)),
                                      "name": action.get("functionName"),
                                      "input": action.get("input")}
            self.done[leaf] = False
        elif kind == ext.CREATE_TIMER:
            self._take_id(leaf, {"kind": TIMER_CREATED, "fireAt": action.get("fireAt")})
            self.done[leaf] = bool(action.get("isCanceled"))
        elif kind in (ext.SIGNAL_ENTITY, ext.SCHEDULED_SIGNAL_ENTITY):
            self._take_id(leaf, {"kind": EVENT_SENT, "instanceId": action.get("instanceId"),
                                 "operation": action.get("operation")})
            self.done[leaf] = True
        elif kind == ext.WAIT_FOR_EXTERNAL_EVENT:
            name = str(action.get("externalEventName") or "").lower()
            if self.buffered.get(name):
                self.buffered[name] -= 1
                self.done[leaf] = True
            else:
                self.waiters.setdefault(name, []).append(leaf)
                self.done[leaf] = False
        elif kind == ext.CONTINUE_AS_NEW_ACTION:
            self.done[leaf] = True
        else:  # sub-orchestrations, entity calls, HTTP: a sequence id each
            self._take_id(leaf, {"kind": kind, "name": action.get("functionName")})
            self.done[leaf] = False

    def _completed(self, action: Dict[str, Any], first: int) -> bool:
        kind = action.get("actionType")
        if kind in (ext.WHEN_ANY, ext.WHEN_ALL):
            results, offset = [], first
            for child in action.get("compoundActions") or []:
                results.append(self._completed(child, offset))
                offset += len(ext.leaves(child))
            return any(results) if kind == ext.WHEN_ANY else all(results)
        return self.done.get(first, False)

    def _advance(self) -> None:
        while self.position < len(self.spans):
            action, span = self.spans[self.position]
            if span and span[0] >= self.invoked:
                for leaf in span:
                    self._invoke(leaf)
                self.invoked = span[-1] + 1
            if not self._completed(action, span[0] if span else self.invoked):
                return
            self.position += 1

    # -- history events

    def check_scheduled(self, event: Dict[str, Any]):
        sid, kind = event.get("EventId"), event.get("EventType")
        produced = self.produced.get(sid)
        if produced is None:
            return "extension", ext.nondeterminism_message(ext.unscheduled_message(event))
        if produced["kind"] != kind:
            return "extension", ext.nondeterminism_message(
                ext.mismatch_message(event, produced["kind"], produced.get("name")))
        if kind == TASK_SCHEDULED:
            if str(produced["name"]).lower() != str(event.get("Name")).lower():
                return "extension", ext.nondeterminism_message(
                    ext.mismatch_message(event, TASK_SCHEDULED, produced["name"]))
            if produced.get("input") != event.get("Input"):
                return "devhost", (f"activity '{event.get('Name')}' was scheduled with input "
                                   f"{event.get('Input')!r}; the current code passes "
                                   f"{produced.get('input')!r}")
        if kind == TIMER_CREATED and produced.get("fireAt") is not None:
            if parse_timestamp(produced["fireAt"]) != parse_timestamp(event.get("FireAt")):
                return "devhost", (f"timer was created for {event.get('FireAt')}; the current "
                                   f"code asks for {produced['fireAt']}")
        if kind == EVENT_SENT and produced.get("instanceId") != event.get("InstanceId"):
            return "devhost", (f"signal went to {event.get('InstanceId')!r}; the current code "
                               f"signals {produced.get('instanceId')!r}")
        return None

    def apply(self, event: Dict[str, Any]) -> None:
        kind = event.get("EventType")
        if kind in (TASK_COMPLETED, TASK_FAILED):
            leaf = self.leaf_of.get(event.get("TaskScheduledId"))
            if leaf is None:
                return
            retry = self.retries.get(leaf)
            if kind == TASK_COMPLETED or retry is None:
                self.done[leaf] = True
            else:  # DTFx RetryInterceptor: a timer after each failed attempt
                sid = self._take_id(leaf, {"kind": TIMER_CREATED, "fireAt": None})
                if retry["attempt"] >= retry["max"]:
                    retry["final"] = sid
        elif kind == TIMER_FIRED:
            sid = event.get("TimerId")
            leaf = self.leaf_of.get(sid)
            if leaf is None:
                return
            retry = self.retries.get(leaf)
            if retry is None or retry["final"] == sid:
                self.done[leaf] = True
            else:  # a retry timer: the next attempt gets the next sequence id
                retry["attempt"] += 1
                self._take_id(leaf, {"kind": TASK_SCHEDULED, "name": retry["name"],
                                     "input": retry["input"]})
        elif kind == EVENT_RAISED:
            name = str(event.get("Name") or "").lower()
            stack = self.waiters.get(name)
            if stack:
                self.done[stack.pop()] = True
            else:
                self.buffered[name] = self.buffered.get(name, 0) + 1
        else:
            return
        self._advance()


def main(argv: Optional[Iterable[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m devhost.history_check module:app history.json [...]",
              file=sys.stderr)
        return 2
    from .serve import load_app
    app = load_app(args[0])
    failed = False
    for path in args[1:]:
        result = check_history(app, path)
        print(f"{path}: {result.report()}")
        failed = failed or not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
