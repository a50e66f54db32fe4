"""How other tools wait for a Databricks run, modelled call by call (a helper of bench/waiting.py).

Both models start the run at t = 0 (run-now) and return the notebook's output as this app does
(one runs/get-output after the run ends); a run that ends at `end` seconds is seen by the first
runs/get at or after `end`. Request latency is left out, as it is in the virtual-time simulation
of the app, so the lags compare like with like.

- Airflow's DatabricksRunNowOperator (apache-airflow-providers-databricks, operators/databricks.py
  `_handle_databricks_operator_execution`; reference notes §3.1): run-now, one runs/get for the
  run page URL (`get_run_page_url`), then runs/get at once and every `polling_period_seconds`
  (default 30) until the run is terminal.
- databricks-sdk-py's waiter (`JobsAPI.wait_get_run_job_terminated_or_skipped`, reference notes
  §4.1): runs/get at once, then sleeps min(attempt, 10) s plus random() (0-1 s) of jitter,
  attempt = 1, 2, ...: 1 s growing to 10 s. Its default timeout is 20 minutes: waiting longer needs
  `timeout=` (the model assumes the caller passed one).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence

AIRFLOW_POLL_SECONDS = 30.0
SDK_MAX_SLEEP_SECONDS = 10
SDK_DEFAULT_TIMEOUT_SECONDS = 20 * 60


@dataclass(frozen=True)
class Waited:
    """One run waited for: when the waiter saw it end and every Jobs API call it made (time, endpoint)."""

    end: float
    seen: float
    calls: tuple

    @property
    def lag(self) -> float:
        return self.seen - self.end


def airflow_run_now(end: float, poll_seconds: float = AIRFLOW_POLL_SECONDS) -> Waited:
    calls = [(0.0, "POST run-now"), (0.0, "GET runs/get")]  # the second: get_run_page_url
    polls = max(0, math.ceil(end / poll_seconds)) + 1  # at 0, poll, 2 poll, ... up to the first >= end
    calls += [(k * poll_seconds, "GET runs/get") for k in range(polls)]
    seen = (polls - 1) * poll_seconds
    calls.append((seen, "GET runs/get-output"))
    return Waited(end, seen, tuple(calls))


def sdk_waiter(end: float, seed: int) -> Waited:
    rng = random.Random(seed)
    calls = [(0.0, "POST run-now")]
    t, attempt = 0.0, 1
    while True:
        calls.append((t, "GET runs/get"))
        if t >= end:
            break
        t += min(attempt, SDK_MAX_SLEEP_SECONDS) + rng.random()
        attempt += 1
    calls.append((t, "GET runs/get-output"))
    return Waited(end, t, tuple(calls))


def wait_all(system: str, ends: Sequence[float], seed: int = 0) -> List[Waited]:
    """Every run of `ends` waited for by `system` ("airflow" or "sdk"), all started at t = 0."""
    if system == "airflow":
        return [airflow_run_now(e) for e in ends]
    if system == "sdk":
        return [sdk_waiter(e, seed * 1_000_003 + i) for i, e in enumerate(ends)]
    raise ValueError(f"unknown system {system!r}")


def summary(waited: Sequence[Waited]) -> Dict[str, float]:
    """Calls per run, mean and max lag, and the most calls in one second (all runs started together)."""
    per_second: Dict[int, int] = {}
    for w in waited:
        for at, _ in w.calls:
            per_second[int(at)] = per_second.get(int(at), 0) + 1
    lags = [w.lag for w in waited]
    return {
        "runs": len(waited),
        "calls_per_run": sum(len(w.calls) for w in waited) / len(waited),
        "mean_lag": sum(lags) / len(lags),
        "max_lag": max(lags),
        "peak_per_second": max(per_second.values()),
        "peak_after_start": max((n for s, n in per_second.items() if s >= 1), default=0),
    }
