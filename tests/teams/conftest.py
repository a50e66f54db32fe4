"""Two teams on one workspace: devhost playing Entra ID (devhost/entra.py), the app's own HTTP
functions on devhost's server, the Jobs API emulator behind, a caller policy, all in virtual time."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import databricks_jobs
from activities.jobs import known_jobs
from callers import identity
from devhost import Realism, ReplayHost, VirtualClock
from devhost.entra import DevEntra, issue_token, load_or_create_key
from devhost.serve import DevServer
from jobs_emulator import JobsEmulator
from workflow import caller_policy

from callers_support import A, B, C, CLUSTER, SP_A, SP_B, TOKEN, policy_document  # noqa: F401


@pytest.fixture(scope="session")
def dev_key(tmp_path_factory):
    return load_or_create_key(tmp_path_factory.mktemp("entra") / "dev-key.pem")


@pytest.fixture
def teams(monkeypatch, dev_key):
    import function_app

    entra = DevEntra(key=dev_key)
    entra.start()
    for name, value in entra.app_settings().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    identity.reset()
    clock = VirtualClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    emulator = JobsEmulator(clock=clock.now, tokens={TOKEN}, service_principals={SP_A: True, SP_B: True})
    clock.on_advance(emulator.tick)
    monkeypatch.setenv("DATABRICKS_HOST", emulator.start(port=0))
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    # Team A's saved job and team B's, made as bundles would make them.
    job_of_a = emulator.store.create_job({"name": "team-a-payroll", "tasks": [
        {"task_key": "main", "existing_cluster_id": CLUSTER,
         "notebook_task": {"notebook_path": "/Workspace/Teams/a/payroll"}}]}, "2.1")["job_id"]
    job_of_b = emulator.store.create_job({"name": "team-b-etl", "tasks": [
        {"task_key": "main", "existing_cluster_id": CLUSTER,
         "notebook_task": {"notebook_path": "/Workspace/Teams/b/etl"}}]}, "2.1")["job_id"]
    monkeypatch.setenv(caller_policy.SETTING, json.dumps(policy_document(job_of_b)))
    databricks_jobs.reset_all()
    known_jobs.clear()
    from triggers import http_api

    monkeypatch.setattr(http_api, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    # The extension's timing (devhost.realism): entity signals arrive late, reads may be stale.
    host = ReplayHost(function_app.app, clock, realism=Realism(seed=15))
    server = DevServer(function_app.app, host, queues=False)
    base_url = server.start()
    host.stop()  # the test drives the workflows in virtual time itself
    tokens = {who: issue_token(who, key=dev_key, audience=entra.app_settings()["WORKFLOW_AUTH_AUDIENCE"])
              for who in (A, B, C)}
    tokens["admin"] = issue_token("adadadad-0000-4000-8000-0000000000ad", roles=["Workflows.Admin"], key=dev_key)
    yield SimpleNamespace(base_url=base_url, host=host, clock=clock, emulator=emulator, entra=entra, key=dev_key,
                          tokens=tokens, job_of_a=job_of_a, job_of_b=job_of_b)
    server.stop()
    emulator.stop()
    entra.stop()
    databricks_jobs.reset_all()
    identity.reset()
