"""Cold start: what importing the function app costs over the Functions libraries it cannot avoid.

A cold Functions worker imports `function_app` before it can run anything. The baseline, measured
in the same run, is importing `azure.functions` and `azure.durable_functions` alone: every
Durable Functions Python app pays that. Each sample is a fresh interpreter (`python -c`) that times
only the import (interpreter start-up is left out); the two sides alternate so drift on the machine
hits both alike, and the medians are compared. Target: ratio <= 1.3.

`python -X importtime` then shows what the app adds: the modules the baseline does not import,
summed by top-level package (and the app's own modules by name), largest first. Those are the
candidates for a lazy import."""
from __future__ import annotations

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


def _timed_import(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


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
    for statement in (APP_IMPORT, BASELINE_IMPORT):  # compile byte code and warm the file cache
        _timed_import(statement)
    app: List[float] = []
    baseline: List[float] = []
    for index in range(repetitions):
        pair = [(app, APP_IMPORT), (baseline, BASELINE_IMPORT)]
        for samples, statement in pair if index % 2 == 0 else reversed(pair):
            samples.append(_timed_import(statement))
    return {"app_ms": statistics.median(app) * 1000, "baseline_ms": statistics.median(baseline) * 1000,
            "ratio": statistics.median(app) / statistics.median(baseline), "repetitions": repetitions}


def run() -> bool:
    figures = measure()
    print(f"import function_app:                 median {figures['app_ms']:.0f} ms over {figures['repetitions']} fresh "
          f"interpreters")
    print(f"import azure.functions + durable:    median {figures['baseline_ms']:.0f} ms (baseline)")
    met = figures["ratio"] <= TARGET_RATIO
    print(f"ratio: {figures['ratio']:.2f} (target <= {TARGET_RATIO}) {'PASS' if met else 'MISS'}")
    print("what the app adds (python -X importtime, self time of modules the baseline does not import):")
    added = added_modules()
    for name, ms, count in added:
        print(f"  {ms:7.1f} ms  {name} ({count} module{'s' if count != 1 else ''})")
    if WRITE_DOCS:
        from bench import report
        rows = "\n".join(f"| {name} | {ms:.1f} | {count} |" for name, ms, count in added)
        report.write_section("cold_start", (
            "## Cold start (`bench/cold_start.py`, issue #10)\n\n"
            f"`{APP_IMPORT}` against `{BASELINE_IMPORT}` (the baseline every Durable Functions Python app pays), "
            f"each in {figures['repetitions']} fresh interpreters, alternating, import time only, medians: "
            f"**{figures['app_ms']:.0f} ms vs {figures['baseline_ms']:.0f} ms, ratio {figures['ratio']:.2f}** "
            f"(target <= {TARGET_RATIO}: {'PASS' if met else 'MISS'}).\n\n"
            "What the app adds (`python -X importtime`: self time of the modules the baseline does not import; "
            "libraries summed per top-level package, the app's modules by name; one run, so +-1 ms):\n\n"
            "| package or module | ms | modules |\n|---|---|---|\n" + rows), DOCS_DIR)
    print("target met" if met else "TARGET MISSED")
    return met


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
