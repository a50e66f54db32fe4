"""Spans and metrics recorded while the Azure Monitor exporter is still being set up (on its
background thread) are kept and reach it once it is ready: none lost, none twice, parents kept.
The distro is replaced by a set-up that waits for the test and then installs the in-memory providers
(what configure_azure_monitor does with its own exporters)."""
from __future__ import annotations

import threading

import pytest

from telemetry import deferred as deferred_module
from telemetry import metrics, setup, tracing
from telemetry_support import installed


@pytest.fixture
def fresh_setup(monkeypatch):
    """telemetry.setup as a process that has not configured anything yet."""
    monkeypatch.setattr(setup, "_mode", None)
    monkeypatch.setattr(setup, "_deferred", None)
    monkeypatch.setattr(setup, "_ready", threading.Event())
    yield setup


def _blocking_set_up(release: threading.Event, recorded_holder: dict):
    def set_up(env):
        assert release.wait(10)
        recorded_holder["cm"] = installed()
        recorded_holder["recorded"] = recorded_holder["cm"].__enter__()
    return set_up


def test_telemetry_recorded_before_the_exporter_is_ready_reaches_it(fresh_setup):
    release, holder = threading.Event(), {}
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}
    try:
        assert setup.configure(env, set_up=_blocking_set_up(release, holder)) == setup.AZURE_MONITOR
        assert setup.pending() is not None and not setup.wait_until_ready(0)  # returned without waiting

        with tracing.span("activity createJob", {"workflow.activity": "createJob"}) as parent:
            with tracing.span("GET /api/2.2/jobs/list"):
                pass
            metrics.workflow_started("http")
            metrics.record("databricks.api.calls", 1, {"endpoint": "jobs/list", "method": "GET", "status_code": 200})
        open_span = tracing.tracer().start_span("ends after the hand-over")  # started early, ended late
        assert parent is not None  # a real (SDK) span, not the no-op

        release.set()
        assert setup.wait_until_ready(10)
        assert setup.pending() is None and setup.configured_mode() == setup.AZURE_MONITOR
        open_span.end()
        with tracing.span("after"):
            metrics.workflow_started("http")

        recorded = holder["recorded"]
        names = [s.name for s in recorded.spans()]
        assert sorted(names) == sorted(["GET /api/2.2/jobs/list", "activity createJob", "ends after the hand-over",
                                        "after"])  # each once: none lost, none twice
        child = recorded.spans("GET /api/2.2/jobs/list")[0]
        assert child.parent.span_id == recorded.spans("activity createJob")[0].context.span_id
        assert recorded.total("workflow.started", caller="http") == 2
        assert recorded.total("databricks.api.calls", endpoint="jobs/list") == 1
    finally:
        release.set()
        setup.wait_until_ready(10)
        if "cm" in holder:
            holder["cm"].__exit__(None, None, None)


def test_a_failed_set_up_drops_what_was_kept_and_turns_telemetry_off(fresh_setup):
    def failing(env):
        raise RuntimeError("InstrumentationKey=secret-looking text")

    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}
    setup.configure(env, set_up=failing)
    assert setup.wait_until_ready(10)
    assert setup.configured_mode() == setup.OFF and setup.pending() is None
    with tracing.span("afterwards") as current:  # the API's no-op again; nothing raises
        metrics.workflow_started("http")
    assert current is None or not current.is_recording()


def test_the_buffers_are_bounded():
    kept = deferred_module.Deferred(max_spans=2, max_measurements=3)
    for _ in range(5):
        assert kept.measurement("workflow.started", 1, {"caller": "http"})
    assert kept.dropped_measurements == 2
    for _ in range(4):
        kept.span_ended(object())
    assert kept.dropped_spans == 2

    class Sink:
        def __init__(self):
            self.ended = []

        def on_end(self, span):
            self.ended.append(span)

    sink, replayed = Sink(), []
    kept.hand_over(sink, lambda *measurement: replayed.append(measurement))
    assert len(sink.ended) == 2 and len(replayed) == 3
    assert not kept.measurement("workflow.started", 1, {})  # after the hand-over: recorded directly
