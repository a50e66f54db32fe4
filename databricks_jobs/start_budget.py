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

Stores (`DATABRICKS_START_BUDGET_STORE`):
- `storage`: one blob per workspace and endpoint in the app's own storage account (the
  `AzureWebJobsStorage` connection, the one the Durable extension uses), changed only by conditional
  writes (If-Match its ETag): every worker sees one timeline. A worker takes `BLOCK` slots per write
  and hands them out to its own activities, so a burst costs a write per BLOCK starts, not per start;
  a slot of the block already in the past is dropped, never sent late.
- `worker`: the timeline in this process: right for one worker, and what devhost and the tests use.
- `auto` (default): `storage` when that connection is configured, else `worker`.
- `off`: no budget.
If the storage cannot be reached, the worker falls back to its own timeline (one warning): starts go
on, at worst with the 429s a per-worker timeline meets. docs/design.md says why a blob and not a
Durable entity, with the benchmark's figures. A slot is only a plan: the client still retries a 429
(Retry-After) if Databricks refuses a call anyway."""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Protocol

log = logging.getLogger(__name__)

RATE_SETTING = "DATABRICKS_RUN_NOW_RATE"
STORE_SETTING = "DATABRICKS_START_BUDGET_STORE"
DEFAULT_RATE = 20.0  # Databricks' published run-now limit per workspace
STORES = ("auto", "storage", "worker", "off")
STORAGE_CONNECTION = "AzureWebJobsStorage"
CONTAINER = "databricks-start-budget"
BLOCK = 5  # slots a worker takes per conditional write to the shared blob
# A timeline further ahead than this is not a backlog (72,000 starts at 20/s would be) but another
# clock's (tests on virtual clocks) or a clock that jumped: it starts again from now.
MAX_AHEAD_SECONDS = 3600.0
INLINE_WAIT_SECONDS = 1.0  # a slot this close is waited for in the activity; later ones by a durable timer
RUN_NOW = "jobs/run-now"

# Rows for the README's settings table (tools/settings_table): (name, default, meaning).
SETTINGS: tuple[tuple[str, str, str], ...] = (
    (RATE_SETTING, "20",
     "run-now requests per second the app allows itself in the workspace (Databricks allows 20); starts "
     "beyond it wait for their slot on a durable timer. `0` turns the start budget off."),
    (STORE_SETTING, "auto",
     "Where the start budget's timeline lives: `storage` (a blob in the `AzureWebJobsStorage` account, shared by "
     "every worker), `worker` (this worker's process), `auto` (`storage` when that connection is set, else "
     "`worker`) or `off`."),
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
            slot = _start(now, self._next.get(key, now))
            self._next[key] = slot + interval
            if holder is not None:
                if len(self._held) >= self.KEEP_HOLDERS:
                    del self._held[next(iter(self._held))]
                self._held[(key, holder)] = slot
            return slot


class BlobSlots:
    """The timeline in blobs of the app's storage account, one per key, shared by every worker.

    `container` is an azure.storage.blob ContainerClient (or anything with its `get_blob_client`,
    `create_container`). Each write is conditional on the blob's ETag, so two workers never take the
    same slot; a lost race reads again (a few times, with jitter). Slots are taken `block` at a time."""

    ATTEMPTS = 8

    def __init__(self, container: Any, block: int = BLOCK, fallback: Optional[WorkerSlots] = None):
        self._container = container
        self._block = max(int(block), 1)
        self._lock = threading.Lock()
        self._mine: Dict[str, Deque[float]] = {}
        self._held: Dict[tuple, float] = {}
        self._fallback = fallback or WorkerSlots()
        self._created = False
        self._warned = False
        self._fallback_until = float("-inf")

    def reserve(self, key: str, now: float, interval: float, holder: Optional[str] = None) -> float:
        with self._lock:
            if holder is not None and (key, holder) in self._held:
                return self._held[(key, holder)]
            mine = self._mine.setdefault(key, deque())
            while mine and mine[0] < now:
                mine.popleft()  # a slot already past: sending now would crowd someone else's
            if not mine and time.monotonic() < self._fallback_until:
                return self._fallback.reserve(key, now, interval, holder)
            if not mine:
                try:
                    mine.extend(self._take_block(key, now, interval))
                except Exception as exc:  # storage down or refusing: starts go on, on this worker's own timeline
                    self._fallback_until = time.monotonic() + FALLBACK_SECONDS
                    if not self._warned:
                        self._warned = True
                        log.warning("start budget: the shared timeline could not be read or written (%s); this worker "
                                    "keeps its own", type(exc).__name__)
                    return self._fallback.reserve(key, now, interval, holder)
            slot = mine.popleft()
            if holder is not None:
                if len(self._held) >= WorkerSlots.KEEP_HOLDERS:
                    del self._held[next(iter(self._held))]
                self._held[(key, holder)] = slot
            return slot

    def _take_block(self, key: str, now: float, interval: float) -> list:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        blob = self._container.get_blob_client(_blob_name(key))
        for attempt in range(self.ATTEMPTS):
            try:
                downloaded = blob.download_blob()
                state, etag = json.loads(downloaded.readall() or b"{}"), downloaded.properties.etag
            except ResourceNotFoundError:
                state, etag = {}, None
            start = _start(now, float(state.get("next", now)))
            block = [start + i * interval for i in range(self._block)]
            data = json.dumps({"next": start + self._block * interval}).encode()
            try:
                if etag is None:
                    self._ensure_container()
                    blob.upload_blob(data, overwrite=False)
                else:
                    blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
                return block
            except (ResourceModifiedError, ResourceExistsError):
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # another worker took slots meanwhile
        raise TimeoutError("the shared start budget stayed contended")

    def _ensure_container(self) -> None:
        if self._created:
            return
        from azure.core.exceptions import ResourceExistsError

        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        self._created = True


def _blob_name(key: str) -> str:
    """workspace|endpoint as a blob name: path characters kept readable, the rest escaped."""
    from urllib.parse import quote

    return quote(key.replace("https://", "").replace("|", "/"), safe="/-._") + ".json"


# A slot is worth little if it takes long to get: few quick retries, short timeouts, then the
# fallback (the storage SDK's default policy waits 15 s, 45 s, ... between attempts).
_QUICK = {"connection_timeout": 3, "read_timeout": 5}


def _quick_retry() -> Any:
    from azure.storage.blob import ExponentialRetry

    return ExponentialRetry(initial_backoff=0.2, increment_base=2, retry_total=2, random_jitter_range=0.1)
FALLBACK_SECONDS = 60.0  # after a storage failure, this worker's own timeline for this long


def storage_configured(env: Mapping[str, str]) -> bool:
    """Whether the AzureWebJobsStorage connection names a blob service: an identity-based connection,
    or a connection string that is not for other services only (one with a QueueEndpoint and no
    BlobEndpoint, as some local set-ups use, has none)."""
    if env.get(f"{STORAGE_CONNECTION}__blobServiceUri") or env.get(f"{STORAGE_CONNECTION}__accountName"):
        return True
    text = (env.get(STORAGE_CONNECTION) or "").strip()
    if not text:
        return False
    parts = {k.strip().lower() for k, _, _ in (item.partition("=") for item in text.split(";")) if k.strip()}
    if "blobendpoint" in parts or "usedevelopmentstorage" in parts:
        return True
    return "accountname" in parts and not parts & {"queueendpoint", "tableendpoint", "fileendpoint"}


def _container(env: Mapping[str, str]) -> Any:
    """The budget's container in the AzureWebJobsStorage account (connection string or identity)."""
    from azure.storage.blob import ContainerClient

    conn_str = (env.get(STORAGE_CONNECTION) or "").strip()
    if conn_str:
        return ContainerClient.from_connection_string(conn_str, CONTAINER, retry_policy=_quick_retry(), **_QUICK)
    from databricks_jobs import clouds

    try:  # the cloud's own storage suffix (sovereign clouds differ)
        uri = clouds.service_uri(env, STORAGE_CONNECTION, "blob")
    except clouds.UnknownCloud as exc:
        from databricks_jobs.errors import ConfigurationError

        raise ConfigurationError("AZURE_CLOUD", str(exc)) from None
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    # The Functions convention for identity-based connections, as messaging/storage_queues.py reads it.
    client_id = env.get(f"{STORAGE_CONNECTION}__clientId")
    if client_id or (env.get(f"{STORAGE_CONNECTION}__credential") or "").lower() == "managedidentity":
        credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    else:
        credential = DefaultAzureCredential()
    return ContainerClient(uri, CONTAINER, credential=credential, retry_policy=_quick_retry(), **_QUICK)


def _start(now: float, next_free: float) -> float:
    return now if next_free - now > MAX_AHEAD_SECONDS else max(now, next_free)


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
    store = (env.get(STORE_SETTING) or "").strip().lower() or "auto"
    if store not in STORES:
        raise ValueError(f"{STORE_SETTING} must be one of {', '.join(STORES)}, got {store!r}")
    if rate == 0 or store == "off":
        return None
    if store == "auto":
        store = "storage" if storage_configured(env) else "worker"
    if store == "storage":
        if not storage_configured(env):
            raise ValueError(f"{STORE_SETTING}=storage needs the {STORAGE_CONNECTION} connection")
        return StartBudget(rate, BlobSlots(_container(env), fallback=_worker_slots), workspace)
    return StartBudget(rate, _worker_slots, workspace)


_worker_slots = WorkerSlots()
_budget_lock = threading.Lock()
_budget: Optional[tuple] = None  # (environment it was built from, budget)


def get(workspace: str = "") -> Optional[StartBudget]:
    """The process-wide budget for `workspace` (built once per settings)."""
    global _budget
    key = (os.environ.get(RATE_SETTING), os.environ.get(STORE_SETTING), storage_configured(os.environ), workspace)
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
    caller that cannot wait on a timer: release 1.0's orchestrator, whose last workflows drain after
    an upgrade): no budget, since waiting here would hold an activity slot for as long as the queue."""
    if budget is None or urgent or not hand_back:
        return None
    now = clock()
    # Slots go on the timeline at the later of the orchestrator's time and now: an activity that
    # waited in the queue must not take a slot already past (it would be sent at once, beside the
    # slots of the moment). Only when the two clocks are plainly not the same one (a test's virtual
    # clock against the wall clock) is the orchestrator's alone used, since its timers run on it.
    base = now if at is None else (float(at) if abs(float(at) - now) > MAX_AHEAD_SECONDS else max(float(at), now))
    slot = held if held is not None else budget.reserve(RUN_NOW, base, holder)
    if slot - base > INLINE_WAIT_SECONDS:
        return slot
    wait = slot - max(base, now)
    if wait > 0:
        sleep(wait)
    return None


# Endpoints with a published 20/s limit that a burst of first starts of many definitions calls
# (createJob's lookups and creations): each attempt waits for its slot in the client, on the same
# shared timeline per endpoint. Short waits (a lookup is one call), so they are not handed back.
PACED = {"jobs/list": DEFAULT_RATE, "jobs/create": DEFAULT_RATE}


def pace(workspace: str, path: str) -> None:
    """Before an attempt to `path`: wait for a slot if the endpoint is paced and the budget is on."""
    rate = PACED.get(path)
    if rate is None:
        return
    budget = get(workspace)
    if budget is None:
        return
    now = clock()
    slot = budget.store.reserve(f"{workspace}|{path}", now, 1.0 / rate)
    if slot > now:
        sleep(slot - now)
