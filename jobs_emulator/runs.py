"""Job runs as a DAG of task runs, planned once on the clock and read at any instant.

A run stores what was asked — its rounds (the original run and each repair) with the tasks they
run, when, and any cancellation — and the :class:`Behavior` chosen for each task attempt. Its
plan (every attempt's phases, retries and skips, and the job-level state over time) is derived
from those and cached, so a virtual clock may jump hours between two requests and the answer is
still exact. Nothing here speaks HTTP or JSON.

Semantics, as Databricks documents them (learn.microsoft.com/azure/databricks/jobs/run-if and the
SDK's RunIf / RunResultState / TerminationCodeCode docstrings):

- A task runs once its dependencies are done and its ``run_if`` holds; until then it is BLOCKED.
  ALL_SUCCESS, AT_LEAST_ONE_SUCCESS and NONE_FAILED that do not hold mark it UPSTREAM_FAILED
  (UPSTREAM_CANCELED when the cause is a cancellation); AT_LEAST_ONE_FAILED and ALL_FAILED that
  do not hold mark it EXCLUDED. Excluded tasks count as successful; a task whose dependencies are
  all excluded is excluded too. Cancellation counts as a failure for the failure-handling rules.
- The job run is SUCCESS when every task succeeded, SUCCESS_WITH_FAILURES when some task failed
  but every leaf task (no task depends on it) succeeded, and otherwise failed.
- A job run whose task failed reports ``life_cycle_state`` INTERNAL_ERROR with result FAILED and
  "Task <key> failed with message: …" while its tasks are TERMINATED (2.2 ``status`` TERMINATED,
  RUN_EXECUTION_ERROR). Seen on real workspaces: databricks/cli libs/testserver/jobs.go
  ("measured on serverless"), and the job outputs quoted in several public repositories.
- A failed attempt (FAILED, or INTERNAL_ERROR life cycle; TIMEDOUT with ``retry_on_timeout``) is
  retried ``max_retries`` times (-1: always), each retry starting no sooner than
  ``min_retry_interval_millis`` after the start of the failed attempt; meanwhile the new attempt
  is WAITING_FOR_RETRY.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from .scenario import Behavior, Scenario

INF = float("inf")
DEP_WAIT = "BLOCKED_UPSTREAM"  # internal phase: waiting for depends_on; shown as BLOCKED
NOT_STARTED = frozenset({"QUEUED", "BLOCKED", "WAITING_FOR_RETRY", DEP_WAIT})
SUCCESS_RESULTS = frozenset({"SUCCESS", "SUCCESS_WITH_FAILURES"})
SKIP_RESULTS = frozenset({"EXCLUDED", "UPSTREAM_FAILED", "UPSTREAM_CANCELED", "DISABLED"})
# A task retried forever (max_retries -1) against a behavior that always fails must still have a
# finite plan; real Databricks would keep retrying.
MAX_ATTEMPTS_PER_ROUND = 100
MAX_RUN_JOB_DEPTH = 5  # run_job_task chains deeper than this fail instead of recursing forever


@dataclass(frozen=True)
class Outcome:
    life_cycle_state: str
    result_state: str | None
    state_message: str
    user_cancelled_or_timedout: bool
    termination_code: str
    termination_type: str
    error: str | None = None
    error_trace: str | None = None
    notebook_result: Any = None
    truncated: bool = False


def outcome_of(b: Behavior) -> Outcome:
    code, kind = b.termination_code, b.termination_type
    if code is None:
        code, kind = _termination_for(b.final_state, b.result_state)
    return Outcome(
        life_cycle_state=b.final_state,
        result_state=b.result_state,
        state_message=b.state_message,
        user_cancelled_or_timedout=b.result_state in ("CANCELED", "TIMEDOUT"),
        termination_code=code,
        termination_type=kind or "SUCCESS",
        error=b.error,
        error_trace=b.error_trace,
        notebook_result=b.notebook_result,
        truncated=b.truncated,
    )


def _termination_for(final_state: str, result_state: str | None) -> tuple[str, str]:
    # Codes and types as documented for the 2.2 `status.termination_details` (SDK TerminationCodeCode).
    if final_state == "INTERNAL_ERROR":
        return "INTERNAL_ERROR", "INTERNAL_ERROR"
    if final_state == "SKIPPED":
        if result_state == "MAXIMUM_CONCURRENT_RUNS_REACHED":
            return "MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR"
        if result_state == "DISABLED":
            return "DISABLED", "SUCCESS"
        return "SKIPPED", "SUCCESS"
    return {
        "SUCCESS": ("SUCCESS", "SUCCESS"),
        "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS"),
        "FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
        "TIMEDOUT": ("CANCELED", "CLIENT_ERROR"),
        "CANCELED": ("USER_CANCELED", "SUCCESS"),
        "DISABLED": ("DISABLED", "CLIENT_ERROR"),
    }.get(result_state or "", ("SUCCESS", "SUCCESS"))


SUCCEEDED = Outcome("TERMINATED", "SUCCESS", "", False, "SUCCESS", "SUCCESS")
SUCCEEDED_WITH_FAILURES = Outcome("TERMINATED", "SUCCESS_WITH_FAILURES", "", False, "SUCCESS_WITH_FAILURES",
                                  "SUCCESS")
CANCELED = Outcome("TERMINATED", "CANCELED", "Run cancelled.", True, "USER_CANCELED", "SUCCESS")
TIMED_OUT = Outcome("TERMINATED", "TIMEDOUT", "Run timed out.", True, "CANCELED", "CLIENT_ERROR",
                    error="Run timed out.")
# Skipped task messages were not found in public sources; the result states are the documented ones.
_SKIP_MESSAGES = {
    "EXCLUDED": "Excluded: the task's run_if condition was not met.",
    "UPSTREAM_FAILED": "Upstream task(s) failed.",
    "UPSTREAM_CANCELED": "Upstream task(s) were canceled.",
    "DISABLED": "The task is disabled.",
}


def skipped(result: str) -> Outcome:
    code, kind = _termination_for("SKIPPED", result)
    return Outcome("SKIPPED", result, _SKIP_MESSAGES[result], False, code, kind)


def classify(outcome: Outcome) -> str:
    """'success', 'failed', 'canceled' or 'excluded' (skipped, which counts as a success)."""
    if outcome.result_state in ("CANCELED", "UPSTREAM_CANCELED"):
        return "canceled"
    if outcome.life_cycle_state == "INTERNAL_ERROR" or outcome.result_state in ("FAILED", "TIMEDOUT",
                                                                                "UPSTREAM_FAILED"):
        return "failed"
    if outcome.life_cycle_state == "SKIPPED":
        return "excluded"
    return "success"


def run_if_decision(run_if: str, upstream: list[Outcome]) -> str | None:
    """None when the task runs, else the result it is skipped with."""
    kinds = [classify(o) for o in upstream]
    if not kinds:
        return None
    if all(k == "excluded" for k in kinds):
        return "EXCLUDED"
    failed, canceled = kinds.count("failed"), kinds.count("canceled")
    succeeded = kinds.count("success") + kinds.count("excluded")
    blame = "UPSTREAM_FAILED" if failed else "UPSTREAM_CANCELED"
    if run_if == "ALL_DONE":
        return None
    if run_if == "AT_LEAST_ONE_FAILED":
        return None if failed + canceled else "EXCLUDED"
    if run_if == "ALL_FAILED":
        return None if failed + canceled == len(kinds) else "EXCLUDED"
    if run_if == "AT_LEAST_ONE_SUCCESS":
        return None if succeeded else blame
    if run_if == "NONE_FAILED":
        return None if not failed and not canceled else blame
    return None if not failed and not canceled else blame  # ALL_SUCCESS


@dataclass(eq=False)
class Attempt:
    """One task run: an attempt of a task in a round (its own run id)."""

    key: str
    round: int
    number: int  # attempt_number, counting on across retries and repairs
    run_id: int
    original_run_id: int
    task: dict  # effective task settings (parameters pushed down)
    visible_from: float
    segments: list  # [(state, start, end)] non-terminal phases
    end: float
    outcome: Outcome
    behavior: Behavior | None = None
    child: "Run | None" = None

    @property
    def started(self) -> float | None:
        """When the task left its waits (queue, dependencies, retry wait): the task start time."""
        for state, start, _ in self.segments:
            if state not in NOT_STARTED:
                return start
        return None

    def state_at(self, now: float) -> tuple[str, Outcome | None]:
        if now >= self.end:
            return self.outcome.life_cycle_state, self.outcome
        for state, start, stop in self.segments:
            if start <= now < stop:
                return state, None
        return (self.segments[0][0] if self.segments else "PENDING"), None

    def time_in(self, states: frozenset | set, now: float) -> float:
        return sum(max(0.0, min(b, now) - a) for s, a, b in self.segments if s in states and a < now)


@dataclass(eq=False)
class Round:
    """The original run (index 0) or one repair: which tasks run, with which settings, and from when."""

    index: int
    start: float | None  # None: the run's queue_until (the original round waits for its slot)
    tasks: dict  # task_key -> effective task settings
    repair_id: int | None = None
    canceled_at: float | None = None
    task_cancels: dict = field(default_factory=dict)  # task_key -> time of a task-level cancel
    values: dict = field(default_factory=dict)  # job parameter values of this round (pushed down)


@dataclass(eq=False)
class RoundPlan:
    index: int
    visible_from: float
    start: float
    end: float
    outcome: Outcome
    attempts: list
    segments: list  # job-level non-terminal phases [(state, start, end)]
    starts: list  # segment start times, for bisect


@dataclass(eq=False)
class Plan:
    attempts: list  # display order: round, task definition order, attempt
    by_id: dict  # task run id -> Attempt
    latest: dict  # task_key -> latest Attempt
    rounds: list
    end: float
    outcome: Outcome


class Host(Protocol):
    def now(self) -> float: ...

    def task_run_id(self, run: "Run", round_index: int, key: str, number: int) -> int: ...

    def spawn_child(self, parent: "Run", attempt_key: tuple, start: float, task: dict,
                    parent_task_run_id: int) -> "Run | None": ...

    def abandon(self, child: "Run") -> None: ...


@dataclass(eq=False)
class Run:
    run_id: int
    job_id: int
    run_name: str
    created_at: float
    queue_until: float  # waiting for a concurrency slot (QUEUED) until then
    display_order: list  # task keys in definition order
    task_order: list  # task keys in dependency (topological) order
    downstream: dict  # task_key -> keys that depend on it
    rounds: list
    scenario: Scenario
    host: Any = None
    run_type: str = "JOB_RUN"
    job_name: str = ""
    timeout_seconds: float = 0.0
    cancel_seconds: float = 0.5
    skipped_outcome: Outcome | None = None  # set when skipped for concurrency at run-now
    overriding_parameters: dict | None = None
    job_parameters: list | None = None  # [{name, default, value}]
    job_clusters: list | None = None
    git_source: dict | None = None
    notifications: dict = field(default_factory=dict)  # webhook_notifications snapshot
    notification_settings: dict = field(default_factory=dict)
    idempotency_token: str | None = None
    api_version: str = "2.1"
    trigger: str = "ONE_TIME"
    trigger_info: dict | None = None
    depth: int = 0
    original_id: int = 0  # id of the ORIGINAL repair-history item
    hidden: bool = False  # its job was deleted
    abandoned: bool = False  # a planned run_job_task child run that never started
    notified: set = field(default_factory=set)
    behaviors: dict = field(default_factory=dict)  # (round, key, number) -> Behavior, fixed once chosen
    ids: dict = field(default_factory=dict)  # (round, key, number) -> task run id
    children: dict = field(default_factory=dict)  # (round, key, number) -> child Run
    _plan: Plan | None = None

    # -- plan ---------------------------------------------------------------------------------
    def invalidate(self) -> None:
        self._plan = None

    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = _build_plan(self)
        return self._plan

    def behavior(self, round_index: int, key: str, number: int, task: dict) -> Behavior:
        slot = (round_index, key, number)
        if slot not in self.behaviors:
            self.behaviors[slot] = self.scenario.behavior_for_task(task, number)
        return self.behaviors[slot]

    @property
    def canceled_at(self) -> float | None:
        return self.rounds[-1].canceled_at if self.rounds else None

    @property
    def end_time(self) -> float:
        return self.plan().end

    def is_terminal(self, now: float) -> bool:
        return now >= self.plan().end

    def state_at(self, now: float) -> tuple[str, Outcome | None]:
        """(job-level life_cycle_state, outcome if terminal)."""
        plan = self.plan()
        for rp in reversed(plan.rounds):
            if now >= rp.visible_from or rp.index == 0:
                if now >= rp.end:
                    return rp.outcome.life_cycle_state, rp.outcome
                i = bisect.bisect_right(rp.starts, now) - 1
                if i < 0:
                    return (rp.segments[0][0] if rp.segments else "PENDING"), None
                return rp.segments[i][0], None
        return "PENDING", None

    def round_at(self, now: float) -> RoundPlan:
        plan = self.plan()
        for rp in reversed(plan.rounds):
            if now >= rp.visible_from:
                return rp
        return plan.rounds[0]

    def time_in(self, states: frozenset | set, now: float) -> float:
        return sum(max(0.0, min(b, now) - a) for rp in self.plan().rounds for s, a, b in rp.segments
                   if s in states and a < now)

    def events(self) -> list[tuple[float, tuple, str]]:
        """Webhook events the plan implies: [(time, key, event_type)], one start, one end per round."""
        plan = self.plan()
        out = []
        running = next((a for rp in plan.rounds[:1] for s, a, _ in rp.segments if s == "RUNNING"), None)
        if running is not None:
            out.append((running, ("start", 0), "jobs.on_start"))
        for rp in plan.rounds:
            outcome = rp.outcome
            if outcome.result_state in SUCCESS_RESULTS:
                out.append((rp.end, ("end", rp.index), "jobs.on_success"))
                continue
            settings = self.notification_settings or {}
            quiet = (outcome.life_cycle_state == "SKIPPED" and settings.get("no_alert_for_skipped_runs")) or (
                outcome.result_state == "CANCELED" and settings.get("no_alert_for_canceled_runs"))
            if not quiet:
                out.append((rp.end, ("end", rp.index), "jobs.on_failure"))
        return out


# -- planning ------------------------------------------------------------------------------------

def _build_plan(run: Run) -> Plan:
    latest: dict[str, Attempt] = {}
    round_plans = []
    for rnd in run.rounds:
        if rnd.index == 0 and run.skipped_outcome is not None:  # skipped at run-now: no task ran
            t = run.created_at
            round_plans.append(RoundPlan(0, t, t, t, run.skipped_outcome, [], [], []))
            continue
        round_plans.append(_plan_round(run, rnd, latest))
    attempts = []
    for rp in round_plans:
        position = {k: i for i, k in enumerate(run.display_order)}
        attempts.extend(sorted(rp.attempts, key=lambda a: (position.get(a.key, 0), a.number)))
    used = {(a.round, a.key, a.number) for a in attempts if a.child is not None}
    for slot, child in run.children.items():
        if slot not in used and not child.abandoned:
            run.host.abandon(child)  # the task that would have started it never starts now
    final = round_plans[-1]
    return Plan(attempts, {a.run_id: a for a in attempts}, dict(latest), round_plans, final.end, final.outcome)


@dataclass
class _Cut:
    at: float
    kind: str  # "cancel" | "timeout"
    hit: bool = False


def _plan_round(run: Run, rnd: Round, latest: dict) -> RoundPlan:
    start = run.queue_until if rnd.index == 0 else rnd.start
    visible = run.created_at if rnd.index == 0 else rnd.start
    timeout_at = start + run.timeout_seconds if run.timeout_seconds > 0 else INF
    cancel_at = rnd.canceled_at if rnd.canceled_at is not None else INF
    cut = _Cut(min(timeout_at, cancel_at), "cancel" if cancel_at <= timeout_at else "timeout")
    ends: dict[str, float] = {}
    attempts: list[Attempt] = []
    for key in run.task_order:
        if key not in rnd.tasks:
            continue
        task = rnd.tasks[key]
        deps = [d["task_key"] for d in task.get("depends_on") or [] if d.get("task_key") in run.downstream]
        ready = max([start] + [ends[d] for d in deps if d in ends])
        prefix = []
        if rnd.index == 0 and start > run.created_at:
            prefix.append(("QUEUED", run.created_at, start))
        if ready > start:
            prefix.append((DEP_WAIT, start, ready))
        number = latest[key].number + 1 if key in latest else 0
        chain = _plan_task(run, rnd, key, task, [latest[d].outcome for d in deps if d in latest],
                           bool(deps), ready, prefix, visible, number, cut)
        attempts.extend(chain)
        ends[key] = chain[-1].end
        latest[key] = chain[-1]
    end = max([a.end for a in attempts], default=min(start, cut.at))
    outcome = _job_outcome(run, latest, cut)
    segments = _aggregate(attempts, visible, end)
    return RoundPlan(rnd.index, visible, start, end, outcome, attempts, segments, [s[1] for s in segments])


def _cut_segments(segments: list, t: float) -> list:
    return [(s, a, min(b, t)) for s, a, b in segments if a < t and min(b, t) > a]


def _started_before(segments: list, t: float) -> bool:
    return any(s not in NOT_STARTED and a < t for s, a, _ in segments)


def _not_started(cut: _Cut) -> Outcome:
    return CANCELED if cut.kind == "cancel" else TIMED_OUT


def _retryable(outcome: Outcome, task: dict) -> bool:
    if outcome.result_state == "TIMEDOUT":
        return bool(task.get("retry_on_timeout"))
    return outcome.life_cycle_state == "INTERNAL_ERROR" or outcome.result_state == "FAILED"


def _from_child(outcome: Outcome) -> Outcome:
    """A run_job_task ends as the run it started ended."""
    if outcome.result_state in SUCCESS_RESULTS:
        return SUCCEEDED
    if outcome.result_state in ("CANCELED", "TIMEDOUT"):
        return Outcome("TERMINATED", outcome.result_state, outcome.state_message, True,
                       *_termination_for("TERMINATED", outcome.result_state))
    message = outcome.state_message or "Workload failed, see run output for details"
    return Outcome("TERMINATED", "FAILED", message, False, "RUN_EXECUTION_ERROR", "CLIENT_ERROR", error=message)


def _plan_task(run: Run, rnd: Round, key: str, task: dict, upstream: list, has_deps: bool, ready: float,
               prefix: list, visible: float, number: int, cut: _Cut) -> list[Attempt]:
    host = run.host
    first = number

    def attempt(n: int, vis: float, segments: list, end: float, outcome: Outcome, behavior=None, child=None,
                run_id: int | None = None) -> Attempt:
        rid = run_id if run_id is not None else host.task_run_id(run, rnd.index, key, n)
        original = run.ids.get((rnd.index, key, first), rid)
        return Attempt(key, rnd.index, n, rid, original, task, vis, segments, end, outcome, behavior, child)

    task_cancel = rnd.task_cancels.get(key)
    if ready >= cut.at:  # the run was cancelled or timed out before this task could start
        cut.hit = True
        return [attempt(number, visible, _cut_segments(prefix, cut.at), cut.at, _not_started(cut))]
    if task_cancel is not None and task_cancel <= ready:
        return [attempt(number, visible, _cut_segments(prefix, task_cancel), task_cancel, CANCELED)]
    if task.get("disabled"):
        return [attempt(number, visible, prefix, ready, skipped("DISABLED"))]
    if has_deps:
        decision = run_if_decision(task.get("run_if") or "ALL_SUCCESS", upstream)
        if decision:
            return [attempt(number, visible, prefix, ready, skipped(decision))]

    chain: list[Attempt] = []
    retries = task.get("max_retries") or 0
    interval = (task.get("min_retry_interval_millis") or 0) / 1000.0
    task_timeout = task.get("timeout_seconds") or 0
    t, pre, vis = ready, prefix, visible
    while True:
        behavior = None
        child = None
        rid = host.task_run_id(run, rnd.index, key, number)
        segments = list(pre)
        if isinstance(task.get("run_job_task"), dict):
            child = host.spawn_child(run, (rnd.index, key, number), t, task, rid)
            if child is None:
                job = task["run_job_task"].get("job_id")
                phases: list = []
                outcome = Outcome("TERMINATED", "FAILED", f"Job {job} does not exist.", False, "RESOURCE_NOT_FOUND",
                                  "CLIENT_ERROR", error=f"Job {job} does not exist.")
            else:
                child_plan = child.plan()
                phases = [("RUNNING", max(0.0, child_plan.end - t))]
                outcome = _from_child(child_plan.outcome)
        else:
            behavior = run.behavior(rnd.index, key, number, task)
            phases = list(behavior.phases)
            outcome = outcome_of(behavior)
        clock = t
        for state, duration in phases:
            if duration > 0:
                segments.append((state, clock, clock + duration))
                clock += duration
        end = clock
        stop = False
        if task_timeout and end > t + task_timeout:
            end = t + task_timeout
            segments = _cut_segments(segments, end)
            outcome = TIMED_OUT
        if task_cancel is not None and vis <= task_cancel < end:
            started = _started_before(segments, task_cancel)
            segments = _cut_segments(segments, task_cancel)
            end = task_cancel
            if started and run.cancel_seconds > 0:
                segments.append(("TERMINATING", task_cancel, task_cancel + run.cancel_seconds))
                end = task_cancel + run.cancel_seconds
            outcome, stop = CANCELED, True
        if cut.at < end:
            cut.hit, stop = True, True
            started = _started_before(segments, cut.at)
            segments = _cut_segments(segments, cut.at)
            end = cut.at
            if cut.kind == "cancel" and started and run.cancel_seconds > 0:
                segments.append(("TERMINATING", cut.at, cut.at + run.cancel_seconds))
                end = cut.at + run.cancel_seconds
            outcome = _not_started(cut)
            if child is not None and child.rounds[0].canceled_at is None:
                child.rounds[0].canceled_at = max(cut.at, child.created_at)  # the parent stops its child
                child.invalidate()
        chain.append(attempt(number, vis, segments, end, outcome, behavior, child, rid))
        if stop or not _retryable(outcome, task) or len(chain) >= MAX_ATTEMPTS_PER_ROUND:
            break
        if retries != -1 and number - first >= retries:
            break
        next_start = max(end, t + interval)
        number += 1
        vis = end
        pre = [("WAITING_FOR_RETRY", end, next_start)] if next_start > end else []
        t = next_start
        if t >= cut.at:
            cut.hit = True
            chain.append(attempt(number, vis, _cut_segments(pre, cut.at), cut.at, _not_started(cut)))
            break
        if task_cancel is not None and vis <= task_cancel <= t:
            chain.append(attempt(number, vis, _cut_segments(pre, task_cancel), task_cancel, CANCELED))
            break
    return chain


def _job_outcome(run: Run, latest: dict, cut: _Cut) -> Outcome:
    if cut.hit:
        return _not_started(cut)
    keys = [k for k in run.task_order if k in latest]
    outcomes = {k: latest[k].outcome for k in keys}
    if not outcomes:
        return SUCCEEDED
    values = list(outcomes.values())
    if all(o.life_cycle_state == "SKIPPED" and o.result_state not in SKIP_RESULTS for o in values):
        return values[0]  # a scenario skip (e.g. the built-in skip…): the run is skipped as a whole
    failing = [k for k in keys if classify(outcomes[k]) in ("failed", "canceled")]
    if not failing:
        return SUCCEEDED
    if not any(k in failing and not run.downstream.get(k) for k in keys):
        return SUCCEEDED_WITH_FAILURES  # every leaf task succeeded
    root = next((k for k in failing if outcomes[k].result_state not in SKIP_RESULTS), failing[0])
    cause = outcomes[root]
    if cause.life_cycle_state == "INTERNAL_ERROR":
        return Outcome("INTERNAL_ERROR", "FAILED", cause.state_message, False, "INTERNAL_ERROR", "INTERNAL_ERROR")
    if cause.result_state in ("TIMEDOUT", "CANCELED"):
        return Outcome("TERMINATED", cause.result_state, cause.state_message, True,
                       *_termination_for("TERMINATED", cause.result_state))
    detail = (cause.state_message or "Workload failed, see run output for details").rstrip(".")
    message = f"Task {root} failed with message: {detail}."
    if run.downstream.get(root):
        message += " This caused all downstream tasks to get skipped."
    return Outcome("INTERNAL_ERROR", "FAILED", message, False, "RUN_EXECUTION_ERROR", "CLIENT_ERROR")


def _job_state(active: Counter, ran: bool) -> str:
    states = {s for s, n in active.items() if n > 0}
    waiting_upstream = DEP_WAIT in states
    states.discard(DEP_WAIT)
    if not states:
        return "RUNNING" if ran else "PENDING"
    if len(states) == 1:
        (state,) = states
        if state == "PENDING" and ran:
            return "RUNNING"  # a later task starting its cluster: the job run is already running
        if state == "TERMINATING" and waiting_upstream:
            return "RUNNING"  # more tasks follow
        return state
    if "RUNNING" in states or ran:
        return "RUNNING"
    for state in ("PENDING", "TERMINATING", "WAITING_FOR_RETRY", "BLOCKED", "QUEUED"):
        if state in states:
            return state
    return "RUNNING"


def _aggregate(attempts: list, start: float, end: float) -> list:
    """The job run's life-cycle state over [start, end) from its task runs' phases (a sweep)."""
    if end <= start:
        return []
    events: list[tuple[float, int, str]] = []  # (time, +1/-1, state)
    for a in attempts:
        if a.end <= a.visible_from:
            continue
        cursor = a.visible_from
        for state, s, e in a.segments:
            s, e = max(s, cursor), min(e, a.end)
            if e <= s:
                continue
            events.append((s, 1, state))
            events.append((e, -1, state))
            cursor = e
    events.sort(key=lambda ev: (ev[0], ev[1]))
    active: Counter = Counter()
    segments: list = []
    ran = False
    i, n = 0, len(events)
    while i < n:
        time_point = events[i][0]
        while i < n and events[i][0] == time_point:
            _, delta, state = events[i]
            active[state] += delta
            i += 1
        nxt = events[i][0] if i < n else end
        lo, hi = max(time_point, start), min(nxt, end)
        if hi > lo:
            state = _job_state(active, ran)
            if active.get("RUNNING", 0) > 0:
                ran = True
            if segments and segments[-1][0] == state and segments[-1][2] == lo:
                segments[-1] = (state, segments[-1][1], hi)
            else:
                segments.append((state, lo, hi))
    return segments
