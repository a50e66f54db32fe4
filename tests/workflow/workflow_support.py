"""Constants shared by the workflow tests (a module of its own: test folders each have a conftest)."""
import os
from datetime import datetime, timezone

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
# devhost's realistic mode is on in the workflow tests, with this seed; DEVHOST_REALISM_SEED=<n>
# reruns them with another draw of signal latencies.
REALISM_SEED = int(os.environ.get("DEVHOST_REALISM_SEED", "14"))
# Looks like a real PAT so a leak would be easy to spot; tests assert it appears nowhere.
SECRET_TOKEN = "dapi0123456789abcdef0123456789abcdef-SECRET"

REQUEST = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
           "existingClusterId": "0923-164208-meows279"}
