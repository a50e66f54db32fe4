"""Overhead of the getJobRun activity over a bare HTTP GET.

1,000 getJobRun activity calls (the registered user function, as the Functions host calls it:
settings, managed-identity token, pooled client, retry policy, summary) against the jobs emulator on
loopback, versus 1,000 raw `requests.Session` GETs of the same URL on the same server in the same
run. Token: azure-identity's real ManagedIdentityCredential against a loopback stand-in of the App
Service identity endpoint, which counts fetches. Target: ratio <= 1.3, one token fetch."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List

import requests

CALLS = 1000
ROUNDS = 5  # alternate the two sides in rounds so drift on the machine hits both alike
TARGET_RATIO = 1.3
IDENTITY_HEADER = "bench-identity-header"


class IdentityEndpoint:
    """Loopback stand-in of the App Service managed-identity endpoint; counts token fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                    self.send_error(401)
                    return
                endpoint.fetches += 1
                body = json.dumps({
                    "access_token": f"bench-mi-token-{endpoint.fetches}",
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d",
                    "token_type": "Bearer",
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _timed(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - started


def run() -> bool:
    from jobs_emulator import JobsEmulator

    emulator = JobsEmulator()
    base_url = emulator.start(port=0)
    identity = IdentityEndpoint()
    saved = {k: os.environ.get(k) for k in (
        "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "DATABRICKS_HOST", "DATABRICKS_AUTH")}
    os.environ.update(IDENTITY_ENDPOINT=identity.url, IDENTITY_HEADER=IDENTITY_HEADER,
                      DATABRICKS_HOST=base_url, DATABRICKS_AUTH="managed_identity")
    try:
        import databricks_jobs
        from activities.jobs import createJob, getJobRun, runJobNow

        databricks_jobs.reset_all()
        get_job_run = getJobRun.build().get_user_function()
        job = createJob.build().get_user_function()({
            "instanceId": "bench-activity-overhead", "runKey": "bench-run", "private": True, "job": {
                "name": "bench", "tasks": [{"task_key": "main", "existing_cluster_id": "bench-cluster",
                                            "notebook_task": {"notebook_path": "/Workspace/bench/notebook"}}]}})
        run_id = runJobNow.build().get_user_function()(
            {"runKey": "bench-run", "jobId": job["jobId"]})["runId"]

        raw = requests.Session()
        # Like the client: a default Session also reads proxy variables and .netrc on every
        # request, which would make the baseline slower and flatter the ratio.
        raw.trust_env = False
        url = f"{base_url}/api/2.1/jobs/runs/get"
        headers = {"Authorization": "Bearer bench-raw-token"}
        request = {"runId": run_id}

        def activity_call() -> None:
            get_job_run(request)

        def raw_get() -> None:
            raw.get(url, params={"run_id": run_id}, headers=headers).raise_for_status()

        for fn in (activity_call, raw_get):  # warm both connection pools and code paths
            _timed(fn, 20)
        totals: Dict[str, float] = {"activity": 0.0, "raw": 0.0}
        per_round = CALLS // ROUNDS
        for round_no in range(ROUNDS):
            order: List = [("activity", activity_call), ("raw", raw_get)]
            for name, fn in order if round_no % 2 == 0 else reversed(order):
                totals[name] += _timed(fn, per_round)
        raw.close()
    finally:
        databricks_jobs.reset_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        identity.stop()
        emulator.stop()

    ratio = totals["activity"] / totals["raw"]
    met = ratio <= TARGET_RATIO and identity.fetches == 1
    print(f"server: jobs_emulator at {base_url}")
    print(f"getJobRun activity: {CALLS} calls in {totals['activity']:.3f} s ({totals['activity'] / CALLS * 1e6:.0f} us/call)")
    print(f"raw Session GET:    {CALLS} calls in {totals['raw']:.3f} s ({totals['raw'] / CALLS * 1e6:.0f} us/call)")
    print(f"ratio: {ratio:.3f} (target <= {TARGET_RATIO})")
    print(f"managed-identity token fetches: {identity.fetches} (target 1)")
    print("target met" if met else "TARGET MISSED")
    return met


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
