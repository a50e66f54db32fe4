"""The kept copies of task outputs too large to travel inline (workflow/results.py): written by the
getJobRunOutput activity, read by the results route. Blob storage, connected the Functions way like
the queues (storage_queues.py): a connection string in the setting `<name>` (Azurite locally), or
identity-based `<name>__blobServiceUri` / `<name>__accountName` (+ `__clientId`).

Failures state their kind for the orchestrator: `Result store temporarily unavailable:` (throttling,
5xx, network) is retried; `Result store refused:` (auth, 4xx) and `Configuration error:` are not."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Iterator, Mapping, Optional

from messaging.storage_queues import _identity_credential

if TYPE_CHECKING:  # the SDK is imported on first use: cold start pays for every import
    from azure.storage.blob import ContainerClient

# Reads are served in pieces of this size (the SDK's own chunking), never the whole blob at once
# where the caller can take it piece by piece.
READ_CHUNK_BYTES = 1024 * 1024
_CHUNKS = {"max_single_get_size": READ_CHUNK_BYTES, "max_chunk_get_size": READ_CHUNK_BYTES}

_clients: dict[tuple[str, str, str], "ContainerClient"] = {}
_lock = threading.Lock()


class ResultStoreError(Exception):
    def __init__(self, problem: str, *, transient: bool):
        self.transient = transient
        kind = "Result store temporarily unavailable" if transient else "Result store refused"
        super().__init__(f"{kind}: {problem}")


class ResultStoreConfigurationError(ValueError):
    pass


def settings(env: Optional[Mapping[str, str]] = None) -> tuple[str, str]:
    from workflow.results import DEFAULTS

    env = os.environ if env is None else env
    container = (env.get("WORKFLOW_RESULTS_CONTAINER") or "").strip() or DEFAULTS["WORKFLOW_RESULTS_CONTAINER"]
    connection = (env.get("WORKFLOW_RESULTS_CONNECTION") or "").strip() or DEFAULTS["WORKFLOW_RESULTS_CONNECTION"]
    return container, connection


def container_client(env: Optional[Mapping[str, str]] = None) -> "ContainerClient":
    """A cached client for the results container, created on first use."""
    env = os.environ if env is None else env
    container, connection = settings(env)
    conn_str = env.get(connection, "")
    from databricks_jobs import clouds
    from databricks_jobs.errors import ConfigurationError

    try:  # the cloud's own storage suffix (sovereign clouds differ)
        service_uri = clouds.service_uri(env, connection, "blob")
    except clouds.UnknownCloud as exc:
        raise ConfigurationError("AZURE_CLOUD", str(exc)) from None
    key = (connection, conn_str or service_uri, container)
    with _lock:
        client = _clients.get(key)
    if client is not None:
        return client
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContainerClient

    if conn_str:
        client = ContainerClient.from_connection_string(conn_str, container, **_CHUNKS)
    elif service_uri:
        client = ContainerClient(service_uri, container, credential=_identity_credential(env, connection), **_CHUNKS)
    else:
        raise ResultStoreConfigurationError(
            f"storage connection '{connection}' is not configured: set {connection} or {connection}__blobServiceUri")
    try:
        _guarded(client.create_container)
    except ResourceExistsError:
        pass
    with _lock:
        _clients[key] = client
    return client


def _guarded(call, *args, **kwargs):
    """The call, with Azure's errors turned into ResultStoreError by kind; never their text (it
    may quote a request with its signature)."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                       ResourceNotFoundError, ServiceRequestError, ServiceResponseError)

    try:
        return call(*args, **kwargs)
    except (ResourceExistsError, ResourceNotFoundError):
        raise
    except ClientAuthenticationError as exc:
        raise ResultStoreError(f"blob storage refused our credentials ({type(exc).__name__})", transient=False) from None
    except HttpResponseError as exc:
        status = getattr(exc, "status_code", None) or 0
        raise ResultStoreError(f"blob storage answered {status or type(exc).__name__}",
                               transient=status in (0, 408, 429) or status >= 500) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise ResultStoreError(f"blob storage unreachable ({type(exc).__name__})", transient=True) from None


def write(name: str, data: bytes, env: Optional[Mapping[str, str]] = None) -> None:
    """Write (or overwrite: activities run at least once) one kept output."""
    from azure.storage.blob import ContentSettings

    client = container_client(env)
    _guarded(client.upload_blob, name, data, overwrite=True,
             content_settings=ContentSettings(content_type="application/json; charset=utf-8"))


def size(name: str, env: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The blob's size in bytes, or None when it does not exist."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return _guarded(container_client(env).get_blob_client(name).get_blob_properties).size
    except ResourceNotFoundError:
        return None


def read_chunks(name: str, offset: int = 0, length: Optional[int] = None,
                env: Optional[Mapping[str, str]] = None) -> Iterator[bytes]:
    """The blob's bytes from `offset` (`length` of them, or to the end) in pieces of at most
    READ_CHUNK_BYTES."""
    blob = container_client(env).get_blob_client(name)
    downloader = _guarded(blob.download_blob, offset=offset, length=length)
    pieces = downloader.chunks()
    while True:
        piece = _guarded(next, pieces, None)  # later pieces are fetched as they are taken
        if piece is None:
            return
        yield piece


def reset_cache() -> None:
    """Tests: forget clients (their blob service goes away between sessions)."""
    with _lock:
        _clients.clear()
