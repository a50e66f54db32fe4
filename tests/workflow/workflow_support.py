"""Constants shared by the workflow tests (a module of its own: test folders each have a conftest)."""
from datetime import datetime, timezone

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Looks like a real PAT so a leak would be easy to spot; tests assert it appears nowhere.
SECRET_TOKEN = "dapi0123456789abcdef0123456789abcdef-SECRET"

REQUEST = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
           "existingClusterId": "0923-164208-meows279"}
