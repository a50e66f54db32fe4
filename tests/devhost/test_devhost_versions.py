"""Orchestration versions (issue #8 §1), redeploys with replace_app, and history_check over
recorded histories."""
import json
from pathlib import Path

import azure.durable_functions as df
import pytest

import devhost_toyapp as toy
from devhost import DurableOptions, ReplayHost
from devhost.functions import run_coroutine
from devhost.history_check import check_history
from devhost.replay import EXECUTION_STARTED


def started(host, iid, execution=-1):
    return next(e for e in host.executions(iid)[execution]["history"]
                if e["EventType"] == EXECUTION_STARTED)


def test_explicit_version_reaches_context_and_survives_continue_as_new(host):
    iid = host.start_new("versioned", version="2.0")
    status = host.run_until_complete(iid)
    assert status["output"] == {"version": "2.0"}
    assert [e["version"] for e in host.executions(iid)] == ["2.0", "2.0"]
    assert started(host, iid)["Version"] == "2.0"


def test_default_version_comes_from_host_json(app, clock, tmp_path):
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {
        "durableTask": {"defaultVersion": "1.5"}}}))
    host = ReplayHost(app, clock, host_json=host_json)
    assert host.default_version == "1.5"
    iid = host.start_new("versioned")
    assert host.run_until_complete(iid)["output"] == {"version": "1.5"}
    older = host.start_new("versioned", version="1.0")  # CurrentOrOlder: older runs
    assert host.run_until_complete(older)["output"] == {"version": "1.0"}


def test_default_version_is_taken_literally_not_as_an_app_setting(app, clock, tmp_path,
                                                                  monkeypatch):
    # The extension does not resolve %SETTING% in defaultVersion (EXT issue #3279): every new
    # instance would get the literal text as its version.
    monkeypatch.setenv("ORCHESTRATION_VERSION", "1.5")
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {
        "durableTask": {"defaultVersion": "%ORCHESTRATION_VERSION%"}}}))
    host = ReplayHost(app, clock, host_json=host_json)
    assert host.default_version == "%ORCHESTRATION_VERSION%"
    iid = host.start_new("versioned")
    assert host.run_until_complete(iid)["output"] == {"version": "%ORCHESTRATION_VERSION%"}


def test_a_newer_instance_is_rejected_until_a_matching_worker_runs_it(app, clock):
    host = ReplayHost(app, clock, durable_options=DurableOptions(default_version="1.0"))
    iid = host.start_new("versioned", version="2.0")
    host.run_until_idle()
    assert host.get_status(iid)["runtimeStatus"] == "Pending"  # Reject: left as it was
    assert host.run_until_idle() == 0  # and not retried in a loop
    # A redeploy whose host.json says 2.0 runs it.
    host.replace_app(app, durable_options=DurableOptions(default_version="2.0"))
    assert host.run_until_complete(iid)["output"] == {"version": "2.0"}


def test_version_failure_strategy_fail(app, clock):
    host = ReplayHost(app, clock, durable_options=DurableOptions(
        default_version="1.0", version_match_strategy="Strict", version_failure_strategy="Fail"))
    status = host.run_until_complete(host.start_new("versioned", version="0.9"))
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == ("VersionMismatch: Orchestration version did not comply with "
                                "Worker Versioning")


def test_the_python_client_sends_the_version(server):
    # At or below the repository host.json's defaultVersion, which the toy app's worker runs with.
    client = df.DurableOrchestrationClient(server.management.binding_json(server.base_url))
    iid = run_coroutine(client.start_new("versioned", None, None, version="1.5"), timeout=10)
    assert server.host.wait_for_completion(iid, timeout=10)["output"] == {"version": "1.5"}


# ------------------------------------------------------------------ replace_app, history_check

CHANGED = df.Blueprint()


@CHANGED.function_name("sequence")
@CHANGED.orchestration_trigger(context_name="context")
def sequence_renamed_activity(context):
    results = []
    for city in context.get_input():
        results.append((yield context.call_activity("explode", city)))
    return results


INPUT_CHANGED = df.Blueprint()


@INPUT_CHANGED.function_name("sequence")
@INPUT_CHANGED.orchestration_trigger(context_name="context")
def sequence_other_input(context):
    results = []
    for city in context.get_input():
        results.append((yield context.call_activity("hello", city.upper())))
    return results


def app_with(blueprint):
    app = df.DFApp()
    app.register_functions(blueprint)
    return app


def test_history_check_finds_what_the_extension_and_devhost_would(host, clock, tmp_path):
    iid = host.start_new("sequence", client_input=["Oslo", "Lima"])
    host.run_until_complete(iid)
    recording = tmp_path / "sequence.json"
    recording.write_text(json.dumps(host.executions(iid)))

    assert check_history(toy.make_app(), recording).ok

    renamed = check_history(app_with(CHANGED), recording)
    [problem] = renamed.divergences
    assert problem.source == "extension" and problem.sequence_id == 0
    assert problem.message.startswith(
        "Non-Deterministic workflow detected: A previous execution of this orchestration "
        "scheduled an activity task with sequence number 0 named 'hello', but the current "
        "orchestration replay instead scheduled an activity task named 'explode'")

    other_input = check_history(app_with(INPUT_CHANGED), json.loads(recording.read_text()))
    assert [d.source for d in other_input.divergences] == ["devhost", "devhost"]
    assert "the current code passes '\"OSLO\"'" in other_input.divergences[0].message


def test_history_check_sees_an_action_the_replay_no_longer_schedules(host, tmp_path):
    iid = host.start_new("shared_cancel_waiter")
    host.run_until_idle()
    recorded = host.executions(iid)
    other = df.Blueprint()

    @other.function_name("shared_cancel_waiter")
    @other.orchestration_trigger(context_name="context")
    def waits_for_event_only(context):
        yield context.wait_for_external_event("cancel")

    result = check_history(app_with(other), recorded)
    assert [d.source for d in result.divergences] == ["extension"]
    assert "scheduled a timer task with sequence number 0 but the current replay execution " \
           "hasn't (yet?) scheduled this task" in result.divergences[0].message


def test_replace_app_runs_new_code_from_the_next_episode(host, clock):
    iid = host.start_new("late_waiter")
    host.run_until_idle()  # "hello" ran; the instance waits for "go"
    changed = df.Blueprint()

    @changed.function_name("late_waiter")
    @changed.orchestration_trigger(context_name="context")
    def late_waiter_v2(context):
        first = yield context.call_activity("hello", "first")
        data = yield context.wait_for_external_event("go")
        return {"first": first, "go": data, "code": "v2"}

    host.replace_app(app_with(changed))
    host.raise_event(iid, "go", 1)
    assert host.run_until_complete(iid)["output"] == {"first": "Hello first!", "go": 1,
                                                      "code": "v2"}
