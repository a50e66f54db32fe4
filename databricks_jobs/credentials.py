"""Bearer tokens for Azure Databricks: the only module that obtains them.

Three sources, chosen by `DATABRICKS_AUTH`:
- an Entra ID token from azure-identity (`ManagedIdentityCredential`, optionally user-assigned, or
  `DefaultAzureCredential`), cached until a few minutes before `expires_on`;
- a PAT read from Key Vault with azure-keyvault-secrets, cached for a TTL;
- a PAT from `DATABRICKS_TOKEN` (local development, or an App Service Key Vault reference that the
  platform has already resolved into the value).

Every provider is thread-safe and never logs a token."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

from .errors import ConfigurationError
from .process_wide import ProcessWide
from .settings import (
    AUTH_DEFAULT_AZURE_CREDENTIAL,
    AUTH_KEY_VAULT,
    AUTH_MANAGED_IDENTITY,
    AUTH_PAT,
    Settings,
    get_settings,
)

log = logging.getLogger(__name__)

# Entra ID application id of Azure Databricks (same for every workspace).
DATABRICKS_SCOPE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"
# Azure Resource Manager; the double slash is part of the resource URI "https://management.core.windows.net/".
MANAGEMENT_SCOPE = "https://management.core.windows.net//.default"

WORKSPACE_RESOURCE_ID_HEADER = "X-Databricks-Azure-Workspace-Resource-Id"
MANAGEMENT_TOKEN_HEADER = "X-Databricks-Azure-SP-Management-Token"

# Refresh Entra tokens this long before they expire, so a token never expires mid-request.
ENTRA_REFRESH_LEAD_SECONDS = 300.0


class TokenProvider(Protocol):
    def token(self) -> str:
        """The bearer token for the Authorization header."""

    def invalidate(self) -> None:
        """Drop cached tokens, e.g. after Databricks answered 401."""

    def extra_headers(self) -> Dict[str, str]:
        """Headers to send with every request besides Authorization."""


class _CachedSecret:
    """A value fetched on demand and reused until its refresh time; one fetch at a time.

    `fetch` returns (value, refresh_at) with refresh_at on the `clock`'s scale."""

    def __init__(self, fetch: Callable[[], Tuple[str, float]], clock: Callable[[], float]):
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: Optional[Tuple[str, float]] = None

    def get(self) -> str:
        entry = self._entry  # one attribute read: safe without the lock
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        with self._lock:
            entry = self._entry
            if entry is None or self._clock() >= entry[1]:
                entry = self._fetch()
                self._entry = entry
            return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._entry = None


class EntraTokenProvider:
    """Entra ID tokens from an azure-core `TokenCredential` (managed identity or DefaultAzureCredential)."""

    def __init__(
        self,
        credential: Any,
        workspace_resource_id: Optional[str] = None,
        refresh_lead_seconds: float = ENTRA_REFRESH_LEAD_SECONDS,
        clock: Callable[[], float] = time.time,  # epoch seconds, the scale of AccessToken.expires_on
    ):
        self._credential = credential
        self._workspace_resource_id = workspace_resource_id
        self._refresh_lead = refresh_lead_seconds
        self._clock = clock
        self._databricks = _CachedSecret(lambda: self._fetch(DATABRICKS_SCOPE), clock)
        self._management = _CachedSecret(lambda: self._fetch(MANAGEMENT_SCOPE), clock)

    def _fetch(self, scope: str) -> Tuple[str, float]:
        access = self._credential.get_token(scope)
        now = self._clock()
        # A short-lived token (under twice the lead) is refreshed at half its life instead.
        lead = min(self._refresh_lead, max(access.expires_on - now, 0) / 2)
        log.debug("Obtained an Entra ID token for %s, expires_on=%s", scope, access.expires_on)
        return access.token, access.expires_on - lead

    def token(self) -> str:
        return self._databricks.get()

    def invalidate(self) -> None:
        # azure-identity keeps its own cache, so a token it still considers valid may come back;
        # a rejected-but-unexpired token usually means a missing workspace permission anyway.
        self._databricks.clear()
        self._management.clear()

    def extra_headers(self) -> Dict[str, str]:
        if not self._workspace_resource_id:
            return {}
        return {
            WORKSPACE_RESOURCE_ID_HEADER: self._workspace_resource_id,
            MANAGEMENT_TOKEN_HEADER: self._management.get(),
        }


class KeyVaultPatProvider:
    """A PAT read from a Key Vault secret and reused for `ttl_seconds`.

    `invalidate()` (after a 401) re-reads the secret, which picks up a rotated PAT."""

    def __init__(self, secret_client: Any, secret_name: str, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self._secret_client = secret_client
        self._secret_name = secret_name
        self._ttl = ttl_seconds
        self._clock = clock
        self._pat = _CachedSecret(self._fetch, clock)

    def _fetch(self) -> Tuple[str, float]:
        secret = self._secret_client.get_secret(self._secret_name)
        if not secret.value:
            raise ConfigurationError("DATABRICKS_KEY_VAULT_SECRET_NAME", f"secret {self._secret_name!r} is empty")
        log.debug("Read the Databricks PAT from Key Vault secret %s", self._secret_name)
        return secret.value, self._clock() + self._ttl

    def token(self) -> str:
        return self._pat.get()

    def invalidate(self) -> None:
        self._pat.clear()

    def extra_headers(self) -> Dict[str, str]:
        return {}


class StaticTokenProvider:
    """A PAT given in configuration; nothing to refresh."""

    def __init__(self, token: str):
        self._token = token

    def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        pass

    def extra_headers(self) -> Dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=***)"


def azure_credential(settings: Settings) -> Any:
    """The azure-identity credential for Entra ID and Key Vault access."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.auth == AUTH_DEFAULT_AZURE_CREDENTIAL:
        if settings.managed_identity_client_id:
            return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        return DefaultAzureCredential()
    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return ManagedIdentityCredential()


def build_token_provider(settings: Settings) -> TokenProvider:
    if settings.auth in (AUTH_MANAGED_IDENTITY, AUTH_DEFAULT_AZURE_CREDENTIAL):
        return EntraTokenProvider(azure_credential(settings), settings.azure_workspace_resource_id)
    if settings.auth == AUTH_KEY_VAULT:
        from azure.keyvault.secrets import SecretClient

        client = SecretClient(vault_url=settings.key_vault_url, credential=azure_credential(settings))
        return KeyVaultPatProvider(client, settings.key_vault_secret_name, settings.key_vault_cache_seconds)
    if settings.auth == AUTH_PAT:
        return StaticTokenProvider(settings.token)
    raise AssertionError(f"unhandled auth mode {settings.auth}")  # Settings validated it


_provider: ProcessWide[TokenProvider] = ProcessWide(lambda: build_token_provider(get_settings()))


def get_token_provider() -> TokenProvider:
    """The process-wide token provider built from the settings, so tokens are cached per process."""
    return _provider.get()


def reset_token_provider() -> None:
    """Forget the process-wide provider and its cached tokens (tests)."""
    _provider.reset()
