"""Cold start: what importing the function app costs over the Functions libraries it cannot avoid.

A cold Functions worker imports `function_app` before it can run anything. The baseline, measured
in the same run, is importing `azure.functions` and `azure.durable_functions` alone: every
Durable Functions Python app pays that. Each sample is a fresh interpreter (`python -c`) that times
only the import (interpreter start-up is left out); the two sides alternate so drift on the machine
hits both alike, and the medians are compared. Target: ratio <= 1.3.

`python -X importtime` then shows what the app adds: the modules the baseline does not import,
summed by top-level package (and the app's own modules by name), largest first. Those are the
candidates for a lazy import.

Two configurations of the app, each against the same baseline samples (issue 18): telemetry off,
and telemetry on (APPLICATIONINSIGHTS_CONNECTION_STRING set, as `azd up` sets it, to a loopback
endpoint with the exporter's own network features off). With it on, the Azure Monitor exporter is
imported and set up on a background thread (telemetry/setup.py), off the import that indexes the
functions; the time until it is ready is reported beside, for information."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
REPETITIONS = 25
TARGET_RATIO = 1.3
TOP = 12
APP_IMPORT = "import function_app"
BASELINE_IMPORT = "import azure.functions, azure.durable_functions"
# The app's own packages, shown module by module; libraries are summed per top-level package.
WRITE_DOCS = True
DOCS_DIR = None  # None: the repository's docs/
APP_PACKAGES = ("function_app", "activities", "orchestrators", "triggers", "entities", "workflow",
                "databricks_jobs", "messaging")


# Telemetry on, as deployed, but sending nowhere: a loopback ingestion endpoint nothing listens on,
# and the exporter's statsbeat / control plane / SDK stats (which would call out on their own) off.
TELEMETRY_ON = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                              "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/"),
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
}
READY_PROBE = ("import time; t = time.perf_counter(); import function_app, telemetry.setup; "
               "telemetry.setup.wait_until_ready(60); print(time.perf_counter() - t, telemetry.setup.configured_mode())")


def _env(telemetry_on: bool) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_", "PYTHON_APPLICATIONINSIGHTS_"))}
    if telemetry_on:
        env.update(TELEMETRY_ON)
    return env


def _timed_import(statement: str, telemetry_on: bool = False) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=_env(telemetry_on))
    return float(out.stdout.strip().splitlines()[-1])


def exporter_ready_seconds() -> float:
    """Telemetry on: from the start of the import until the exporter is set up (background)."""
    out = subprocess.run([sys.executable, "-c", READY_PROBE], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=_env(True))
    seconds, mode = out.stdout.strip().splitlines()[-1].split()
    if mode != "azure_monitor":
        raise RuntimeError(f"telemetry was not set up (mode {mode})")
    return float(seconds)


def _import_times(statement: str) -> Dict[str, Tuple[int, int]]:
    """module -> (self us, cumulative us) from `python -X importtime`."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    times: Dict[str, Tuple[int, int]] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:"):].split("|", 2))
        times[name] = (int(self_us), int(cumulative_us))
    return times


def added_modules(top: int = None) -> List[Tuple[str, float, int]]:
    """(package or app module, ms of self time, modules) the app imports beyond the baseline,
    largest first; the last entry sums all of them as "(all)"."""
    top = TOP if top is None else top
    baseline = set(_import_times(BASELINE_IMPORT))
    groups: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
    for name, (self_us, _) in _import_times(APP_IMPORT).items():
        if name in baseline:
            continue
        root = name.split(".")[0]
        key = name if root in APP_PACKAGES else root
        groups[key][0] += self_us
        groups[key][1] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    total = ("(all)", sum(us for us, _ in groups.values()) / 1000.0, sum(n for _, n in groups.values()))
    return [(name, us / 1000.0, count) for name, (us, count) in ranked[:top]] + [total]


def measure(repetitions: int = None) -> Dict[str, float]:
    repetitions = REPETITIONS if repetitions is None else repetitions
    sides = [("app", APP_IMPORT, False), ("app_telemetry", APP_IMPORT, True), ("baseline", BASELINE_IMPORT, False)]
    for _, statement, on in sides:  # compile byte code and warm the file cache
        _timed_import(statement, on)
    samples: Dict[str, List[float]] = {name: [] for name, _, _ in sides}
    for index in range(repetitions):
        order = sides[index % 3:] + sides[:index % 3]  # rotate, so drift on the machine hits all alike
        for name, statement, on in order:
            samples[name].append(_timed_import(statement, on))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {"app_ms": medians["app"] * 1000, "app_telemetry_ms": medians["app_telemetry"] * 1000,
            "baseline_ms": medians["baseline"] * 1000, "ratio": medians["app"] / medians["baseline"],
            "ratio_telemetry": medians["app_telemetry"] / medians["baseline"], "repetitions": repetitions}


def run() -> bool:
    figures = measure()
    ready_ms = exporter_ready_seconds() * 1000
    print(f"import function_app, telemetry off:  median {figures['app_ms']:.0f} ms over {figures['repetitions']} fresh "
          f"interpreters")
    print(f"import function_app, telemetry on:   median {figures['app_telemetry_ms']:.0f} ms "
          f"(exporter ready in the background after {ready_ms:.0f} ms)")
    print(f"import azure.functions + durable:    median {figures['baseline_ms']:.0f} ms (baseline)")
    met_off = figures["ratio"] <= TARGET_RATIO
    met_on = figures["ratio_telemetry"] <= TARGET_RATIO
    met = met_off and met_on
    print(f"ratio, telemetry off: {figures['ratio']:.2f} (target <= {TARGET_RATIO}) {'PASS' if met_off else 'MISS'}")
    print(f"ratio, telemetry on:  {figures['ratio_telemetry']:.2f} (target <= {TARGET_RATIO}) "
          f"{'PASS' if met_on else 'MISS'}")
    print("what the app adds (python -X importtime, self time of modules the baseline does not import):")
    added = added_modules()
    for name, ms, count in added:
        print(f"  {ms:7.1f} ms  {name} ({count} module{'s' if count != 1 else ''})")
    if WRITE_DOCS:
        from bench import report
        rows = "\n".join(f"| {name} | {ms:.1f} | {count} |" for name, ms, count in added)
        report.write_section("cold_start", (
            "## Cold start (`bench/cold_start.py`, issues #10 and #18)\n\n"
            f"`{APP_IMPORT}` against `{BASELINE_IMPORT}` (the baseline every Durable Functions Python app pays), "
            f"each in {figures['repetitions']} fresh interpreters, rotating, import time only, medians:\n\n"
            "| configuration | import function_app | baseline | ratio | target <= 1.3 |\n|---|---|---|---|---|\n"
            f"| telemetry off | {figures['app_ms']:.0f} ms | {figures['baseline_ms']:.0f} ms | "
            f"**{figures['ratio']:.2f}** | {'PASS' if met_off else 'MISS'} |\n"
            f"| telemetry on (`APPLICATIONINSIGHTS_CONNECTION_STRING` set) | {figures['app_telemetry_ms']:.0f} ms | "
            f"{figures['baseline_ms']:.0f} ms | **{figures['ratio_telemetry']:.2f}** | {'PASS' if met_on else 'MISS'} |\n\n"
            f"With telemetry on, the Azure Monitor exporter is imported and set up on a background thread: it was "
            f"ready {ready_ms:.0f} ms after the import began, and spans and metrics recorded before that are kept "
            "and handed to it (docs/operations.md).\n\n"
            "What the app adds with telemetry off (`python -X importtime`: self time of the modules the baseline does "
            "not import; libraries summed per top-level package, the app's modules by name; one run, so +-1 ms):\n\n"
            "| package or module | ms | modules |\n|---|---|---|\n" + rows), DOCS_DIR)
    print("target met" if met else "TARGET MISSED")
    return met


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
