"""The whole workflow in virtual time: the app's real functions on the devhost replay engine,
talking over loopback HTTP to the Jobs API emulator, which runs on the same virtual clock."""
from __future__ import annotations

import logging

import pytest

import databricks_jobs
from devhost import ReplayHost, VirtualClock
from jobs_emulator import JobsEmulator
from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
from workflow.inputs import orchestration_input, validate_request
from workflow.settings import WorkflowSettings
from workflow_support import REQUEST, SECRET_TOKEN, T0



@pytest.fixture
def clock():
    return VirtualClock(T0)


@pytest.fixture
def emulator(clock):
    emu = JobsEmulator(clock=clock.now, tokens={SECRET_TOKEN})
    clock.on_advance(emu.tick)
    emu.start(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def databricks_env(monkeypatch, emulator):
    monkeypatch.setenv("DATABRICKS_HOST", emulator.base_url)
    monkeypatch.setenv("DATABRICKS_AUTH", "pat")
    monkeypatch.setenv("DATABRICKS_TOKEN", SECRET_TOKEN)
    monkeypatch.delenv("DATABRICKS_NOTIFICATION_DESTINATION_ID", raising=False)
    databricks_jobs.reset_all()
    yield
    databricks_jobs.reset_all()


@pytest.fixture
def host(clock, databricks_env):
    from function_app import app

    h = ReplayHost(app, clock)
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
