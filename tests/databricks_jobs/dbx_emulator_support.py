"""Constants and helpers shared by the tests that run the client and the activities against the
Jobs API emulator (the fixtures are in conftest.py)."""
from __future__ import annotations

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TOKEN = "dapi-emulator-integration-0123456789abcdef"
RETRY_AFTER = 3  # what the emulator's 429/503 ask for; distinct from any backoff value
CLUSTER = "0923-164208-meows279"


def error(code, message):
    """A Databricks error body."""
    return {"error_code": code, "message": message}


def notebook_job(name, *, tasks=1, tags=None, path="/Workspace/Users/me@contoso.com/load"):
    settings = {"name": name, "tasks": [
        {"task_key": f"t{i:03d}" if tasks > 1 else "main", "existing_cluster_id": CLUSTER,
         "notebook_task": {"notebook_path": path}} for i in range(tasks)]}
    if tags:
        settings["tags"] = tags
    return settings


def calls(emulator, suffix, method=None):
    return [r for r in emulator.request_log
            if r["path"].endswith(suffix) and (method is None or r["method"] == method)]
