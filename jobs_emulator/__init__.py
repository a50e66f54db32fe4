"""Development tool: an emulator of the Azure Databricks Jobs API (2.1 and 2.2) on loopback.

Not part of the deployed function app. It stands in for a workspace in tests, the local demo and
the benchmark, and reproduces the behaviour the app depends on: integer ids, bearer auth, the
run life cycle on a controllable clock, multi-task DAGs (run_if, retries, job-level results),
one-time runs, repairs, job reset/update, runs/list, queueing and concurrency limits,
``idempotency_token`` dedupe, 2.2 pagination, workspace limits, the real 400 errors, fault
injection, per-endpoint call counts and job webhook notifications.

    from jobs_emulator import JobsEmulator
    with JobsEmulator(clock=vclock.now) as emu:
        client = make_client(emu.base_url)
        ...

Command line: ``python -m jobs_emulator --port 8000`` (first stdout line is the base URL).
"""

from .faults import FAULT_KINDS, Faults
from .model import MULTI_TASK_OUTPUT_MESSAGE, ApiError
from .scenario import Behavior, Scenario, builtin_behavior, task_source_path
from .server import JobsEmulator
from .webhooks import Destination

__all__ = [
    "JobsEmulator", "Scenario", "Behavior", "Faults", "FAULT_KINDS", "Destination", "ApiError",
    "MULTI_TASK_OUTPUT_MESSAGE", "builtin_behavior", "task_source_path",
]
