"""The start budget's shared timeline in blob storage (databricks_jobs/start_budget.py, BlobSlots),
against a real blob service (azurite-blob on loopback): several workers taking slots at once never
get the same slot nor two closer than the interval, and a worker that cannot reach storage keeps
starting on its own timeline."""
from __future__ import annotations

import threading
import time

import pytest

from databricks_jobs import start_budget
from devhost.azurite import DEV_ACCOUNT, DEV_KEY, _free_port


@pytest.fixture
def blob_connection_string(azurite_blob):
    """The shared azurite-blob service (tests/conftest.py)."""
    return azurite_blob.connection_string


def _worker(connection_string):
    env = {start_budget.STORAGE_CONNECTION: connection_string}
    return start_budget.BlobSlots(start_budget._container(env))


def test_workers_sharing_the_blob_timeline_never_crowd_a_slot(blob_connection_string):
    workers = [_worker(blob_connection_string) for _ in range(3)]
    slots, lock = [], threading.Lock()

    def take(worker):
        for _ in range(12):
            slot = worker.reserve("https://adb-1.azuredatabricks.net|jobs/run-now", 1000.0, 0.05)
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=take, args=(w,)) for w in workers for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(slots) == 3 * 3 * 12
    ordered = sorted(slots)
    assert len(set(round(s, 6) for s in ordered)) == len(ordered)  # no slot twice
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(ordered, ordered[1:]))  # never closer than the interval
    # Blocks of BLOCK per write: the timeline holds at most one unfinished block per worker beyond the slots used.
    assert ordered[-1] - ordered[0] <= 0.05 * (len(ordered) - 1 + 3 * start_budget.BLOCK)


def test_the_same_holder_gets_the_same_slot_and_past_slots_are_dropped(blob_connection_string):
    worker = _worker(blob_connection_string)
    key = "https://adb-2.azuredatabricks.net|jobs/run-now"
    first = worker.reserve(key, 2000.0, 1.0, holder="run-key-1")
    assert worker.reserve(key, 2000.0, 1.0, holder="run-key-1") == first  # a repeated delivery
    later = worker.reserve(key, 2010.0, 1.0)  # the rest of the block (2001..2004) is past: not used
    assert later >= 2010.0


def test_without_storage_a_worker_keeps_its_own_timeline(caplog):
    dead = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{_free_port()}/{DEV_ACCOUNT};")
    worker = _worker(dead)
    started = time.monotonic()
    assert [worker.reserve("k|jobs/run-now", 500.0, 0.5) for _ in range(3)] == [500.0, 500.5, 501.0]
    assert time.monotonic() - started < 10  # a couple of quick retries, then its own timeline
    warnings = [r for r in caplog.records if "start budget" in r.getMessage()]
    assert len(warnings) == 1 and "keeps its own" in warnings[0].getMessage()


def test_auto_picks_storage_when_the_app_has_it():
    budget = start_budget.from_env({start_budget.STORAGE_CONNECTION: "UseDevelopmentStorage=true"})
    assert isinstance(budget.store, start_budget.BlobSlots)
    assert isinstance(start_budget.from_env({}).store, start_budget.WorkerSlots)
    queues_only = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k;QueueEndpoint=http://127.0.0.1:1/a;"
    assert isinstance(start_budget.from_env({start_budget.STORAGE_CONNECTION: queues_only}).store,
                      start_budget.WorkerSlots)  # no blob service named: this worker's own timeline
    assert start_budget.storage_configured({"AzureWebJobsStorage__accountName": "acct"})
    assert start_budget.storage_configured(
        {start_budget.STORAGE_CONNECTION: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;"
                                          "EndpointSuffix=core.windows.net"})
    with pytest.raises(ValueError, match="AzureWebJobsStorage"):
        start_budget.from_env({start_budget.STORE_SETTING: "storage"})
