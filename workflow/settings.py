"""Deployment settings of the workflow itself (the Databricks ones live in databricks_jobs.settings).
Read by entry points, never by the orchestrator: they are resolved into its input."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

# (name, default, meaning) — the README settings table is checked against this list.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("WORKFLOW_DEFAULT_TIMEOUT_SECONDS", "86400",
     "Deadline of a workflow whose input has no timeoutSeconds; on expiry the run is cancelled and the result is TIMEDOUT."),
    ("WORKFLOW_POLL_INTERVAL_SECONDS", "300",
     "Longest wait between polls when the input has no pollIntervalSeconds. Polls start at 5 s, reach 30 s, then "
     "wait 10 % of the time the run has taken so far, up to this."),
    ("WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS", "900",
     "Longest wait between safety-net polls when Databricks webhook notifications are on."),
    ("WORKFLOW_POLLS_PER_EXECUTION", "20",
     "Polls per orchestration execution before continue_as_new truncates the history."),
    ("WORKFLOW_MAX_BODY_BYTES", "65536", "Largest request body accepted by the HTTP API."),
)


class WorkflowSettingError(ValueError):
    pass


def _int(env: Mapping[str, str], name: str, default: str, low: int, high: int) -> int:
    raw = env.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        raise WorkflowSettingError(f"setting {name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise WorkflowSettingError(f"setting {name}={value} is outside {low}..{high}")
    return value


@dataclass(frozen=True)
class WorkflowSettings:
    default_timeout_seconds: int = 86400
    poll_interval_seconds: int = 300
    webhook_poll_interval_seconds: int = 900
    polls_per_execution: int = 20
    max_body_bytes: int = 65536

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "WorkflowSettings":
        env = os.environ if env is None else env
        defaults = {name: default for name, default, _ in SETTINGS}
        return cls(
            default_timeout_seconds=_int(env, "WORKFLOW_DEFAULT_TIMEOUT_SECONDS", defaults["WORKFLOW_DEFAULT_TIMEOUT_SECONDS"], 60, 2592000),
            poll_interval_seconds=_int(env, "WORKFLOW_POLL_INTERVAL_SECONDS", defaults["WORKFLOW_POLL_INTERVAL_SECONDS"], 5, 3600),
            webhook_poll_interval_seconds=_int(env, "WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS", defaults["WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS"], 5, 86400),
            polls_per_execution=_int(env, "WORKFLOW_POLLS_PER_EXECUTION", defaults["WORKFLOW_POLLS_PER_EXECUTION"], 2, 10000),
            max_body_bytes=_int(env, "WORKFLOW_MAX_BODY_BYTES", defaults["WORKFLOW_MAX_BODY_BYTES"], 1024, 10485760),
        )
