"""Housekeeping: a daily timer purges the Durable history of finished workflows.

The task hub keeps every instance's history (Azure Storage tables and blobs) until someone deletes
it; left alone it grows forever and makes status queries slower and storage dearer. Once a day this
function asks the Durable extension to purge the instances that ended (Completed, Failed or
Terminated) and were created more than `WORKFLOW_HISTORY_RETENTION_DAYS` ago. Running, pending and
continued-as-new instances are never named, so they are never purged: with no status filter the
extension would purge instances of every status, running ones included.

The schedule is read when the worker indexes the functions, like the queue name in
triggers/queue_trigger.py: a `%WORKFLOW_PURGE_SCHEDULE%` binding expression would fail indexing
whenever the setting is missing. The retention is read at each run, so changing it needs no restart
(app setting changes restart the worker anyway).

A purge deletes instance by instance, so a run that is cut short (the client's 240 s HTTP timeout on
a large first backlog) keeps what it deleted and the next run carries on.
"""
from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping, Optional

import azure.durable_functions as df
import azure.functions as func

from telemetry.tracing import traced_trigger
from workflow.settings import int_setting, raw_setting

log = logging.getLogger(__name__)

bp = df.Blueprint()

RETENTION_SETTING = "WORKFLOW_HISTORY_RETENTION_DAYS"
SCHEDULE_SETTING = "WORKFLOW_PURGE_SCHEDULE"
MAX_RETENTION_DAYS = 3650
# Only finished instances; never Pending, Running or ContinuedAsNew.
PURGED_STATUSES = (df.OrchestrationRuntimeStatus.Completed, df.OrchestrationRuntimeStatus.Failed,
                   df.OrchestrationRuntimeStatus.Terminated)
# Older than any instance of this app. Not datetime.min: older extension versions answer 400 to
# DateTime.MinValue as if createdTimeFrom were missing.
CREATED_FROM = datetime(2000, 1, 1, tzinfo=timezone.utc)

# The seam through which the function reads the time; tests point it at a virtual clock.
utcnow: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731

_NCRONTAB = re.compile(r"^\S+(\s+\S+){5}$")
_TIMESPAN = re.compile(r"^(\d+\.)?\d{1,2}:\d{2}(:\d{2})?$")


def purge_schedule(env: Optional[Mapping[str, str]] = None) -> str:
    """The timer's schedule: the setting, or the default when it is missing or empty."""
    env = os.environ if env is None else env
    schedule = raw_setting(env, SCHEDULE_SETTING)
    if not (_NCRONTAB.match(schedule) or _TIMESPAN.match(schedule)):
        # Raising here would stop the worker indexing every function; the host itself rejects
        # the expression for this function only, and this names the setting to fix.
        log.error("%s=%r is not a six-field NCRONTAB expression (second minute hour day month "
                  "weekday) nor a TimeSpan; the host will not run the history purge", SCHEDULE_SETTING,
                  schedule)
    return schedule


def retention_days(env: Optional[Mapping[str, str]] = None) -> int:
    """Days of history to keep; 0 turns the purge off. WorkflowSettingError names the setting."""
    return int_setting(os.environ if env is None else env, RETENTION_SETTING, 0, MAX_RETENTION_DAYS)


async def purge_finished_history(client: df.DurableOrchestrationClient, now: datetime, days: int) -> int:
    """Purge finished instances created at or before `now - days`; returns how many were deleted."""
    if days == 0:
        log.info("history purge is off (%s=0); nothing purged", RETENTION_SETTING)
        return 0
    # The client formats the datetime's own fields with a "Z" suffix: it must be in UTC.
    cutoff = now.astimezone(timezone.utc) - timedelta(days=days)
    result = await client.purge_instance_history_by(
        created_time_from=CREATED_FROM, created_time_to=cutoff, runtime_status=list(PURGED_STATUSES))
    deleted = result.instances_deleted
    log.info("history purge: deleted %d finished workflow instance(s) (%s) created up to %s "
             "(retention %d days)", deleted, ", ".join(s.value for s in PURGED_STATUSES),
             cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"), days)
    return deleted


SCHEDULE = purge_schedule()


@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False)
@bp.durable_client_input(client_name="client")
@traced_trigger("timer purge_workflow_history")
async def purge_workflow_history(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    if timer.past_due:
        log.info("history purge is running late (past due)")
    await purge_finished_history(client, utcnow(), retention_days())
