"""Storage queue listener for the app's queue-triggered functions (DEVELOPMENT TOOL).

Production runs on the Azure Functions host, whose Storage queues extension (5.x) polls the queue
and hands each message to the Python worker. devhost does the same against a real queue service
(Azurite locally) with azure-storage-queue, following the extension's ``QueueListener`` and
``QueueProcessor`` (Microsoft.Azure.WebJobs.Extensions.Storage.Queues):

* one listener per function with a ``queueTrigger`` binding; the binding's ``connection`` names the
  app setting holding a connection string (``UseDevelopmentStorage=true`` means Azurite's default
  account on 127.0.0.1:10001);
* messages are received in batches (``batchSize``, 16) with a 10-minute visibility timeout, as the
  host does (devhost does not renew it: a function running longer than that may see its message
  again);
* ``messageEncoding`` ``base64`` (the default) decodes the text; text that is not base64 is moved to
  ``<queue>-poison`` at once, without invoking the function ("Message decoding has failed! Check
  MessageEncoding settings"), as the extension does; ``none`` passes the text through;
* a message whose dequeue count already exceeds ``maxDequeueCount`` is poisoned without invoking;
* success deletes the message; failure releases it (visible again after host.json
  ``visibilityTimeout``, default 00:00:00), or, once ``dequeue_count >= maxDequeueCount``, copies
  its text unchanged to ``<queue>-poison`` (created if missing) and deletes the original. The
  function therefore runs at most ``maxDequeueCount`` times per message;
* polling backs off exponentially with jitter from 100 ms to ``maxPollingInterval`` (default one
  minute) while the queue is empty, and returns to 100 ms as soon as it finds messages.

Messages are processed one at a time per listener (the host runs a batch in parallel).
Identity-based connections (``<name>__queueServiceUri``) are not supported here: such a listener
is skipped with a log line, as is one whose setting is missing or whose service is unreachable.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import random
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter

from .functions import FunctionInfo

log = logging.getLogger("devhost.queues")

# Azurite's well-known development account (public and documented; not a secret).
AZURITE_DEFAULT = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                   "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                   "KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")
MIN_POLLING_INTERVAL = 0.1          # QueuePollingIntervals.Minimum
RECEIVE_VISIBILITY_TIMEOUT = 600    # the host's QueueListener receives for 10 minutes
POISON_SUFFIX = "-poison"


# ---------------------------------------------------------------------- host.json options

@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``, with the extension's defaults. Times in seconds."""

    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    batch_size: int = 16
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Optional[Path], **overrides: Any) -> "QueueOptions":
        section: Dict[str, Any] = {}
        if path is not None and Path(path).is_file():
            data = json.loads(Path(path).read_text("utf-8"))
            section = ((data.get("extensions") or {}).get("queues") or {})
        options = cls()
        values: Dict[str, Any] = {}
        if "maxDequeueCount" in section:
            values["max_dequeue_count"] = int(section["maxDequeueCount"])
        if "visibilityTimeout" in section:
            values["visibility_timeout"] = parse_timespan(section["visibilityTimeout"])
        if "maxPollingInterval" in section:
            values["max_polling_interval"] = parse_timespan(section["maxPollingInterval"])
        if "batchSize" in section:
            values["batch_size"] = int(section["batchSize"])
        if "messageEncoding" in section:
            values["message_encoding"] = str(section["messageEncoding"]).lower()
        values.update(overrides)
        options = dataclasses.replace(options, **values)
        if options.max_dequeue_count < 1:
            raise ValueError("host.json extensions.queues.maxDequeueCount must be at least 1")
        if options.message_encoding not in ("base64", "none"):
            raise ValueError(f"host.json extensions.queues.messageEncoding must be base64 or none, "
                             f"not {options.message_encoding!r}")
        return options


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$")


def parse_timespan(value: Any) -> float:
    """A .NET TimeSpan (``[d.]hh:mm:ss[.fff]``) in seconds; a bare number is milliseconds (the
    host.json v1 form of ``maxPollingInterval``)."""
    if isinstance(value, (int, float)):
        return float(value) / 1000.0
    m = _TIMESPAN.match(str(value).strip())
    if not m:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def host_json_for(app) -> Optional[Path]:
    """host.json next to the module that defines ``app`` (function_app.py), else in the cwd."""
    for module in list(sys.modules.values()):
        try:
            if any(value is app for value in vars(module).values()) and getattr(module, "__file__", None):
                candidate = Path(module.__file__).resolve().parent / "host.json"
                if candidate.is_file():
                    return candidate
        except TypeError:
            continue
    candidate = Path.cwd() / "host.json"
    return candidate if candidate.is_file() else None


# ---------------------------------------------------------------------- connections

def resolve_connection(name: Optional[str], env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The connection string the binding's ``connection`` names, or None when not configured.

    ``<name>`` then ``AzureWebJobs<name>``; an empty name means ``AzureWebJobsStorage``."""
    env = os.environ if env is None else env
    name = name or "AzureWebJobsStorage"
    value = env.get(name) or env.get(f"AzureWebJobs{name}") or ""
    value = value.strip()
    if not value:
        return None
    if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
        return AZURITE_DEFAULT
    return value


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Binding expressions ``%NAME%`` resolved from app settings."""
    return re.sub(r"%([^%]+)%", lambda m: env.get(m.group(1), m.group(0)), text)


# ---------------------------------------------------------------------- the listener

class QueueListener:
    """Polls one queue for one queue-triggered function; ``start()`` / ``stop()``."""

    def __init__(self, info: FunctionInfo, queue_client, poison_client, options: QueueOptions,
                 invoke: Callable[[FunctionInfo, Any], None]) -> None:
        self.info = info
        self.queue = queue_client
        self.poison = poison_client
        self.options = options
        self.invoke = invoke
        self.queue_name: str = queue_client.queue_name
        self.poison_queue_name: str = poison_client.queue_name
        # What happened to each delivery, oldest first:
        # {"id", "dequeueCount", "outcome": deleted|released|poisoned|undecodable|exceeded, "error"}.
        self.deliveries: List[Dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._delay = MIN_POLLING_INTERVAL

    def start(self) -> "QueueListener":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"devhost-queue-{self.queue_name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -------------------------------------------------------------- polling

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.poll_once()
            except Exception as exc:  # the host logs listener errors and keeps polling
                log.warning("queue %s: polling failed: %s", self.queue_name, exc)
                found = 0
            self._stop.wait(self._next_delay(found > 0))

    def _next_delay(self, found: bool) -> float:
        floor = MIN_POLLING_INTERVAL  # the host refuses a maxPollingInterval under 100 ms
        cap = max(self.options.max_polling_interval, floor)
        if found:
            self._delay = floor
        else:  # randomized exponential backoff, as RandomizedExponentialBackoffStrategy
            self._delay = min(cap, max(self._delay, floor) * 2 * random.uniform(0.8, 1.2))
        return self._delay

    def poll_once(self) -> int:
        """Receive one batch and process it; returns how many messages were received."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            batch = list(self.queue.receive_messages(messages_per_page=self.options.batch_size,
                                                     max_messages=self.options.batch_size,
                                                     visibility_timeout=RECEIVE_VISIBILITY_TIMEOUT))
        except ResourceNotFoundError:
            return 0  # the queue does not exist yet: back off, as the host does
        for message in batch:
            if self._stop.is_set():
                break  # left invisible; it comes back after the receive visibility timeout
            self.process(message)
        return len(batch)

    # -------------------------------------------------------------- one message

    def process(self, message) -> None:
        max_count = self.options.max_dequeue_count
        if message.dequeue_count > max_count:
            self._poison(message, "exceeded", f"dequeue count {message.dequeue_count} > {max_count}")
            return
        try:
            body = self._decode(message.content)
        except ValueError:
            log.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s.",
                        message.id)
            self._poison(message, "undecodable", "not base64 (messageEncoding base64)")
            return
        value = function_message(message, body)
        try:
            self.invoke(self.info, value)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("Executed 'Functions.%s' (Failed, message %s, dequeue count %s/%s): %s",
                        self.info.name, message.id, message.dequeue_count, max_count, error)
            if message.dequeue_count >= max_count:
                self._poison(message, "poisoned", error)
            else:
                self._release(message, error)
            return
        self._delete(message)
        self._record(message, "deleted", None)

    def _decode(self, content: Optional[str]) -> bytes:
        text = content or ""
        if self.options.message_encoding == "none":
            return text.encode("utf-8")
        # .NET's Convert.FromBase64String skips whitespace; anything else must be base64.
        compact = re.sub(r"[ \t\r\n]", "", text)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(str(exc)) from None

    def _release(self, message, error: str) -> None:
        from azure.core.exceptions import HttpResponseError

        try:  # by id, so the text stays exactly as the producer wrote it
            self.queue.update_message(message.id, pop_receipt=message.pop_receipt,
                                      visibility_timeout=int(round(self.options.visibility_timeout)))
        except HttpResponseError as exc:  # receipt mismatch, message or queue gone: nothing to release
            log.debug("queue %s: releasing %s failed: %s", self.queue_name, message.id, exc)
        self._record(message, "released", error)

    def _poison(self, message, outcome: str, error: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        log.warning("Message has reached MaxDequeueCount of %s. Moving message to queue '%s'.",
                    self.options.max_dequeue_count, self.poison_queue_name)
        try:
            self.poison.create_queue()
        except ResourceExistsError:
            pass
        self.poison.send_message(message.content)  # the text as received, unchanged
        self._delete(message)
        self._record(message, outcome, error)

    def _delete(self, message) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self.queue.delete_message(message.id, message.pop_receipt)
        except HttpResponseError as exc:
            log.debug("queue %s: deleting %s failed: %s", self.queue_name, message.id, exc)

    def _record(self, message, outcome: str, error: Optional[str]) -> None:
        self.deliveries.append({"id": message.id, "dequeueCount": message.dequeue_count,
                                "outcome": outcome, "error": error})


def function_message(message, body: bytes):
    """The ``azure.functions.QueueMessage`` the Python worker builds from the host's trigger data."""
    fmt = "%Y-%m-%dT%H:%M:%S+00:00"

    def stamp(value: Optional[datetime], default: timedelta) -> str:
        value = value or datetime.now(timezone.utc) + default
        return value.astimezone(timezone.utc).strftime(fmt)

    metadata = {
        "Id": meta.Datum(message.id, "string"),
        "DequeueCount": meta.Datum(int(message.dequeue_count or 1), "int"),
        "InsertionTime": meta.Datum(stamp(message.inserted_on, timedelta(0)), "string"),
        "ExpirationTime": meta.Datum(stamp(message.expires_on, timedelta(days=7)), "string"),
        "NextVisibleTime": meta.Datum(stamp(message.next_visible_on,
                                            timedelta(seconds=RECEIVE_VISIBILITY_TIMEOUT)), "string"),
        "PopReceipt": meta.Datum(message.pop_receipt, "string"),
    }
    try:
        datum = meta.Datum(body.decode("utf-8"), "string")
    except UnicodeDecodeError:
        datum = meta.Datum(body, "bytes")
    return QueueMessageInConverter.decode(datum, trigger_metadata=metadata)


# ---------------------------------------------------------------------- wiring

def start_queue_listeners(functions: Mapping[str, FunctionInfo], invoke: Callable[[FunctionInfo, Any], None],
                          *, host_json: Optional[Path] = None, env: Optional[Mapping[str, str]] = None,
                          **overrides: Any) -> List[QueueListener]:
    """Start a listener for every queue-triggered function whose connection resolves and answers.

    ``overrides`` replace host.json values (``visibility_timeout=0, max_polling_interval=0.2`` in
    tests). Functions that cannot be served are logged and skipped."""
    queue_functions = [f for f in functions.values() if f.trigger_type == "queueTrigger"]
    if not queue_functions:
        return []
    env = os.environ if env is None else env
    options = QueueOptions.from_host_json(host_json, **overrides)
    listeners: List[QueueListener] = []
    for info in queue_functions:
        listener = _listener_for(info, options, invoke, env)
        if listener is not None:
            listeners.append(listener.start())
            log.info("queue trigger %s listening on %s (maxDequeueCount %s, visibilityTimeout %ss)",
                     info.name, listener.queue_name, options.max_dequeue_count, options.visibility_timeout)
    return listeners


def _listener_for(info: FunctionInfo, options: QueueOptions, invoke, env) -> Optional[QueueListener]:
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.queue import QueueClient

    connection = info.trigger.get("connection") or "AzureWebJobsStorage"
    queue_name = _expand(str(info.trigger.get("queueName") or ""), env).lower()
    conn_str = resolve_connection(connection, env)
    if conn_str is None:
        if env.get(f"{connection}__queueServiceUri") or env.get(f"{connection}__accountName"):
            log.warning("queue trigger %s not started: devhost supports connection strings only, "
                        "%s is identity-based", info.name, connection)
        else:
            log.info("queue trigger %s not started: app setting %s is not set", info.name, connection)
        return None
    try:
        kwargs = dict(connection_timeout=3, read_timeout=30, retry_total=1)
        queue = QueueClient.from_connection_string(conn_str, queue_name, **kwargs)
        poison = QueueClient.from_connection_string(conn_str, queue_name + POISON_SUFFIX, **kwargs)
        try:
            queue.get_queue_properties(retry_total=0)
        except ResourceNotFoundError:
            pass  # reachable; the queue is simply not created yet
    except (AzureError, ValueError) as exc:
        log.warning("queue trigger %s not started: storage connection %s (queue %s) is not usable: %s",
                    info.name, connection, queue_name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return QueueListener(info, queue, poison, options, invoke)


def stop_queue_listeners(listeners: List[QueueListener]) -> None:
    for listener in listeners:
        listener._stop.set()
    for listener in listeners:
        listener.stop()
