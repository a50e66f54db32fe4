"""`python -m devhost serve --auth` and `python -m devhost token`, as a developer runs them."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from devhost.entra import issue_token, load_or_create_key

ROOT = Path(__file__).resolve().parents[2]
VALID = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
         "existingClusterId": "0923-164208-meows279"}


def test_serve_with_auth_plays_entra_and_the_token_command_gets_in(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "WORKFLOW_", "WEBSITE_"))}
    env.update(DEVHOST_ENTRA_KEY_FILE=str(tmp_path / "dev-key.pem"), AzureWebJobsStorage="")

    def token(oid, *roles):  # what `python -m devhost token` prints (tests/teams/test_callers_units.py)
        return issue_token(oid, roles=roles, key=load_or_create_key(tmp_path / "dev-key.pem"))

    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--auth", "--port", "0"], cwd=tmp_path,
                            env=dict(env, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        base = proc.stdout.readline().split()[-1]
        lines = [proc.stdout.readline() for _ in range(3)]
        assert any(line.startswith("entra (dev)") for line in lines), lines
        start = f"{base}/api/workflows/create-job-and-run"
        assert requests.post(start, json=VALID, timeout=10).status_code == 401
        mine = {"Authorization": f"Bearer {token('owner-1', 'Workflows.Run')}"}
        started = requests.post(start, json=VALID, headers=mine, timeout=10)
        assert started.status_code == 202, started.text
        status = started.headers["Location"]
        assert requests.get(status, headers=mine, timeout=10).status_code in (200, 202)
        theirs = {"Authorization": f"Bearer {token('someone-else', 'Workflows.Run')}"}
        assert requests.get(status, headers=theirs, timeout=10).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
