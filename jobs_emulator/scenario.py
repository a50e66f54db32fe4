"""What a task run does: its phases, how long each lasts, and how it ends.

A :class:`Scenario` maps task source paths (``fnmatch`` globs, first match wins) to a
:class:`Behavior`: the notebook path of a notebook task, ``python_file`` of a Python script,
``<package_name>/<entry_point>`` of a wheel, the SQL file path or query id of a SQL task, the
main class of a JAR. Tasks that match no rule fall back to the built-in choice, first by the
prefix of the ``task_key``, then by the path's last segment (``fail…``, ``skip…``, ``crash…``,
``timeout…``, ``slow…``, ``queued…``, ``flaky…``, else success). The same fields load from
JSON, see :meth:`Scenario.from_dict`.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field, replace
from typing import Any

# Distinguishes "not given, use the default result" from an explicit None ("no
# dbutils.notebook.exit() call", so the real API omits notebook_output.result).
DEFAULT_RESULT = object()

LIFE_CYCLE_STATES = (
    "QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED", "SKIPPED",
    "INTERNAL_ERROR", "BLOCKED", "WAITING_FOR_RETRY",
)
TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
# States a run passes through; terminal ones end a timeline instead.
PHASE_STATES = frozenset(LIFE_CYCLE_STATES) - TERMINAL_STATES

DEFAULT_PHASES = (("PENDING", 0.5), ("RUNNING", 2.0), ("TERMINATING", 0.5))


@dataclass(frozen=True)
class Behavior:
    """How one run unfolds. Durations are seconds before the scenario's ``time_scale``."""

    phases: tuple[tuple[str, float], ...] = DEFAULT_PHASES
    final_state: str = "TERMINATED"
    result_state: str | None = "SUCCESS"
    state_message: str = ""
    notebook_result: Any = DEFAULT_RESULT  # str, None (absent) or DEFAULT_RESULT
    truncated: bool = False
    error: str | None = None
    error_trace: str | None = None
    termination_code: str | None = None  # 2.2 status; derived from the outcome when None
    termination_type: str | None = None

    def __post_init__(self):
        phases = tuple((str(s), float(d)) for s, d in self.phases)
        for state, duration in phases:
            if state not in PHASE_STATES:
                raise ValueError(f"phase state {state!r} is not a non-terminal life_cycle_state")
            if duration < 0:
                raise ValueError(f"phase {state} has a negative duration")
        if self.final_state not in TERMINAL_STATES:
            raise ValueError(f"final_state {self.final_state!r} must be one of {sorted(TERMINAL_STATES)}")
        object.__setattr__(self, "phases", phases)

    @property
    def duration(self) -> float:
        return sum(d for _, d in self.phases)

    def scaled(self, factor: float) -> "Behavior":
        return replace(self, phases=tuple((s, d * factor) for s, d in self.phases))

    @classmethod
    def from_dict(cls, data: dict) -> "Behavior":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known - {"match"}
        if unknown:
            raise ValueError(f"unknown scenario rule fields: {sorted(unknown)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        if "phases" in kwargs:
            kwargs["phases"] = tuple(tuple(p) for p in kwargs["phases"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        out = {
            "phases": [list(p) for p in self.phases],
            "final_state": self.final_state,
            "result_state": self.result_state,
            "state_message": self.state_message,
            "truncated": self.truncated,
            "error": self.error,
            "error_trace": self.error_trace,
        }
        if self.notebook_result is not DEFAULT_RESULT:
            out["notebook_result"] = self.notebook_result
        if self.termination_code:
            out["termination_code"] = self.termination_code
        if self.termination_type:
            out["termination_type"] = self.termination_type
        return out


_FAIL_TRACE = (
    "---------------------------------------------------------------------------\n"
    "Exception                                 Traceback (most recent call last)\n"
    "File <command-1>, line 3\n"
    "----> 3 raise Exception(\"emulated notebook failure\")\n"
    "Exception: emulated notebook failure"
)

BUILTIN_BEHAVIORS: dict[str, Behavior] = {
    "success": Behavior(),
    # The task-level message Databricks shows for a failed workload (measured by databricks/cli's
    # testserver on a real workspace); the job run wraps it as "Task <key> failed with message: …".
    "fail": Behavior(
        result_state="FAILED",
        state_message="Workload failed, see run output for details",
        notebook_result=None,
        error="Exception: emulated notebook failure",
        error_trace=_FAIL_TRACE,
    ),
    # A real SKIPPED job run comes from the concurrency limit, so mimic that one.
    "skip": Behavior(
        phases=(("PENDING", 0.5),),
        final_state="SKIPPED",
        result_state="MAXIMUM_CONCURRENT_RUNS_REACHED",
        state_message="Skipping this run because the limit of 1 maximum concurrent runs has been reached.",
        notebook_result=None,
    ),
    "crash": Behavior(
        phases=(("PENDING", 0.5), ("RUNNING", 1.0)),
        final_state="INTERNAL_ERROR",
        result_state="FAILED",
        state_message="Run failed with an internal error in the Jobs service (emulated).",
        notebook_result=None,
        error="Internal error: the execution context was lost (emulated).",
    ),
    "timeout": Behavior(
        result_state="TIMEDOUT",
        state_message="Run timed out.",
        notebook_result=None,
        error="Run timed out.",
    ),
    "queued": Behavior(
        phases=(("QUEUED", 1.0), ("BLOCKED", 1.0), ("RUNNING", 2.0), ("TERMINATING", 0.5)),
    ),
}


_PREFIXES = ("fail", "skip", "crash", "timeout", "queued", "slow", "flaky")


def _by_prefix(name: str, attempt: int) -> Behavior | None:
    name = name.lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            if prefix == "slow":
                return BUILTIN_BEHAVIORS["success"].scaled(10.0)
            if prefix == "flaky":  # fails its first attempt only: a retry or a repair succeeds
                return BUILTIN_BEHAVIORS["fail" if attempt == 0 else "success"]
            return BUILTIN_BEHAVIORS[prefix]
    return None


def builtin_behavior(notebook_path: str, attempt: int = 0, task_key: str = "") -> Behavior:
    """The default scenario: by the prefix of the task key, else of the path's last segment."""
    name = (notebook_path or "").rstrip("/").rsplit("/", 1)[-1]
    return _by_prefix(task_key or "", attempt) or _by_prefix(name, attempt) or BUILTIN_BEHAVIORS["success"]


def task_source_path(task: dict) -> str:
    """What scenario rules match for a task: its notebook, script, wheel entry point, SQL or class."""
    if isinstance(task.get("notebook_task"), dict):
        return str(task["notebook_task"].get("notebook_path") or "")
    if isinstance(task.get("spark_python_task"), dict):
        return str(task["spark_python_task"].get("python_file") or "")
    if isinstance(task.get("python_wheel_task"), dict):
        wheel = task["python_wheel_task"]
        return f"{wheel.get('package_name') or ''}/{wheel.get('entry_point') or ''}"
    if isinstance(task.get("sql_task"), dict):
        sql = task["sql_task"]
        for kind, field_name in (("file", "path"), ("query", "query_id"), ("alert", "alert_id"),
                                 ("dashboard", "dashboard_id")):
            if isinstance(sql.get(kind), dict):
                return str(sql[kind].get(field_name) or "")
        return ""
    if isinstance(task.get("spark_jar_task"), dict):
        return str(task["spark_jar_task"].get("main_class_name") or "")
    return ""


@dataclass
class Scenario:
    """Rules by task-source-path glob plus a global time scale.

    ``rules`` is a list of ``(glob, Behavior)``; ``time_scale`` multiplies every duration,
    built-in ones included (0.01 turns the 3 s default run into 30 ms).
    """

    rules: list[tuple[str, Behavior]] = field(default_factory=list)
    time_scale: float = 1.0

    def behavior_for(self, notebook_path: str, attempt: int = 0, task_key: str = "") -> Behavior:
        path = notebook_path or ""
        for pattern, behavior in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                chosen = behavior
                break
        else:
            chosen = builtin_behavior(path, attempt, task_key)
        return chosen.scaled(self.time_scale) if self.time_scale != 1.0 else chosen

    def behavior_for_task(self, task: dict, attempt: int = 0) -> Behavior:
        """The behavior of one attempt (0, 1, … across retries and repairs) of a task."""
        return self.behavior_for(task_source_path(task), attempt, str(task.get("task_key") or ""))

    @classmethod
    def from_dict(cls, data: dict) -> "Scenario":
        """``{"time_scale": 1.0, "rules": [{"match": "*/nightly*", "phases": [["RUNNING", 86400]],
        "result_state": "SUCCESS", "notebook_result": "...", ...}]}``."""
        unknown = set(data) - {"time_scale", "rules"}
        if unknown:
            raise ValueError(f"unknown scenario fields: {sorted(unknown)}")
        rules = []
        for rule in data.get("rules", []):
            if "match" not in rule:
                raise ValueError("every scenario rule needs a 'match' glob")
            rules.append((rule["match"], Behavior.from_dict(rule)))
        time_scale = float(data.get("time_scale", 1.0))
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        return cls(rules=rules, time_scale=time_scale)

    @classmethod
    def load(cls, path: str) -> "Scenario":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict:
        return {
            "time_scale": self.time_scale,
            "rules": [{"match": glob, **b.to_dict()} for glob, b in self.rules],
        }
