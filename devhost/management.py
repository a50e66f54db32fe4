"""The Durable extension's management HTTP API over a ReplayHost (DEVELOPMENT TOOL).

Production runs on the Durable Task extension in Azure Functions, whose ``HttpApiHandler``
serves these routes twice: on the local RPC endpoint (the binding's ``rpcBaseUrl``, used by the
Python ``DurableOrchestrationClient``) and on the public webhook
``/runtime/webhooks/durabletask/`` (the URLs ``create_check_status_response`` hands out).
devhost serves both prefixes from one loopback server, so the app's functions run unmodified
with the real client library.

Routes (relative to either prefix), with the extension's status codes:

* ``POST orchestrators/{name}[/{instanceId}][?version=]``  start: 202 + check-status payload,
  400 unknown orchestrator, bad JSON or an instance id the extension refuses
  (``extension.instance_id_error``), 409 if the id is still Pending/Running, 404 when the
  (decoded) path has more segments (an id with ``/`` does not match the route);
* ``GET instances/{id}``  status: 202 + Location + Retry-After while running, 200 when done
  (Failed -> 500 only with ``returnInternalServerErrorOnFailure=true``), 404 unknown;
  ``showInput`` (default true), ``showHistory``, ``showHistoryOutput``;
* ``GET instances/[?instanceIdPrefix=&runtimeStatus=&createdTimeFrom=&createdTimeTo=]``  statuses,
  filtered as the extension filters them (no paging: devhost answers every match at once);
* ``POST instances/{id}/raiseEvent/{name}``  202, 404, 410 when finished, 400 unless JSON;
* ``POST instances/{id}/terminate?reason=``  202, 404, 410 when finished;
* ``DELETE instances/{id}``  purge: 200 ``{"instancesDeleted": 1}``, 404, 412 while running;
* ``DELETE instances/?createdTimeFrom=&createdTimeTo=&runtimeStatus=``  purge by filter
  (HandleDeleteHistoryWithFiltersRequestAsync): 200 ``{"instancesDeleted": N}``, 404 when none
  matched, 400 without a valid ``createdTimeFrom``; ``createdTimeTo`` defaults to now; both ends
  inclusive; ``runtimeStatus`` is comma-separated and, as with Azure Storage, only terminal ones
  filter: without any, every status in the range is purged (``ReplayHost.purge_by``).

* ``GET entities/{name}/{key}``  entity state: 200 with the state JSON, 404 when the entity does
  not exist (HandleGetEntityRequestAsync; key ``$`` means the empty key);
* ``POST entities/{name}/{key}?op=``  signal: 202; the body is the input (parsed as JSON when
  ``application/json``, 400 "Could not parse JSON content: ..." otherwise text); DELETE signals
  ``delete``; 400 for an unknown entity function or a key the extension refuses
  (HandlePostEntityOperationRequestAsync; ArgumentException -> 400 ``{"Message": ...}``).

Not implemented (501): rewind, restart, listing entities.
Keys (``code=``) are neither issued nor checked, as with ``func start`` locally.
The binding and every URL this module builds use the origin the caller passes: devhost passes
the address it LISTENS on, never a request's Host header (EXT HttpApiHandler builds the binding's
URLs from its webhook/RPC base URLs, not from requests).
"""
from __future__ import annotations

import json
import socket
import logging
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .replay import (FunctionNotFoundError, InstanceAlreadyExistsError, InstanceGoneError,
                     InstanceNotFoundError, InvalidInstanceIdError, ReplayHost, TERMINAL_STATES,
                     DevhostError)

log = logging.getLogger("devhost.management")

Response = Tuple[int, Dict[str, str], bytes]

RPC_PREFIX = "/durabletask/"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask/"
STATUS_RETRY_AFTER = "5"        # HandleGetStatusRequestAsync
CHECK_STATUS_RETRY_AFTER = "10"  # CreateCheckStatusResponseMessage


def _json(status: int, payload, headers: Optional[Dict[str, str]] = None) -> Response:
    h = {"Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    return status, h, json.dumps(payload).encode("utf-8")


def _empty(status: int) -> Response:
    return status, {"Content-Length": "0"}, b""


def _error(status: int, message: str, exception_message: Optional[str] = None) -> Response:
    # ASP.NET's HttpError shape; the Python client reads "ExceptionMessage" on 400.
    body = {"Message": message}
    if exception_message is not None:
        body["ExceptionMessage"] = exception_message
    return _json(status, body)


def _flag(query: Dict[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return default


class ManagementApi:
    """Serves the Durable management routes for one ReplayHost."""

    def __init__(self, host: ReplayHost, task_hub: Optional[str] = None,
                 connection: str = "Storage") -> None:
        self.host = host
        self.task_hub = task_hub or host.task_hub
        self.connection = connection

    # ------------------------------------------------------------------ binding and links

    def _query_suffix(self) -> str:
        return f"taskHub={quote(self.task_hub)}&connection={quote(self.connection)}"

    def management_urls(self, origin: str, instance_id: str = "INSTANCEID") -> Dict[str, str]:
        """GetClientResponseLinks: the webhook URLs for one instance (``origin`` = scheme://host)."""
        prefix = f"{origin.rstrip('/')}{WEBHOOK_PREFIX}instances/{quote(instance_id, safe='')}"
        qs = self._query_suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{qs}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{qs}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{qs}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{qs}",
            "purgeHistoryDeleteUri": f"{prefix}?{qs}",
            "restartPostUri": f"{prefix}/restart?{qs}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{qs}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{qs}",
        }

    def binding(self, origin: str) -> Dict[str, object]:
        """The durableClient binding data the extension hands the worker."""
        base = f"{origin.rstrip('/')}{WEBHOOK_PREFIX}orchestrators/{{functionName}}[/{{instanceId}}]"
        return {
            "taskHubName": self.task_hub,
            "creationUrls": {
                "createNewInstancePostUri": base,
                "createAndWaitOnNewInstancePostUri":
                    f"{base}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}",
            },
            "managementUrls": self.management_urls(origin),
            "rpcBaseUrl": f"{origin.rstrip('/')}{RPC_PREFIX}",
            "requiredQueryStringParameters": "",
            "httpBaseUrl": f"{origin.rstrip('/')}{WEBHOOK_PREFIX}",
        }

    def binding_json(self, origin: str) -> str:
        return json.dumps(self.binding(origin))

    # ------------------------------------------------------------------ dispatch

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(RPC_PREFIX) or path.startswith(WEBHOOK_PREFIX) \
            or path in (RPC_PREFIX.rstrip("/"), WEBHOOK_PREFIX.rstrip("/"))

    def handle(self, method: str, path: str, query_string: str, headers, body: bytes,
               origin: str, request_url: str) -> Response:
        prefix = RPC_PREFIX if path.startswith(RPC_PREFIX.rstrip("/")) else WEBHOOK_PREFIX
        rest = path[len(prefix):] if path.startswith(prefix) else ""
        # EXT HttpApiHandler matches route templates against the URL-DECODED path.
        segments = [s for s in unquote(rest).strip("/").split("/")] if rest.strip("/") else []
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        method = method.upper()
        try:
            if segments[:1] == ["orchestrators"] and len(segments) in (2, 3):
                if method != "POST":
                    return _empty(404)
                return self._start(segments[1], segments[2] if len(segments) == 3 else None,
                                   body, origin, query.get("version"))
            if segments[:1] == ["entities"] and len(segments) in (2, 3):
                return self._entity(method, segments[1], segments[2] if len(segments) == 3
                                    else "", query, headers, body)
            if segments[:1] == ["instances"]:
                return self._instances(method, segments[1:], query, headers, body, request_url)
            return _empty(404)
        except Exception as exc:  # the extension's catch-all
            return _error(500, "Something went wrong while processing your request", str(exc))

    def _start(self, name: str, instance_id: Optional[str], body: bytes, origin: str,
               version: Optional[str] = None) -> Response:
        input_json = None
        if body:
            text = body.decode("utf-8")
            try:
                json.loads(text)
            except ValueError as exc:
                return _error(400, "Invalid JSON content", str(exc))
            input_json = text
        try:
            iid = self.host.start_new_json(name, instance_id or None, input_json, version=version)
        except (FunctionNotFoundError, InvalidInstanceIdError) as exc:
            return _error(400, "One or more of the arguments submitted is incorrect", str(exc))
        except InstanceAlreadyExistsError as exc:
            return _error(409, str(exc))
        return self.check_status_response(origin, iid)

    def _entity(self, method: str, name: str, key: str, query, headers, body: bytes) -> Response:
        if not name:
            return _error(400, "entityName (Parameter 'entityName')")
        if method == "GET":
            if not key:
                return _error(501, "Listing entities is not supported by devhost.")
            if key == "$":  # EXT: "$" stands for the empty key
                key = ""
            state = self.host.entity_state_json(name, key)
            if state is None:
                return _empty(404)
            return 200, {"Content-Type": "application/json; charset=utf-8"}, state.encode("utf-8")
        if method not in ("POST", "DELETE"):
            return _empty(404)
        operation = "delete" if method == "DELETE" else (query.get("op") or "")
        input_json = None
        if body:
            text = body.decode("utf-8")
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type == "application/json":
                try:
                    # ConvertToJToken then RequestMessage.SetInput: the token's compact JSON.
                    input_json = json.dumps(json.loads(text), separators=(",", ":"),
                                            ensure_ascii=False)
                except ValueError as exc:
                    return _error(400, f"Could not parse JSON content: {exc}")
            else:
                input_json = json.dumps(text)  # a string input
        try:
            self.host.signal_entity_json(name, key, operation, input_json)
        except (FunctionNotFoundError, ValueError) as exc:
            return _error(400, str(exc))
        return _empty(202)

    def check_status_response(self, origin: str, instance_id: str) -> Response:
        links = self.management_urls(origin, instance_id)
        payload = {k: links[k] for k in ("id", "statusQueryGetUri", "sendEventPostUri",
                                         "terminatePostUri", "purgeHistoryDeleteUri",
                                         "restartPostUri", "suspendPostUri", "resumePostUri")}
        return _json(202, payload, {"Location": links["statusQueryGetUri"],
                                    "Retry-After": CHECK_STATUS_RETRY_AFTER})

    def _instances(self, method: str, segments, query, headers, body: bytes,
                   request_url: str) -> Response:
        if len(segments) > 3 or (len(segments) == 3 and segments[1].lower() != "raiseevent"):
            return _empty(404)
        if not segments:
            if method == "GET":
                return _json(200, _filtered(self.host.list_statuses(
                    show_input=_flag(query, "showInput", True)), query))
            if method == "DELETE":
                return self._purge_by(query)
            return _empty(404)
        instance_id = segments[0]
        if len(segments) == 1:
            if method == "GET":
                return self._status(instance_id, query, request_url)
            if method == "DELETE":
                return self._purge(instance_id)
            return _empty(404)
        if method != "POST":
            return _empty(404)
        operation = segments[1].lower()
        if operation == "terminate" and len(segments) == 2:
            return self._terminate(instance_id, query.get("reason"))
        if operation == "raiseevent" and len(segments) == 3:
            return self._raise_event(instance_id, segments[2], headers, body)
        if operation in ("suspend", "resume") and len(segments) == 2:
            return self._suspend_or_resume(operation, instance_id, query.get("reason"))
        if operation in ("rewind", "restart"):
            return _error(501, f"'{operation}' is not supported by devhost.")
        return _empty(404)

    def _status(self, instance_id: str, query, request_url: str) -> Response:
        status = self.host.get_status(
            instance_id,
            show_history=_flag(query, "showHistory", False),
            show_history_output=_flag(query, "showHistoryOutput", False),
            show_input=_flag(query, "showInput", True))
        if status is None:
            return _empty(404)
        runtime = status["runtimeStatus"]
        if runtime not in TERMINAL_STATES:
            return _json(202, status, {"Location": request_url,
                                       "Retry-After": STATUS_RETRY_AFTER})
        if runtime == "Failed" and _flag(query, "returnInternalServerErrorOnFailure", False):
            return _json(500, status)
        return _json(200, status)

    def _terminate(self, instance_id: str, reason: Optional[str]) -> Response:
        try:
            self.host.terminate(instance_id, reason)
        except InstanceNotFoundError:
            return _empty(404)
        except InstanceGoneError:
            return _empty(410)
        return _empty(202)

    def _suspend_or_resume(self, operation: str, instance_id: str, reason: Optional[str]) -> Response:
        try:
            (self.host.suspend if operation == "suspend" else self.host.resume)(instance_id, reason)
        except InstanceNotFoundError:
            return _empty(404)
        except InstanceGoneError:
            return _empty(410)
        return _empty(202)

    def _raise_event(self, instance_id: str, event_name: str, headers, body: bytes) -> Response:
        status = self.host.get_status(instance_id, show_input=False)
        if status is None:
            return _empty(404)
        if status["runtimeStatus"] in TERMINAL_STATES:
            return _empty(410)
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(400, "Only application/json request content is supported")
        text = body.decode("utf-8") if body else "null"
        try:
            json.loads(text)
        except ValueError as exc:
            return _error(400, "Invalid JSON content", str(exc))
        try:
            self.host.raise_event_json(instance_id, event_name, text)
        except InstanceGoneError:
            return _empty(410)
        return _empty(202)

    def _purge(self, instance_id: str) -> Response:
        try:
            deleted = self.host.purge(instance_id)
        except DevhostError as exc:
            return _json(412, str(exc))
        if not deleted:
            return _empty(404)
        return _json(200, {"instancesDeleted": 1})

    def _purge_by(self, query: Dict[str, str]) -> Response:
        created_from = _timestamp(query.get("createdTimeFrom"))
        if created_from is None:
            return _json(400, "Please provide value for 'createdTimeFrom' parameter.")
        created_to = _timestamp(query.get("createdTimeTo"))
        if created_to is None:
            created_to = self.host.clock.now()
        # Enum.TryParse per comma-separated value; names that do not parse are ignored.
        statuses = [s.strip() for s in (query.get("runtimeStatus") or "").split(",") if s.strip()]
        deleted = self.host.purge_by(created_from, created_to, statuses)
        if not deleted:
            return _empty(404)
        return _json(200, {"instancesDeleted": deleted})


def _filtered(statuses, query: Dict[str, str]):
    """The list query's filters (HandleGetStatusRequestAsync -> OrchestrationStatusQueryCondition):
    ``instanceIdPrefix``, ``runtimeStatus`` (comma-separated, any status), ``createdTimeFrom`` and
    ``createdTimeTo`` (inclusive). Callers that count instances (triggers/access.py) rely on them."""
    prefix = query.get("instanceIdPrefix") or ""
    wanted = {s.strip() for s in (query.get("runtimeStatus") or "").split(",") if s.strip()}
    low, high = _timestamp(query.get("createdTimeFrom")), _timestamp(query.get("createdTimeTo"))
    out = []
    for status in statuses:
        created = _timestamp(status.get("createdTime"))
        if (status.get("instanceId") or "").startswith(prefix) and (not wanted or status.get("runtimeStatus") in wanted) \
                and (low is None or (created is not None and created >= low)) \
                and (high is None or (created is not None and created <= high)):
            out.append(status)
    return out


def _timestamp(value: Optional[str]) -> Optional[float]:
    """Epoch seconds of an ISO 8601 query value (naive = UTC), or None (DateTime.TryParse fails)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class ManagementServer:
    """The management API alone on a loopback port (what the extension's local RPC endpoint
    is). ReplayHost starts one when a function it invokes itself needs a durable client and no
    DevServer serves the API."""

    def __init__(self, host: ReplayHost, port: int = 0) -> None:
        self.api = ManagementApi(host)
        self._port = port
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("management server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "ManagementServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Two writes per answer (headers, body): without this, Nagle and a keep-alive
                # client's delayed ACK stall every answer with a body by ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, fmt, *args):
                log.debug("%s " + fmt, self.address_string(), *args)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                if ManagementApi.handles(parts.path):
                    status, headers, payload = server.api.handle(
                        self.command, parts.path, parts.query, self.headers, body,
                        server.base_url, server.base_url + self.path)
                else:
                    status, headers, payload = 404, {}, b""
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="devhost-management", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
