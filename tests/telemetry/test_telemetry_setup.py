"""configure(): without APPLICATIONINSIGHTS_CONNECTION_STRING importing the app loads no exporter, no
OpenTelemetry SDK and no metrics API; with it, the distro is set up the app's way. Each case imports
function_app in a fresh interpreter (global providers and sys.modules are per process). The
configured process runs with the distro's own network features off and a socket guard that
refuses (and reports) any connection that is not loopback; it exits before any export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from telemetry import setup

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, os, socket, sys
    attempts = []
    real_connect = socket.socket.connect
    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            attempts.append(host)
            raise OSError("telemetry test: no network beyond loopback")
        return real_connect(self, address)
    socket.socket.connect = guarded

    import threading
    distro_importers = []  # the threads that imported azure.monitor.opentelemetry
    class Census:
        def find_spec(self, name, path=None, target=None):
            if name == "azure.monitor.opentelemetry":
                distro_importers.append(threading.current_thread().name)
            return None
    sys.meta_path.insert(0, Census())

    import function_app
    import telemetry.setup
    loaded_at_import = "azure.monitor.opentelemetry" in sys.modules and threading.current_thread().name in distro_importers
    ready = telemetry.setup.wait_until_ready(60)
    loaded = sorted(m for m in sys.modules if any(m.startswith(p) for p in (
        "azure.monitor", "opentelemetry.sdk", "opentelemetry.metrics", "opentelemetry.instrumentation")))
    from opentelemetry import metrics, trace  # after the census: the probe's own imports
    report = {
        "mode": telemetry.setup.configured_mode(),
        "modules": loaded,
        "tracer_provider": type(trace.get_tracer_provider()).__module__,
        "meter_provider": type(metrics.get_meter_provider()).__module__,
        "attempts": attempts,
        "ready": ready,
        "distro_importers": distro_importers,
        "loaded_on_import_path": loaded_at_import,
    }
    try:
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        report["requests_instrumented"] = RequestsInstrumentor().is_instrumented_by_opentelemetry
    except ImportError:
        report["requests_instrumented"] = None
    print(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # no exit-time export
""")

# Everything the distro would reach out to on its own, off (exporter _constants).
QUIET = {
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
}
LOOPBACK_CONNECTION_STRING = ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                              "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/")


def probe(tmp_path, **env_changes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_", "PYTHON_APPLICATIONINSIGHTS_"))}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["TMPDIR"] = str(tmp_path)  # the exporter's offline-storage folder goes here, not in /tmp
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_a_connection_string_importing_the_app_loads_no_exporter_sdk_or_metrics_api(tmp_path):
    report = probe(tmp_path)
    assert report["mode"] == "off"
    assert report["modules"] == []  # no azure.monitor, no SDK, not even the metrics API
    assert report["tracer_provider"] == "opentelemetry.trace"  # the API's proxy: spans are no-ops
    assert report["attempts"] == []


def test_with_a_connection_string_the_app_sets_up_azure_monitor_without_generic_http_spans(tmp_path):
    report = probe(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=LOOPBACK_CONNECTION_STRING, **QUIET)
    assert report["ready"] and report["mode"] == "azure_monitor"
    assert "azure.monitor.opentelemetry" in report["modules"]
    # Imported on the set-up thread, never on the path that imports (indexes) the app.
    assert report["distro_importers"] == [setup.THREAD_NAME]
    assert report["loaded_on_import_path"] is False
    assert report["tracer_provider"].startswith("opentelemetry.sdk.trace")
    assert report["meter_provider"].startswith("opentelemetry.sdk.metrics")
    # Each Jobs API attempt has the app's own span; requests' generic span would duplicate it.
    assert report["requests_instrumented"] is not True
    assert report["attempts"] == []  # nothing beyond loopback (no VM metadata probe)


def test_when_the_worker_configured_azure_monitor_the_app_does_not_configure_it_again(tmp_path):
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": LOOPBACK_CONNECTION_STRING,
           "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
    assert setup.mode_for(env) == setup.WORKER
    report = probe(tmp_path, **env, **QUIET)
    assert report["mode"] == "worker"
    assert not any(m.startswith("azure.monitor") for m in report["modules"])


@pytest.mark.parametrize("env, mode", [
    ({}, "off"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}, "off"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, "azure_monitor"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
      "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "True"}, "worker"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
      "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "false"}, "azure_monitor"),
])
def test_the_mode_follows_the_settings(env, mode):
    assert setup.mode_for(env) == mode
