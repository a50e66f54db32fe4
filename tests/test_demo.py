"""`make demo` (python -m devhost demo) runs the seed's job end to end with the real app on devhost and
the embedded emulator, in real time, and prints the outputs as JSON on its last line."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_the_seed_job_to_success():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "WORKFLOW_"))}
    done = subprocess.run([sys.executable, "-m", "devhost", "demo"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outputs = json.loads(done.stdout.strip().splitlines()[-1])
    assert outputs["resultState"] == "SUCCESS" and json.loads(outputs["notebookResult"])["status"] == "OK"
    assert outputs["tasks"][0]["taskKey"] == "main" and outputs["jobId"] and outputs["runId"]
