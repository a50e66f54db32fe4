"""A PROPOSAL measured by the tuning explorer (`python -m bench.waiting --explore cadence`), not
code the app runs: a list cadence for the run watcher that keeps the cost rule of
workflow.watch.list_interval ("never costlier per run than polling on its own") over each run's
whole life instead of at each instant.

Today the interval is `urgent * pages / len(awaited)`: when runs of a batch end and fewer remain
awaited, each list is shared by fewer runs, so the watcher lists less often and the last runs of
the batch are noticed late (N = 25, T = 24 h: mean lag about 20 s where Airflow's is 15 s), although
they paid a small share of each earlier list. Here each awaited run keeps the share it has paid
(pages / awaited, per list), and the watcher lists at a tick whenever that keeps at least one run
within what its own polls would have cost by its age (OWN_SCHEDULE counted from 0). One run alone
lists exactly on its own schedule, as today; a batch lists every tick, and its tail spends the
credit the batch saved.

The prototype keeps the paid shares in the watcher's process memory (as `run_watcher.memory`
keeps pages); the app would keep them in the registry entries. It replaces
workflow.watch.list_interval inside the simulation's process only."""
from __future__ import annotations

import bisect
import math
from typing import Dict, List, Mapping

_paid: Dict[int, float] = {}
_polls: List[float] = []  # ages at which a run polling on its own polls (0 first)


def own_polls_by(age: float) -> int:
    """How many polls a run polling on its own (OWN_SCHEDULE) has made by this age."""
    from workflow import policy

    while not _polls or _polls[-1] < age:
        last = _polls[-1] if _polls else None
        _polls.append(0.0 if last is None else last + policy.OWN_SCHEDULE.delay_at(last))
    return bisect.bisect_right(_polls, age)


def list_interval(awaited: Mapping[int, dict], now: float, *, tick: float, pages: int, check_every) -> float:
    if not awaited:
        _paid.clear()
        return math.inf
    for gone in set(_paid) - set(awaited):
        del _paid[gone]
    share = max(1, pages) / len(awaited)
    if any(_paid.get(run_id, 0.0) + share <= own_polls_by(max(0.0, now - float(entry.get("since") or now)))
           for run_id, entry in awaited.items()):
        for run_id in awaited:
            _paid[run_id] = _paid.get(run_id, 0.0) + share
        return float(tick)
    return math.inf
