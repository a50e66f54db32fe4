"""In-process replay host for Durable Functions orchestrations (DEVELOPMENT TOOL).

Production runs on the Durable Task extension in Azure Functions. This module is a local stand-in
that drives the REAL azure-functions-durable 1.x replay engine: each episode it synthesizes the
orchestration history the extension would send (OrchestratorStarted, ExecutionStarted,
TaskScheduled/TaskCompleted/TaskFailed, TimerCreated/TimerFired, EventRaised, EventSent, ...),
calls the app's registered orchestrator function with it, and turns the returned actions into
new history the way the extension's out-of-process shim does. Activities and entities run
in-process through the app's registered functions; timer triggers run on the host's clock.

Two ways to drive it:

* foreground, usually with a ``VirtualClock``: ``run_until_idle()`` / ``run_until_complete()``
  process activities, entity operations, due events and due timer triggers, and advance the clock
  to the next timer, so a 24-hour orchestration takes milliseconds;
* background (``start()``/``stop()``): a worker thread processes work and sleeps on the clock
  until the next timer, woken early by ``start_new``/``raise_event``/``terminate``.

As strict as the extension (sources in ``devhost.extension``), where devhost used to be lenient:

* the extension replays the orchestrator's actions ONE TOP-LEVEL ACTION AT A TIME and hands an
  action to DTFx only when every earlier one has completed (``ReplayGate``): what the Python code
  schedules after a ``task_any``/``task_all`` the extension still waits on is not scheduled yet;
* an orchestration that returns, fails or continues as new stays Running while a task it
  scheduled is still open: an activity not yet completed or a timer neither fired nor cancelled
  (DTFx TaskOrchestrationExecutor: completion only ``if (!context.HasOpenTasks)``); a cancelled
  timer still fires later into the history (DTFx has no cancel message), it only stops counting;
* activity failures carry the extension's Reason and Details text (``devhost.extension``);
* a custom status over 16 KB of UTF-16 JSON fails the orchestration; instance ids the extension
  refuses are refused; versions (host.json ``defaultVersion``, ``versionMatchStrategy``,
  ``versionFailureStrategy``) are applied as DTFx's dispatcher does;
* ``createdTime`` restarts with each execution (continue_as_new), as on the Azure Storage backend.

Beyond the real runtime it checks determinism on every replay: the actions an orchestrator emits
for past episodes must equal the ones it emitted before, or the instance fails with
``NonDeterminismError``.

Options (constructor arguments and attributes): ``batch_events`` delivers every completion, event
and timer that is due at the same time to an instance in ONE episode, as the extension batches a
control-queue read; ``activities_twice`` runs every activity function twice (at-least-once
delivery) and records the outcome of the second run, as when the first run's result was lost;
``timer_triggers`` (False, True or a list of function names) runs timer-triggered functions on
the host's clock.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter
from azure.durable_functions.models.utils.df_serialization import df_dumps

from . import extension as ext
from .clock import RealClock, VirtualClock, to_epoch
from .extension import (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CONTINUE_AS_NEW_ACTION,
                        CREATE_TIMER, SIGNAL_ENTITY, WAIT_FOR_EXTERNAL_EVENT, WHEN_ALL, WHEN_ANY)
from .functions import FunctionInfo, call_maybe_async, index_functions
from .realism import Realism, SignalScheduler

log = logging.getLogger("devhost.replay")
# One line per workflow event, as the Functions host console shows them (no inputs/outputs).
events_log = logging.getLogger("devhost.workflow")
# The Azure Storage backend's own log category, as the Functions host shows it.
storage_log = logging.getLogger("DurableTask.AzureStorage")

# HistoryEventType numbers (azure.durable_functions.models.history.HistoryEventType).
EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
TIMER_CREATED, TIMER_FIRED = 10, 11
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 12, 13
EVENT_SENT, EVENT_RAISED, CONTINUE_AS_NEW = 14, 15, 16
EXECUTION_SUSPENDED, EXECUTION_RESUMED = 19, 20

CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY = 2, 3
CALL_ENTITY, CALL_HTTP = 7, 8

RUNNING_STATES = frozenset({"Pending", "Running", "ContinuedAsNew"})
TERMINAL_STATES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
FIRE_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ENTITY_REQUEST_EVENT = "op"  # DTFx Entities/EventFormat/EntityMessageEventNames.RequestMessageEventName


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
    """No orchestrator (or entity) with that name (the extension's 400 Bad Request)."""


class InvalidInstanceIdError(DevhostError, ValueError):
    """An instance id the extension refuses (400 Bad Request; see extension.instance_id_error)."""


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


def _status_time(epoch: float) -> str:
    # The extension formats status times with .ToString("s") + "Z".
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    leaf: int = -1  # the flat action index this work (or retry attempt) belongs to


@dataclass
class _Timer:
    fire_at: float
    fire_at_text: str
    retry_of: Optional[_ActivityWork] = None  # set for the timers between retry attempts


@dataclass
class _Message:
    """A message waiting in the instance's (simulated) control queue."""

    arrival: float
    seq: int
    kind: str  # "event" | "result"
    name: Optional[str] = None
    data_json: Optional[str] = None
    work: Optional[_ActivityWork] = None
    ok: bool = True
    payload: Any = None


@dataclass
class _Execution:
    execution_id: str
    input_json: Optional[str]
    version: str = ""
    history: List[Dict[str, Any]] = field(default_factory=list)
    next_id: int = 0
    flat: List[Dict[str, Any]] = field(default_factory=list)   # last emitted leaf actions
    committed: int = 0                                          # leaves handed to "DTFx"
    leaf_ids: Dict[int, int] = field(default_factory=dict)      # leaf index -> sequence id
    id_owner: Dict[int, int] = field(default_factory=dict)      # retry ids -> leaf index
    retry_final_timers: set = field(default_factory=set)
    retry_leaves: set = field(default_factory=set)
    timers: Dict[int, _Timer] = field(default_factory=dict)     # open timers
    ghost_timers: Dict[int, _Timer] = field(default_factory=dict)  # cancelled, still to fire
    activities: Deque[_ActivityWork] = field(default_factory=collections.deque)
    in_flight: int = 0
    replays: int = 0

    @property
    def ids(self) -> List[Optional[int]]:
        return [self.leaf_ids.get(i) for i in range(self.committed)]


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
    messages: List[_Message] = field(default_factory=list)
    needs_run: bool = True
    busy: bool = False  # an activity of this instance is running outside the lock
    version_blocked: bool = False  # Reject: waits for a worker whose version matches
    version_retry_at: float = 0.0  # Reject: when the abandoned message is visible again
    dequeue_count: int = 0         # Reject: how often the message was abandoned
    error: Optional[BaseException] = None

    @property
    def current(self) -> _Execution:
        return self.executions[-1]

    @property
    def input_json(self) -> Optional[str]:
        return self.current.input_json


@dataclass
class _EntityRecord:
    name: str   # as the extension keeps it: lower case (EntityId.EntityName)
    key: str
    state: Optional[str] = None  # serialized state, as the Python SDK returned it
    exists: bool = False
    queue: Deque[Dict[str, Any]] = field(default_factory=collections.deque)
    last_modified: float = 0.0
    busy: bool = False

    def due(self, now: float) -> List[Dict[str, Any]]:
        """The operations that have arrived, in arrival order (ties: in the order sent)."""
        return sorted((op for op in self.queue if op["arrival"] <= now),
                      key=lambda op: (op["arrival"], op.get("seq", 0)))

    def next_arrival(self) -> Optional[float]:
        return min((op["arrival"] for op in self.queue), default=None)


@dataclass
class _TimerTrigger:
    info: FunctionInfo
    schedule: Any
    next_due: float
    last: Optional[float] = None
    running: bool = False


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


def _expand_settings(value: Any, env=None) -> Any:
    """host.json ``%NAME%`` app-setting references, as the host resolves them at start-up."""
    import re
    env = os.environ if env is None else env
    if not isinstance(value, str):
        return value
    return re.sub(r"%([^%]+)%", lambda m: env.get(m.group(1), ""), value)


@dataclass(frozen=True)
class DurableOptions:
    """host.json ``extensions.durableTask`` settings devhost honours."""

    default_version: str = ""
    version_match_strategy: str = "CurrentOrOlder"  # the documented default
    version_failure_strategy: str = "Reject"         # the documented default

    @classmethod
    def from_host_json(cls, path: Optional[Path]) -> "DurableOptions":
        section: Dict[str, Any] = {}
        if path is not None and Path(path).is_file():
            data = json.loads(Path(path).read_text("utf-8"))
            section = (data.get("extensions") or {}).get("durableTask") or {}
        # Taken literally: the extension does not resolve %SETTING% here (EXT issue #3279).
        return cls(default_version=str(section.get("defaultVersion") or ""),
                   version_match_strategy=str(section.get("versionMatchStrategy")
                                              or cls.version_match_strategy),
                   version_failure_strategy=str(section.get("versionFailureStrategy")
                                                or cls.version_failure_strategy))


def run_orchestrator(info: FunctionInfo, context_json: str) -> Tuple[Optional[dict], Optional[str]]:
    """One replay through the worker's handle: (orchestrator state, error text). A failing
    orchestrator's state travels after the SDK's `$OutOfProcData$` marker, as the extension reads it."""
    try:
        out = info.user_function(**{info.trigger_param: func.OrchestrationContext(context_json)})
        return json.loads(out), None
    except Exception as exc:  # noqa: BLE001 - reported as the instance's failure, not raised
        text = str(exc)
        if OUT_OF_PROC_MARKER in text:
            message, data = text.split(OUT_OF_PROC_MARKER, 1)
            state = json.loads(data)
            return state, state.get("error") or message
        return None, f"{type(exc).__name__}: {exc}"


class ReplayHost:
    """Runs a function app's orchestrations through the real azure-functions-durable engine.

    Development tool; see the module docstring.
    """

    def __init__(self, app, clock=None, *, check_determinism: bool = True,
                 long_timer_fields: bool = True, task_hub: str = "DevhostHub",
                 batch_events: bool = False, activities_twice: bool = False,
                 timer_triggers: Union[bool, Sequence[str]] = False,
                 host_json: Optional[Union[str, Path]] = None,
                 durable_options: Optional[DurableOptions] = None,
                 realism: Optional[Realism] = None) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        # The extension's timing (devhost.realism): None delivers signals at once, in one FIFO.
        self.realism = realism
        self.check_determinism = check_determinism
        # The Azure Storage backend sends these, which makes the SDK split timers > 6 days.
        self.long_timer_fields = long_timer_fields
        self.task_hub = task_hub
        self.batch_events = batch_events
        self.activities_twice = activities_twice
        # Where the durable client binding points (DevServer sets its listen address); when
        # None, a loopback management endpoint starts on first need (timer triggers).
        self.client_origin: Optional[str] = None
        self.timer_invocations: List[Dict[str, Any]] = []
        self._host_json_override = Path(host_json) if host_json is not None else None
        self._durable_override = durable_options
        self._instances: Dict[str, _Instance] = {}
        self._entities: Dict[Tuple[str, str], _EntityRecord] = {}
        self._cond = threading.Condition(threading.RLock())
        self._tickets = itertools.count()
        self._seq = itertools.count()
        self._wake = False
        self._worker: Optional[threading.Thread] = None
        self._stopping = False
        self._step_lock = threading.Lock()  # one stepper at a time (foreground or worker)
        self._loopback = None
        self._timer_setting: Union[bool, Sequence[str]] = False
        self._timer_triggers: Dict[str, _TimerTrigger] = {}
        self._load_app(app)
        self.timer_triggers = timer_triggers
        self.clock.on_advance(self._on_clock_advance)

    # ------------------------------------------------------------------ the app

    def _load_app(self, app) -> None:
        self.app = app
        self.functions: Dict[str, FunctionInfo] = index_functions(app)
        self.orchestrators = {n: f for n, f in self.functions.items()
                              if f.trigger_type == "orchestrationTrigger"}
        self.activities = {n: f for n, f in self.functions.items()
                           if f.trigger_type == "activityTrigger"}
        self.entity_functions = {str(f.trigger.get("entityName") or n).lower(): f
                                 for n, f in self.functions.items()
                                 if f.trigger_type == "entityTrigger"}
        if self._durable_override is not None:
            self.durable_options = self._durable_override
        else:
            from .queues import host_json_for
            path = self._host_json_override or host_json_for(app)
            self.durable_options = DurableOptions.from_host_json(path)

    def replace_app(self, new_app, *, durable_options: Optional[DurableOptions] = None) -> None:
        """Deploy new code: instances and histories stay, the next episode runs ``new_app``'s
        functions (a redeploy) with its host.json (or ``durable_options``). Instances a version
        check rejected get another chance when their back-off ends."""
        with self._step_lock, self._cond:
            if durable_options is not None:
                self._durable_override = durable_options
            self._load_app(new_app)
            # Instances a version check rejected are retried when their abandoned message is
            # visible again (the back-off stays): a redeploy does not make it visible sooner.
            self.timer_triggers = self._timer_setting
            self._notify()

    @property
    def realism(self) -> Optional[Realism]:
        return self._realism

    @realism.setter
    def realism(self, value: Optional[Realism]) -> None:
        """Signals sent from now on follow ``value`` (None: at once, in one FIFO per entity)."""
        self._realism = value
        self._signals = SignalScheduler(value) if value is not None else None

    @property
    def default_version(self) -> str:
        return self.durable_options.default_version

    @property
    def timer_triggers(self) -> Union[bool, Sequence[str]]:
        return self._timer_setting

    @timer_triggers.setter
    def timer_triggers(self, value: Union[bool, Sequence[str]]) -> None:
        from .schedules import parse_schedule
        self._timer_setting = value
        wanted = {n for n, f in self.functions.items() if f.trigger_type == "timerTrigger"}
        if value is False or value is None:
            wanted = set()
        elif value is not True:
            wanted &= set(value)
        now = self.clock.now()
        triggers: Dict[str, _TimerTrigger] = {}
        for name in sorted(wanted):
            info = self.functions[name]
            schedule = parse_schedule(str(_expand_settings(info.trigger.get("schedule"))))
            old = self._timer_triggers.get(name)
            if old is not None and old.schedule == schedule:
                old.info = info
                triggers[name] = old
                continue
            start = datetime.fromtimestamp(now, tz=timezone.utc)
            triggers[name] = _TimerTrigger(info, schedule, schedule.next_after(start).timestamp())
        self._timer_triggers = triggers

    # ------------------------------------------------------------------ client operations

    def start_new(self, name: str, instance_id: Optional[str] = None,
                  client_input: Any = None, version: Optional[str] = None) -> str:
        """Start an orchestration; returns its instance id (a new GUID when none is given)."""
        # What the Python DurableOrchestrationClient sends: df_dumps(input) posted as a JSON
        # string, which the extension stores verbatim as the ExecutionStarted input.
        input_json = None if client_input is None else json.dumps(df_dumps(client_input))
        return self.start_new_json(name, instance_id, input_json, version=version)

    def start_new_json(self, name: str, instance_id: Optional[str],
                       input_json: Optional[str], version: Optional[str] = None) -> str:
        """Start with the request body the extension received, stored verbatim as the input."""
        if name not in self.orchestrators:
            known = ", ".join(f"'{n}'" for n in sorted(self.orchestrators))
            raise FunctionNotFoundError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                f"function. Additional info: The following are the known orchestrator functions: "
                f"{known}.")
        problem = ext.instance_id_error(instance_id or "")
        if problem:
            raise InvalidInstanceIdError(problem)
        iid = instance_id or uuid.uuid4().hex
        # EXT DurableClient.StartNewAsync: the explicit version (?version=, EXT PR #3213),
        # else host.json defaultVersion.
        chosen = self.default_version if version is None else version
        with self._cond:
            existing = self._instances.get(iid)
            # Extension default OverridableExistingInstanceStates=NonRunningStates (Suspended too).
            if existing is not None and (existing.status in RUNNING_STATES
                                         or existing.status == "Suspended"):
                raise InstanceAlreadyExistsError(
                    f"An Orchestration instance with the status {existing.status} already "
                    f"exists.")
            now = self.clock.now()
            inst = _Instance(instance_id=iid, name=name, created=now, last_updated=now)
            inst.executions.append(self._new_execution(inst, input_json, now, chosen))
            self._instances[iid] = inst
            self._notify()
        events_log.info("%s (Orchestrator) instance %s started.", name, iid)
        return iid

    def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        self.raise_event_json(instance_id, event_name, json.dumps(event_data))

    def raise_event_json(self, instance_id: str, event_name: str,
                         data_json: Optional[str]) -> None:
        with self._cond:
            inst = self._get(instance_id)
            if inst.status in TERMINAL_STATES:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: {inst.status}")
            inst.messages.append(_Message(self.clock.now(), next(self._seq), "event",
                                          name=event_name, data_json=data_json))
            self._notify()
        events_log.info("%s (Orchestrator) instance %s: external event '%s' raised.",
                        inst.name, instance_id, event_name)

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

    def suspend(self, instance_id: str, reason: Optional[str] = None) -> None:
        """Suspend a running instance: it processes nothing (timers, activity results and events
        wait in its queue) until resumed. A raised event is accepted and held (EXT suspend/resume;
        DTFx ExecutionSuspendedEvent)."""
        with self._cond:
            inst = self._get(instance_id)
            if inst.status in TERMINAL_STATES:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: {inst.status}")
            if inst.status == "Suspended":
                return
            now = self.clock.now()
            inst.current.history.append(self._event(EXECUTION_SUSPENDED, now, Reason=reason))
            inst.status, inst.last_updated = "Suspended", now
        events_log.info("%s (Orchestrator) instance %s suspended.", inst.name, instance_id)

    def resume(self, instance_id: str, reason: Optional[str] = None) -> None:
        """Resume a suspended instance: what waited in its queue is processed now."""
        with self._cond:
            inst = self._get(instance_id)
            if inst.status in TERMINAL_STATES:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: {inst.status}")
            if inst.status != "Suspended":
                return
            now = self.clock.now()
            inst.current.history.append(self._event(EXECUTION_RESUMED, now, Reason=reason))
            inst.status, inst.last_updated = "Running", now
            self._notify()
        events_log.info("%s (Orchestrator) instance %s resumed.", inst.name, instance_id)

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

        ``created`` is the start of the instance's CURRENT execution: the Azure Storage backend
        rewrites the Instances table's CreatedTime from each new ExecutionStarted event, so a
        continue_as_new moves it (DurableTask.AzureStorage AzureTableTrackingStore.UpdateStateAsync).

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
        """Every execution of the instance (continue_as_new starts a new one), oldest first.

        JSON-safe: save it to keep a recorded history for ``devhost.history_check``."""
        with self._cond:
            return [{"executionId": ex.execution_id, "input": _orchestrator_input(ex.input_json),
                     "version": ex.version, "history": [dict(e) for e in ex.history],
                     "replays": ex.replays}
                    for ex in self._get(instance_id).executions]

    def instance_ids(self) -> List[str]:
        with self._cond:
            return list(self._instances)

    # ------------------------------------------------------------------ entities

    def signal_entity(self, name: str, key: str, operation: str, operation_input: Any = None,
                      ) -> None:
        """Signal an entity as ``context.signal_entity`` does (input encoded like the SDK)."""
        self.signal_entity_json(name, key, operation, json.dumps(df_dumps(operation_input)))

    def signal_entity_json(self, name: str, key: str, operation: str,
                           input_json: Optional[str], *, parent: Optional[str] = None) -> None:
        """Queue an operation; ``input_json`` is the RequestMessage input (JSON text or None)."""
        info = self._entity_function(name)
        problem = ext.entity_key_error(key)
        if problem:
            raise ValueError(problem)
        with self._cond:
            record = self._entities.setdefault((name.lower(), key),
                                               _EntityRecord(name.lower(), key))
            record.queue.append({"name": operation, "input": input_json, "isSignal": True,
                                 "id": str(uuid.uuid4()), "parent": parent, "seq": next(self._seq),
                                 "arrival": self._signal_arrival(parent, record)})
            self._notify()
        log.debug("entity %s@%s: operation %s queued (%s)", info.name, key, operation,
                  parent or "client")

    def read_entity_state(self, name: str, key: str) -> Dict[str, Any]:
        """``{"entityExists": bool, "entityState": value}`` like ReadEntityStateAsync."""
        with self._cond:
            record = self._entities.get((name.lower(), key))
            if record is None or not record.exists:
                return {"entityExists": False, "entityState": None}
            return {"entityExists": True, "entityState": _loads(record.state)}

    def entity_state_json(self, name: str, key: str) -> Optional[str]:
        """The stored state text of an existing entity, or None (the HTTP API's 404)."""
        with self._cond:
            record = self._entities.get((name.lower(), key))
            if record is None or not record.exists:
                return None
            return record.state if record.state is not None else "null"

    def _entity_function(self, name: str) -> FunctionInfo:
        info = self.entity_functions.get(name.lower())
        if info is None:
            known = ", ".join(f"'{n}'" for n in sorted(self.entity_functions))
            raise FunctionNotFoundError(
                f"The function '{name}' doesn't exist, is disabled, or is not an entity function. "
                f"Additional info: The following are the known entity functions: {known}.")
        return info

    # ------------------------------------------------------------------ foreground driving

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Process everything that is due now without moving the clock; returns steps taken."""
        steps = 0
        while steps < max_steps and self._step(raise_errors=True):
            steps += 1
        return steps

    def run_until_complete(self, instance_id: str, max_virtual_seconds: float = 7 * 86400,
                           timeout: float = 60.0) -> dict:
        """Run until the instance ends, advancing the clock to each next timer (orchestration
        timers and, when enabled, timer-trigger fires, whichever comes first).

        With the background worker running this just waits (``timeout`` wall seconds).
        Raises ``OrchestrationStuckError`` if the instance can only continue on an external
        event (timer triggers alone do not count as a way forward), and ``TimeoutError`` if it
        would need more than ``max_virtual_seconds``.
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
            trigger = self.next_timer_trigger_at()
            if trigger is not None:
                nxt = min(nxt, trigger)
            if nxt > deadline:
                raise TimeoutError(
                    f"Instance {instance_id} still {status['runtimeStatus']} after "
                    f"{max_virtual_seconds} virtual seconds")
            self.clock.advance_to(nxt)

    def next_timer_at(self) -> Optional[float]:
        """When the next orchestration timer (cancelled ones too: they still fire) is due, or
        the next thing the host's queues make due: a delayed entity signal, an abandoned
        (version-rejected) message becoming visible again."""
        with self._cond:
            times = [t.fire_at for i in self._instances.values()
                     if i.status in RUNNING_STATES and not i.version_blocked
                     for t in itertools.chain(i.current.timers.values(),
                                              i.current.ghost_timers.values())]
            times += [i.version_retry_at for i in self._instances.values()
                      if i.status in RUNNING_STATES and i.version_blocked]
            times += [a for a in (r.next_arrival() for r in self._entities.values())
                      if a is not None]
            return min(times) if times else None

    def signals_in_flight(self) -> int:
        """Entity operations sent but not yet run (realistic mode: still on their way)."""
        with self._cond:
            return sum(len(r.queue) for r in self._entities.values())

    def settle_signals(self, max_virtual_seconds: float = 3600) -> None:
        """Advance the clock until every entity signal in flight has arrived and run (what the
        registry will say once the host's queues have caught up), running whatever else is due."""
        deadline = self.clock.now() + max_virtual_seconds
        self.run_until_idle()
        while self.signals_in_flight():
            with self._cond:
                nxt = min(a for a in (r.next_arrival() for r in self._entities.values())
                          if a is not None)
            if nxt > deadline:
                raise TimeoutError(f"entity signals still in flight after {max_virtual_seconds} s")
            if nxt > self.clock.now():
                self.clock.advance_to(nxt)
            self.run_until_idle()

    def next_timer_trigger_at(self) -> Optional[float]:
        with self._cond:
            times = [t.next_due for t in self._timer_triggers.values()]
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
        if worker is not None:
            with self._cond:
                self._stopping = True
                self._notify()
            worker.join(timeout)
            self._worker = None
        if self._loopback is not None:
            self._loopback.stop()
            self._loopback = None

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
                times = [t for t in (self.next_timer_at(), self.next_timer_trigger_at())
                         if t is not None]
                nxt = min(times) if times else None
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

    # ------------------------------------------------------------------ client binding

    def client_binding_json(self) -> str:
        """The durableClient binding for functions this host invokes itself (timer triggers):
        its URLs reach THIS host's management API (DevServer's address, or a loopback one)."""
        from .management import ManagementApi, ManagementServer
        origin = self.client_origin
        if origin is None:
            if self._loopback is None:
                self._loopback = ManagementServer(self).start()
            origin = self._loopback.base_url
        return ManagementApi(self).binding_json(origin)

    # ------------------------------------------------------------------ the engine

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFoundError(f"No instance with ID {instance_id} found.")
        return inst

    def _new_execution(self, inst: _Instance, input_json: Optional[str], now: float,
                       version: str) -> _Execution:
        ex = _Execution(execution_id=uuid.uuid4().hex, input_json=input_json,
                        version=version or "")
        ex.history.append(self._event(ORCHESTRATOR_STARTED, now))
        ex.history.append(self._event(
            EXECUTION_STARTED, now, Name=inst.name, Version=ex.version, Input=input_json,
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

    def _runnable(self, inst: _Instance) -> bool:
        return (inst.status in RUNNING_STATES and not inst.busy
                and (not inst.version_blocked or inst.version_retry_at <= self.clock.now()))

    def _due_deliveries(self, inst: _Instance, now: float) -> List[Tuple[float, int, str, Any]]:
        """Due timers (open and cancelled) and arrived messages, oldest first; at a tie the
        timer comes first (it was enqueued first: a timer that fired before an event wins)."""
        ex = inst.current
        due: List[Tuple[float, int, str, Any]] = []
        for tid, timer in itertools.chain(ex.timers.items(), ex.ghost_timers.items()):
            if timer.fire_at <= now:
                due.append((timer.fire_at, -1, "timer", tid))
        for message in inst.messages:
            if message.arrival <= now:
                due.append((message.arrival, message.seq, "message", message))
        due.sort(key=lambda d: (d[0], d[1]))
        return due

    def _pick_work(self):
        """The next unit of work (under the lock)."""
        for inst in self._instances.values():
            if inst.needs_run and self._runnable(inst):
                return ("run", inst, None)
        best_activity = None
        for inst in self._instances.values():
            if self._runnable(inst) and inst.current.activities:
                work = inst.current.activities[0]
                if best_activity is None or work.ticket < best_activity[2].ticket:
                    best_activity = ("activity", inst, work)
        if best_activity is not None:
            return best_activity
        now = self.clock.now()
        for record in self._entities.values():
            if not record.busy and record.queue and record.next_arrival() <= now:
                return ("entity", record, None)
        for trigger in self._timer_triggers.values():
            if not trigger.running and trigger.next_due <= now:
                return ("timer_trigger", trigger, None)
        best = None
        for inst in self._instances.values():
            if not self._runnable(inst):
                continue
            due = self._due_deliveries(inst, now)
            if due and (best is None or due[0][:2] < best[0][:2]):
                best = (due[0], inst, due)
        if best is None:
            return None
        first, inst, due = best
        return ("deliver", inst, due if self.batch_events else [first])

    def _step(self, raise_errors: bool) -> bool:
        """One unit of work (usually one episode of one instance). False when nothing is due."""
        with self._step_lock:
            with self._cond:
                work = self._pick_work()
                if work is None:
                    return False
                kind, target, item = work
                if kind == "run":
                    self._episode(target, [], raise_errors)
                    self._cond.notify_all()
                    return True
                if kind == "deliver":
                    self._episode(target, item, raise_errors)
                    self._cond.notify_all()
                    return True
                if kind == "timer_trigger":
                    target.running = True
                    due = target.next_due
                    start = datetime.fromtimestamp(self.clock.now(), tz=timezone.utc)
                    target.next_due = target.schedule.next_after(start).timestamp()
                elif kind == "entity":
                    target.busy = True
                    batch = target.due(self.clock.now())
                    taken = {id(op) for op in batch}
                    target.queue = collections.deque(op for op in target.queue
                                                     if id(op) not in taken)
                else:  # activity
                    inst = target
                    ex = inst.current
                    ex.activities.popleft()
                    ex.in_flight += 1
                    inst.busy = True
            if kind == "entity":
                try:
                    self._run_entity_batch(target, batch)
                finally:
                    with self._cond:
                        target.busy = False
                        self._cond.notify_all()
                return True
            if kind == "activity":
                try:
                    ok, payload = self._run_activity(inst, item)
                finally:
                    with self._cond:
                        inst.busy = False
                        ex.in_flight -= 1
                with self._cond:
                    if inst.status not in RUNNING_STATES or inst.current is not ex:
                        log.info("dropping result of %s for %s (instance %s)", item.name,
                                 inst.instance_id, inst.status)
                        self._cond.notify_all()
                        return True
                    message = _Message(self.clock.now(), next(self._seq), "result", work=item,
                                       ok=ok, payload=payload)
                    if self.batch_events:
                        inst.messages.append(message)  # delivered with whatever else is due
                    else:
                        self._episode(inst, [(message.arrival, message.seq, "message", message)],
                                      raise_errors)
                    self._cond.notify_all()
                return True
        # timer trigger: invoked outside every lock (its client calls back into this host)
        try:
            self._invoke_timer_trigger(target, due)
        finally:
            with self._cond:
                target.running = False
                target.last = due
                self._cond.notify_all()
        return True

    # ------------------------------------------------------------------ one episode

    def _episode(self, inst: _Instance, deliveries, raise_errors: bool) -> None:
        """Append the delivered events after one OrchestratorStarted and replay once."""
        if self._version_rejected(inst):
            return
        inst.needs_run = False
        ex = inst.current
        now = self.clock.now()
        if deliveries:
            only = deliveries[0] if len(deliveries) == 1 else None
            stamp = None
            if only is not None and only[2] == "timer":
                timer = ex.timers.get(only[3]) or ex.ghost_timers.get(only[3])
                # Stamp with fireAt itself when the clock is (virtually) exactly there, so
                # current_utc_datetime after the timer equals fireAt with no float rounding.
                if timer is not None and now - timer.fire_at < 0.001:
                    stamp = timer.fire_at_text
            ex.history.append(self._event(ORCHESTRATOR_STARTED, stamp or self._stamp(ex, now)))
            for _, _, what, item in deliveries:
                if what == "timer":
                    self._deliver_timer(ex, item, now)
                else:
                    if item in inst.messages:  # a result in non-batch mode never queued
                        inst.messages.remove(item)
                    if item.kind == "event":
                        ex.history.append(self._event(EVENT_RAISED, now, Name=item.name,
                                                      Input=item.data_json))
                    else:
                        self._deliver_result(ex, item, now)
        self._replay(inst, raise_errors)

    def _stamp(self, ex: _Execution, at: Optional[float] = None) -> str:
        # OrchestratorStarted stamps never go backwards within an execution.
        now = self.clock.now() if at is None else at
        last = max(parse_timestamp(e["Timestamp"]) for e in ex.history
                   if e["EventType"] == ORCHESTRATOR_STARTED)
        return format_timestamp(max(now, last))

    def _deliver_timer(self, ex: _Execution, tid: int, now: float) -> None:
        timer = ex.timers.pop(tid, None) or ex.ghost_timers.pop(tid)
        ex.history.append(self._event(TIMER_FIRED, now, TimerId=tid, FireAt=timer.fire_at_text))
        work = timer.retry_of
        if work is not None and work.retry.attempt < work.retry.max_attempts:
            # The extension re-schedules the activity when the retry timer fires.
            new_id = ex.next_id
            ex.next_id += 1
            retry = _Retry(work.retry.max_attempts, work.retry.interval_ms, work.retry.attempt + 1)
            ex.history.append(self._event(TASK_SCHEDULED, now, event_id=new_id, Name=work.name,
                                          Input=work.input_json))
            ex.id_owner[new_id] = work.leaf
            ex.activities.append(_ActivityWork(next(self._tickets), new_id, work.name,
                                               work.input_json, retry, work.leaf))
        # After the last attempt the timer just fires: the SDK then raises the last failure.

    def _deliver_result(self, ex: _Execution, message: _Message, now: float) -> None:
        work = message.work
        if message.ok:
            ex.history.append(self._event(TASK_COMPLETED, now, TaskScheduledId=work.task_id,
                                          Result=message.payload))
            return
        reason, details = message.payload
        ex.history.append(self._event(TASK_FAILED, now, TaskScheduledId=work.task_id,
                                      Reason=reason, Details=details))
        if work.retry is not None:
            # DTFx RetryInterceptor: a timer after every failed attempt, the last one included.
            tid = ex.next_id
            ex.next_id += 1
            fire_at = now + work.retry.interval_ms / 1000.0
            text = format_timestamp(fire_at)
            ex.history.append(self._event(TIMER_CREATED, now, event_id=tid, FireAt=text))
            ex.timers[tid] = _Timer(parse_timestamp(text), text, retry_of=work)
            ex.id_owner[tid] = work.leaf
            if work.retry.attempt >= work.retry.max_attempts:
                ex.retry_final_timers.add(tid)

    def _run_activity(self, inst: _Instance, work: _ActivityWork) -> Tuple[bool, Any]:
        info = self.activities.get(work.name)
        if info is None:
            return False, ext.missing_activity_failure(work.name, self.activities)
        outcome: Tuple[bool, Any] = (False, None)
        for _ in range(2 if self.activities_twice else 1):
            try:
                # The worker's own converters: df_loads of the JSON input, df_dumps of the result.
                value = ActivityTriggerConverter.decode(
                    meta.Datum(type="string", value=work.input_json if work.input_json is not None
                               else "null"), trigger_metadata={})
                kwargs = info.build_kwargs(value)
                result = call_maybe_async(info.user_function, kwargs)
                encoded = ActivityTriggerConverter.encode(result, expected_type=None)
                outcome = (True, encoded.value)
            except Exception as exc:  # the activity failed: TaskFailed like the real host
                log.info("activity %s of %s failed: %s: %s", work.name, inst.instance_id,
                         type(exc).__name__, exc)
                outcome = (False, ext.activity_failure(work.name, exc))
        return outcome

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
        info = self.orchestrators.get(inst.name)
        if info is None:
            known = ", ".join(f"'{n}'" for n in sorted(self.orchestrators))
            return None, (f"The function '{inst.name}' doesn't exist, is disabled, or is not an "
                          f"orchestrator function. Additional info: The following are the known "
                          f"orchestrator functions: {known}.")
        return run_orchestrator(info, self._context_json(inst))

    def _version_rejected(self, inst: _Instance) -> bool:
        """DTFx TaskOrchestrationDispatcher's versioning check, before any user code runs."""
        options = self.durable_options
        if not options.default_version:
            return False  # no worker version configured: VersioningSettings are not applied
        ex = inst.current
        if not ext.version_mismatch(ex.version, options.default_version,
                                    options.version_match_strategy):
            inst.version_blocked, inst.dequeue_count = False, 0
            return False
        now = self.clock.now()
        if options.version_failure_strategy.lower() == "fail":
            failure = {"ErrorType": "VersionMismatch", "ErrorMessage": ext.VERSION_MISMATCH_MESSAGE,
                       "StackTrace": None, "InnerFailure": None, "IsNonRetriable": True}
            ex.history.append(self._event(ORCHESTRATOR_STARTED, self._stamp(ex, now)))
            ex.history.append(self._event(EXECUTION_COMPLETED, now, OrchestrationStatus="Failed",
                                          Result=None, FailureDetails=failure))
            # The Instances table shows FailureDetails.ToString() as the output.
            self._finish(inst, "Failed", f"VersionMismatch: {ext.VERSION_MISMATCH_MESSAGE}", now)
            events_log.warning("%s (Orchestrator) instance %s failed: version '%s' does not match "
                               "the worker's '%s' (%s)", inst.name, inst.instance_id, ex.version,
                               options.default_version, options.version_match_strategy)
        else:
            self._abandon(inst, now)
        return True

    def _abandon(self, inst: _Instance, now: float) -> None:
        """Reject: the work item is abandoned back to the control queue, invisible for 2^n
        seconds (n = its dequeue count) up to 600 s, with the Azure Storage backend's log lines;
        at the cap it is also reported as poison (and stays in the queue). Nothing logged names
        a version mismatch. (DurableTask.AzureStorage ControlQueue/WorkItemQueue
        AbandonMessageAsync; Logging/LogEvents AbandoningMessage, PoisonMessageDetected.)"""
        inst.version_blocked = True
        inst.dequeue_count += 1
        delay = ext.abandon_delay_seconds(inst.dequeue_count)
        inst.version_retry_at = now + delay
        partition = f"{self.task_hub.lower()}-control-00"
        event = "ExecutionStarted" if inst.status == "Pending" else "EventRaised"
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{inst.instance_id}/{inst.current.execution_id}"))
        if delay >= ext.ABANDON_MAX_DELAY_SECONDS:
            storage_log.warning(ext.poison_message_text(inst.instance_id, event, message_id,
                                                        inst.dequeue_count))
        storage_log.warning(ext.abandoning_message_text(inst.instance_id, event, partition, delay))
        log.debug("instance %s version '%s' rejected by worker version '%s' (%s)",
                  inst.instance_id, inst.current.version, self.durable_options.default_version,
                  self.durable_options.version_match_strategy)

    def _replay(self, inst: _Instance, raise_errors: bool) -> None:
        ex = inst.current
        now = self.clock.now()
        state, error = self._invoke_orchestrator(inst)
        ex.replays += 1
        inst.last_updated = now
        if inst.status == "Pending" or inst.status == "ContinuedAsNew":
            inst.status = "Running"
        gate = None
        unsupported = None
        if state is not None:
            custom = state.get("customStatus")
            too_big = ext.custom_status_error(custom) if custom is not None else None
            if too_big:
                # EXT OutOfProcOrchestrationShim: SetCustomStatus throws before any action is
                # replayed, so DTFx then meets the history's scheduled tasks with no action.
                self._fail(inst, self._early_failure(inst, too_big), now)
                ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                return
            actions = state.get("actions") or []
            if len(actions) > 1:  # EXT ReplayOOProcOrchestration for schema V2/V3
                self._fail(inst, f"Orchestrator function '{inst.name}' failed: With OOProc "
                                 f"schema V3, expected actions array to be of length 1 in outer "
                                 f"layer but got size: {len(actions)}", now)
                ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                return
            top = actions[0] if actions else []
            flat = [leaf for action in top for leaf in ext.leaves(action)]
            if self.check_determinism:
                problem = self._compare(ex.flat, flat)
                if problem:
                    err = NonDeterminismError(
                        f"Non-deterministic workflow detected in '{inst.name}' "
                        f"(instance {inst.instance_id}): {problem}")
                    self._fail(inst, f"Orchestrator function '{inst.name}' failed: {err}", now)
                    ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                    inst.error = err
                    if raise_errors:
                        raise err
                    log.error("%s", err)
                    return
            gate = ext.simulate_replay(top, ex.history[2:], ex.leaf_ids, ex.id_owner,
                                       ex.retry_final_timers, ex.retry_leaves)
            unsupported = self._schedule(inst, ex, flat, max(gate.invoked_leaves, ex.committed),
                                         now)
            for index in range(ex.committed):
                action = flat[index] if index < len(flat) else {}
                tid = ex.leaf_ids.get(index)
                if (action.get("actionType") == CREATE_TIMER and action.get("isCanceled")
                        and tid in ex.timers):
                    # No longer an open task, but DTFx cannot recall the timer message.
                    ex.ghost_timers[tid] = ex.timers.pop(tid)
            ex.flat = flat
            if custom is not None:
                inst.custom_status = custom
            if unsupported:
                error = unsupported
        if error is None and not (state or {}).get("isDone"):
            ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
            return
        if not unsupported and gate is not None and (not gate.complete or self._has_open(inst)):
            # DTFx: the orchestration completes (or fails, or continues as new) only once the
            # extension's replay has returned and no task is open.
            log.debug("instance %s returned but waits: replay %s, open tasks %s",
                      inst.instance_id, "complete" if gate.complete else "blocked",
                      self._has_open(inst))
            ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
            return
        if error is not None:
            self._fail(inst, f"Orchestrator function '{inst.name}' failed: {error}", now)
        else:
            can = [a for a in ex.flat if a.get("actionType") == CONTINUE_AS_NEW_ACTION]
            if can:
                # The extension passes the action's JSON text to ContinueAsNew(object), which
                # serializes it again: stored like a client-started input. DTFx keeps the
                # version (NewVersion ?? runtimeState.Version) and the custom status.
                new_input = json.dumps(can[-1].get("input"))
                ex.history.append(self._event(CONTINUE_AS_NEW, now, Input=new_input))
                ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))
                # New execution, same instance id; events already in the old history but not
                # consumed are dropped (preserveUnprocessedEvents=false), and so are messages
                # still queued for the old execution (DTFx drops other executions' events).
                inst.messages = [m for m in inst.messages if m.kind == "event"]
                inst.executions.append(self._new_execution(inst, new_input, now, ex.version))
                inst.created = now  # Azure Storage: CreatedTime of the new ExecutionStarted
                inst.status = "ContinuedAsNew"
                events_log.info("%s (Orchestrator) instance %s continued as new.", inst.name,
                                inst.instance_id)
                return
            output = state.get("output")
            ex.history.append(self._event(EXECUTION_COMPLETED, now, OrchestrationStatus="Completed",
                                          Result=json.dumps(output)))
            self._finish(inst, "Completed", output, now)
        ex.history.append(self._event(ORCHESTRATOR_COMPLETED, now))

    def _early_failure(self, inst: _Instance, message: str) -> str:
        """The failure text when the shim throws before replaying any action: DTFx then finds the
        first scheduled task of the history unscheduled (TaskOrchestrationContext)."""
        for event in inst.current.history:
            if event["EventType"] in (TASK_SCHEDULED, TIMER_CREATED, EVENT_SENT):
                return ext.nondeterminism_message(ext.unscheduled_message(event))
        return f"Orchestrator function '{inst.name}' failed: {message}"

    def _has_open(self, inst: _Instance) -> bool:
        ex = inst.current
        return bool(ex.timers or ex.activities or ex.in_flight
                    or any(m.kind == "result" for m in inst.messages))

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

    def _schedule(self, inst: _Instance, ex: _Execution, flat: List[dict], upto: int,
                  now: float) -> Optional[str]:
        """Hand the leaves ``flat[ex.committed:upto]`` to "DTFx": history events, pending work."""
        unsupported = None
        for index in range(ex.committed, min(upto, len(flat))):
            action = flat[index]
            kind = action.get("actionType")
            if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
                task_id = self._next_id(ex, index)
                name = action.get("functionName")
                ex.history.append(self._event(TASK_SCHEDULED, now, event_id=task_id, Name=name,
                                              Input=action.get("input")))
                retry = None
                if kind == CALL_ACTIVITY_WITH_RETRY:
                    opts = action.get("retryOptions") or {}
                    retry = _Retry(int(opts.get("maxNumberOfAttempts", 1)),
                                   int(opts.get("firstRetryIntervalInMilliseconds", 1000)))
                    ex.retry_leaves.add(index)
                ex.activities.append(_ActivityWork(next(self._tickets), task_id, name,
                                                   action.get("input"), retry, index))
            elif kind == CREATE_TIMER:
                task_id = self._next_id(ex, index)
                text = action["fireAt"]
                ex.history.append(self._event(TIMER_CREATED, now, event_id=task_id, FireAt=text))
                timer = _Timer(parse_timestamp(text), text)
                if action.get("isCanceled"):
                    ex.ghost_timers[task_id] = timer
                else:
                    ex.timers[task_id] = timer
            elif kind == SIGNAL_ENTITY:
                problem = self._signal_from_orchestrator(inst, ex, index, action, now)
                unsupported = unsupported or problem
            elif kind in (WAIT_FOR_EXTERNAL_EVENT, CONTINUE_AS_NEW_ACTION):
                pass  # no sequence id, no history event
            else:
                # Sub-orchestrations, entity calls and durable HTTP are not needed by this app.
                self._next_id(ex, index)
                unsupported = unsupported or (
                    f"devhost does not support action type {kind} ({action}); it implements "
                    f"activities, timers, external events, continue_as_new and signal_entity")
        ex.committed = max(ex.committed, min(upto, len(flat)))
        return unsupported

    @staticmethod
    def _next_id(ex: _Execution, index: int) -> int:
        task_id = ex.next_id
        ex.next_id += 1
        ex.leaf_ids[index] = task_id
        return task_id

    def _signal_from_orchestrator(self, inst: _Instance, ex: _Execution, index: int,
                                  action: dict, now: float) -> Optional[str]:
        """EXT DurableOrchestrationContext.SignalEntity: an EventSent "op" to ``@name@key``,
        queued for the entity when the episode commits; fire-and-forget."""
        scheduler_id = str(action.get("instanceId") or "")
        name, _, key = scheduler_id[1:].partition("@")
        try:
            self._entity_function(name)
        except FunctionNotFoundError as exc:
            return str(exc)
        task_id = self._next_id(ex, index)
        # RequestMessage.SetInput serializes the action's input (already JSON text) again.
        input_json = json.dumps(action.get("input"))
        request = {"op": action.get("operation"), "signal": True, "input": input_json,
                   "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ex.execution_id}/{task_id}")),
                   "parent": inst.instance_id, "parentExecution": ex.execution_id,
                   "timestamp": format_timestamp(now)}
        ex.history.append(self._event(EVENT_SENT, now, event_id=task_id, InstanceId=scheduler_id,
                                      Name=ENTITY_REQUEST_EVENT, Input=json.dumps(request)))
        record = self._entities.setdefault((name.lower(), key), _EntityRecord(name.lower(), key))
        record.queue.append({"name": request["op"], "input": input_json, "isSignal": True,
                             "id": request["id"], "parent": inst.instance_id, "seq": next(self._seq),
                             "arrival": self._signal_arrival(inst.instance_id, record, now)})
        return None

    def _signal_arrival(self, sender: Optional[str], record: _EntityRecord,
                        sent_at: Optional[float] = None) -> float:
        """When a signal reaches its entity: at once, or (realistic mode) after the control
        queue's polling latency, in order per sender only."""
        now = self.clock.now() if sent_at is None else sent_at
        if self._signals is None:
            return now
        return self._signals.arrival(now, sender, (record.name, record.key))

    def _fail(self, inst: _Instance, message: str, now: float) -> None:
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
        ex.ghost_timers.clear()
        ex.activities.clear()
        inst.messages.clear()
        if self._signals is not None:
            self._signals.forget_sender(inst.instance_id)
        log.info("instance %s %s", inst.instance_id, status)
        events_log.info("%s (Orchestrator) instance %s %s. RuntimeStatus: %s.", inst.name,
                        inst.instance_id, status.lower(), status)

    # ------------------------------------------------------------------ entities, timers

    def _run_entity_batch(self, record: _EntityRecord, batch: List[Dict[str, Any]]) -> None:
        """One batch through the real SDK handle with the context JSON the extension sends
        (EXT Bindings/EntityTriggerAttributeBindingProvider.EntityContextToString)."""
        info = self._entity_function(record.name)
        body = json.dumps({
            "self": {"name": record.name, "key": record.key},
            "exists": record.exists, "state": record.state,
            "batch": [{"name": op["name"], "input": op["input"], "isSignal": op["isSignal"],
                       "id": op["id"]} for op in batch]})
        try:
            out = info.user_function(**{info.trigger_param: func.EntityContext(body)})
            result = json.loads(out)
        except Exception as exc:  # the whole batch failed: nothing of it is committed
            log.error("entity %s@%s: batch of %d operation(s) failed: %s: %s", record.name,
                      record.key, len(batch), type(exc).__name__, exc)
            return
        with self._cond:
            record.exists = bool(result.get("entityExists"))
            record.state = result.get("entityState") if record.exists else None
            record.last_modified = self.clock.now()
            for op, outcome in zip(batch, result.get("results") or []):
                if outcome.get("isError"):
                    log.warning("entity %s@%s: operation %s failed: %s", record.name, record.key,
                                op["name"], _loads(outcome.get("result")))

    def _invoke_timer_trigger(self, trigger: _TimerTrigger, due: float) -> None:
        from azure.functions.timer import TimerRequestConverter
        now = self.clock.now()
        # The host's TimerInfo: past due when the occurrence was missed (the host was down or
        # busy, or the clock jumped past it), not when it fires on time.
        past_due = now - due > 0.001
        status = {"Last": _status_time(trigger.last or due), "Next": _status_time(trigger.next_due),
                  "LastUpdated": _status_time(now)}
        timer_info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status,
                      "IsPastDue": past_due}
        value = TimerRequestConverter.decode(meta.Datum(json.dumps(timer_info), "json"),
                                             trigger_metadata={})
        info = trigger.info
        record: Dict[str, Any] = {"function": info.name, "scheduledFor": _status_time(due),
                                  "pastDue": past_due, "ok": True, "error": None}
        self.timer_invocations.append(record)
        events_log.info("Executing 'Functions.%s' (Reason='Timer fired at %s', past due: %s)",
                        info.name, _status_time(now), past_due)
        try:
            kwargs = info.build_kwargs(value, client_binding=self.client_binding_json())
            call_maybe_async(info.user_function, kwargs)
        except Exception as exc:  # the host logs a failed timer function and keeps the schedule
            record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            log.error("timer function %s failed: %s: %s", info.name, type(exc).__name__, exc)

    # ------------------------------------------------------------------ status

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
            "createdTime": _status_time(inst.created),
            "lastUpdatedTime": _status_time(inst.last_updated),
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
    "InstanceAlreadyExistsError", "FunctionNotFoundError", "InvalidInstanceIdError",
    "OrchestrationStuckError", "DevhostError", "DurableOptions", "RealClock", "VirtualClock",
    "flatten_actions", "to_epoch",
]
