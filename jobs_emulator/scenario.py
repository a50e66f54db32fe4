"""What a run does: its phases, how long each lasts, and how it ends.

A :class:`Scenario` maps notebook paths (``fnmatch`` globs, first match wins) to a
:class:`Behavior`. Paths that match no rule fall back to the built-in choice by the path's
last segment (``fail…``, ``skip…``, ``crash…``, ``timeout…``, ``slow…``, ``queued…``, else
success). The same fields load from JSON, see :meth:`Scenario.from_dict`.
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
    "fail": Behavior(
        result_state="FAILED",
        state_message="Task main failed with message: Workload failed, see run output for details.",
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


def builtin_behavior(notebook_path: str) -> Behavior:
    """The default scenario: choose by the prefix of the path's last segment."""
    name = (notebook_path or "").rstrip("/").rsplit("/", 1)[-1].lower()
    for prefix in ("fail", "skip", "crash", "timeout", "queued"):
        if name.startswith(prefix):
            return BUILTIN_BEHAVIORS[prefix]
    if name.startswith("slow"):
        return BUILTIN_BEHAVIORS["success"].scaled(10.0)
    return BUILTIN_BEHAVIORS["success"]


@dataclass
class Scenario:
    """Rules by notebook-path glob plus a global time scale.

    ``rules`` is a list of ``(glob, Behavior)``; ``time_scale`` multiplies every duration,
    built-in ones included (0.01 turns the 3 s default run into 30 ms).
    """

    rules: list[tuple[str, Behavior]] = field(default_factory=list)
    time_scale: float = 1.0

    def behavior_for(self, notebook_path: str) -> Behavior:
        path = notebook_path or ""
        for pattern, behavior in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                chosen = behavior
                break
        else:
            chosen = builtin_behavior(path)
        return chosen.scaled(self.time_scale) if self.time_scale != 1.0 else chosen

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
