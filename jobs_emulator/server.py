"""The HTTP side: routing, bearer auth, fault injection, the request log, webhook ticks."""

from __future__ import annotations

import collections
import json
import re
import socket
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs

from . import views, webhooks
from .faults import Faults
from .model import ApiError, Store
from .rate_limits import RateLimits
from .scenario import Scenario

_API_PATH = re.compile(r"^/api/(2\.[12])/jobs/([a-z/-]+)$")
# SCIM "Me": who the caller is (userName; for a service principal its application id), which is
# also the creator_user_name of the jobs it creates.
_ME_PATH = "/api/2.0/preview/scim/v2/Me"
_ME_ENDPOINT = "preview/scim/v2/Me"
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "create"): "create_job",
    ("GET", "list"): "list_jobs",
    ("GET", "get"): "get_job",
    ("POST", "reset"): "reset_job",
    ("POST", "update"): "update_job",
    ("POST", "delete"): "delete_job",
    ("POST", "run-now"): "run_now",
    ("POST", "runs/submit"): "submit_run",
    ("POST", "runs/repair"): "repair_run",
    ("GET", "runs/list"): "list_runs",
    ("GET", "runs/get"): "get_run",
    ("GET", "runs/get-output"): "get_output",
    ("POST", "runs/cancel"): "cancel",
    ("POST", "runs/cancel-all"): "cancel_all",
}
_VERSIONED = {"create_job", "list_jobs", "get_job", "reset_job", "update_job", "run_now", "submit_run",
              "repair_run", "list_runs", "get_run", "get_output"}
_REASONS = {s.value: s.phrase for s in HTTPStatus}
# Request-log bodies keep ids, parameters and idempotency/page tokens, never credentials.
_SECRET_KEY = re.compile(r"password|secret|access_token|authorization|credential", re.I)
_FAULT_ERRORS = {
    "429": (429, "REQUEST_LIMIT_EXCEEDED", "Too many requests. Please wait a moment and try again. (emulated)"),
    "500": (500, "INTERNAL_ERROR", "Internal error while processing the request. (emulated)"),
    "503": (503, "TEMPORARILY_UNAVAILABLE",
            "The service is temporarily unavailable. Please try again later. (emulated)"),
    "400": (400, "INVALID_PARAMETER_VALUE", "The request was refused. (emulated)"),
    "403": (403, "PERMISSION_DENIED", "The caller may not do this. (emulated)"),
    "404": (404, "RESOURCE_DOES_NOT_EXIST", "The resource does not exist. (emulated)"),
}


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the benchmark reuses one connection
    server_version = "JobsEmulator/1"
    timeout = 300  # drop idle keep-alive connections eventually
    emulator: "JobsEmulator"

    def setup(self):
        super().setup()
        # Headers and body go out in one write; Nagle would only add latency on loopback.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.emulator._connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.emulator._connections.discard(self.connection)

    def log_message(self, format, *args):  # quiet: the request log is the record
        pass

    def do_GET(self):
        self.emulator._handle(self, "GET")

    def do_POST(self):
        self.emulator._handle(self, "POST")

    def do_PUT(self):
        self.emulator._handle(self, "PUT")

    def do_PATCH(self):
        self.emulator._handle(self, "PATCH")

    def do_DELETE(self):
        self.emulator._handle(self, "DELETE")

    def do_HEAD(self):
        self.emulator._handle(self, "HEAD")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of parallel clients in benchmarks

    def handle_error(self, request, client_address):
        # A client hanging up mid-request is normal (timeouts, retries); anything else is a bug.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class JobsEmulator:
    """An in-process emulator of the Azure Databricks Jobs API 2.1/2.2 (development tool).

    clock: zero-argument callable returning epoch seconds (a virtual clock's ``now`` in tests).
    scenario: a :class:`Scenario`, a dict in its JSON shape, a path to a JSON file, or None.
    faults: a :class:`Faults`, a dict of its fields, or None.
    notification_destinations: ``{destination_id: {"url", "username", "password"}}``.
    tokens: accepted bearer tokens (None accepts any non-empty token); a dict maps each token to the
        identity it authenticates (its userName: jobs it creates carry it as creator_user_name, and
        SCIM Me answers it); otherwise every token is ``user_name``.
    job_ids: "ascending" (each new job id above the last) or "descending" (each below the last):
        nothing documents that Databricks ids grow with creation time, so clients must not rely on it.
    cancel_seconds: how long a cancelled, started run stays TERMINATING (scaled by time_scale).
    auto_tick: run :meth:`tick` every ``tick_interval`` s in the background; default: on real
        time only (``time.time`` or a clock with ``is_virtual = False``). On a virtual clock call
        ``tick()`` yourself or register it: ``vclock.on_advance(emulator.tick)``.
    service_principals: ``{application id: True|False}``, the workspace's service principals and whether
        the emulator's identity holds "Service principal: User" on each; ``run_as`` may name only those
        with True (400 for an unknown one, 403 PERMISSION_DENIED without the role).
    max_jobs: the workspace's saved-jobs quota (jobs/create answers 400 QUOTA_EXCEEDED beyond it).
    job_creation_rate_limit, job_creation_rate_window: at most this many jobs/create and
        runs/submit calls per window of seconds (400 INVALID_STATE beyond it), 10,000 per hour.
    keep_runs_of_deleted_jobs: False (as documented) hides a deleted job's runs and cancels its
        active ones; True keeps them readable and running.
    rate_limits: None (off), "databricks" (the published per-endpoint rates), or a mapping
        endpoint -> requests per second ("run-now": 20, ...); beyond a rate, 429
        REQUEST_LIMIT_EXCEEDED with Retry-After, counted per second of ``clock`` (rate_limits.py).
    max_concurrent_task_runs: the workspace's concurrent task-run limit (2,000); a run that does not
        fit is queued where the job queues, refused with 429 otherwise. None: no limit.
    """

    def __init__(self, clock: Callable[[], float] = time.time, scenario: Any = None, faults: Any = None, *,
                 notification_destinations: dict | None = None, tokens: Any = None,
                 workspace_id: int = 1234567890123456, user_name: str = "emulator@example.com",
                 cancel_seconds: float = 0.5, auto_tick: bool | None = None, tick_interval: float = 0.1,
                 webhook_timeout: float = 5.0, webhook_ids_as_strings: bool = False,
                 request_log_limit: int = 100_000, max_jobs: int = 10_000,
                 job_creation_rate_limit: int = 10_000, job_creation_rate_window: float = 3600.0,
                 keep_runs_of_deleted_jobs: bool = False, job_ids: str = "ascending",
                 service_principals: dict | None = None, rate_limits: Any = None,
                 max_concurrent_task_runs: int | None = 2000):
        if not callable(clock) and callable(getattr(clock, "now", None)):
            clock = clock.now  # accept a VirtualClock itself, not only its bound `now`
        self.clock = clock
        if isinstance(scenario, str):
            scenario = Scenario.load(scenario)
        elif isinstance(scenario, dict):
            scenario = Scenario.from_dict(scenario)
        self.faults = Faults.coerce(faults)
        self.notification_destinations = {
            str(k): webhooks.Destination.coerce(v) for k, v in (notification_destinations or {}).items()}
        self.tokens = set(tokens) if tokens is not None else None
        self.identities = {str(k): str(v) for k, v in tokens.items()} if isinstance(tokens, dict) else {}
        self.user_name = user_name
        self.workspace_id = workspace_id
        if auto_tick is None:
            # devhost clocks say whether they are virtual; otherwise only time.time counts as real
            owner = getattr(clock, "__self__", clock)
            virtual = getattr(owner, "is_virtual", None)
            auto_tick = (not virtual) if virtual is not None else clock is time.time
        self.auto_tick = auto_tick
        self.tick_interval = tick_interval
        self.webhook_timeout = webhook_timeout
        self.webhook_ids_as_strings = webhook_ids_as_strings
        self._base_url: str | None = None
        if max_jobs < 0 or job_creation_rate_limit < 0 or job_creation_rate_window <= 0:
            raise ValueError("limits must be >= 0 and the rate window > 0")
        if max_concurrent_task_runs is not None and max_concurrent_task_runs < 1:
            raise ValueError("max_concurrent_task_runs must be >= 1 (or None: no limit)")
        self.rate_limits = RateLimits.coerce(rate_limits)
        self.store = Store(clock, scenario or Scenario(), base_url=lambda: self._base_url or "http://127.0.0.1",
                           workspace_id=workspace_id, user_name=user_name, cancel_seconds=cancel_seconds,
                           max_jobs=max_jobs, job_creation_rate_limit=job_creation_rate_limit,
                           job_creation_rate_window=job_creation_rate_window,
                           keep_runs_of_deleted_jobs=keep_runs_of_deleted_jobs, job_ids=job_ids,
                           max_concurrent_task_runs=max_concurrent_task_runs)
        # {application id: whether this identity has "Service principal: User" on it}, for run_as.
        self.store.service_principals.update({str(k): bool(v) for k, v in (service_principals or {}).items()})
        self._calls: collections.Counter = collections.Counter()
        self._calls_lock = threading.Lock()
        self._log: collections.deque = collections.deque(maxlen=request_log_limit)
        self._deliveries: list[dict] = []
        self._tick_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._connections: set = set()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = _Server((host, port), handler)
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self._base_url = f"http://{shown}:{bound_port}"
        self._stopping.clear()
        serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                 name="jobs-emulator-http", daemon=True)
        serve.start()
        self._threads = [serve]
        if self.auto_tick:
            ticker = threading.Thread(target=self._tick_loop, name="jobs-emulator-ticker", daemon=True)
            ticker.start()
            self._threads.append(ticker)
        return self._base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise hold their handler threads until the client leaves.
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> "JobsEmulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str | None:
        return self._base_url

    @property
    def scenario(self) -> Scenario:
        return self.store.scenario

    @scenario.setter
    def scenario(self, value: Scenario) -> None:
        self.store.scenario = value  # applies to runs started afterwards

    # -- inspection -------------------------------------------------------------------------
    @property
    def request_log(self) -> list[dict]:
        """Snapshot of requests: method, path, query, status, error_code, time, fault, body
        (redacted JSON of a POST), client_port; `rate_limited: True` on a request refused by
        `rate_limits` (status 429, error_code REQUEST_LIMIT_EXCEEDED)."""
        return list(self._log)

    def clear_request_log(self) -> None:
        self._log.clear()

    def call_counts(self, reset: bool = False) -> dict[tuple[str, str], int]:
        """Jobs API requests so far: ``{(method, endpoint): n}``, endpoint like ``"runs/get"`` (any
        API version, any answer, faults included: each is a call the client made). ``reset=True``
        also starts the count again."""
        with self._calls_lock:
            counts = dict(self._calls)
            if reset:
                self._calls.clear()
        return counts

    def reset_call_counts(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    @property
    def deliveries(self) -> list[dict]:
        """Webhook deliveries so far (no credentials)."""
        with self._tick_lock:
            return list(self._deliveries)

    @property
    def jobs(self) -> dict[int, dict]:
        """job_id -> the jobs/get view (all tasks)."""
        with self.store.lock:
            return {j.job_id: self.store.job_json(j, "2.1") for j in self.store.jobs.values()}

    @property
    def runs(self) -> dict[int, dict]:
        """job run_id -> the runs/get view now (2.2 fields, all tasks)."""
        with self.store.lock:
            now = self.clock()
            return {rid: self._full_run(r, now) for rid, r in self.store.runs.items() if r.created_at <= now
                    and not r.abandoned}

    def run(self, run_id: int) -> dict:
        """One job run as runs/get shows it now (2.2 fields, all tasks, repair_history); runs of
        deleted jobs too."""
        with self.store.lock:
            return self._full_run(self.store.runs[run_id], self.clock())

    def _full_run(self, run, now) -> dict:
        return views.run_json(self.store, run, now, "2.2", include_history=True, all_pages=True)

    # -- webhooks ---------------------------------------------------------------------------
    def tick(self, *_ignored) -> list[dict]:
        """Deliver every webhook notification due at the clock's current time; returns them.

        Accepts and ignores arguments so it can be registered directly as a clock callback.
        Deliveries are synchronous, in event-time order.
        """
        with self._tick_lock:
            now = self.clock()
            due = []
            with self.store.lock:
                for run in list(self.store.watched.values()):
                    if run.created_at > now:
                        continue  # a run_job_task run that has not started yet
                    events = run.events()
                    for at, key, event in events:
                        if at <= now and key not in run.notified:
                            run.notified.add(key)
                            due.append((at, run.run_id, event, run))
                    if run.is_terminal(now) and all(k in run.notified for _, k, _ in events):
                        del self.store.watched[run.run_id]  # nothing more can happen to it (until a repair)
            due.sort(key=lambda d: (d[0], d[1]))
            delivered = []
            for at, _, event, run in due:
                key = event.split(".", 1)[1]  # jobs.on_start -> on_start
                for hook in run.notifications.get(key) or []:
                    dest_id = str(hook.get("id")) if isinstance(hook, dict) else str(hook)
                    record = {"event_type": event, "event_time": at, "time": now, "run_id": run.run_id,
                              "job_id": run.job_id, "destination_id": dest_id, "url": None,
                              "status": None, "error": None}
                    dest = self.notification_destinations.get(dest_id)
                    if dest is None:
                        record["error"] = "unknown notification destination"
                    else:
                        record["url"] = dest.url
                        body = webhooks.payload(event, self.workspace_id, run.run_id, run.job_id, run.job_name,
                                                self.webhook_ids_as_strings)
                        record["status"], record["error"] = webhooks.post(dest, body, self.webhook_timeout)
                    self._deliveries.append(record)
                    delivered.append(record)
            return delivered

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.tick_interval):
            try:
                self.tick()
            except Exception:  # a broken receiver must not stop later deliveries
                pass

    # -- HTTP -------------------------------------------------------------------------------
    def _handle(self, h: _Handler, method: str) -> None:
        path, _, query_string = h.path.partition("?")
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length > 0 else b""
        query = {k: v[0] for k, v in parse_qs(query_string).items()} if query_string else {}
        entry = {"method": method, "path": path, "query": query, "status": None, "error_code": None,
                 "time": self.clock(), "fault": None, "body": None,
                 "client_port": h.client_address[1]}  # same port = same keep-alive connection
        self._log.append(entry)

        if path == "/.well-known/databricks-config":
            # The SDK probes this at start; a quick 404 makes it fall back to defaults.
            return self._error(h, entry, ApiError(404, "NOT_FOUND", "Not found"))
        match = _API_PATH.match(path)
        operation = _ROUTES.get((method, match.group(2))) if match else None
        if match or path == _ME_PATH:
            with self._calls_lock:
                self._calls[(method, match.group(2) if match else _ME_ENDPOINT)] += 1

        auth = h.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._error(h, entry, ApiError(
                401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API."))
        if self.tokens is not None and token not in self.tokens:
            return self._error(h, entry, ApiError(401, "UNAUTHENTICATED", "Invalid access token."))
        caller = self.identities.get(token, self.user_name)
        if path == _ME_PATH and method == "GET":
            entry["status"] = 200
            return self._send(h, 200, json.dumps(_scim_me(caller)).encode())
        if operation is None:
            return self._error(h, entry, ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'"))

        if self.rate_limits is not None:
            refused = self.rate_limits.admit(match.group(2), entry["time"])
            if refused is not None:
                entry["rate_limited"] = True
                return self._error(h, entry, refused)

        fault = self.faults.pick(method, path)
        entry["fault"] = fault
        if fault == "drop":
            h.close_connection = True  # no response at all
            return
        if fault in _FAULT_ERRORS:
            status, code, message = _FAULT_ERRORS[fault]
            headers = {"Retry-After": str(self.faults.retry_after)} if status in (429, 503) else {}
            return self._error(h, entry, ApiError(status, code, message, headers))
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)

        try:
            if method == "POST":
                try:
                    body = json.loads(raw_body) if raw_body.strip() else {}
                except ValueError:
                    raise ApiError(400, "MALFORMED_REQUEST",
                                   "Invalid JSON given in the body of the request - expected a map") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "MALFORMED_REQUEST",
                                   "Invalid JSON given in the body of the request - expected a map")
                entry["body"] = _redact(body)
                arg = body
            else:
                arg = query
            handler = getattr(self.store, operation)
            if operation == "create_job":
                result = handler(arg, match.group(1), creator=caller)
            else:
                result = handler(arg, match.group(1)) if operation in _VERSIONED else handler(arg)
        except ApiError as exc:
            return self._error(h, entry, exc)
        except Exception as exc:  # a bug in the emulator still answers in the Databricks shape
            return self._error(h, entry, ApiError(500, "INTERNAL_ERROR", f"Emulator error: {exc!r}"))
        if fault == "drop_after":
            h.close_connection = True  # the work is done but the reply is lost
            return
        entry["status"] = 200
        self._send(h, 200, json.dumps(result, separators=(",", ":")).encode())

    def _error(self, h: _Handler, entry: dict, exc: ApiError) -> None:
        entry["status"] = exc.status
        entry["error_code"] = exc.error_code
        body = {"error_code": exc.error_code, "message": exc.message,
                "details": [{"@type": "type.googleapis.com/google.rpc.RequestInfo",
                             "request_id": str(uuid.uuid4()), "serving_data": ""}]}
        self._send(h, exc.status, json.dumps(body).encode(), exc.headers)

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, headers: dict | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
                 "Content-Type: application/json",
                 f"Content-Length: {len(body)}"]
        if headers:
            lines.extend(f"{k}: {v}" for k, v in headers.items())
        if h.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        h.wfile.write(head if h.command == "HEAD" else head + body)


def _scim_me(user_name: str) -> dict:
    """GET /api/2.0/preview/scim/v2/Me as the workspace answers it (the fields a client reads)."""
    import hashlib

    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": str(int(hashlib.sha256(user_name.encode()).hexdigest()[:13], 16)),
            "userName": user_name, "displayName": user_name, "active": True}
