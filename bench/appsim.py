"""The real app waiting for many runs at once, in virtual time (a helper of bench/waiting.py).

The app's registered functions run on devhost's ReplayHost (the real azure-functions-durable replay
engine) against the Jobs API emulator on loopback, both on one VirtualClock. Every workflow is the
same definition (one saved job), so the runs differ only in how long they take: each run reads its
length from a notebook parameter (`bench_run_seconds`), the way a real notebook's work depends on
its input, and the emulator's scenario turns it into the run's phases.

Three ways of waiting (`MODES`):
- "watcher": the default app, the workspace run watcher on (a timer trigger every tick);
- "poll": the watcher off (`run_watcher_interval_seconds=0`): each workflow polls on its own;
- "webhook": the watcher off and Databricks job notifications on: the emulator POSTs them to the
  app's /api/databricks/notifications on devhost's DevServer.

What is measured, per run: the virtual time its workflow completed, so the detection lag (run end
on Databricks -> workflow completed); per simulation: the Jobs API calls by endpoint (the
emulator's own count), the most calls in any one virtual second, the most history events in any
one orchestration execution, and the wall time it took.

The clock moves only to the next thing due: a durable timer, a watcher tick, the arrival of an
entity signal (devhost's realistic mode is on), or the end of a run (so a notification goes out the
moment its run ends, as a real one does within moments).

Each simulation must run in a process of its own (`simulate` sets environment variables the app
reads when it is imported, e.g. the watcher tick); bench/waiting.py runs them in fresh processes.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence

MODES = ("watcher", "poll", "webhook")
# What the workflows of a simulation are (issue 14): one shared definition (the default); every
# tenth a one-time run; each its own definition (a saved job each); one definition with each
# request's own timeoutSeconds; and any of those in a workspace where other teams keep
# BUSY_RUNS runs of their own jobs active throughout ("busy" with one definition, "busyOwn" with
# a definition each).
MIXES = ("shared", "oneTime", "ownDefinition", "ownDeadline", "busy", "busyOwn")
BUSY_RUNS = 500
OTHER_TEAM_SECONDS = 10 ** 8  # the other teams' runs outlast any simulation
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ORIGIN = T0.timestamp()
RUN_SECONDS_PARAM = "bench_run_seconds"
RETRY_SECONDS_PARAM = "bench_retry_seconds"
PENDING_SECONDS = 5.0  # every run waits this long for its cluster before it runs
TOKEN = "dapi-bench-not-a-secret"
WEBHOOK_USER, WEBHOOK_PASSWORD, DESTINATION_ID = "bench-webhook", "bench-webhook-password", "bench-destination"
# devhost's realistic mode (devhost.realism): registry signals arrive after the extension's
# control-queue latency, so the figures are not optimistic about the watcher's view.
REALISM_SEED = 1
# The longest control-queue polling wait the realistic mode models: the extension's default 30 s
# unless the bench is asked for another (host.json's maxQueuePollingInterval, issue 19: 10 s), so the
# effect of that setting on lag can be measured: BENCH_QUEUE_POLLING_SECONDS=10 python -m bench.waiting ...
QUEUE_POLLING_SECONDS = float(os.environ.get("BENCH_QUEUE_POLLING_SECONDS", "30"))
REQUEST = {"jobName": "bench-waiting", "taskKey": "main", "notebookPath": "/Workspace/bench/waiting",
           "existingClusterId": "0101-000000-bench"}


@dataclass
class Simulation:
    """What one simulation did."""

    mode: str
    runs: List[dict]  # {"runId", "end", "done", "lag"} per workflow (times: seconds after start)
    calls: Dict[str, int]  # "METHOD endpoint" -> calls, whole workspace
    peak_per_second: int  # most Jobs API calls in one virtual second
    peak_after_start: int  # the same, leaving out the first second (the start burst)
    max_history: int  # most history events in one orchestration execution
    executions: int  # orchestration executions (continue_as_new starts one)
    watcher_ticks: int
    wall_seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


class _RunLengths:
    """A Scenario whose runs last what their `bench_run_seconds` notebook parameter says. With
    `bench_retry_seconds` the first attempt fails after that long and the retry (the job's
    max_retries / min_retry_interval_millis decide when it starts) runs `bench_retry_seconds`."""

    def __new__(cls):
        from jobs_emulator import Behavior, Scenario
        from jobs_emulator.scenario import BUILTIN_BEHAVIORS

        class RunLengths(Scenario):
            def behavior_for_task(self, task: dict, attempt: int = 0):
                params = (task.get("notebook_task") or {}).get("base_parameters") or {}
                seconds = float(params[RUN_SECONDS_PARAM])
                phases = (("PENDING", PENDING_SECONDS), ("RUNNING", seconds - PENDING_SECONDS))
                if RETRY_SECONDS_PARAM not in params:
                    return Behavior(phases=phases, notebook_result="done")
                if attempt == 0:
                    fail = BUILTIN_BEHAVIORS["fail"]
                    return Behavior(phases=phases, result_state="FAILED", state_message=fail.state_message,
                                    notebook_result=None, error=fail.error, error_trace=fail.error_trace)
                return Behavior(phases=(("RUNNING", float(params[RETRY_SECONDS_PARAM])),), notebook_result="done")

        return RunLengths()


class _Completions(logging.Handler):
    """Records when each instance completes, from devhost's one-line workflow events."""

    def __init__(self, clock) -> None:
        super().__init__(logging.INFO)
        self.clock = clock
        self.done: Dict[str, float] = {}
        self.failed: Dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 4 and args[3] in ("Completed", "Failed", "Terminated"):
            self.done[str(args[1])] = self.clock.now()
            if args[3] != "Completed":
                self.failed[str(args[1])] = args[3]


def simulate(mode: str, rounds: Sequence[Sequence[float]], *, tick: int = 15,
             policy_overrides: Optional[dict] = None, watch_overrides: Optional[dict] = None,
             settings_overrides: Optional[dict] = None, retry_pause: Optional[float] = None,
             mix: str = "shared", busy_runs: Optional[int] = None) -> Simulation:
    """Wait for runs in one workspace: each round starts one workflow per entry (the run's length in
    seconds) together, and the next round starts when the last workflow of the round completed.

    `tick`: the watcher's WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS; `policy_overrides` /
    `watch_overrides`: constants of workflow.policy / workflow.watch to replace in this process
    (e.g. {"SAFETY_SCHEDULE": PollSchedule(...)}); `settings_overrides`: WorkflowSettings fields.

    `retry_pause`: every run fails once and is retried (max_retries 1, min_retry_interval_millis
    = retry_pause s); each entry of a round is then (first attempt's seconds, retry's seconds).

    `mix`: what the workflows are (`MIXES`); the other teams' runs of a busy workspace
    (`busy_runs`, default BUSY_RUNS) are started before the first round, and their calls are not
    counted."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}")
    from bench import speedups

    with speedups.applied():
        return _simulate(mode, rounds, tick, policy_overrides, watch_overrides, settings_overrides, retry_pause, mix,
                         BUSY_RUNS if busy_runs is None else busy_runs)


def _other_teams_runs(base_url: str, count: int) -> None:
    """`count` runs of another team's job, active throughout (started over the API, as they would be)."""
    import requests

    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    created = api.post(f"{base_url}/api/2.1/jobs/create", timeout=30, json={
        "name": "other-team-stream", "max_concurrent_runs": 1000, "tasks": [{
            "task_key": "stream", "existing_cluster_id": REQUEST["existingClusterId"],
            "notebook_task": {"notebook_path": "/Workspace/other-team/stream",
                              "base_parameters": {RUN_SECONDS_PARAM: repr(float(OTHER_TEAM_SECONDS))}}}]})
    created.raise_for_status()
    for _ in range(count):
        api.post(f"{base_url}/api/2.1/jobs/run-now", json={"job_id": created.json()["job_id"]},
                 timeout=30).raise_for_status()
    api.close()


def _run_end(entry, retry_pause: Optional[float]) -> float:
    """When a run of this entry ends, seconds after it started."""
    if retry_pause is None:
        return float(entry)
    first, retry = entry
    return max(float(first), float(retry_pause)) + float(retry)


def _simulate(mode, rounds, tick, policy_overrides, watch_overrides, settings_overrides,
              retry_pause, mix="shared", busy_runs=BUSY_RUNS) -> Simulation:
    # Read when triggers.run_watcher is imported: set before the app is.
    os.environ["WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS"] = str(tick if mode == "watcher" else 0)
    for name in ("DATABRICKS_NOTIFICATION_DESTINATION_ID", "DATABRICKS_JOBS_API_VERSION"):
        os.environ.pop(name, None)

    import databricks_jobs
    import function_app
    from activities.jobs import known_jobs
    from devhost import Realism, ReplayHost, VirtualClock
    from jobs_emulator import JobsEmulator
    from jobs_emulator.webhooks import Destination
    from orchestrators.create_job_and_run import ORCHESTRATOR_NAME
    from triggers import run_watcher
    from workflow import policy, watch
    from workflow.inputs import orchestration_input, validate_request
    from workflow.settings import WorkflowSettings

    for module, overrides in ((policy, policy_overrides), (watch, watch_overrides)):
        for name, value in (overrides or {}).items():
            if not hasattr(module, name):
                raise AttributeError(f"{module.__name__} has no {name}")
            setattr(module, name, value)
    if mode == "watcher" and run_watcher.INTERVAL != tick:
        raise RuntimeError("the app was imported before the watcher tick was set: run each simulation in a "
                           "process of its own")

    clock = VirtualClock(T0)
    emulator = JobsEmulator(clock=clock.now, scenario=_RunLengths(), tokens={TOKEN}, request_log_limit=1000)
    server = host = None
    completions = _Completions(clock)
    events_logger = logging.getLogger("devhost.workflow")
    saved_level, saved_propagate = events_logger.level, events_logger.propagate
    events_logger.setLevel(logging.INFO)
    events_logger.propagate = False
    events_logger.addHandler(completions)
    saved_utcnow = run_watcher.utcnow
    try:
        if mode == "webhook":
            from devhost.serve import DevServer
            # The watcher's timer runs with the watcher off too: it tells notifications kept for runs
            # registered since (workflow.early_ends), as on a real host.
            realism = Realism(seed=REALISM_SEED, max_latency=QUEUE_POLLING_SECONDS)
            server = DevServer(function_app.app, ReplayHost(function_app.app, clock, timer_triggers=["watch_runs"],
                                                            realism=realism), queues=False)
            base_url = server.start()
            server.host.stop()  # driven in the foreground, below
            host = server.host
            emulator.notification_destinations[DESTINATION_ID] = Destination(
                f"{base_url}/api/databricks/notifications", WEBHOOK_USER, WEBHOOK_PASSWORD)
            os.environ.update(DATABRICKS_NOTIFICATION_DESTINATION_ID=DESTINATION_ID,
                              DATABRICKS_WEBHOOK_USERNAME=WEBHOOK_USER, DATABRICKS_WEBHOOK_PASSWORD=WEBHOOK_PASSWORD)
        else:
            host = ReplayHost(function_app.app, clock, timer_triggers=["watch_runs"] if mode == "watcher" else False,
                              realism=Realism(seed=REALISM_SEED, max_latency=QUEUE_POLLING_SECONDS))
        os.environ.update(DATABRICKS_HOST=emulator.start(port=0), DATABRICKS_AUTH="pat", DATABRICKS_TOKEN=TOKEN)
        clock.on_advance(emulator.tick)
        if mix.startswith("busy"):
            _other_teams_runs(emulator.base_url, busy_runs)
            emulator.reset_call_counts()  # only the app's calls are counted
        databricks_jobs.reset_all()
        known_jobs.clear()
        run_watcher.utcnow = lambda: datetime.fromtimestamp(clock.now(), tz=timezone.utc)
        run_watcher.memory.reset()

        settings = WorkflowSettings(run_watcher_interval_seconds=tick if mode == "watcher" else 0,
                                    **(settings_overrides or {}))
        per_second: Dict[int, int] = collections.Counter()
        round_starts: List[int] = []
        runs: List[dict] = []
        # One definition for every workflow (the timeout is part of the job's settings).
        timeout = int(min(2592000, 3 * max(_run_end(e, retry_pause) for r in rounds for e in r) + 7200))
        wall_started = time.perf_counter()
        for number, lengths in enumerate(rounds):
            started_at = clock.now()
            round_starts.append(int(started_at - ORIGIN))
            ids = _start_round(host, settings, lengths, number, timeout, retry_pause, validate_request,
                               orchestration_input, ORCHESTRATOR_NAME, mix)
            ends = [started_at + _run_end(e, retry_pause) for e in lengths]
            _drive(host, clock, emulator, completions, ids, ends, per_second, limit=timeout)
            deliveries = emulator.deliveries if mode == "webhook" else []
            for iid in ids:
                status = host.get_status(iid, show_input=False)
                output = status["output"] or {}
                if status["runtimeStatus"] != "Completed" or output.get("resultState") != "SUCCESS":
                    raise RuntimeError(f"workflow {iid} ended {status['runtimeStatus']}: {output}")
                end = emulator.run(output["runId"])["end_time"] / 1000.0 - started_at
                done = completions.done[iid] - started_at
                executions = host.executions(iid)
                record = {"runId": output["runId"], "end": end, "done": done, "lag": done - end,
                          "executions": len(executions), "maxHistory": max(len(x["history"]) for x in executions)}
                if mode == "webhook":
                    # When the run's end notification reached the app (the emulator's delivery time).
                    notified = [d["time"] for d in deliveries
                                if d["run_id"] == output["runId"] and d["event_type"] in ("jobs.on_success",
                                                                                          "jobs.on_failure")]
                    record["notified"] = (min(notified) - started_at) if notified else None
                    record["lagAfterNotification"] = (done - record["notified"]) if notified else None
                runs.append(record)
        wall = time.perf_counter() - wall_started
        calls = {f"{method} {endpoint}": n for (method, endpoint), n in sorted(emulator.call_counts().items())}
        return Simulation(
            mode=mode, runs=runs, calls=calls,
            peak_per_second=max(per_second.values(), default=0),
            peak_after_start=max((n for s, n in per_second.items() if s not in round_starts), default=0),
            max_history=max(r["maxHistory"] for r in runs), executions=sum(r["executions"] for r in runs),
            watcher_ticks=sum(1 for r in host.timer_invocations if r["function"] == "watch_runs"),
            wall_seconds=wall,
            settings={"tick": tick if mode == "watcher" else 0, **(settings_overrides or {})},
        )
    finally:
        run_watcher.utcnow = saved_utcnow
        events_logger.removeHandler(completions)
        events_logger.setLevel(saved_level)
        events_logger.propagate = saved_propagate
        if server is not None:
            server.stop()
        elif host is not None:
            host.stop()
        emulator.stop()
        databricks_jobs.reset_all()
        known_jobs.clear()


def _request(mix: str, number: int, index: int, timeout: int) -> dict:
    """The request of the `index`th workflow of round `number` in this mix."""
    body = {**REQUEST, "timeoutSeconds": timeout}
    if mix == "oneTime" and index % 10 == 9:
        body["jobSource"] = "oneTime"
    elif mix in ("ownDefinition", "busyOwn"):
        body["jobName"] = f"{REQUEST['jobName']}-{number:03d}-{index:05d}"
    elif mix == "ownDeadline":
        body["timeoutSeconds"] = timeout + 60 * (number * 10_000 + index)  # "finish by 06:00", computed per request
    return body


def _start_round(host, settings, lengths, number, timeout, retry_pause, validate_request, orchestration_input,
                 name, mix="shared") -> List[str]:
    ids = []
    for index, entry in enumerate(lengths):
        body = _request(mix, number, index, timeout)
        if retry_pause is None:
            body["notebookParams"] = {RUN_SECONDS_PARAM: repr(float(entry))}
        else:
            body.pop("notebookPath"), body.pop("existingClusterId")
            body["tasks"] = [{"task_key": REQUEST["taskKey"], "existing_cluster_id": REQUEST["existingClusterId"],
                              "notebook_task": {"notebook_path": REQUEST["notebookPath"]},
                              "max_retries": 1, "min_retry_interval_millis": int(retry_pause * 1000)}]
            body["notebookParams"] = {RUN_SECONDS_PARAM: repr(float(entry[0])),
                                      RETRY_SECONDS_PARAM: repr(float(entry[1]))}
        request = validate_request(body, settings)
        ids.append(host.start_new(name, f"bench-{number:03d}-{index:05d}", orchestration_input(request, settings)))
    return ids


def _drive(host, clock, emulator, completions, ids, ends, per_second, *, limit: float) -> None:
    """Run until every workflow of `ids` completed, moving the clock to whatever is due next: a
    durable timer, a watcher tick, or the end of a run. Counts the Jobs API calls made at each
    virtual instant into `per_second` (whole seconds since T0)."""
    started = clock.now()
    ends = sorted(set(ends))
    counted = sum(emulator.call_counts().values())
    pending = set(ids)
    while True:
        host.run_until_idle()
        calls_now = sum(emulator.call_counts().values())
        if calls_now != counted:
            per_second[int(clock.now() - ORIGIN)] += calls_now - counted
            counted = calls_now
        pending -= completions.done.keys()
        if not pending:
            return
        now = clock.now()
        if now - started > limit:
            raise TimeoutError(f"{len(pending)} workflow(s) still waiting after {limit:.0f} virtual seconds")
        candidates = [t for t in (host.next_timer_at(), host.next_timer_trigger_at()) if t is not None]
        while ends and ends[0] <= now:
            ends.pop(0)
        if ends:
            candidates.append(ends[0])
        if not candidates:
            raise RuntimeError(f"{len(pending)} workflow(s) wait with nothing due")
        clock.advance_to(max(min(candidates), now))
