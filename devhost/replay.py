"""In-process replay host for Durable Functions orchestrations (DEVELOPMENT TOOL).

Production runs on the Durable Task extension in Azure Functions. This module is a local stand-in
that drives the REAL azure-functions-durable 1.x replay engine: each episode it synthesizes the
orchestration history the extension would send (OrchestratorStarted, ExecutionStarted,
TaskScheduled/TaskCompleted/TaskFailed, TimerCreated/TimerFired, EventRaised, ...), calls the
app's registered orchestrator function with it, and turns the returned actions into new history.
Activities run in-process through the app's registered activity functions.

Two ways to drive it:

* foreground, usually with a ``VirtualClock``: ``run_until_idle()`` / ``run_until_complete()``
  process activities and due events and advance the clock to the next timer, so a 24-hour
  orchestration takes milliseconds;
* background (``start()``/``stop()``): a worker thread processes work and sleeps on the clock
  until the next timer, woken early by ``start_new``/``raise_event``/``terminate``.

Beyond the real runtime it checks determinism on every replay: the actions an orchestrator emits
for past episodes must equal the ones it emitted before, or the instance fails with
``NonDeterminismError``.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Deque, Dict, List, Optional, Tuple

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter
from azure.durable_functions.models.utils.df_serialization import df_dumps

from .clock import RealClock, VirtualClock, to_epoch
from .functions import FunctionInfo, call_maybe_async, index_functions

log = logging.getLogger("devhost.replay")

# HistoryEventType numbers (azure.durable_functions.models.history.HistoryEventType).
EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
TIMER_CREATED, TIMER_FIRED = 10, 11
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 12, 13
EVENT_RAISED, CONTINUE_AS_NEW = 15, 16

# ActionType numbers (azure.durable_functions.models.actions.ActionType).
CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY = 0, 1
CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY = 2, 3
CONTINUE_AS_NEW_ACTION, CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT = 4, 5, 6
CALL_ENTITY, CALL_HTTP, SIGNAL_ENTITY = 7, 8, 9
WHEN_ANY, WHEN_ALL = 11, 12

RUNNING_STATES = frozenset({"Pending", "Running", "ContinuedAsNew"})
TERMINAL_STATES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
FIRE_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class DevhostError(Exception):
    """Base class of the errors the replay host reports."""


class NonDeterminismError(DevhostError):
    """A replay emitted different actions for past episodes than the original run did."""


class InstanceNotFoundError(DevhostError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InstanceGoneError(DevhostError):
    """The instance already completed, failed or was terminated (the extension's 410 Gone)."""


class InstanceAlreadyExistsError(DevhostError):
    """Starting an id whose instance is still Pending/Running (the extension's 409 Conflict)."""


class FunctionNotFoundError(DevhostError, ValueError):
    """No orchestrator with that name (the extension's 400 Bad Request)."""


class OrchestrationStuckError(DevhostError):
    """``run_until_complete`` found nothing left to do: the instance waits for an external event."""


def format_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(FIRE_AT_FORMAT)


def parse_timestamp(value: str) -> float:
    text = value[:-1] if value.endswith("Z") else value
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()


def flatten_actions(actions: List[Any]) -> List[Dict[str, Any]]:
    """Leaf actions in yield order; compound (task_any/task_all) actions are expanded."""
    flat: List[Dict[str, Any]] = []

    def walk(item):
        if isinstance(item, list):
            for x in item:
                walk(x)
        elif isinstance(item, dict):
            if item.get("actionType") in (WHEN_ANY, WHEN_ALL) and "compoundActions" in item:
                walk(item["compoundActions"])
            else:
                flat.append(item)

    walk(actions)
    return flat


def _action_key(action: Dict[str, Any]) -> Dict[str, Any]:
    # isCanceled is legitimately mutated in place between replays; everything else must match.
    return {k: v for k, v in action.items() if k != "isCanceled"}


@dataclass
class _Retry:
    max_attempts: int
    interval_ms: int
    attempt: int = 1


@dataclass
class _ActivityWork:
    ticket: int
    task_id: int
    name: str
    input_json: Optional[str]
    retry: Optional[_Retry] = None


@dataclass
class _Timer:
    fire_at: float
    fire_at_text: str
    retry_of: Optional[_ActivityWork] = None  # set for the timers between retry attempts


@dataclass
class _Execution:
    execution_id: str
    input_json: Optional[str]
    history: List[Dict[str, Any]] = field(default_factory=list)
    next_id: int = 0
    flat: List[Dict[str, Any]] = field(default_factory=list)
    ids: List[Optional[int]] = field(default_factory=list)  # sequence id per flat action
    timers: Dict[int, _Timer] = field(default_factory=dict)
    activities: Deque[_ActivityWork] = field(default_factory=collections.deque)
    replays: int = 0


@dataclass
class _Instance:
    instance_id: str
    name: str
    created: float
    last_updated: float
    status: str = "Pending"
    output: Any = None
    custom_status: Any = None
    executions: List[_Execution] = field(default_factory=list)
    inbox: Deque[Tuple[float, str, Optional[str]]] = field(default_factory=collections.deque)
    needs_run: bool = True
    busy: bool = False  # an activity of this instance is running outside the lock
    error: Optional[BaseException] = None

    @property
    def current(self) -> _Execution:
        return self.executions[-1]

    @property
    def input_json(self) -> Optional[str]:
        return self.current.input_json


def _orchestrator_input(stored: Optional[str]) -> Any:
    """The value ``context.get_input()`` returns for a stored ExecutionStarted input."""
    value = _loads(stored)
    return _loads(value) if isinstance(value, str) else value


def _loads(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


class ReplayHost:
    """Runs a function app's orchestrations through the real azure-functions-durable engine.

    Development tool; see the module docstring.
    """

    def __init__(self, app, clock=None, *, check_determinism: bool = True,
                 long_timer_fields: bool = True, task_hub: str = "DevhostHub") -> None:
        self.app = app
        self.clock = clock if clock is not None else VirtualClock()
        self.check_determinism = check_determinism
        # The Azure Storage backend sends these, which makes the SDK split timers > 6 days.
        self.long_timer_fields = long_timer_fields
        self.task_hub = task_hub
        self.functions: Dict[str, FunctionInfo] = index_functions(app)
        self.orchestrators = {n: f for n, f in self.functions.items()
                              if f.trigger_type == "orchestrationTrigger"}
        self.activities = {n: f for n, f in self.functions.items()
                           if f.trigger_type == "activityTrigger"}
        self._instances: Dict[str, _Instance] = {}
        self._cond = threading.Condition(threading.RLock())
        self._tickets = itertools.count()
        self._wake = False
        self._worker: Optional[threading.Thread] = None
        self._stopping = False
        self._step_lock = threading.Lock()  # one stepper at a time (foreground or worker)
        self.clock.on_advance(self._on_clock_advance)

    # ------------------------------------------------------------------ client operations

    def start_new(self, name: str, instance_id: Optional[str] = None,
                  client_input: Any = None) -> str:
        """Start an orchestration; returns its instance id (a new GUID when none is given)."""
        # What the Python DurableOrchestrationClient sends: df_dumps(input) posted as a JSON
        # string, which the extension stores verbatim as the ExecutionStarted input.
        input_json = None if client_input is None else json.dumps(df_dumps(client_input))
        return self.start_new_json(name, instance_id, input_json)

    def start_new_json(self, name: str, instance_id: Optional[str],
                       input_json: Optional[str]) -> str:
        """Start with the request body the extension received, stored verbatim as the input."""
        if name not in self.orchestrators:
            known = ", ".join(f"'{n}'" for n in sorted(self.orchestrators))
            raise FunctionNotFoundError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                f"function. Additional info: The following are the known orchestrator functions: "
                f"{known}.")
        iid = instance_id or uuid.uuid4().hex
        with self._cond:
            existing = self._instances.get(iid)
            # Extension default OverridableExistingInstanceStates=NonRunningStates.
            if existing is not None and existing.status in RUNNING_STATES:
                raise InstanceAlreadyExistsError(
                    f"An Orchestration instance with the status {existing.status} already "
                    f"exists.")
            now = self.clock.now()
            inst = _Instance(instance_id=iid, name=name, created=now, last_updated=now)
            inst.executions.append(self._new_execution(inst, input_json, now))
            self._instances[iid] = inst
            self._notify()
        log.info("started %s instance %s", name, iid)
        return iid

    def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        self.raise_event_json(instance_id, event_name, json.dumps(event_data))

    def raise_event_json(self, instance_id: str, event_name: str,
                         data_json: Optional[str]) -> None:
        with self._cond:
            inst = self._get(instance_id)
            if inst.status in TERMINAL_STATES:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: {inst.status}")
            inst.inbox.append((self.clock.now(), event_name, data_json))
            self._notify()

    def terminate(self, instance_id: str, reason: Optional[str] = None) -> None:
        with self._cond:
            inst = self._get(instance_id)
            if inst.status in TERMINAL_STATES:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: {inst.status}")
            now = self.clock.now()
            ex = inst.current
            ex.history.append(self._event(EXECUTION_TERMINATED, now, Input=json.dumps(reason)))
            self._finish(inst, "Terminated", reason, now)
            self._notify()

    def purge(self, instance_id: str) -> bool:
        with self._cond:
            inst = self._instances.get(instance_id)
            if inst is None:
                return False
            if inst.status not in TERMINAL_STATES:
                raise DevhostError(
                    f"Only orchestrations in a terminal state can be purged, but the orchestration "
                    f"with instance ID {instance_id} has status {inst.status}")
            del self._instances[instance_id]
            return True

    def purge_by(self, created_from: float, created_to: float,
                 statuses: Optional[List[str]] = None) -> int:
        """Purge instances created in [created_from, created_to] (epoch seconds, both inclusive)
        whose status is in ``statuses``; returns how many were deleted.

        Like the Azure Storage backend, only terminal statuses count as a filter: when none is
        given (or none of those given is terminal), instances of EVERY status in the range are
        purged, running ones included."""
        wanted = {s for s in (statuses or ()) if s in TERMINAL_STATES}
        with self._cond:
            doomed = [i.instance_id for i in self._instances.values()
                      if created_from <= i.created <= created_to
                      and (not wanted or i.status in wanted)]
            for instance_id in doomed:
                del self._instances[instance_id]
        log.info("purged %d instance(s) by filter", len(doomed))
        return len(doomed)

    def get_status(self, instance_id: str, *, show_history: bool = False,
                   show_history_output: bool = False, show_input: bool = True) -> Optional[dict]:
        """The extension's status payload, or None for an unknown instance."""
        with self._cond:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            return self._status_dict(inst, show_history, show_history_output, show_input)

    def list_statuses(self, *, show_input: bool = True) -> List[dict]:
        with self._cond:
            return [self._status_dict(i, False, False, show_input)
                    for i in self._instances.values()]

    def history(self, instance_id: str) -> List[dict]:
        """A copy of the current execution's history, as sent to the orchestrator."""
        with self._cond:
            return [dict(e) for e in self._get(instance_id).current.history]

    def executions(self, instance_id: str) -> List[dict]:
        """Every execution of the instance (continue_as_new starts a new one), oldest first."""
        with self._cond:
            return [{"executionId": ex.execution_id, "input": _orchestrator_input(ex.input_json),
                     "history": [dict(e) for e in ex.history], "replays": ex.replays}
                    for ex in self._get(instance_id).executions]

    def instance_ids(self) -> List[str]:
        with self._cond:
            return list(self._instances)

    # ------------------------------------------------------------------ foreground driving

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Process everything that is due now without moving the clock; returns steps taken."""
        steps = 0
        while steps < max_steps and self._step(raise_errors=True):
            steps += 1
        return steps

    def run_until_complete(self, instance_id: str, max_virtual_seconds: float = 7 * 86400,
                           timeout: float = 60.0) -> dict:
        """Run until the instance ends, advancing the clock to each next timer.

        With the background worker running this just waits (``timeout`` wall seconds).
        Raises ``OrchestrationStuckError`` if the instance can only continue on an external
        event, and ``TimeoutError`` if it would need more than ``max_virtual_seconds``.
        """
        if self._worker is not None:
            return self.wait_for_completion(instance_id, timeout)
        deadline = self.clock.now() + max_virtual_seconds
        while True:
            self.run_until_idle()
            status = self.get_status(instance_id)
            if status is None:
                raise InstanceNotFoundError(f"No instance with ID {instance_id} found.")
            if status["runtimeStatus"] in TERMINAL_STATES:
                return status
            nxt = self.next_timer_at()
            if nxt is None:
                raise OrchestrationStuckError(
                    f"Instance {instance_id} is {status['runtimeStatus']} with no pending timer "
                    f"or activity: it waits for an external event.")
            if nxt > deadline:
                raise TimeoutError(
                    f"Instance {instance_id} still {status['runtimeStatus']} after "
                    f"{max_virtual_seconds} virtual seconds")
            self.clock.advance_to(nxt)

    def next_timer_at(self) -> Optional[float]:
        with self._cond:
            times = [t.fire_at for i in self._instances.values() if i.status in RUNNING_STATES
                     for t in i.current.timers.values()]
            return min(times) if times else None

    def wait_for_completion(self, instance_id: str, timeout: float = 60.0) -> dict:
        """Block (wall time) until the instance reaches a terminal state."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                inst = self._get(instance_id)
                if inst.status in TERMINAL_STATES:
                    return self._status_dict(inst, False, False, True)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"Instance {instance_id} still {inst.status}")
                self._cond.wait(min(remaining, 0.5))

    # ------------------------------------------------------------------ background mode

    def start(self) -> "ReplayHost":
        """Start the background worker (real-time mode with a RealClock)."""
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(target=self._work_loop, name="devhost-replay",
                                            daemon=True)
            self._worker.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        worker = self._worker
        if worker is None:
            return
        with self._cond:
            self._stopping = True
            self._notify()
        worker.join(timeout)
        self._worker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                if self._step(raise_errors=False):
                    continue
            except Exception:  # pragma: no cover - _step already isolates user errors
                log.exception("devhost replay worker step failed")
            with self._cond:
                if self._stopping:
                    return
                if self._wake:
                    self._wake = False
                    continue
                nxt = self.next_timer_at()
                wait = 0.5 if nxt is None else min(0.5, max(0.0, nxt - self.clock.now()))
                if wait > 0:
                    self._cond.wait(wait)
                self._wake = False

    def _notify(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _on_clock_advance(self) -> None:
        self._notify()

    # ------------------------------------------------------------------ the engine

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFoundError(f"No instance with ID {instance_id} found.")
        return inst

    def _new_execution(self, inst: _Instance, input_json: Optional[str], now: float) -> _Execution:
        ex = _Execution(execution_id=uuid.uuid4().hex, input_json=input_json)
        ex.history.append(self._event(ORCHESTRATOR_STARTED, now))
        ex.history.append(self._event(
            EXECUTION_STARTED, now, Name=inst.name, Version="", Input=input_json,
            OrchestrationInstance={"InstanceId": inst.instance_id,
                                   "ExecutionId": ex.execution_id},
            ParentInstance=None, Tags=None))
        inst.needs_run = True
        return ex

    @staticmethod
    def _event(event_type: int, at, event_id: int = -1, **fields) -> Dict[str, Any]:
        stamp = at if isinstance(at, str) else format_timestamp(at)
        event = {"EventType": event_type, "EventId": event_id, "IsPlayed": False,
                 "Timestamp": stamp}
        event.update(fields)
        return event

    def _pick_work(self):
        """The next unit of work (under the lock): a first run, an activity, or a due delivery."""
        for inst in self._instances.values():
            if inst.needs_run and inst.status in RUNNING_STATES and not inst.busy:
                return ("run", inst, None)
        best_activity = None
        for inst in self._instances.values():
            if inst.status in RUNNING_STATES and not inst.busy and inst.current.activities:
                work = inst.current.activities[0]
                if best_activity is None or work.ticket < best_activity[2].ticket:
                    best_activity = ("activity", inst, work)
        if best_activity is not None:
            return best_activity
        now = self.clock.now()
        best = None
        for inst in self._instances.values():
            if inst.status not in RUNNING_STATES or inst.busy:
                continue
            for tid, timer in inst.current.timers.items():
                if timer.fire_at <= now and (best is None or timer.fire_at < best[0]):
                    best = (timer.fire_at, 0, ("timer", inst, tid))
            if inst.inbox:
                arrival = inst.inbox[0][0]
                # A timer that fired before the event arrived wins; ties go to the timer.
                if best is None or (arrival, 1) < best[:2]:
                    best = (arrival, 1, ("event", inst, None))
        return best[2] if best else None

    def _step(self, raise_errors: bool) -> bool:
        """One episode for one instance. Returns False when nothing is due."""
        with self._step_lock:
            with self._cond:
                work = self._pick_work()
                if work is None:
                    return False
                kind, inst, item = work
                if kind == "run":
                    inst.needs_run = False
                    self._replay(inst, raise_errors)
                    self._cond.notify_all()
                    return True
                if kind == "timer":
                    self._deliver_timer(inst, item)
                    self._replay(inst, raise_errors)
                    self._cond.notify_all()
                    return True
                if kind == "event":
                    arrival, name, data_json = inst.inbox.popleft()
                    ex = inst.current
                    ex.history.append(self._event(ORCHESTRATOR_STARTED, self._stamp(ex)))
                    ex.history.append(self._event(EVENT_RAISED, self.clock.now(), Name=name,
                                                  Input=data_json))
                    self._replay(inst, raise_errors)
                    self._cond.notify_all()
                    return True
                # kind == "activity": run the user function outside the lock.
                ex = inst.current
                ex.activities.popleft()
                inst.busy = True
            try:
                ok, payload = self._run_activity(inst, item)
            finally:
                with self._cond:
                    inst.busy = False
            with self._cond:
                if inst.status not in RUNNING_STATES or inst.current is not ex:
                    log.info("dropping result of %s for %s (instance %s)", item.name,
                             inst.instance_id, inst.status)
                    self._cond.notify_all()
                    return True
                self._deliver_activity_result(inst, item, ok, payload)
                self._replay(inst, raise_errors)
                self._cond.notify_all()
            return True

    def _stamp(self, ex: _Execution, at: Optional[float] = None) -> str:
        # OrchestratorStarted stamps never go backwards within an execution.
        now = self.clock.now() if at is None else at
        last = max(parse_timestamp(e["Timestamp"]) for e in ex.history
                   if e["EventType"] == ORCHESTRATOR_STARTED)
        return format_timestamp(max(now, last))

    def _deliver_timer(self, inst: _Instance, tid: int) -> None:
        ex = inst.current
        timer = ex.timers.pop(tid)
        now = self.clock.now()
        # Stamp with fireAt itself when the clock is (virtually) exactly there, so
        # current_utc_datetime after the timer equals fireAt with no float rounding.
        stamp = timer.fire_at_text if now - timer.fire_at < 0.001 else self._stamp(ex, now)
        ex.history.append(self._event(ORCHESTRATOR_STARTED, stamp))
        ex.history.append(self._event(TIMER_FIRED, now, TimerId=tid, FireAt=timer.fire_at_text))
        work = timer.retry_of
        if work is not None and work.retry.attempt < work.retry.max_attempts:
            # The extension re-schedules the activity when the retry timer fires.
            new_id = ex.next_id
            ex.next_id += 1
            retry = _Retry(work.retry.max_attempts, work.retry.interval_ms, work.retry.attempt + 1)
            ex.history.append(self._event(TASK_SCHEDULED, now, event_id=new_id, Name=work.name,
                                          Input=work.input_json))
            ex.activities.append(_ActivityWork(next(self._tickets), new_id, work.name,
                                               work.input_json, retry))
        # After the last attempt the timer just fires: the SDK then raises the last failure.

    def _run_activity(self, inst: _Instance, work: _ActivityWork) -> Tuple[bool, Any]:
        info = self.activities.get(work.name)
        if info is None:
            known = ", ".join(f"'{n}'" for n in sorted(self.activities))
            msg = (f"The function '{work.name}' doesn't exist, is disabled, or is not an activity "
                   f"function. Additional info: The following are the known activity functions: "
                   f"{known}.")
            return False, (msg, "")
        try:
            # The worker's own converters: df_loads of the JSON input, df_dumps of the result.
            value = ActivityTriggerConverter.decode(
                meta.Datum(type="string", value=work.input_json if work.input_json is not None
                           else "null"), trigger_metadata={})
            kwargs = info.build_kwargs(value)
            result = call_maybe_async(info.user_function, kwargs)
            encoded = ActivityTriggerConverter.encode(result, expected_type=None)
            return True, encoded.value
        except Exception as exc:  # the activity failed: TaskFailed like the real host
            log.info("activity %s of %s failed: %s", work.name, inst.instance_id, exc)
            reason = f"Activity function '{work.name}' failed: {exc}"
            details = (f"{type(exc).__name__}: {exc}\n"
                       + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            return False, (reason, details)

    def _deliver_activity_result(self, inst: _Instance, work: _ActivityWork, ok: bool,
                                 payload: Any) -> None:
        ex = inst.current
        now = self.clock.now()
        ex.history.append(self._event(ORCHESTRATOR_STARTED, self._stamp(ex, now)))
        if ok:
            ex.history.append(self._event(TASK_COMPLETED, now, TaskScheduledId=work.task_id,
                                          Result=payload))
            return
        reason, details = payload
        ex.history.append(self._event(TASK_FAILED, now, TaskScheduledId=work.task_id,
                                      Reason=reason, Details=details))
        if work.retry is not None:
            # DTFx's retry: a timer in the same episode, then (if attempts remain) a new task.
            tid = ex.next_id
            ex.next_id += 1
            fire_at = now + work.retry.interval_ms / 1000.0
            text = format_timestamp(fire_at)
            ex.history.append(self._event(TIMER_CREATED, now, event_id=tid, FireAt=text))
            ex.timers[tid] = _Timer(parse_timestamp(text), text, retry_of=work)

    def _context_json(self, inst: _Instance) -> str:
        ex = inst.current
        # The extension embeds the stored input as a parsed JSON token; for the double-encoded
        # input the Python client sends that is the JSON text the SDK's get_input() decodes.
        ctx = {"history": ex.history, "input": _loads(ex.input_json),
               "instanceId": inst.instance_id,
               "isReplaying": False, "parentInstanceId": None,
               # What the extension negotiates today: schema V2 with the V3 override.
               "upperSchemaVersion": 1, "upperSchemaVersionNew": 2,
               "defaultHttpAsyncRequestSleepTimeMillseconds": 30000}
        if self.long_timer_fields:
            ctx["longRunningTimerIntervalDuration"] = "3.00:00:00"
            ctx["maximumShortTimerDuration"] = "6.00:00:00"
        return json.dumps(ctx)

    def _invoke_orchestrator(self, inst: _Instance) -> Tuple[Optional[dict], Optional[str]]:
        info = self.orchestrators[inst.name]
        body = self._context_json(inst)
        try:
            out = info.user_function(**{info.trigger_param: func.OrchestrationContext(body)})
            return json.loads(out), None
        except Exception as exc:
            text = str(exc)
            if OUT_OF_PROC_MARKER in text:
                message, data = text.split(OUT_OF_PROC_MARKER, 1)
                state = json.loads(data)
                return state, state.get("error") or message
            return None, f"{type(exc).__name__}: {exc}"

    def _replay(self, inst: _Instance, raise_errors: bool) -> None:
        ex = inst.current
        now = self.clock.now()
        state, error = self._invoke_orchestrator(inst)
        ex.replays += 1
        inst.last_updated = now
        if inst.status == "Pending" or inst.status == "ContinuedAsNew":
            inst.status = "Running"
        if state is not None:
            flat = flatten_actions(state.get("actions") or [])
            if self.check_determinism:
                problem = self._compare(ex.flat, flat)
                if problem:
                    err = NonDeterminismError(
                        f"Non-deterministic workflow detected in '{inst.name}' "
                        f"(instance {inst.instance_id}): {problem}")
                    self._fail(inst, str(err), now)
                    ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                    inst.error = err
                    if raise_errors:
                        raise err
                    log.error("%s", err)
                    return
            unsupported = self._schedule(inst, ex, flat[len(ex.flat):], now)
            for index, action in enumerate(flat):
                tid = ex.ids[index]
                if action.get("actionType") == CREATE_TIMER and action.get("isCanceled"):
                    ex.timers.pop(tid, None)
            ex.flat = flat
            if state.get("customStatus") is not None:
                inst.custom_status = state["customStatus"]
            if unsupported and error is None:
                error = unsupported
        if error is not None:
            self._fail(inst, error, now)
        elif state.get("isDone"):
            can = [a for a in ex.flat if a.get("actionType") == CONTINUE_AS_NEW_ACTION]
            if can:
                # The extension passes the action's JSON text to ContinueAsNew(object), which
                # serializes it again: stored like a client-started input.
                new_input = json.dumps(can[-1].get("input"))
                ex.history.append(self._event(CONTINUE_AS_NEW, now, Input=new_input))
                ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                # New execution, same instance id; events already in the old history but not
                # consumed are dropped (preserveUnprocessedEvents=false).
                inst.executions.append(self._new_execution(inst, new_input, now))
                inst.status = "ContinuedAsNew"
                return
            output = state.get("output")
            ex.history.append(self._event(EXECUTION_COMPLETED, now, OrchestrationStatus="Completed",
                                          Result=json.dumps(output)))
            self._finish(inst, "Completed", output, now)
        ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))

    def _compare(self, before: List[dict], after: List[dict]) -> Optional[str]:
        for index, old in enumerate(before):
            if index >= len(after):
                return (f"the replay emitted {len(after)} actions where the previous run had "
                        f"{len(before)}; action #{index} missing: {old}")
            if _action_key(old) != _action_key(after[index]):
                return (f"action #{index} changed on replay: was {_action_key(old)}, "
                        f"now {_action_key(after[index])}. Orchestrators must be deterministic: "
                        f"use context.current_utc_datetime / context.new_uuid(), no I/O or "
                        f"randomness.")
        return None

    def _schedule(self, inst: _Instance, ex: _Execution, new_actions: List[dict],
                  now: float) -> Optional[str]:
        """Turn newly emitted actions into history events and pending work."""
        unsupported = None
        for action in new_actions:
            kind = action.get("actionType")
            task_id: Optional[int] = None
            if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
                task_id = ex.next_id
                ex.next_id += 1
                name = action.get("functionName")
                ex.history.append(self._event(TASK_SCHEDULED, now, event_id=task_id, Name=name,
                                              Input=action.get("input")))
                retry = None
                if kind == CALL_ACTIVITY_WITH_RETRY:
                    opts = action.get("retryOptions") or {}
                    retry = _Retry(int(opts.get("maxNumberOfAttempts", 1)),
                                   int(opts.get("firstRetryIntervalInMilliseconds", 1000)))
                ex.activities.append(_ActivityWork(next(self._tickets), task_id, name,
                                                   action.get("input"), retry))
            elif kind == CREATE_TIMER:
                task_id = ex.next_id
                ex.next_id += 1
                text = action["fireAt"]
                ex.history.append(self._event(TIMER_CREATED, now, event_id=task_id, FireAt=text))
                if not action.get("isCanceled"):
                    ex.timers[task_id] = _Timer(parse_timestamp(text), text)
            elif kind in (WAIT_FOR_EXTERNAL_EVENT, CONTINUE_AS_NEW_ACTION):
                pass  # no sequence id, no history event
            else:
                # Sub-orchestrations, entities and durable HTTP are not needed by this app.
                task_id = ex.next_id
                ex.next_id += 1
                unsupported = unsupported or (
                    f"devhost does not support action type {kind} ({action}); it implements "
                    f"activities, timers, external events and continue_as_new only")
            ex.ids.append(task_id)
        return unsupported

    def _fail(self, inst: _Instance, error: str, now: float) -> None:
        message = f"Orchestrator function '{inst.name}' failed: {error}"
        inst.current.history.append(self._event(EXECUTION_COMPLETED, now,
                                                OrchestrationStatus="Failed", Result=message))
        self._finish(inst, "Failed", message, now)

    def _finish(self, inst: _Instance, status: str, output: Any, now: float) -> None:
        inst.status = status
        inst.output = output
        inst.last_updated = now
        inst.needs_run = False
        ex = inst.current
        ex.timers.clear()
        ex.activities.clear()
        inst.inbox.clear()
        log.info("instance %s %s", inst.instance_id, status)

    def _status_dict(self, inst: _Instance, show_history: bool, show_history_output: bool,
                     show_input: bool) -> dict:
        status = {
            "name": inst.name,
            "instanceId": inst.instance_id,
            "runtimeStatus": inst.status,
            # ParseToJToken of the stored input: for client-started instances the JSON text.
            "input": _loads(inst.input_json) if show_input else None,
            "customStatus": inst.custom_status,
            "output": inst.output,
            # The extension formats these with .ToString("s") + "Z".
            "createdTime": datetime.fromtimestamp(inst.created, tz=timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastUpdatedTime": datetime.fromtimestamp(inst.last_updated, tz=timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "historyEvents": None,
        }
        if show_history:
            events = []
            for e in inst.current.history:
                item = dict(e)
                if not show_history_output:
                    item.pop("Result", None)
                events.append(item)
            status["historyEvents"] = events
        return status


__all__ = [
    "ReplayHost", "NonDeterminismError", "InstanceNotFoundError", "InstanceGoneError",
    "InstanceAlreadyExistsError", "FunctionNotFoundError", "OrchestrationStuckError",
    "DevhostError", "RealClock", "VirtualClock", "flatten_actions", "to_epoch",
]
