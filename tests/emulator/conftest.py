"""Fixtures for the Jobs API emulator tests: a virtual clock, a running emulator, a tiny client."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from jobs_emulator import JobsEmulator

T0 = 1_700_000_000.0
TOKEN = "dev-token-not-a-secret"


class ManualClock:
    """Minimal stand-in for devhost.clock.VirtualClock: time moves only when a test says so."""

    def __init__(self, start: float = T0):
        self.t = start
        self._callbacks = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.advance_to(self.t + seconds)

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)
        for callback in self._callbacks:
            callback(self.t)

    def on_advance(self, callback) -> None:
        self._callbacks.append(callback)


class Api:
    """Raw HTTP against the emulator, so tests see exactly what a client would."""

    def __init__(self, base_url: str, version: str = "2.2", token: str | None = TOKEN):
        self.base_url = base_url
        self.version = version
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, ignore any proxy settings
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str, version: str | None = None) -> str:
        return f"{self.base_url}/api/{version or self.version}/jobs/{path}"

    def get(self, path: str, version: str | None = None, **params) -> requests.Response:
        return self.session.get(self.url(path, version), params=params, timeout=10)

    def post(self, path: str, body: dict, version: str | None = None) -> requests.Response:
        return self.session.post(self.url(path, version), json=body, timeout=10)

    def ok(self, response: requests.Response) -> dict:
        assert response.status_code == 200, response.text
        return response.json()

    def create_job(self, notebook_path: str = "/Workspace/Users/dev@example.com/etl", version: str | None = None,
                   tasks: int = 1, **settings) -> int:
        body = {
            "name": settings.pop("name", "emulated-job"),
            "tasks": [{"task_key": "main" if i == 0 else f"t{i}", "existing_cluster_id": "0923-164208-meows279",
                       "notebook_task": {"notebook_path": notebook_path, "base_parameters": {"x": "1"}}}
                      for i in range(tasks)],
            **settings,
        }
        return self.ok(self.post("create", body, version))["job_id"]

    def run_now(self, job_id: int, version: str | None = None, **extra) -> int:
        return self.ok(self.post("run-now", {"job_id": job_id, **extra}, version))["run_id"]

    def run(self, run_id: int, version: str | None = None, **params) -> dict:
        return self.ok(self.get("runs/get", version, run_id=run_id, **params))

    def life(self, run_id: int) -> tuple[str, str | None]:
        state = self.run(run_id)["state"]
        return state["life_cycle_state"], state.get("result_state")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock):
    emu = JobsEmulator(clock=clock.now)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def api(emulator) -> Api:
    client = Api(emulator.base_url)
    yield client
    client.session.close()


class WebhookReceiver:
    """Records POSTed webhook notifications with their decoded Basic credentials."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization") or ""
                creds = None
                if auth.startswith("Basic "):
                    creds = base64.b64decode(auth[6:]).decode()
                receiver.received.append({"path": self.path, "json": json.loads(body), "basic": creds})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def make_emulator(clock):
    """Start an emulator with custom settings (virtual clock by default); returns (emulator, Api)."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("clock", clock.now)
        emu = JobsEmulator(**kwargs)
        emu.start()
        started.append(emu)
        return emu, Api(emu.base_url)

    yield make
    for emu in started:
        emu.stop()
