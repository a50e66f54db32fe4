"""What the Durable Task extension and DurableTask.Core do, reproduced for devhost (DEVELOPMENT TOOL).

Pure functions and one small simulator, each citing the source it reproduces. Abbreviations:
EXT = Azure/azure-functions-durable-extension (src/WebJobs.Extensions.DurableTask/...),
DTFx = Azure/durabletask (src/DurableTask.Core/...), HOST = Azure/azure-functions-host,
WORKER = Azure/azure-functions-python-worker.

Activity failures (TaskFailed Reason and Details)
-------------------------------------------------
An out-of-process Python activity that raises reaches the orchestrator like this:

1. The worker reports ``RpcException(message=f"{type(exc).__name__}: {exc}", stack_trace=...)``
   (WORKER azure_functions_worker/dispatcher.py ``_serialize_exception``; the stack is
   ``''.join(traceback.extract_tb(exc.__traceback__).format())``, utils/tracing.py).
2. The host wraps it as ``RpcException`` whose message is
   ``"Result: Failure\\nException: <message>\\nStack: <stack>"``
   (HOST Workers/Rpc/RpcException.cs; Grpc StatusResultExtensions.GetRpcException).
3. The extension cuts the "friendly" message out of that text: everything between
   ``"\\nException:"`` and the first ``"\\nStack:"``, which KEEPS the space after the colon
   (EXT OutOfProcExceptionHelpers.TryGetExceptionWithFriendlyMessage), and fails the task with
   ``Reason = f"Activity function '{name}' failed: {friendly}"`` and
   ``Details = <Newtonsoft JSON of new Exception(friendly, rpcException)>``
   (EXT Listener/TaskActivityShim.cs; ErrorSerializerSettingsFactory: TypeNameHandling.Objects,
   only Message/Data/InnerException/HelpLink/Source/HResult/StackTrace).
4. The Python SDK raises ``Exception(f"{Reason} \\n {Details}")`` in the orchestrator
   (azure/durable_functions/models/TaskOrchestrationExecutor.py).

So ``str(exc)`` in the orchestrator is exactly::

    Activity function 'createJob' failed:  DatabricksApiError: Databricks API error 400 ... \\n {"$type":"System.Exception, System.Private.CoreLib","Message":" DatabricksApiError: ...",...}

Note the TWO spaces after ``failed:``; the exception type name and the message follow as
``<Type>: <message>``; the second part is one line of JSON whose ``InnerException.Message`` repeats
the type, message and Python stack. A multi-line exception message stays multi-line in the Reason.
Classify by ``"failed:  <Type>: "`` (or strip the Reason), never by the Details.
"""
from __future__ import annotations

import json
import re
import traceback
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

# ----------------------------------------------------------------------------------- failures

_RPC_EXCEPTION_LABEL = "\nException:"       # EXT OutOfProcExceptionHelpers.MessageLabel
_RPC_STACK_LABEL = "\nStack:"               # EXT OutOfProcExceptionHelpers.StackTraceLabel
_OUT_OF_PROC_DATA_LABEL = "\n\n$OutOfProcData$:"
_DOTNET_EXCEPTION_HRESULT = -2146233088     # COR_E_EXCEPTION, System.Exception's HResult
# The frame the host's RpcException is thrown from (as seen in Details on Azure, e.g.
# azure-functions-durable-python issue #496); .NET frames cannot be reproduced more exactly.
_RPC_STACK_TRACE = ("   at Microsoft.Azure.WebJobs.Script.Description.WorkerFunctionInvoker."
                    "InvokeCore(Object[] parameters, FunctionInvocationContext context) in "
                    "/_/src/WebJobs.Script/Description/Workers/WorkerFunctionInvoker.cs:line 101")


def worker_exception_message(exc: BaseException) -> str:
    """The message the Python worker reports for a failed invocation (WORKER dispatcher.py)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - the worker's own fallback text
        return "Unhandled exception in function. Could not serialize original exception message."


def worker_stack_trace(exc: BaseException) -> str:
    """WORKER utils/tracing.py marshall_exception_trace."""
    try:
        return "".join(traceback.extract_tb(exc.__traceback__).format())
    except Exception:  # noqa: BLE001
        return ""


def rpc_exception_message(message: str, stack: str) -> str:
    """HOST RpcException: ``$"Result: {result}\\nException: {message}\\nStack: {stack}"``."""
    return f"Result: Failure\nException: {message}\nStack: {stack}"


def friendly_message(rpc_message: str) -> str:
    """EXT OutOfProcExceptionHelpers.TryGetExceptionWithFriendlyMessage (leading space kept)."""
    start = rpc_message.index(_RPC_EXCEPTION_LABEL) + len(_RPC_EXCEPTION_LABEL)
    end = rpc_message.index(_RPC_STACK_LABEL)
    text = rpc_message[start:end]
    cut = text.find(_OUT_OF_PROC_DATA_LABEL)
    return text if cut == -1 else text[:cut]


def newtonsoft_json(value: Any) -> str:
    """Newtonsoft's default text: compact, non-ASCII kept, U+0085/U+2028/U+2029 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("\u0085", "\\u0085").replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029"))


def _dotnet_exception(type_name: str, message: str, inner: Optional[dict], source: Optional[str],
                      stack_trace: Optional[str]) -> Dict[str, Any]:
    # Property order of System.Exception as Newtonsoft reflects it, TargetSite removed
    # (EXT ErrorSerializerSettingsFactory.ExceptionResolver).
    return {"$type": type_name, "Message": message,
            "Data": {"$type": "System.Collections.ListDictionaryInternal, System.Private.CoreLib"},
            "InnerException": inner, "HelpLink": None, "Source": source,
            "HResult": _DOTNET_EXCEPTION_HRESULT, "StackTrace": stack_trace}


def activity_failure(activity_name: str, exc: BaseException) -> Tuple[str, str]:
    """TaskFailed ``(Reason, Details)`` for an out-of-process activity that raised ``exc``."""
    rpc_message = rpc_exception_message(worker_exception_message(exc), worker_stack_trace(exc))
    friendly = friendly_message(rpc_message)
    inner = _dotnet_exception(
        "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script",
        rpc_message, None, "System.Private.CoreLib", _RPC_STACK_TRACE)
    details = _dotnet_exception("System.Exception, System.Private.CoreLib", friendly, inner,
                                None, None)
    return f"Activity function '{activity_name}' failed: {friendly}", newtonsoft_json(details)


def missing_activity_failure(activity_name: str, known: Iterable[str]) -> Tuple[str, str]:
    """EXT Listener/TaskNonexistentActivityShim.cs: a FunctionFailedException, no worker call."""
    names = ", ".join(f"'{n}'" for n in sorted(known))
    message = (f"The function '{activity_name}' doesn't exist, is disabled, or is not an activity "
               f"function. Additional info: The following are the known activity functions: "
               f"{names}.")
    details = _dotnet_exception(
        "Microsoft.Azure.WebJobs.FunctionFailedException, "
        "Microsoft.Azure.WebJobs.Extensions.DurableTask", message, None, None, None)
    return f"Activity function '{activity_name}' failed: {message}", newtonsoft_json(details)


# ------------------------------------------------------------------------------ custom status

MAX_CUSTOM_STATUS_KB = 16  # EXT DurableOrchestrationContext.SetCustomStatus


def custom_status_error(value: Any) -> Optional[str]:
    """The ArgumentException text when a custom status is too large, else None.

    EXT MessagePayloadDataConverter.Serialize(value, 16): the compact JSON's UTF-16 byte count,
    divided by 1024 and TRUNCATED to an int, must not exceed 16 (so 17,407 bytes still pass)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    size_kb = int(len(text.encode("utf-16-le")) / 1024.0)
    if size_kb > MAX_CUSTOM_STATUS_KB:
        return (f"The UTF-16 size of the JSON-serialized payload must not exceed "
                f"{MAX_CUSTOM_STATUS_KB:,} KB. The current payload size is {size_kb:,} KB.")
    return None


# -------------------------------------------------------------------------------- instance ids

MAX_INSTANCE_ID_LENGTH = 256  # EXT ContextImplementations/DurableClient.cs


def instance_id_error(instance_id: str) -> Optional[str]:
    """The ArgumentException message the extension's StartNewAsync throws, or None.

    EXT DurableClient.StartNewAsync: empty -> a new GUID (not an error); ``@`` first, or any of
    ``/ \\ # ?`` or a control character -> refused; longer than 256 -> refused. The first two
    pass their message as the paramName (``new ArgumentException(nameof(instanceId), "...")``),
    so .NET renders ``instanceId (Parameter '...')``."""
    if not instance_id:
        return None
    if instance_id.startswith("@"):
        return "instanceId (Parameter 'Orchestration instance ids must not start with @.')"
    if any(c in "/\\?#" or unicodedata.category(c) == "Cc" for c in instance_id):
        return ("instanceId (Parameter 'Orchestration instance ids must not contain /, \\, #, ?, "
                "or control characters.')")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        return f"Instance ID lengths must not exceed {MAX_INSTANCE_ID_LENGTH} characters."
    return None


def entity_key_error(key: str) -> Optional[str]:
    """EXT DurableClient.SignalEntityAsyncInternal: keys must not contain / \\ # ? or controls."""
    if any(c in "/\\?#" or unicodedata.category(c) == "Cc" for c in key):
        return ("entityKey (Parameter 'Entity keys must not contain /, \\, #, ?, or control "
                "characters.')")
    return None


# ------------------------------------------------------------------------------------ versions

def compare_versions(source: Optional[str], other: Optional[str]) -> int:
    """DTFx Settings/VersioningSettings.CompareVersions: empty < defined; System.Version when
    both parse; else a case-insensitive ordinal string comparison."""
    source_empty, other_empty = not (source or "").strip(), not (other or "").strip()
    if source_empty and other_empty:
        return 0
    if source_empty:
        return -1
    if other_empty:
        return 1
    a, b = _dotnet_version(source), _dotnet_version(other)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    x, y = source.upper(), other.upper()
    return (x > y) - (x < y)


_DOTNET_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$")


def _dotnet_version(text: str) -> Optional[Tuple[int, int, int, int]]:
    # System.Version.TryParse needs 2 to 4 numeric components; missing ones compare as -1.
    m = _DOTNET_VERSION.match(text)
    if not m:
        return None
    return tuple(int(g) if g is not None else -1 for g in m.groups())  # type: ignore[return-value]


def version_mismatch(instance_version: str, worker_version: str, strategy: str) -> bool:
    """DTFx TaskOrchestrationDispatcher: does the instance fail the worker's match strategy?"""
    strategy = (strategy or "None").lower()
    if strategy == "strict":
        return (instance_version or "") != (worker_version or "")
    if strategy == "currentorolder":
        return compare_versions(instance_version, worker_version) > 0
    return False


VERSION_MISMATCH_MESSAGE = "Orchestration version did not comply with Worker Versioning"

# ------------------------------------------------------- abandoned messages (Azure Storage backend)
# DurableTask.AzureStorage AbandonMessageAsync: an abandoned message (Reject) is invisible for
# 2^dequeueCount seconds, capped at 600; at the cap it is logged as poison, and it stays queued.
ABANDON_MAX_DELAY_SECONDS = 600


def abandon_delay_seconds(dequeue_count: int) -> int:
    return min(2 ** min(int(dequeue_count), 30), ABANDON_MAX_DELAY_SECONDS)


def abandoning_message_text(instance_id: str, event: str, partition: str, delay_seconds: int) -> str:
    """LogEvents.AbandoningMessage (Warning). The backend formats the delay in SECONDS after the
    word "ms": reproduced as it reads."""
    return (f"{instance_id}: Abandoning {event} message back to {partition} and setting a "
            f"visibility delay of {delay_seconds}ms")


def poison_message_text(instance_id: str, event: str, message_id: str, dequeue_count: int) -> str:
    """LogEvents.PoisonMessageDetected (Warning)."""
    return (f"{instance_id}: Message {event} with ID {message_id} has been dequeued "
            f"{dequeue_count} times and is now considered poison")


# ---------------------------------------------------------------------- non-determinism (DTFx)

def nondeterminism_message(detail: str) -> str:
    """DTFx Exceptions/NonDeterministicOrchestrationException."""
    return "Non-Deterministic workflow detected: " + detail


def unscheduled_message(event: Dict[str, Any]) -> str:
    """DTFx TaskOrchestrationContext.Handle*Event when the replay did not schedule that id."""
    eid, kind = event.get("EventId"), event.get("EventType")
    if kind == 4:
        return (f"A previous execution of this orchestration scheduled an activity task with "
                f"sequence ID {eid} and name '{event.get('Name')}' (version "
                f"'{event.get('Version') or ''}'), but the current replay execution hasn't (yet?) "
                f"scheduled this task. Was a change made to the orchestrator code after this "
                f"instance had already started running?")
    if kind == 10:
        return (f"A previous execution of this orchestration scheduled a timer task with sequence "
                f"number {eid} but the current replay execution hasn't (yet?) scheduled this task. "
                f"Was a change made to the orchestrator code after this instance had already "
                f"started running?")
    return (f"A previous execution of this orchestration scheduled a send event task with "
            f"sequence ID {eid}, type 'EventSent' name '{event.get('Name')}', instance ID "
            f"'{event.get('InstanceId')}', but the current replay execution hasn't (yet?) "
            f"scheduled this task. Was a change made to the orchestrator code after this "
            f"instance had already started running?")


DTFX_ACTION_TYPE = {4: "ScheduleTaskOrchestratorAction", 10: "CreateTimerOrchestratorAction",
                    14: "SendEventOrchestratorAction"}


def mismatch_message(event: Dict[str, Any], produced_kind: int, produced_name: Optional[str]) -> str:
    """DTFx TaskOrchestrationContext.Handle*Event when the id holds another kind or name."""
    eid, kind = event.get("EventId"), event.get("EventType")
    if kind == 4 and produced_kind == 4:
        return (f"A previous execution of this orchestration scheduled an activity task with "
                f"sequence number {eid} named '{event.get('Name')}', but the current orchestration "
                f"replay instead scheduled an activity task named '{produced_name}' with this "
                f"sequence number.  Was a change made to the orchestrator code after this instance "
                f"had already started running?")
    produced = DTFX_ACTION_TYPE.get(produced_kind, "OrchestratorAction")
    if kind == 4:
        return (f"A previous execution of this orchestration scheduled an activity task with "
                f"sequence number {eid} named '{event.get('Name')}', but the current orchestration "
                f"replay instead produced a {produced} action with this sequence number. Was a "
                f"change made to the orchestrator code after this instance had already started "
                f"running?")
    if kind == 10:
        return (f"A previous execution of this orchestration scheduled a timer task with sequence "
                f"number {eid} named but the current orchestration replay instead produced a "
                f"{produced} action with this sequence number. Was a change made to the "
                f"orchestrator code after this instance had already started running?")
    return (f"A previous execution of this orchestration scheduled a send event task with "
            f"sequence ID {eid}, type 'EventSent', name '{event.get('Name')}', instance ID "
            f"'{event.get('InstanceId')}', but the current orchestration replay instead scheduled "
            f"a {produced} task at this sequence number. Was a change made to the orchestrator "
            f"code after this instance had already started running?")


# --------------------------------------------------------------- the out-of-proc replay gate

# ActionType numbers (azure.durable_functions.models.actions.ActionType; EXT AsyncActionType).
CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY = 0, 1
CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY = 2, 3
CONTINUE_AS_NEW_ACTION, CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT = 4, 5, 6
CALL_ENTITY, CALL_HTTP, SIGNAL_ENTITY, SCHEDULED_SIGNAL_ENTITY = 7, 8, 9, 10
WHEN_ANY, WHEN_ALL = 11, 12


def leaves(action: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The leaf actions of one top-level action, in invocation (yield) order."""
    if action.get("actionType") in (WHEN_ANY, WHEN_ALL):
        out: List[Dict[str, Any]] = []
        for child in action.get("compoundActions") or []:
            out.extend(leaves(child))
        return out
    return [action]


@dataclass
class ReplayGate:
    """How far the extension's replay of an action list gets, and what it leaves waiting.

    EXT Listener/OutOfProcOrchestrationShim.cs ``ProcessAsyncActionsV2`` awaits the top-level
    actions ONE AT A TIME, in order (failures are swallowed): an action after one that is not
    complete is not even handed to DTFx, so nothing after it is scheduled, however far the
    Python code has moved on. ``WhenAll`` completes when all children complete (Task.WhenAll,
    no fail-fast); ``WhenAny`` when one does; a timer emitted with ``isCanceled`` completes at
    once (a cancelled CancellationToken); fire-and-forget actions complete at once. Children the
    SDK had already scheduled are left out of a new compound action by the SDK itself
    (models/Task.py CompoundTask), so a ``task_any`` over a reused waiter waits, in the
    extension, only for its NEW children.

    External events follow EXT DurableOrchestrationContext: a raised event completes the NEWEST
    pending waiter of its name (a stack, names case-insensitive); with no waiter it is buffered
    and the next waiter invoked takes the oldest buffered one.
    """

    invoked_top: int = 0            # top-level actions handed to DTFx (a prefix)
    invoked_leaves: int = 0          # their leaves (a prefix of the flat list)
    complete: bool = False           # every top-level action completed (the replay returned)
    done: Dict[int, bool] = field(default_factory=dict)  # leaf index -> complete


def simulate_replay(top_actions: Sequence[Dict[str, Any]], history: Sequence[Dict[str, Any]],
                    leaf_ids: Dict[int, int], id_owner: Dict[int, int],
                    retry_final_timers: Iterable[int], retry_leaves: Iterable[int]) -> ReplayGate:
    """Run the extension's side of one episode over ``history``.

    ``leaf_ids``: leaf index -> sequence id for leaves already scheduled; ``id_owner``: every
    sequence id a retried activity used (attempts, retry timers) -> the leaf index it belongs to;
    ``retry_final_timers``: the ids of retry timers after a retried activity's last attempt;
    ``retry_leaves``: leaf indexes of activities with retry (a failure there is not the end)."""
    gate = ReplayGate()
    tree: List[Tuple[Dict[str, Any], List[int]]] = []
    index = 0
    for action in top_actions:
        count = len(leaves(action))
        tree.append((action, list(range(index, index + count))))
        index += count
    flat = [leaf for action in top_actions for leaf in leaves(action)]
    owner = {sid: leaf for leaf, sid in leaf_ids.items()}
    owner.update(id_owner)
    final_timers, retried = set(retry_final_timers), set(retry_leaves)
    waiters: Dict[str, List[int]] = {}
    buffered: Dict[str, int] = {}

    def invoke(leaf: int) -> None:
        action = flat[leaf]
        kind = action.get("actionType")
        if kind == CREATE_TIMER:
            gate.done[leaf] = bool(action.get("isCanceled"))
        elif kind == WAIT_FOR_EXTERNAL_EVENT:
            name = str(action.get("externalEventName") or "").lower()
            if buffered.get(name):
                buffered[name] -= 1
                gate.done[leaf] = True
            else:
                waiters.setdefault(name, []).append(leaf)
                gate.done[leaf] = False
        elif kind in (SIGNAL_ENTITY, SCHEDULED_SIGNAL_ENTITY, CONTINUE_AS_NEW_ACTION):
            gate.done[leaf] = True
        else:
            gate.done[leaf] = False

    def completed(action: Dict[str, Any], first_leaf: int) -> bool:
        kind = action.get("actionType")
        if kind in (WHEN_ANY, WHEN_ALL):
            results, offset = [], first_leaf
            for child in action.get("compoundActions") or []:
                results.append(completed(child, offset))
                offset += len(leaves(child))
            return any(results) if kind == WHEN_ANY else all(results)
        return gate.done.get(first_leaf, False)

    def advance() -> None:
        while gate.invoked_top < len(tree):
            action, span = tree[gate.invoked_top]
            if span and span[0] >= gate.invoked_leaves:
                for leaf in span:
                    invoke(leaf)
                gate.invoked_leaves = span[-1] + 1
            if not completed(action, span[0] if span else gate.invoked_leaves):
                return
            gate.invoked_top += 1
        gate.complete = True

    advance()
    for event in history:
        kind = event.get("EventType")
        if kind in (5, 6):   # TaskCompleted / TaskFailed
            leaf = owner.get(event.get("TaskScheduledId"))
            if leaf is not None and (kind == 5 or leaf not in retried):
                gate.done[leaf] = True
        elif kind == 11:     # TimerFired
            timer_id = event.get("TimerId")
            leaf = owner.get(timer_id)
            if leaf is not None and (leaf not in retried or timer_id in final_timers):
                gate.done[leaf] = True
        elif kind == 15:     # EventRaised
            name = str(event.get("Name") or "").lower()
            stack = waiters.get(name)
            if stack:
                gate.done[stack.pop()] = True
            else:
                buffered[name] = buffered.get(name, 0) + 1
        else:
            continue
        if not gate.complete:
            advance()
    # The blocking action (if any) was invoked too: its leaves are scheduled.
    return gate
