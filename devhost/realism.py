"""devhost's realistic mode: the Durable extension's timing, not an instant in-memory queue
(DEVELOPMENT TOOL).

Without it devhost delivers an entity signal at once, reads entity state fresh and keeps one FIFO
per entity, so waiting figures are optimistic and races such as "the webhook arrives before the
run is registered" never happen. With it (``ReplayHost(realism=Realism(...))``):

* **Signal latency.** A signal reaches its entity only after the sender's episode is saved and the
  entity's control queue is polled; the Azure Storage backend backs that polling off to
  ``maxQueuePollingInterval`` (30 s by default) while a queue is idle. Each signal draws a latency
  from ``min_latency + (max_latency - min_latency) * u ** skew`` (``u`` uniform in [0, 1), from a
  ``random.Random(seed)``): with the default skew of 3 most signals land within a few seconds and
  a tail reaches the idle maximum. In virtual time it costs no wall time.
* **Stale reads.** ``read_entity_state`` returns the last saved state: operations still in flight
  are not in it (DurableTask.Core entities; the client reads the stored state).
* **Per-sender ordering.** Signals from one orchestration instance to one entity keep their order
  (DTFx entity message sorting); signals from different senders, and client signals, which are
  independent queue messages, may overtake one another.

Sources: DurableTask.AzureStorage ``AzureStorageOrchestrationServiceSettings.MaxQueuePollingInterval``
(30 s) and its back-off polling of control queues; the Durable docs on entity ordering (order is
guaranteed per sender only) and on reading entity state (the last saved state).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# DurableTask.AzureStorage: maxQueuePollingInterval default (host.json storageProvider).
IDLE_POLLING_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Realism:
    """The knobs of the realistic mode (see the module docstring)."""

    seed: int = 0
    min_latency: float = 0.05
    max_latency: float = IDLE_POLLING_MAX_SECONDS
    skew: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_latency <= self.max_latency:
            raise ValueError("Realism needs 0 <= min_latency <= max_latency")
        if self.skew <= 0:
            raise ValueError("Realism.skew must be positive")


class SignalScheduler:
    """When each signal arrives: a seeded latency, never before an earlier signal of the same
    sender to the same entity."""

    def __init__(self, realism: Realism) -> None:
        self.realism = realism
        self._rng = random.Random(realism.seed)
        self._last: Dict[Tuple[str, str, str], float] = {}

    def latency(self) -> float:
        r = self.realism
        return r.min_latency + (r.max_latency - r.min_latency) * self._rng.random() ** r.skew

    def arrival(self, sent_at: float, sender: Optional[str], entity: Tuple[str, str]) -> float:
        at = sent_at + self.latency()
        if sender is None:
            return at  # a client's signal is a queue message of its own: no order to keep
        key = (sender, entity[0], entity[1])
        at = max(at, self._last.get(key, at))
        self._last[key] = at
        return at

    def forget_sender(self, sender: str) -> None:
        """A finished instance sends nothing more (keeps the table small)."""
        for key in [k for k in self._last if k[0] == sender]:
            del self._last[key]
