"""devhost's realistic mode (devhost.realism): delayed entity signals, stale entity reads,
per-sender ordering; and the extension's Reject back-off, which applies in every mode."""
import logging
import time

import pytest

from devhost import DurableOptions, ReplayHost
from devhost.realism import Realism


@pytest.fixture
def real_host(app, clock):
    h = ReplayHost(app, clock, realism=Realism(seed=7))
    yield h
    h.stop()


def test_a_signal_arrives_after_a_latency_and_reads_are_stale_until_then(real_host, clock):
    start = clock.now()
    real_host.signal_entity("Counter", "k", "add", 5)
    assert real_host.run_until_idle() == 0  # nothing has arrived yet
    assert real_host.read_entity_state("Counter", "k") == {"entityExists": False, "entityState": None}
    arrival = real_host.next_timer_at()
    assert start + 0.05 <= arrival <= start + 30.0
    clock.advance_to(arrival)
    real_host.run_until_idle()
    assert real_host.read_entity_state("Counter", "k") == {"entityExists": True, "entityState": 5}


def test_latencies_are_seeded_spread_and_bounded(app, clock):
    def latencies(seed):
        h = ReplayHost(app, clock, realism=Realism(seed=seed, max_latency=30.0))
        return [h._signals.latency() for _ in range(400)]

    first = latencies(3)
    assert first == latencies(3) and first != latencies(4)  # the seed decides
    assert all(0.05 <= x <= 30.0 for x in first)
    assert sorted(first)[len(first) // 2] < 5.0  # most land within a few seconds
    assert max(first) > 20.0  # and a tail reaches the idle-polling maximum


def test_the_default_host_delivers_at_once(host):
    host.signal_entity("Counter", "k", "add", 1)
    assert host.run_until_idle() == 1
    assert host.read_entity_state("Counter", "k")["entityState"] == 1


def test_one_senders_signals_keep_their_order(real_host, clock):
    iid = real_host.start_new("signals_journal", client_input=list(range(12)))
    real_host.run_until_complete(iid)
    while real_host.next_timer_at() is not None:  # the tail of the signals
        clock.advance_to(real_host.next_timer_at())
        real_host.run_until_idle()
    assert real_host.read_entity_state("Journal", "one")["entityState"] == list(range(12))


def test_signals_of_different_senders_may_overtake_one_another(real_host, clock):
    for item in range(12):  # client signals: each one a queue message of its own
        real_host.signal_entity("Journal", "one", "append", item)
    started = time.monotonic()
    while real_host.next_timer_at() is not None:
        clock.advance_to(real_host.next_timer_at())
        real_host.run_until_idle()
    assert time.monotonic() - started < 5  # virtual time: the latencies cost no wall time
    state = real_host.read_entity_state("Journal", "one")["entityState"]
    assert sorted(state) == list(range(12)) and state != list(range(12))


# ------------------------------------------------------------------ Reject, as the extension does it

def test_reject_abandons_with_the_backends_backoff_and_log_lines(app, clock, caplog):
    caplog.set_level(logging.WARNING, logger="DurableTask.AzureStorage")
    host = ReplayHost(app, clock, durable_options=DurableOptions(default_version="1.0"))
    iid = host.start_new("versioned", version="2.0")
    start = clock.now()
    retries = []
    for _ in range(12):
        host.run_until_idle()
        retries.append(round(host.next_timer_at() - clock.now()))
        clock.advance_to(host.next_timer_at())
    # 2^n seconds, n the dequeue count, capped at 600 s.
    assert retries == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]
    host.run_until_idle()  # visible again: rejected a 13th time
    assert host.get_status(iid)["runtimeStatus"] == "Pending"  # a never-started instance stays so
    text = [r.getMessage() for r in caplog.records if r.name == "DurableTask.AzureStorage"]
    assert text[0] == (f"{iid}: Abandoning ExecutionStarted message back to devhosthub-control-00 "
                       f"and setting a visibility delay of 2ms")
    poison = [t for t in text if "is now considered poison" in t]
    assert len(poison) == 4 and "has been dequeued 10 times" in poison[0]
    assert not any("version" in t.lower() for t in text)  # nothing names a version mismatch
    # A worker with 2.0 code takes it when the message is visible again.
    host.replace_app(app, durable_options=DurableOptions(default_version="2.0"))
    host.run_until_idle()
    assert host.get_status(iid)["runtimeStatus"] == "Pending"  # still invisible
    assert host.run_until_complete(iid)["output"] == {"version": "2.0"}
    assert clock.now() - start > 3000
