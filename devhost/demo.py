"""``python -m devhost demo`` (what ``make demo`` runs). DEVELOPMENT TOOL.

Starts ``devhost serve`` in-process on a free port with the embedded Jobs API emulator, starts a
workflow over HTTP, follows ``Location`` as a Logic Apps HTTP action would (honouring
``Retry-After``, capped so the demo finishes quickly), prints one progress line per poll and the
final outputs as ONE JSON object on the last line. Exit status 0 when resultState is SUCCESS.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional, TextIO

import requests

from .serve import start_stack

START_PATH = "/api/workflows/create-job-and-run"
DEMO_REQUEST = {
    "jobName": "demo-notebook-job",
    "taskKey": "main",
    "notebookPath": "/Workspace/Users/demo@example.com/hello",
    "existingClusterId": "0101-000000-demo0000",
}


def _retry_after(headers, default: float, cap: float) -> float:
    try:
        value = float(headers.get("Retry-After", default))
    except (TypeError, ValueError):
        value = default
    return max(0.0, min(value, cap))


def _progress(elapsed: float, status_code: int, body: Any) -> str:
    body = body if isinstance(body, dict) else {}
    if status_code != 202:
        return (f"[{elapsed:6.1f}s] HTTP {status_code} finished "
                f"resultState={body.get('resultState', body.get('runtimeStatus', '-'))}")
    custom = body.get("customStatus") if isinstance(body.get("customStatus"), dict) else {}
    parts = [f"[{elapsed:6.1f}s] HTTP {status_code}",
             f"runtimeStatus={body.get('runtimeStatus', '-')}",
             f"step={custom.get('step', '-')}",
             f"lifeCycleState={custom.get('lifeCycleState') or '-'}"]  # none before the first poll
    if custom.get("polls") is not None:
        parts.append(f"polls={custom['polls']}")
    return " ".join(parts)


def follow(start_url: str, request_body: dict, *, max_retry_after: float = 1.0,
           timeout: float = 900.0, out: TextIO = sys.stdout,
           session: Optional[requests.Session] = None) -> tuple[int, Any]:
    """POST, then poll Location while 202 (the asynchronous request-reply pattern)."""
    http = session or requests.Session()
    started = time.monotonic()
    response = http.post(start_url, json=request_body, timeout=30)
    if response.status_code != 202 or "Location" not in response.headers:
        return response.status_code, _body(response)
    location = response.headers["Location"]
    print(f"[{0.0:6.1f}s] HTTP 202 started {(_body(response) or {}).get('id', '')} -> {location}",
          file=out, flush=True)
    while True:
        time.sleep(_retry_after(response.headers, 1.0, max_retry_after))
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"workflow still running after {timeout:.0f} s")
        response = http.get(location, timeout=30)
        body = _body(response)
        print(_progress(time.monotonic() - started, response.status_code, body), file=out,
              flush=True)
        if response.status_code != 202:
            return response.status_code, body
        location = response.headers.get("Location", location)


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"status": response.status_code, "body": response.text}


def run_demo(app_spec: Any = "function_app:app", *, request_body: Optional[dict] = None,
             max_retry_after: float = 1.0, timeout: float = 900.0,
             out: TextIO = sys.stdout) -> int:
    # As `serve` runs it: with its timer triggers, so the workspace run watcher notices the run's end
    # (a 5 s tick keeps the demo short; read when the app is imported).
    os.environ.setdefault("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "5")
    server, emulator, emulator_url = start_stack(app_spec, port=0, timer_triggers=True)
    try:
        print(f"devhost app       {server.base_url}", file=out, flush=True)
        print(f"jobs emulator     {emulator_url or 'not started (DATABRICKS_HOST is set)'}",
              file=out, flush=True)
        print("devhost is a local development stand-in for Azure Functions; production runs on "
              "the Durable Task extension.", file=out, flush=True)
        code, outputs = follow(server.base_url + START_PATH, request_body or DEMO_REQUEST,
                               max_retry_after=max_retry_after, timeout=timeout, out=out)
        print(json.dumps(outputs), file=out, flush=True)
        ok = code == 200 and isinstance(outputs, dict) and outputs.get("resultState") == "SUCCESS"
        return 0 if ok else 1
    finally:
        server.stop()
        if emulator is not None:
            emulator.stop()
