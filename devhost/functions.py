"""Discovering and invoking the function app's registered functions, as the Python worker does.

Development tool only: in production the Azure Functions host and the Python worker do this.
Async functions run on ONE long-lived event loop (like the worker's), because
azure-functions-durable keeps a module-global aiohttp session bound to the loop that created it.
"""
from __future__ import annotations

import asyncio
import enum
import inspect
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import azure.functions as func

_loop: Optional[asyncio.AbstractEventLoop] = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The shared background event loop that runs async user functions and client calls."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="devhost-asyncio", daemon=True)
            t.start()
            _loop = loop
        return _loop


def run_coroutine(coro, timeout: Optional[float] = None) -> Any:
    """Run ``coro`` on the shared loop from any other thread and return its result."""
    loop = event_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_coroutine called from the devhost loop itself; await instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def call_maybe_async(fn: Callable, kwargs: Dict[str, Any]) -> Any:
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        async def _await():
            return await result
        return run_coroutine(_await())
    return result


class DevContext(func.Context):
    """The ``context`` argument the worker passes to functions that declare one."""

    def __init__(self, function_name: str, invocation_id: Optional[str] = None) -> None:
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._function_name = function_name
        self._tls = threading.local()
        self._tls.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self):
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return ""

    @property
    def trace_context(self):
        return None

    @property
    def retry_context(self):
        return None


class DevOut(func.Out):
    """An output binding that records what the function set (nothing is sent anywhere)."""

    def __init__(self) -> None:
        self._value = None

    def set(self, val) -> None:
        self._value = val

    def get(self):
        return self._value


@dataclass
class FunctionInfo:
    name: str
    trigger_type: str
    trigger: Dict[str, Any]
    bindings: List[Dict[str, Any]]
    user_function: Callable
    parameters: List[str] = field(default_factory=list)

    @property
    def trigger_param(self) -> str:
        return self.trigger["name"]

    def binding(self, type_: str) -> Optional[Dict[str, Any]]:
        for b in self.bindings:
            if b.get("type") == type_:
                return b
        return None

    def out_bindings(self) -> List[Dict[str, Any]]:
        return [b for b in self.bindings
                if str(b.get("direction")).lower().endswith("out") and b.get("name") != "$return"]

    def annotation(self, param: str):
        target = getattr(self.user_function, "client_function", self.user_function)
        target = getattr(target, "orchestrator_function", target)
        try:
            return inspect.signature(target).parameters[param].annotation
        except (KeyError, TypeError, ValueError):
            return inspect.Parameter.empty

    def build_kwargs(self, trigger_value: Any, *, client_binding: Optional[str] = None,
                     invocation_id: Optional[str] = None) -> Dict[str, Any]:
        """Arguments by binding name, as the worker binds them; output bindings get a DevOut."""
        kwargs: Dict[str, Any] = {self.trigger_param: trigger_value}
        for b in self.bindings:
            name = b.get("name")
            if b.get("type") == "durableClient":
                kwargs[name] = client_binding
        for b in self.out_bindings():
            kwargs[b["name"]] = DevOut()
        if "context" in self.parameters and "context" not in kwargs:
            kwargs["context"] = DevContext(self.name, invocation_id)
        return kwargs


def _plain(value):
    # Enum members (methods, authLevel, ...) -> their plain values.
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _direction(value) -> str:
    name = getattr(value, "name", str(value))
    return "out" if name.upper().endswith("OUT") else ("inout" if "INOUT" in name.upper() else "in")


def index_functions(app) -> Dict[str, FunctionInfo]:
    """All functions of a ``df.DFApp`` / ``func.FunctionApp`` keyed by function name.

    Indexed once per app, like the worker does: ``get_functions()`` re-validates names against
    what it indexed before, so a second call on the same app raises."""
    cached = getattr(app, "_devhost_function_index", None)
    if cached is not None:
        return cached
    result: Dict[str, FunctionInfo] = {}
    for f in app.get_functions():
        raw = f.get_dict_repr()["bindings"]
        bindings = []
        for b in raw:
            d = {k: _plain(v) for k, v in b.items()}
            d["direction"] = _direction(b.get("direction"))
            bindings.append(d)
        trigger = next(b for b in bindings if b["type"] == f.get_trigger().type)
        user_fn = f.get_user_function()
        target = getattr(user_fn, "client_function", user_fn)
        target = getattr(target, "orchestrator_function", target)
        try:
            params = list(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            params = []
        info = FunctionInfo(name=f.get_function_name(), trigger_type=trigger["type"],
                            trigger=trigger, bindings=bindings, user_function=user_fn,
                            parameters=params)
        result[info.name] = info
    app._devhost_function_index = result
    return result
