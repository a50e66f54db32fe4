"""``devhost serve``: one loopback HTTP server standing in for the Functions host (DEVELOPMENT TOOL).

Production runs on Azure Functions with the Durable Task extension. Locally, devhost serves on
127.0.0.1, from one ``ThreadingHTTPServer``:

* ``/api/<route>``  the app's HTTP-triggered functions (route templates, ``methods``,
  ``durable_client_input`` gets the client binding JSON exactly as the worker passes it);
* ``/durabletask/...`` and ``/runtime/webhooks/durabletask/...``  the Durable management API
  (see ``devhost.management``), backed by a ``ReplayHost`` running on real time;
* ``POST /runtime/webhooks/eventgrid?functionName=NAME``  Event Grid deliveries, including the
  subscription-validation handshake (Event Grid schema) and the CloudEvents OPTIONS handshake,
  answered as the Event Grid extension's HttpRequestProcessor and the host answer (below);
* ``POST /admin/functions/{name}`` with ``{"input": "..."}``  invokes a non-HTTP function
  (queue, Event Grid, timer) like the host's admin endpoint;
* queue-triggered functions also run from their Storage queue when the binding's connection
  setting resolves (``devhost.queues``: retries, ``maxDequeueCount``, ``<queue>-poison``).

Function keys are NOT enforced (``authLevel`` is ignored), as with ``func start`` locally.

The durable client binding and every management URL are built from the address the server
LISTENS on (``base_url``), never from a request's Host header: a caller could otherwise point the
app's own management calls at another host. The listen backlog takes a burst of connections
(``REQUEST_QUEUE_SIZE``). Timer-triggered functions run on the host's clock (``ReplayHost``
``timer_triggers``), on by default in ``python -m devhost serve``.

Event Grid answers (Microsoft.Azure.WebJobs.Extensions.EventGrid HttpRequestProcessor, and the
host's ExceptionMiddleware for what it throws): OPTIONS -> 200 with ``WebHook-Allowed-Origin``;
``aeg-event-type: SubscriptionValidation`` -> 200 ``{"validationResponse": code}``;
``Notification`` -> every event is invoked, then 202, or 500 with the first failure's message;
``Unsubscribe`` -> 202; any other or no ``aeg-event-type`` -> 400. A body the extension cannot
read (not JSON, neither an array nor an object, a handshake without ``data.validationCode`` or whose
``data`` is not an object, an empty handshake array, JSON nested deeper than Newtonsoft.Json's
default ``MaxDepth`` of 64) makes it throw, which the host answers with 500 and an empty body (the
extension's ``HttpRequestProcessor`` catches nothing: azure-sdk-for-net,
sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid/src/TriggerBinding/HttpRequestProcessor.cs);
an empty array is a delivery of no events: 202.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessageInConverter

from .clock import RealClock
from .functions import DevOut, FunctionInfo, call_maybe_async
from .management import ManagementApi, Response
from .replay import ReplayHost

log = logging.getLogger("devhost.serve")
REQUEST_QUEUE_SIZE = 128  # listen backlog: socketserver's default of 5 resets connection bursts

EVENTGRID_PATH = "/runtime/webhooks/eventgrid"
ADMIN_PREFIX = "/admin/functions/"
EVENTGRID_ORIGINS = ("eventgrid.azure.net", "eventgrid.azure.us", "eventgrid.azure.eaglex.ic.gov",
                     "eventgrid.azure.microsoft.scloud", "eventgrid.azure.cn")


class Route:
    """An ASP.NET-style route template: ``a/{id}``, ``{id?}``, ``{id:int}``, ``{*rest}``."""

    _PARAM = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([^}?=]+))?(\?)?(?:=([^}]*))?\}$")

    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        pattern = ""
        self.literals = 0
        self.catch_all = False
        for segment in [s for s in self.template.split("/") if s]:
            m = self._PARAM.match(segment)
            if not m:
                pattern += "/" + re.escape(segment)
                self.literals += 1
                continue
            star, name, constraint, optional, _default = m.groups()
            if star:
                pattern += f"(?:/(?P<{name}>.*))?"
                self.catch_all = True
                continue
            body = {"int": r"-?\d+", "long": r"-?\d+", "bool": r"(?i:true|false)",
                    "guid": r"[0-9a-fA-F-]{32,36}", "alpha": r"[A-Za-z]+"}.get(
                (constraint or "").split("(")[0], r"[^/]+")
            group = f"/(?P<{name}>{body})"
            pattern += f"(?:{group})?" if optional else group
        self.regex = re.compile("^" + pattern + "/?$", re.IGNORECASE)

    def match(self, path: str) -> Optional[Dict[str, str]]:
        m = self.regex.match("/" + path.strip("/") if path.strip("/") else "")
        if not m:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}

    @property
    def precedence(self) -> Tuple[int, int]:
        # Literal segments beat parameters; catch-alls come last (ASP.NET route precedence).
        return (-self.literals, int(self.catch_all))


class DevServer:
    """The loopback server; ``start()`` returns its base URL. Development tool only."""

    def __init__(self, app, host: Optional[ReplayHost] = None, *, port: int = 0,
                 route_prefix: str = "api", clock=None, queues: bool = True,
                 queue_options: Optional[Dict[str, Any]] = None, host_json=None) -> None:
        self.app = app
        self.host = host if host is not None else ReplayHost(app, clock or RealClock())
        self.management = ManagementApi(self.host)
        self.route_prefix = route_prefix.strip("/")
        self.functions = self.host.functions
        self.http_functions: List[Tuple[Route, FunctionInfo]] = sorted(
            ((Route(f.trigger.get("route") or f.name), f) for f in self.functions.values()
             if f.trigger_type == "httpTrigger"),
            key=lambda rf: rf[0].precedence)
        self.invocations: List[Dict[str, Any]] = []  # non-HTTP invocations, newest last
        self.outputs: List[Dict[str, Any]] = []      # values set on output bindings
        self._port = port
        # Storage queue listeners (devhost.queues); queue_options override host.json, e.g.
        # {"visibility_timeout": 0, "max_polling_interval": 0.2} in tests.
        self._queues = queues
        self._queue_options = dict(queue_options or {})
        self._host_json = host_json
        self.queue_listeners: List[Any] = []
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> str:
        server = self

        class Handler(_Handler):
            dev = server

        self._httpd = _Server(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self.host.client_origin = self.base_url
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="devhost-http",
                                        daemon=True)
        self._thread.start()
        self.host.start()
        if self._queues:
            from .queues import host_json_for, start_queue_listeners
            host_json = self._host_json if self._host_json is not None else host_json_for(self.app)
            try:
                self.queue_listeners = start_queue_listeners(
                    self.functions, self._invoke, host_json=host_json, **self._queue_options)
            except Exception:  # e.g. an invalid host.json: fail loudly, leave nothing running
                self.stop()
                raise
        return self.base_url

    def stop(self) -> None:
        if self.queue_listeners:  # first: their invocations need the management API
            from .queues import stop_queue_listeners
            stop_queue_listeners(self.queue_listeners)
            self.queue_listeners = []
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.host.stop()

    def __enter__(self) -> "DevServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, method: str, target: str, headers, body: bytes) -> Response:
        parts = urlsplit(target)
        path = parts.path
        origin = self.base_url  # where devhost listens; never the request's Host header
        host_header = headers.get("Host") or f"127.0.0.1:{self._httpd.server_address[1]}"
        request_url = f"http://{host_header}{target}"  # what an HTTP function sees as req.url
        if ManagementApi.handles(path):
            return self.management.handle(method, path, parts.query, headers, body, origin,
                                          origin + target)
        if path.rstrip("/") == EVENTGRID_PATH:
            return self._eventgrid(method, dict(parse_qsl(parts.query)), headers, body)
        if path.startswith(ADMIN_PREFIX):
            if method != "POST":
                return 405, {"Allow": "POST"}, b""
            return self._admin(path[len(ADMIN_PREFIX):].strip("/"), body)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if path == prefix or path.startswith(prefix + "/"):
            return self._http_function(method, path[len(prefix):], parts.query, headers, body,
                                       request_url, origin)
        if path in ("/", ""):
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, (
                b"devhost: development stand-in for the Azure Functions host\n")
        return 404, {}, b""

    def _http_function(self, method: str, route_path: str, query: str, headers, body: bytes,
                       url: str, origin: str) -> Response:
        for route, info in self.http_functions:
            params = route.match(route_path)
            if params is None:
                continue
            methods = [m.upper() for m in (info.trigger.get("methods") or [])]
            if methods and method.upper() not in methods:
                continue  # the host answers 404 when no function takes this method
            request = func.HttpRequest(
                method=method.upper(), url=url,
                headers={k: v for k, v in headers.items()},
                params=dict(parse_qsl(query, keep_blank_values=True)),
                route_params=params, body=body or b"")
            kwargs = info.build_kwargs(
                request, client_binding=self.management.binding_json(self.base_url))
            try:
                result = call_maybe_async(info.user_function, kwargs)
            except Exception:
                log.exception("function %s failed", info.name)
                return 500, {}, b""
            self._record_outputs(info, kwargs)
            return _http_result(result)
        return 404, {}, b""

    def _record_outputs(self, info: FunctionInfo, kwargs: Dict[str, Any]) -> None:
        for b in info.out_bindings():
            out = kwargs.get(b["name"])
            if isinstance(out, DevOut) and out.get() is not None:
                self.outputs.append({"function": info.name, "binding": b["name"],
                                     "type": b.get("type"), "value": out.get()})

    def _invoke(self, info: FunctionInfo, trigger_value: Any) -> None:
        kwargs = info.build_kwargs(trigger_value,
                                   client_binding=self.management.binding_json(self.base_url))
        record: Dict[str, Any] = {"function": info.name, "ok": True, "error": None}
        self.invocations.append(record)
        try:
            call_maybe_async(info.user_function, kwargs)
        except Exception as exc:
            record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._record_outputs(info, kwargs)

    # ------------------------------------------------------------------ Event Grid

    def _eventgrid(self, method: str, query: Dict[str, str], headers, body: bytes) -> Response:
        name = query.get("functionName") or ""
        info = self.functions.get(name)
        if info is None or info.trigger_type != "eventGridTrigger":
            return 404, {"Content-Type": "text/plain"}, f"cannot find function: '{name}'".encode()
        if method == "OPTIONS":  # CloudEvents abuse-protection handshake
            origin = headers.get("WebHook-Request-Origin")
            allowed = origin if origin in EVENTGRID_ORIGINS else "eventgrid.azure.net"
            return 200, {"WebHook-Allowed-Origin": allowed}, b""
        if method != "POST":
            return 405, {"Allow": "POST, OPTIONS"}, b""
        kind = (headers.get("aeg-event-type") or "").lower()
        if kind == "subscriptionvalidation":
            try:
                code = _validation_code(body)
            except Exception as exc:  # the extension throws; the host answers 500, no body
                log.error("Event Grid handshake for %s failed: %s: %s", name, type(exc).__name__,
                          exc)
                return 500, {}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"validationResponse": code}).encode()
        if kind == "unsubscribe":
            return 202, {}, b""
        if kind != "notification":
            return 400, {}, b""
        try:
            token = _parsed(body)
            if isinstance(token, dict):
                events = [token]  # CloudEvents schema: one event per request
            elif isinstance(token, list):
                events = token
            else:
                raise ValueError(f"The request content should be parseable into a JSON object or "
                                 f"array, but was {type(token).__name__}.")
        except Exception as exc:
            log.error("Event Grid delivery for %s unreadable: %s: %s", name, type(exc).__name__, exc)
            return 500, {}, b""
        failures = []
        for event in events:  # the extension runs every event, then reports the first failure
            try:
                # The worker's converter: CloudEvent when 'specversion' is present, else
                # EventGridEvent.
                value = EventGridEventInConverter.decode(
                    meta.Datum(type="json", value=json.dumps(event)), trigger_metadata={})
                self._invoke(info, value)
            except Exception as exc:
                log.exception("Event Grid function %s failed", name)
                failures.append(exc)
        if failures:
            return 500, {"Content-Type": "text/plain"}, str(failures[0]).encode()
        return 202, {}, b""

    # ------------------------------------------------------------------ admin invoke

    def _admin(self, name: str, body: bytes) -> Response:
        info = self.functions.get(name)
        if info is None:
            return 404, {}, b""
        if info.trigger_type in ("httpTrigger", "orchestrationTrigger", "activityTrigger",
                                 "entityTrigger"):
            return 400, {"Content-Type": "text/plain"}, (
                f"devhost cannot invoke a {info.trigger_type} function through the admin "
                f"endpoint").encode()
        try:
            payload = json.loads(body.decode("utf-8") or "{}")
            text = payload.get("input")
        except (ValueError, AttributeError):
            return 400, {"Content-Type": "text/plain"}, b"body must be {\"input\": \"...\"}"
        try:
            value = self._admin_value(info, text)
            self._invoke(info, value)
        except Exception:
            # The real host answers 202 before running the function; failures only reach logs.
            log.exception("function %s failed", name)
        return 202, {}, b""

    @staticmethod
    def _admin_value(info: FunctionInfo, text: Optional[str]) -> Any:
        kind = info.trigger_type
        if kind == "queueTrigger":
            now = datetime.now(timezone.utc)
            fmt = "%Y-%m-%dT%H:%M:%S+00:00"
            metadata = {
                "Id": meta.Datum(str(uuid.uuid4()), "string"),
                "DequeueCount": meta.Datum(1, "int"),
                "InsertionTime": meta.Datum(now.strftime(fmt), "string"),
                "ExpirationTime": meta.Datum((now + timedelta(days=7)).strftime(fmt), "string"),
                "NextVisibleTime": meta.Datum((now + timedelta(minutes=10)).strftime(fmt),
                                              "string"),
                "PopReceipt": meta.Datum(uuid.uuid4().hex, "string"),
            }
            return QueueMessageInConverter.decode(meta.Datum(text or "", "string"),
                                                  trigger_metadata=metadata)
        if kind == "eventGridTrigger":
            return EventGridEventInConverter.decode(meta.Datum(text or "{}", "json"),
                                                    trigger_metadata={})
        if kind == "timerTrigger":
            from azure.functions.timer import TimerRequest
            return TimerRequest(past_due=False)
        return text


# Newtonsoft.Json's JsonReader.MaxDepth default (13.x): JToken.Parse throws past it. Python's json
# reads ~1,000 levels, so without this check devhost would take deliveries the host refuses.
NEWTONSOFT_MAX_DEPTH = 64


def _parsed(body: bytes) -> Any:
    """The body as JToken.Parse reads it; raises where it would throw (not JSON, too deep)."""
    token = json.loads(body.decode("utf-8"))
    stack = [(token, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > NEWTONSOFT_MAX_DEPTH:
                raise ValueError(f"The reader's MaxDepth of {NEWTONSOFT_MAX_DEPTH} has been exceeded.")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return token


def _validation_code(body: bytes) -> str:
    """The handshake's code as HttpRequestProcessor reads it; raises where it would throw."""
    token = _parsed(body)
    if isinstance(token, list):
        code = token[0]["data"]["validationCode"]
    elif isinstance(token, dict):
        data = token["data"]  # double-encoded in the CloudEvent-shaped validation event
        code = (json.loads(data) if isinstance(data, str) else data)["validationCode"]
    else:
        raise ValueError("The request content should be parseable into a JSON object or array")
    if code is None:
        raise TypeError("validationCode is null")  # JToken.ToString() on null
    return code if isinstance(code, str) else json.dumps(code)


class _Server(ThreadingHTTPServer):
    request_queue_size = REQUEST_QUEUE_SIZE


def _http_result(result: Any) -> Response:
    if result is None:
        return 204, {}, b""
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        if "content-type" not in {k.lower() for k in headers} and result.mimetype:
            charset = f"; charset={result.charset}" if result.charset else ""
            headers["Content-Type"] = f"{result.mimetype}{charset}"
        return result.status_code, headers, result.get_body() or b""
    if isinstance(result, (bytes, bytearray)):
        return 200, {"Content-Type": "application/octet-stream"}, bytes(result)
    if isinstance(result, str):
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, result.encode("utf-8")
    return 200, {"Content-Type": "application/json"}, json.dumps(result).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    dev: DevServer
    protocol_version = "HTTP/1.1"
    server_version = "devhost"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK
        # stalls every answer that has a body by ~40 ms on loopback.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # route access logs through logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, payload = self.dev.dispatch(self.command, self.path, self.headers,
                                                         body)
        except Exception:
            log.exception("devhost failed on %s %s", self.command, self.path)
            status, headers, payload = 500, {}, b""
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


# ---------------------------------------------------------------------- CLI entry point

DEV_DESTINATION_ID = "devhost-webhooks"  # the embedded emulator's notification destination
DEV_TOKEN = "dapi-devhost-throwaway-dev-token"


def load_app(spec: str):
    """Import ``module:attribute`` (default attribute ``app``) from the current directory."""
    import importlib
    import sys
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    return getattr(module, attr or "app")


def load_local_settings(directory: Optional[str] = None,
                        environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Core Tools' ``local.settings.json``: ``Values`` become environment variables unless the
    environment already has them. Returns the names it set. A missing file is fine."""
    environ = os.environ if environ is None else environ
    path = os.path.join(directory or os.getcwd(), "local.settings.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8-sig") as handle:
        settings = json.load(handle)
    if settings.get("IsEncrypted"):
        raise ValueError(f"{path} is encrypted (IsEncrypted: true); devhost cannot decrypt it: "
                         f"run `func settings decrypt` first")
    applied = {}
    for name, value in (settings.get("Values") or {}).items():
        if name not in environ and value is not None:
            environ[name] = str(value)
            applied[name] = str(value)
    return applied


def start_stack(app_spec: Any = "function_app:app", port: int = 0, clock=None,
                emulator: Optional[bool] = None, emulator_options: Optional[dict] = None,
                timer_triggers: bool = False):
    """Start the embedded emulator (unless DATABRICKS_HOST is set), then the app; returns both.

    The emulator comes first because the app reads DATABRICKS_* settings at first use.
    """
    clock = clock or RealClock()
    emu = None
    emulator_url = None
    if emulator is None:
        emulator = not os.environ.get("DATABRICKS_HOST")
    if emulator:
        from jobs_emulator import JobsEmulator
        if getattr(clock, "is_virtual", False):
            emu = JobsEmulator(clock=clock.now, **(emulator_options or {}))
            clock.on_advance(emu.tick)
        else:  # time.time itself makes the emulator tick on its own
            emu = JobsEmulator(clock=time.time, **(emulator_options or {}))
        emulator_url = emu.start(port=0)
        os.environ["DATABRICKS_HOST"] = emulator_url
        os.environ["DATABRICKS_AUTH"] = "pat"
        os.environ["DATABRICKS_TOKEN"] = DEV_TOKEN
    app = load_app(app_spec) if isinstance(app_spec, str) else app_spec
    server = DevServer(app, ReplayHost(app, clock, timer_triggers=timer_triggers), port=port)
    base_url = server.start()
    if emu is not None:
        _wire_webhooks(emu, base_url)
    return server, emu, emulator_url


def _wire_webhooks(emu, base_url: str) -> None:
    """Point the embedded emulator's notification destination at the app's webhook route, with
    throwaway Basic credentials, as a workspace admin would (docs/callers.md): runs then report
    their end at once, as they do in a workspace set up for webhooks. Settings already given win."""
    if os.environ.get("DATABRICKS_NOTIFICATION_DESTINATION_ID"):
        return
    from jobs_emulator import webhooks

    username = os.environ.setdefault("DATABRICKS_WEBHOOK_USERNAME", "devhost")
    password = os.environ.setdefault("DATABRICKS_WEBHOOK_PASSWORD", secrets.token_urlsafe(24))
    emu.notification_destinations[DEV_DESTINATION_ID] = webhooks.Destination.coerce(
        {"url": f"{base_url}/api/databricks/notifications", "username": username, "password": password})
    os.environ["DATABRICKS_NOTIFICATION_DESTINATION_ID"] = DEV_DESTINATION_ID


def describe_databricks(emulator_url: Optional[str], environ=None) -> str:
    """Which workspace and auth mode the app will use; never a secret."""
    environ = os.environ if environ is None else environ
    auth = environ.get("DATABRICKS_AUTH") or "managed_identity"
    if emulator_url:
        return f"databricks        embedded Jobs API emulator {emulator_url} (auth: {auth}, throwaway token)"
    return f"databricks        {environ.get('DATABRICKS_HOST')} (auth: {auth})"


def serve(port: int, app_spec: str = "function_app:app", auth: bool = False) -> int:
    """Run until SIGINT/SIGTERM. First printed line: the app base URL. ``auth``: play Entra ID
    (devhost/entra.py) and point the app's token validation at it, before the app is loaded."""
    import signal
    applied = load_local_settings()
    entra = None
    if auth:
        from .entra import DevEntra
        entra = DevEntra()
        entra.start()
        os.environ.update(entra.app_settings())
    server, emu, emulator_url = start_stack(app_spec, port, timer_triggers=True)
    print(f"devhost app       {server.base_url}", flush=True)
    if applied:
        print(f"settings          {len(applied)} value(s) from local.settings.json", flush=True)
    print(describe_databricks(emulator_url), flush=True)
    if entra is not None:
        print(f"entra (dev)       {entra.metadata_url} (tokens: python -m devhost token --oid <id>)", flush=True)
    for listener in server.queue_listeners:
        print(f"queue trigger     {listener.info.name} <- {listener.queue_name}", flush=True)
    for name in sorted(server.host._timer_triggers):
        trigger = server.host._timer_triggers[name]
        print(f"timer trigger     {name} ({trigger.schedule.expression})", flush=True)
    print("devhost is a development stand-in for the Azure Functions host; keys are not "
          "enforced. Ctrl+C to stop.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if emu is not None:
            emu.stop()
        if entra is not None:
            entra.stop()
    return 0
