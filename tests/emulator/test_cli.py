"""`python -m jobs_emulator`: first line is the base URL, real time, clean exit on signals."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def _spawn(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs_emulator", "--port", "0", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(10)
    if not line or not line[0].startswith("http://"):
        proc.kill()
        pytest.fail(f"no base URL on the first line: {line!r} {proc.stderr.read()}")
    return proc, line[0].strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_on_real_time_and_stops_cleanly(tmp_path, sig):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"rules": [{"match": "*/special", "notebook_result": "special!"}]}))
    proc, base_url = _spawn("--time-scale", "0.02", "--scenario", str(scenario), "--token", "dev",
                            "--max-jobs", "1", "--job-creation-rate-limit", "5", "--job-creation-rate-window", "60")
    try:
        assert base_url.startswith("http://127.0.0.1:") and not base_url.endswith(":0")
        s = requests.Session()
        s.trust_env = False
        s.headers["Authorization"] = "Bearer dev"
        job = s.post(f"{base_url}/api/2.1/jobs/create", json={"name": "cli", "tasks": [
            {"task_key": "main", "notebook_task": {"notebook_path": "/x/special"}}]}, timeout=5).json()
        run_id = s.post(f"{base_url}/api/2.1/jobs/run-now", json=job, timeout=5).json()["run_id"]
        second = s.post(f"{base_url}/api/2.1/jobs/create", json={"name": "over the quota"}, timeout=5)
        assert (second.status_code, second.json()["error_code"]) == (400, "QUOTA_EXCEEDED")
        deadline = time.time() + 5
        while time.time() < deadline:  # 3 s default run scaled to 60 ms
            run = s.get(f"{base_url}/api/2.1/jobs/runs/get", params={"run_id": run_id}, timeout=5).json()
            if run["state"]["life_cycle_state"] == "TERMINATED":
                break
            time.sleep(0.02)
        assert run["state"]["result_state"] == "SUCCESS"
        out = s.get(f"{base_url}/api/2.1/jobs/runs/get-output",
                    params={"run_id": run["tasks"][0]["run_id"]}, timeout=5).json()
        assert out["notebook_output"]["result"] == "special!"
        wrong = requests.get(f"{base_url}/api/2.1/jobs/list", headers={"Authorization": "Bearer other"}, timeout=5)
        assert wrong.status_code == 401
        s.close()  # an idle keep-alive connection must not delay shutdown either
    finally:
        proc.send_signal(sig)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert proc.stdout.read() == ""  # the URL was the only stdout line


def test_cli_fault_flags_and_destination(tmp_path):
    proc, base_url = _spawn("--fault-rate", "1", "--fault-kinds", "503", "--retry-after", "3",
                            "--destination", "d1=http://user:pw@127.0.0.1:9/hook")
    try:
        r = requests.get(f"{base_url}/api/2.2/jobs/list", headers={"Authorization": "Bearer x"}, timeout=5)
        assert (r.status_code, r.headers["Retry-After"]) == (503, "3")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("flags, word", [(["--fault-kinds", "teapot"], "teapot"),
                                         (["--job-creation-rate-window", "0"], "rate window")])
def test_cli_rejects_bad_flags(flags, word):
    result = subprocess.run([sys.executable, "-m", "jobs_emulator", *flags], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and word in result.stderr and "Traceback" not in result.stderr
