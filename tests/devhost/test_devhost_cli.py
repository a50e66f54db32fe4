"""``python -m devhost serve`` / ``demo``: start-up, URLs, environment and the Location poller."""
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from devhost.demo import run_demo
from devhost.serve import DEV_TOKEN, start_stack

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def test_demo_follows_location_and_prints_outputs_last(app, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.2.azuredatabricks.net")  # no emulator
    out = io.StringIO()
    code = run_demo(app, request_body={"jobName": "toy"}, max_retry_after=0.05, out=out)
    lines = out.getvalue().strip().splitlines()
    assert code == 0
    assert lines[0].split()[-1].startswith("http://127.0.0.1:")
    assert any("runtimeStatus=Running step=pollRun lifeCycleState=RUNNING" in l for l in lines)
    assert json.loads(lines[-1]) == {"jobId": 1, "runId": 2, "resultState": "SUCCESS",
                                     "jobName": "toy"}


def test_demo_exit_status_reflects_result_state(app, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.2.azuredatabricks.net")
    out = io.StringIO()
    code = run_demo(app, request_body={"jobName": "toy", "wantResult": "FAILED"},
                    max_retry_after=0.05, out=out)
    assert code == 1
    assert json.loads(out.getvalue().strip().splitlines()[-1])["resultState"] == "FAILED"


def test_embedded_emulator_is_wired_before_the_app_runs(app, monkeypatch):
    for name in ("DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server, emulator, emulator_url = start_stack(app, port=0)
    try:
        assert emulator is not None and emulator_url.startswith("http://127.0.0.1:")
        assert os.environ["DATABRICKS_HOST"] == emulator_url
        assert os.environ["DATABRICKS_AUTH"] == "pat"
        assert os.environ["DATABRICKS_TOKEN"] == DEV_TOKEN
    finally:
        server.stop()
        emulator.stop()


def test_serve_cli_prints_app_url_first_and_stops_on_sigterm(tmp_path):
    (tmp_path / "toyapp.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from devhost_toyapp import make_app\n"
        "app = make_app()\n")
    env = dict(os.environ, DATABRICKS_HOST="https://adb-1.2.azuredatabricks.net",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", "0",
                             "--app", "toyapp:app"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[:2] == ["devhost", "app"]
        base = first[-1]
        r = requests.post(f"{base}/api/start/sequence", json=["cli"], timeout=10)
        assert r.status_code == 202
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
