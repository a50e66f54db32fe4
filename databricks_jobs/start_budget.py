"""The start budget: run-now calls spaced at the workspace's rate, shared by every worker.

Databricks allows about 20 run-now requests per second per workspace and answers the rest 429. A
thousand workflows started together would otherwise send a thousand run-nows at once, each worker
retrying its 429s on its own with no idea of the others (issue 18). Instead each run-now first takes a
slot: the next free instant on a timeline spaced 1 / rate seconds apart (`reserve`). The slots live
in a store every worker sees, so the workers together keep to the rate.

- A slot within `INLINE_WAIT_SECONDS` is waited for in the activity, then the call is sent.
- A later slot is handed back to the orchestrator (`{"notBefore": epoch seconds}`), which waits for
  it on a durable timer, holding no worker and no activity slot, and calls again with the slot it
  holds: so a burst never fills the workers' activity slots with waiting starts, and a cancel or a
  deadline poll (runs/cancel, runs/get: other endpoints, never budgeted here) never waits behind
  them. The wait is the orchestrator's, so a cancel or the deadline ends it at once, before any
  run-now was sent.
- A call the orchestrator marks `urgent` (the follow-up run-now after a cancel, which must find a
  run an earlier attempt may have started) skips the budget.

Stores (`DATABRICKS_START_BUDGET_STORE`): `worker` keeps the timeline in this process (right for one
worker, and what devhost and the tests use); `off` disables the budget. The store is a small
interface (`reserve(key, now, interval) -> slot`) so a shared one (a Durable entity, or a blob with
conditional writes in the app's storage account) can be put behind it; docs/design.md says why the
benchmark's shared timeline stands for one and what each would cost. A slot is only a plan: the
client still retries a 429 (Retry-After) if Databricks refuses a call anyway."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Protocol

RATE_SETTING = "DATABRICKS_RUN_NOW_RATE"
STORE_SETTING = "DATABRICKS_START_BUDGET_STORE"
DEFAULT_RATE = 20.0  # Databricks' published run-now limit per workspace
STORES = ("worker", "off")
INLINE_WAIT_SECONDS = 1.0  # a slot this close is waited for in the activity; later ones by a durable timer
RUN_NOW = "jobs/run-now"

# Rows for the README's settings table (tools/settings_table): (name, default, meaning).
SETTINGS: tuple[tuple[str, str, str], ...] = (
    (RATE_SETTING, "20",
     "run-now requests per second the app allows itself in the workspace (Databricks allows 20); starts "
     "beyond it wait for their slot on a durable timer. `0` turns the start budget off."),
    (STORE_SETTING, "worker",
     "Where the start budget's timeline lives: `worker` (this worker's process) or `off`."),
)

# Overridable by tests and the benchmark (virtual time); epoch seconds, since slots are compared
# with the orchestrator's durable timers.
clock: Callable[[], float] = time.time
sleep: Callable[[float], None] = time.sleep


class SlotStore(Protocol):
    def reserve(self, key: str, now: float, interval: float, holder: Optional[str] = None) -> float:
        """The next free slot at or after `now` on timeline `key`, spaced `interval` apart, taken;
        the same slot again for the same `holder` (an activity delivered twice takes one slot)."""


class WorkerSlots:
    """A timeline per key in this process: exact for one worker, and for threads sharing it."""

    KEEP_HOLDERS = 10_000  # slots remembered by holder; the oldest are forgotten beyond this

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: Dict[str, float] = {}
        self._held: Dict[tuple, float] = {}

    def reserve(self, key: str, now: float, interval: float, holder: Optional[str] = None) -> float:
        with self._lock:
            if holder is not None and (key, holder) in self._held:
                return self._held[(key, holder)]
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + interval
            if holder is not None:
                if len(self._held) >= self.KEEP_HOLDERS:
                    del self._held[next(iter(self._held))]
                self._held[(key, holder)] = slot
            return slot


class StartBudget:
    def __init__(self, rate: float, store: SlotStore, workspace: str = ""):
        if rate <= 0:
            raise ValueError("the start budget's rate must be > 0")
        self.rate = rate
        self.interval = 1.0 / rate
        self.store = store
        self.workspace = workspace

    def reserve(self, endpoint: str = RUN_NOW, now: Optional[float] = None, holder: Optional[str] = None) -> float:
        return self.store.reserve(f"{self.workspace}|{endpoint}", clock() if now is None else now, self.interval,
                                  holder)


def from_env(environ: Optional[Mapping[str, str]] = None, workspace: str = "") -> Optional[StartBudget]:
    """The budget these settings ask for, or None (off). ValueError names the setting."""
    env = os.environ if environ is None else environ
    text = (env.get(RATE_SETTING) or "").strip() or str(DEFAULT_RATE)
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{RATE_SETTING} must be a number of requests per second, got {text!r}") from None
    if rate < 0 or rate != rate or rate == float("inf"):
        raise ValueError(f"{RATE_SETTING} must be >= 0")
    store = (env.get(STORE_SETTING) or "").strip().lower() or "worker"
    if store not in STORES:
        raise ValueError(f"{STORE_SETTING} must be one of {', '.join(STORES)}, got {store!r}")
    if rate == 0 or store == "off":
        return None
    return StartBudget(rate, _worker_slots, workspace)


_worker_slots = WorkerSlots()
_budget_lock = threading.Lock()
_budget: Optional[tuple] = None  # (environment it was built from, budget)


def get(workspace: str = "") -> Optional[StartBudget]:
    """The process-wide budget for `workspace` (built once per settings)."""
    global _budget
    key = (os.environ.get(RATE_SETTING), os.environ.get(STORE_SETTING), workspace)
    with _budget_lock:
        if _budget is None or _budget[0] != key:
            _budget = (key, from_env(workspace=workspace))
        return _budget[1]


def reset() -> None:
    """Forget every slot and the built budget (tests)."""
    global _budget, _worker_slots
    with _budget_lock:
        _budget = None
        _worker_slots = WorkerSlots()


def take_slot(budget: Optional[StartBudget], held: Optional[float], urgent: bool = False,
              hand_back: bool = True, at: Optional[float] = None, holder: Optional[str] = None) -> Optional[float]:
    """Before a run-now: None to send it now (after waiting up to INLINE_WAIT_SECONDS for the slot),
    or the slot (epoch seconds) to hand back to the orchestrator, which waits for it on a timer.

    `held`: a slot an earlier call of this workflow was given; `holder`: who asks (the run key), so
    a repeated delivery of the same call gets the same slot. `at`: the orchestrator's time when it
    asked (epoch seconds): slots are laid out on the clock its timers run on. `hand_back=False` (a
    caller that cannot wait on a timer): the slot is waited for here, however far."""
    if budget is None or urgent:
        return None
    now = clock()
    base = now if at is None else float(at)
    slot = held if held is not None else budget.reserve(RUN_NOW, base, holder)
    if hand_back and slot - base > INLINE_WAIT_SECONDS:
        return slot
    wait = slot - max(base, now)
    if wait > 0:
        sleep(wait)
    return None
