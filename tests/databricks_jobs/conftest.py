"""Fixtures for the Databricks client, credentials and activities: clean process state, settings
from a controlled environment, a scriptable loopback HTTP server, a loopback stand-in of the
App Service managed-identity endpoint, and the Jobs API emulator on a virtual clock. Everything
listens on 127.0.0.1 only."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import databricks_jobs
from databricks_jobs import client as client_module
from databricks_jobs.credentials import get_token_provider
from databricks_jobs.settings import SETTINGS, get_settings
from dbx_emulator_support import RETRY_AFTER, T0, TOKEN
from devhost.clock import VirtualClock
from jobs_emulator import Faults, JobsEmulator

DATABRICKS_HOST = "https://adb-1234567890123456.7.azuredatabricks.net"
TEST_PAT = "dapi-test-pat-0123456789abcdef"
# Variables azure-identity reads to pick a managed-identity flavour; none may leak in from the machine.
_IDENTITY_VARS = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET",
    "IMDS_ENDPOINT", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_PASSWORD",
)


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name in _IDENTITY_VARS:
        monkeypatch.delenv(name, raising=False)
    databricks_jobs.reset_all()
    yield
    databricks_jobs.reset_all()


@pytest.fixture
def configure(monkeypatch) -> Callable[..., None]:
    """Set DATABRICKS_* variables (keyword names without the prefix) and forget cached state."""

    def apply(**values: Optional[str]) -> None:
        for key, value in values.items():
            name = "DATABRICKS_" + key.upper()
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        databricks_jobs.reset_all()

    return apply


@pytest.fixture
def pat_env(configure):
    configure(host=DATABRICKS_HOST, auth="pat", token=TEST_PAT)


class Recorded(dict):
    @property
    def path(self) -> str:
        return self["path"]


Action = Any  # (status, headers, body) | "drop" | ("delay", seconds, (status, headers, body))


class LoopbackServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose answers a test scripts.

    `handler(request) -> action` decides each answer, where request has method, path, query,
    headers and json; an action is (status, headers, body), "drop" (close without answering) or
    ("delay", seconds, action). `script(path, actions...)` queues one-shot answers first."""

    def __init__(self, handler: Optional[Callable[[Recorded], Action]] = None):
        self.requests: List[Recorded] = []
        self._scripts: Dict[str, List[Action]] = {}
        self._handler = handler or (lambda request: (404, {}, {"error_code": "NOT_FOUND", "message": "no route"}))
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body in two writes cost a 40 ms delayed ACK

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Recorded(
                    method=self.command, path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=json.loads(raw) if raw else None,
                    client_port=self.client_address[1],
                )
                with server._lock:
                    server.requests.append(request)
                    queue = server._scripts.get(parts.path)
                    action = queue.pop(0) if queue else None
                if action is None:
                    action = server._handler(request)
                while isinstance(action, tuple) and action[0] == "delay":
                    time.sleep(action[1])
                    action = action[2]
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees the connection drop
                    return
                status, headers, body = action
                payload = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    if not any(k.lower() == "content-type" for k in headers):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up first (a read-timeout test)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def script(self, path: str, *actions: Action) -> None:
        with self._lock:
            self._scripts.setdefault(path, []).extend(actions)

    def calls(self, path: str) -> List[Recorded]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def loopback():
    """Factory of started loopback servers, stopped after the test."""
    servers: List[LoopbackServer] = []

    def make(handler: Optional[Callable[[Recorded], Action]] = None) -> LoopbackServer:
        server = LoopbackServer(handler).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class IdentityEndpoint:
    """Loopback stand-in of the App Service managed-identity endpoint (IDENTITY_ENDPOINT)."""

    SECRET = "identity-header-secret"

    def __init__(self, server: LoopbackServer):
        self.server = server
        self.url = server.base_url + "/msi/token"
        self.lifetime_seconds = 3600
        self.issued: List[str] = []
        # How the endpoint sends each token; a test plants whitespace around or inside it.
        self.wrap_token: Callable[[str], str] = lambda token: token

    def answer(self, request: Recorded) -> Action:
        if request["headers"].get("x-identity-header") != self.SECRET:
            return (401, {}, {"error": "invalid identity header"})
        resource = request["query"].get("resource", "")
        token = f"mi-token-{len(self.issued) + 1}-{resource.replace('/', '_')}-eyJ0eXAiOiJKV1Qi"
        self.issued.append(token)
        return (200, {}, {
            "access_token": self.wrap_token(token),
            "expires_on": str(int(time.time()) + self.lifetime_seconds),
            "resource": resource,
            "token_type": "Bearer",
        })

    def fetches(self, resource_prefix: str = "") -> List[Recorded]:
        return [r for r in self.server.calls("/msi/token")
                if r["query"].get("resource", "").startswith(resource_prefix)]


@pytest.fixture
def identity_endpoint(loopback, monkeypatch) -> IdentityEndpoint:
    endpoint: Dict[str, IdentityEndpoint] = {}
    server = loopback(lambda request: endpoint["it"].answer(request))
    endpoint["it"] = IdentityEndpoint(server)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint["it"].url)
    monkeypatch.setenv("IDENTITY_HEADER", IdentityEndpoint.SECRET)
    return endpoint["it"]


class StubTokens:
    """A TokenProvider that hands out numbered tokens and counts invalidations."""

    def __init__(self, headers: Optional[Dict[str, str]] = None) -> None:
        self.issued = 0
        self.invalidations = 0
        self._current: Optional[str] = None
        self._headers = headers or {}

    def token(self) -> str:
        if self._current is None:
            self.issued += 1
            self._current = f"stub-token-{self.issued}"
        return self._current

    def invalidate(self) -> None:
        self.invalidations += 1
        self._current = None

    def extra_headers(self) -> Dict[str, str]:
        return dict(self._headers)


@pytest.fixture
def mocked():
    """The `responses` library standing in for the network (requests never leave the process)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def stub_tokens() -> StubTokens:
    return StubTokens()


# -- the Jobs API emulator (constants and helpers: dbx_emulator_support.py) -------------------------

@pytest.fixture(params=["2.1", "2.2"])
def api_version(request):
    return request.param


@pytest.fixture
def vclock():
    return VirtualClock(T0)


@pytest.fixture
def emulator(vclock, request):
    """The emulator; a test may pass it options with `@pytest.mark.emulator_options(job_ids="descending")`."""
    marker = request.node.get_closest_marker("emulator_options")
    emu = JobsEmulator(clock=vclock.now, tokens={TOKEN}, faults=Faults(retry_after=RETRY_AFTER),
                       **(marker.kwargs if marker else {}))
    emu.start(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def emulator_client(monkeypatch, emulator, api_version, sleeps):
    """The client built from settings exactly as get_jobs_client() builds it, except that its retry
    waits are recorded (SleepRecorder) instead of slept; installed as the process-wide client so
    the activities use it too."""
    databricks_jobs.reset_all()
    monkeypatch.setenv("DATABRICKS_HOST", emulator.base_url)
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_JOBS_API_VERSION", api_version)
    monkeypatch.setenv("DATABRICKS_RETRY_MAX_SECONDS", "30")
    built = client_module.JobsClient.from_settings(get_settings(), get_token_provider(), sleep_func=sleeps,
                                                   clock=sleeps.clock)
    client_module._client.override(built)
    yield built
    databricks_jobs.reset_all()


@pytest.fixture(autouse=True)
def no_known_jobs():
    """createJob remembers job ids per process; each test starts with none (its own workspace)."""
    from activities.jobs import known_jobs

    known_jobs.clear()
    yield
    known_jobs.clear()
