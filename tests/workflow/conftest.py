"""The whole workflow in virtual time: the app's real functions on the devhost replay engine,
talking over loopback HTTP to the Jobs API emulator, which runs on the same virtual clock."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from devhost import Realism, ReplayHost
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings
from workflow_support import REALISM_SEED, REQUEST, SECRET_TOKEN, T0



@pytest.fixture
def virtual_start():
    return T0


@pytest.fixture
def secret_token():
    return SECRET_TOKEN


@pytest.fixture(params=["plain", "at-least-once"])
def host_mode(request):
    """Every workflow test runs twice: as the host usually behaves, and with every activity executed
    twice (at-least-once delivery) and every due event batched into one episode (as the Durable
    extension batches them)."""
    return request.param


@pytest.fixture
def host(clock, databricks_env, host_mode, monkeypatch):
    from function_app import app
    from triggers import databricks_webhook, run_watcher

    # The workspace run watcher is a timer trigger: it runs on the virtual clock like everything else,
    # and so does the webhook endpoint's clock (when it keeps a notification for a run).
    monkeypatch.setattr(run_watcher, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    monkeypatch.setattr(databricks_webhook, "utcnow", lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    run_watcher.memory.reset()
    twice = host_mode == "at-least-once"
    # The extension's timing (devhost.realism): entity signals arrive late, in order per sender
    # only, and reads of the registry may miss them; seeded, so a failure reproduces.
    h = ReplayHost(app, clock, timer_triggers=["watch_runs"], activities_twice=twice, batch_events=twice,
                   realism=Realism(seed=REALISM_SEED))
    yield h
    h.stop()


@pytest.fixture
def run_workflow(host):
    """Start the workflow with `overrides` on top of REQUEST and run it to the end in virtual time."""

    def run(settings: WorkflowSettings = WorkflowSettings(), instance_id=None, **overrides):
        request = validate_request({**REQUEST, **overrides}, settings)
        iid = host.start_new(ORCHESTRATOR_NAME, instance_id, orchestration_input(request, settings))
        return host.run_until_complete(iid, max_virtual_seconds=40 * 86400)

    return run


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def own_polls(host):
    """For tests of the workflow's OWN poll schedule: no run watcher, so every look is its own poll."""
    host.timer_triggers = False
    return WorkflowSettings(run_watcher_interval_seconds=0)
