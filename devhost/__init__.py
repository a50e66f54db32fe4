"""devhost: a DEVELOPMENT stand-in for the Azure Functions host (not used in production).

Production runs on the Durable Task extension inside Azure Functions. devhost lets you run and
test the same function app locally without the Functions host or Core Tools:

* ``devhost.clock``      - ``VirtualClock`` / ``RealClock`` shared with the Jobs API emulator;
* ``devhost.replay``     - ``ReplayHost``: orchestrations through the real azure-functions-durable
                           replay engine over synthesized history, activities in-process;
* ``devhost.management`` - the Durable extension's management HTTP API on loopback, so the real
                           ``DurableOrchestrationClient`` works unmodified;
* ``devhost.serve``      - one loopback HTTP server for the app's HTTP functions, the management
                           API, Event Grid deliveries and admin invocations (``python -m devhost``);
* ``devhost.queues``     - queue triggers fed from a real Storage queue (Azurite) with the host's
                           retries and poison-queue move;
* ``devhost.extension``  - what the Durable extension and DTFx do (failure text, limits, the
                           out-of-proc replay gate), with sources;
* ``devhost.schedules``  - NCRONTAB / TimeSpan schedules of timer triggers;
* ``devhost.history_check`` - replay the current orchestrator over recorded histories;
* ``devhost.realism``    - the realistic mode: the extension's entity-signal latency, stale entity
                           reads, per-sender ordering (``ReplayHost(realism=Realism(seed=...))``).
"""
from .clock import RealClock, VirtualClock
from .realism import Realism
from .replay import (DevhostError, DurableOptions, FunctionNotFoundError,
                     InstanceAlreadyExistsError, InstanceGoneError, InstanceNotFoundError,
                     InvalidInstanceIdError, NonDeterminismError, OrchestrationStuckError,
                     ReplayHost)

__all__ = [
    "RealClock", "VirtualClock", "ReplayHost", "DevhostError", "FunctionNotFoundError",
    "InstanceAlreadyExistsError", "InstanceGoneError", "InstanceNotFoundError",
    "InvalidInstanceIdError", "NonDeterminismError", "OrchestrationStuckError", "DurableOptions",
    "Realism",
]
