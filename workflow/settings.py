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
    ("WORKFLOW_DELETE_JOB_ON_COMPLETION", "false",
     "Delete each job the workflow created once its run has ended and its output is fetched, unless the input's "
     "deleteJobOnCompletion says otherwise. Keeps a workspace under its saved-jobs limit (10,000), at the cost of "
     "the run page and run history."),
    ("WORKFLOW_HISTORY_RETENTION_DAYS", "30",
     "Days the Durable task hub keeps the history of finished workflows (Completed, Failed, Terminated). A timer "
     "purges older ones on `WORKFLOW_PURGE_SCHEDULE`; running workflows are never purged. 0 turns the purge off."),
    ("WORKFLOW_PURGE_SCHEDULE", "0 0 3 * * *",
     "When the history purge runs: a six-field NCRONTAB expression (second minute hour day month weekday), in UTC "
     "unless the app sets a time zone. Read when the worker indexes functions (restart to change)."),
)


class WorkflowSettingError(ValueError):
    pass


DEFAULTS = {name: default for name, default, _ in SETTINGS}
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def raw_setting(env: Mapping[str, str], name: str) -> str:
    """The setting's value, or its default when it is missing or blank."""
    return (env.get(name) or "").strip() or DEFAULTS[name]


def int_setting(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = raw_setting(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise WorkflowSettingError(f"setting {name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise WorkflowSettingError(f"setting {name}={value} is outside {low}..{high}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = raw_setting(env, name).lower()
    if raw not in _TRUE | _FALSE:
        raise WorkflowSettingError(f"setting {name}={raw!r} is not true or false")
    return raw in _TRUE


@dataclass(frozen=True)
class WorkflowSettings:
    default_timeout_seconds: int = int(DEFAULTS["WORKFLOW_DEFAULT_TIMEOUT_SECONDS"])
    poll_interval_seconds: int = int(DEFAULTS["WORKFLOW_POLL_INTERVAL_SECONDS"])
    webhook_poll_interval_seconds: int = int(DEFAULTS["WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS"])
    polls_per_execution: int = int(DEFAULTS["WORKFLOW_POLLS_PER_EXECUTION"])
    max_body_bytes: int = int(DEFAULTS["WORKFLOW_MAX_BODY_BYTES"])
    delete_job_on_completion: bool = DEFAULTS["WORKFLOW_DELETE_JOB_ON_COMPLETION"] == "true"

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "WorkflowSettings":
        env = os.environ if env is None else env
        return cls(
            default_timeout_seconds=int_setting(env, "WORKFLOW_DEFAULT_TIMEOUT_SECONDS", 60, 2592000),
            poll_interval_seconds=int_setting(env, "WORKFLOW_POLL_INTERVAL_SECONDS", 5, 3600),
            webhook_poll_interval_seconds=int_setting(env, "WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS", 5, 86400),
            polls_per_execution=int_setting(env, "WORKFLOW_POLLS_PER_EXECUTION", 2, 10000),
            max_body_bytes=int_setting(env, "WORKFLOW_MAX_BODY_BYTES", 1024, 10485760),
            delete_job_on_completion=_bool(env, "WORKFLOW_DELETE_JOB_ON_COMPLETION"),
        )
