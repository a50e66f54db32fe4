"""Deployment settings of the workflow itself (the Databricks ones live in databricks_jobs.settings).
Read by entry points, never by the orchestrator: they are resolved into its input."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

# (name, default, meaning) — the README settings table is checked against this list.
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("WORKFLOW_DEFAULT_TIMEOUT_SECONDS", "86400",
     "Deadline of a workflow whose input has no timeoutSeconds; on expiry the run is cancelled and the result is TIMEDOUT."),
    ("WORKFLOW_POLL_INTERVAL_SECONDS", "300",
     "Longest wait between polls when the input has no pollIntervalSeconds. Polls come every 30 s for the "
     "first 15 minutes, then wait 10 % of the time the run has taken so far, up to this."),
    ("WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS", "86400",
     "Longest wait between safety-net polls while the run watcher or webhook notifications will say when a run "
     "ends. The first comes after about an hour, the next at four times the run's age (5 h, 25 h), each spread "
     "over a quarter of its wait, up to this."),
    ("WORKFLOW_POLLS_PER_EXECUTION", "20",
     "Polls per orchestration execution before continue_as_new truncates the history."),
    ("WORKFLOW_MAX_BODY_BYTES", "65536", "Largest request body accepted by the HTTP API."),
    ("WORKFLOW_DELETE_JOB_ON_COMPLETION", "false",
     "Delete each job the workflow created once its run has ended and its output is fetched, unless the input's "
     "deleteJobOnCompletion says otherwise. Keeps a workspace under its saved-jobs limit (10,000), at the cost of "
     "the run page and run history."),
    ("WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS", "15",
     "Tick of the workspace run watcher: it lists the workspace's active runs at most this often (less often when "
     "few runs are awaited) and tells each workflow whose run has left the list. One of 5, 6, 10, 12, 15, 20, 30, "
     "60; 0 turns the watcher off (each workflow then polls for itself). Read when the worker indexes functions "
     "(restart to change)."),
    ("WORKFLOW_HISTORY_RETENTION_DAYS", "30",
     "Days the Durable task hub keeps the history of finished workflows (Completed, Failed, Terminated). A timer "
     "purges older ones on `WORKFLOW_PURGE_SCHEDULE`; running workflows are never purged. 0 turns the purge off."),
    ("WORKFLOW_PURGE_SCHEDULE", "0 0 3 * * *",
     "When the history purge runs: a six-field NCRONTAB expression (second minute hour day month weekday), in UTC "
     "(Flex Consumption does not support WEBSITE_TIME_ZONE). Read when the worker indexes functions (restart to "
     "change)."),
)


# Valid ranges of the integer settings: checked here, shown in the README table.
RANGES: dict[str, tuple[int, int]] = {
    "WORKFLOW_DEFAULT_TIMEOUT_SECONDS": (60, 2592000),
    "WORKFLOW_POLL_INTERVAL_SECONDS": (5, 3600),
    "WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS": (5, 86400),
    "WORKFLOW_POLLS_PER_EXECUTION": (2, 10000),
    "WORKFLOW_MAX_BODY_BYTES": (1024, 10485760),
    "WORKFLOW_HISTORY_RETENTION_DAYS": (0, 3650),
}


def _with_range(name: str, meaning: str) -> str:
    if name in RANGES:
        low, high = RANGES[name]
        return f"{meaning} Integer, {low}..{high}."
    return meaning


SETTINGS = tuple((name, default, _with_range(name, meaning)) for name, default, meaning in SETTINGS)


class WorkflowSettingError(ValueError):
    """A WORKFLOW_* setting is invalid; the message names it and what it accepts."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        super().__init__(f"Configuration error: {setting}: {problem}")


DEFAULTS = {name: default for name, default, _ in SETTINGS}
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def raw_setting(env: Mapping[str, str], name: str) -> str:
    """The setting's value, or its default when it is missing or blank."""
    return (env.get(name) or "").strip() or DEFAULTS[name]


def int_setting(env: Mapping[str, str], name: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An integer setting within its range (RANGES unless given)."""
    if low is None or high is None:
        low, high = RANGES[name]
    raw = raw_setting(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise WorkflowSettingError(name, f"must be an integer from {low} to {high} (got {json.dumps(raw)})") from None
    if not low <= value <= high:
        raise WorkflowSettingError(name, f"must be an integer from {low} to {high} (got {value})")
    return value


WATCHER_INTERVALS = (0, 5, 6, 10, 12, 15, 20, 30, 60)  # divisors of a minute: a regular NCRONTAB tick


def watcher_interval(env: Mapping[str, str]) -> int:
    name = "WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS"
    raw = raw_setting(env, name)
    if not raw.isdigit() or int(raw) not in WATCHER_INTERVALS:
        raise WorkflowSettingError(name, f"must be one of {', '.join(map(str, WATCHER_INTERVALS))} (got {json.dumps(raw)})")
    return int(raw)


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = raw_setting(env, name).lower()
    if raw not in _TRUE | _FALSE:
        raise WorkflowSettingError(name, f"must be true or false (got {json.dumps(raw)})")
    return raw in _TRUE


@dataclass(frozen=True)
class WorkflowSettings:
    default_timeout_seconds: int = int(DEFAULTS["WORKFLOW_DEFAULT_TIMEOUT_SECONDS"])
    poll_interval_seconds: int = int(DEFAULTS["WORKFLOW_POLL_INTERVAL_SECONDS"])
    webhook_poll_interval_seconds: int = int(DEFAULTS["WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS"])
    polls_per_execution: int = int(DEFAULTS["WORKFLOW_POLLS_PER_EXECUTION"])
    max_body_bytes: int = int(DEFAULTS["WORKFLOW_MAX_BODY_BYTES"])
    run_watcher_interval_seconds: int = int(DEFAULTS["WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS"])
    delete_job_on_completion: bool = DEFAULTS["WORKFLOW_DELETE_JOB_ON_COMPLETION"] == "true"

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "WorkflowSettings":
        env = os.environ if env is None else env
        return cls(
            default_timeout_seconds=int_setting(env, "WORKFLOW_DEFAULT_TIMEOUT_SECONDS"),
            poll_interval_seconds=int_setting(env, "WORKFLOW_POLL_INTERVAL_SECONDS"),
            webhook_poll_interval_seconds=int_setting(env, "WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS"),
            polls_per_execution=int_setting(env, "WORKFLOW_POLLS_PER_EXECUTION"),
            max_body_bytes=int_setting(env, "WORKFLOW_MAX_BODY_BYTES"),
            run_watcher_interval_seconds=watcher_interval(env),
            delete_job_on_completion=_bool(env, "WORKFLOW_DELETE_JOB_ON_COMPLETION"),
        )
