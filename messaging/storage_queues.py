"""Writing messages to Storage queues the way the Functions queue trigger reads them.

The queue extension (5.x) base64-decodes messages by default (host.json `messageEncoding`), so
messages are base64 text here too: a consumer can be another function with a queue trigger.
Connections follow the Functions conventions: a connection string in the setting `<name>`, or an
identity-based connection `<name>__queueServiceUri` / `<name>__accountName` (+ `__clientId`).
With only `__accountName`, the queue host is built with the storage suffix of the cloud `AZURE_CLOUD`
names (databricks_jobs/clouds.py), so the app works in sovereign clouds as well; infra/ sets the
service URIs themselves, from the storage account's endpoints."""
from __future__ import annotations

import logging
import os
import threading
from typing import Mapping, Optional

from typing import TYPE_CHECKING

from databricks_jobs import clouds

if TYPE_CHECKING:  # the SDK is imported on first use: it is heavy, and cold start pays for every import
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)

# A queue message is at most 64 KiB as sent; base64 grows text by 4/3.
MAX_MESSAGE_TEXT_BYTES = (64 * 1024 * 3) // 4

_clients: dict[tuple[str, str, str], "QueueClient"] = {}
_lock = threading.Lock()


class QueueConfigurationError(ValueError):
    pass


def _identity_credential(env: Mapping[str, str], connection: str):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = env.get(f"{connection}__clientId")
    if client_id or env.get(f"{connection}__credential", "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential()


def queue_client(queue: str, connection: str, env: Optional[Mapping[str, str]] = None) -> QueueClient:
    """A cached client for `queue`, created on first use (so a new deployment needs no setup step)."""
    env = os.environ if env is None else env
    conn_str = env.get(connection, "")
    try:
        service_uri = clouds.service_uri(env, connection, "queue")
    except clouds.UnknownCloud as exc:
        raise QueueConfigurationError(str(exc)) from None
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    key = (connection, conn_str or service_uri, queue)
    with _lock:
        client = _clients.get(key)
    if client is not None:
        return client
    if conn_str:
        client = QueueClient.from_connection_string(conn_str, queue, message_encode_policy=TextBase64EncodePolicy())
    elif service_uri:
        client = QueueClient(service_uri, queue, credential=_identity_credential(env, connection),
                             message_encode_policy=TextBase64EncodePolicy())
    else:
        raise QueueConfigurationError(
            f"storage connection '{connection}' is not configured: set {connection} or {connection}__queueServiceUri")
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    with _lock:
        _clients[key] = client
    return client


def send_text(queue: str, text: str, connection: str, env: Optional[Mapping[str, str]] = None) -> str:
    """Enqueue `text` (base64-encoded on the wire); returns the message id."""
    if len(text.encode("utf-8")) > MAX_MESSAGE_TEXT_BYTES:
        raise ValueError(f"queue message is {len(text.encode('utf-8'))} bytes; the limit is {MAX_MESSAGE_TEXT_BYTES}")
    message = queue_client(queue, connection, env).send_message(text)
    return message.id


def reset_cache() -> None:
    """Tests: forget clients (their queue service goes away between sessions)."""
    with _lock:
        _clients.clear()
