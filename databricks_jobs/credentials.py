"""Bearer tokens for Azure Databricks: the only module that obtains them.

Three sources, chosen by `DATABRICKS_AUTH`:
- an Entra ID token from azure-identity (`ManagedIdentityCredential`, optionally user-assigned, or
  `DefaultAzureCredential`), cached until a few minutes before `expires_on`;
- a PAT read from Key Vault with azure-keyvault-secrets, cached for a TTL;
- a PAT from `DATABRICKS_TOKEN` (local development, or an App Service Key Vault reference that the
  platform has already resolved into the value).

Every value is cleaned where it is read (`secret_values.clean_secret`: surrounding whitespace is
stripped, inner whitespace or control characters refused), so a pasted newline never reaches a
request header. Every provider is thread-safe and never logs a token.

Failures become `CredentialError`, classified by exception TYPE and HTTP STATUS, never by message:
- permanent, naming the setting to fix: no managed identity in this environment
  (CredentialUnavailableError) -> DATABRICKS_AUTH; an identity endpoint refusing the configured
  client id (400/404) -> DATABRICKS_MANAGED_IDENTITY_CLIENT_ID; Key Vault 401/403, an unresolvable
  vault host or a vault URL Key Vault refuses -> DATABRICKS_KEY_VAULT_URL; Key Vault 404 ->
  DATABRICKS_KEY_VAULT_SECRET_NAME;
- transient: the token endpoint or Key Vault answering 408/429/5xx, timeouts, refused or dropped
  connections (after azure-core's own few retries).
azure-identity reports an App Service identity endpoint's 5xx as "unavailable", the same type as
"no identity here"; the transports below remember the last status each thread saw, which is what
tells the two apart. Messages are scrubbed and never chain the original exception."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Protocol, Tuple
from urllib.parse import urlsplit

from azure.core.pipeline.transport import RequestsTransport

from . import clouds
from .errors import ConfigurationError, CredentialError
from .process_wide import ProcessWide
from .secret_values import clean_secret, scrub, scrubbed_logger
from .settings import (
    AUTH_DEFAULT_AZURE_CREDENTIAL,
    AUTH_KEY_VAULT,
    AUTH_MANAGED_IDENTITY,
    AUTH_PAT,
    Settings,
    get_settings,
)

log = scrubbed_logger(__name__)

# Entra ID application id of Azure Databricks (same for every workspace).
DATABRICKS_SCOPE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"
# Azure Resource Manager in public Azure (the double slash ends the resource URI); other clouds'
# audiences come from `clouds` (AZURE_CLOUD), never from a literal here.
MANAGEMENT_SCOPE = clouds.PUBLIC.resource_manager_scope

WORKSPACE_RESOURCE_ID_HEADER = "X-Databricks-Azure-Workspace-Resource-Id"
MANAGEMENT_TOKEN_HEADER = "X-Databricks-Azure-SP-Management-Token"

# Refresh Entra tokens this long before they expire, so a token never expires mid-request.
ENTRA_REFRESH_LEAD_SECONDS = 300.0
# azure-core retries token and Key Vault requests itself (429, 5xx, connection errors); a few
# tries, then the activity fails transiently and the orchestrator's own retry takes over.
AZURE_RETRY_TOTAL = 3
# The Azure Instance Metadata Service: a probe that gets no answer means "no IMDS here", which
# azure-identity reports as CredentialUnavailableError; it is not an outage.
IMDS_HOST = "169.254.169.254"

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_DETAIL_CHARS = 400


class TokenProvider(Protocol):
    def token(self) -> str:
        """The bearer token for the Authorization header."""

    def invalidate(self) -> None:
        """Drop cached tokens, e.g. after Databricks answered 401."""

    def extra_headers(self) -> Dict[str, str]:
        """Headers to send with every request besides Authorization."""


class ObservedTransport(RequestsTransport):
    """azure-core's requests transport that remembers, per thread, the last HTTP status or transport
    error it saw, and waits between azure-core's retries through an injectable `sleep_func`."""

    def __init__(self, sleep_func: Callable[[float], None] = time.sleep, **kwargs: Any):
        super().__init__(**kwargs)
        self._sleep_func = sleep_func
        self._seen = threading.local()

    def forget(self) -> None:
        self._seen.status = None
        self._seen.error_type = None

    def last(self) -> Tuple[Optional[int], Optional[str]]:
        """(last status, last transport error type) of this thread since `forget()`."""
        return getattr(self._seen, "status", None), getattr(self._seen, "error_type", None)

    def send(self, request: Any, **kwargs: Any) -> Any:
        observed = urlsplit(str(request.url)).hostname != IMDS_HOST
        try:
            response = super().send(request, **kwargs)
        except Exception as exc:
            if observed:
                self._seen.status, self._seen.error_type = None, type(exc).__name__
            raise
        if observed:
            self._seen.status, self._seen.error_type = response.status_code, None
        return response

    def sleep(self, duration: float) -> None:
        self._sleep_func(duration)


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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cached={self._entry is not None})"


# -- failure classification ---------------------------------------------------------------------

def _detail(exc: BaseException, status: Optional[int] = None) -> str:
    """`Type (HTTP n): message` of a third-party exception, scrubbed and clipped."""
    error = getattr(exc, "error", None)  # azure-core's parsed service error (Key Vault: code, message, innererror)
    if getattr(error, "code", None) or getattr(error, "message", None):
        inner = getattr(error, "innererror", None)
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        message = f"{error.code}: {error.message}" + (f" ({inner_code})" if inner_code else "")
    else:
        message = str(getattr(exc, "message", None) or exc).strip().split("\n", 1)[0]
    message = " ".join(message.split())
    if len(message) > _MAX_DETAIL_CHARS:
        message = message[:_MAX_DETAIL_CHARS] + "..."
    where = f" (HTTP {status})" if status else ""
    return scrub(f"{type(exc).__name__}{where}: {message}" if message else f"{type(exc).__name__}{where}")


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """`exc` and what it wraps (azure-core's inner_exception, requests' args, urllib3's reason)."""
    pending, seen = [exc], set()
    while pending and len(seen) < 20:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for attribute in ("inner_exception", "reason", "__cause__", "__context__"):
            inner = getattr(current, attribute, None)
            if isinstance(inner, BaseException):
                pending.append(inner)
        pending.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))


def _is_transport_error(exc: BaseException) -> bool:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    return isinstance(exc, (ServiceRequestError, ServiceResponseError))


def _status_of(exc: BaseException) -> Optional[int]:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _identity(client_id: Optional[str]) -> str:
    return f"the user-assigned identity {client_id}" if client_id else "the app's system-assigned identity"


def entra_failure(exc: BaseException, *, client_id: Optional[str], status: Optional[int] = None,
                  transport_error: Optional[str] = None) -> CredentialError:
    """The CredentialError for a failed azure-identity `get_token`. `status` / `transport_error`:
    what the identity endpoint last answered in this attempt (ObservedTransport), if anything."""
    from azure.identity import CredentialUnavailableError

    status = status or _status_of(exc)
    if _is_transport_error(exc) or status in _TRANSIENT_STATUSES or (
            transport_error and not isinstance(exc, CredentialUnavailableError)):
        what = f"HTTP {status}" if status else (transport_error or type(exc).__name__)
        return CredentialError("DATABRICKS_AUTH", f"the token service for {_identity(client_id)} failed ({what}); "
                                                  "it may answer later", transient=True)
    if client_id and status in (400, 404):
        return CredentialError(
            "DATABRICKS_MANAGED_IDENTITY_CLIENT_ID",
            f"the identity endpoint does not know client id {client_id} (HTTP {status}): assign that user-assigned "
            "identity to the Function App, or correct the setting")
    if isinstance(exc, CredentialUnavailableError):
        return CredentialError(
            "DATABRICKS_AUTH",
            f"no managed identity is available in this environment ({_detail(exc, status)}); enable the Function "
            "App's identity, or choose another DATABRICKS_AUTH mode")
    return CredentialError("DATABRICKS_AUTH", f"no Entra ID token for {_identity(client_id)} ({_detail(exc, status)})")


def key_vault_failure(exc: BaseException, *, secret_name: str, client_id: Optional[str]) -> CredentialError:
    """The CredentialError for a failed `SecretClient.get_secret` (Key Vault itself answered or
    could not be reached; identity failures go through `entra_failure`)."""
    import urllib3.exceptions

    status = _status_of(exc)
    if status == 404:
        return CredentialError("DATABRICKS_KEY_VAULT_SECRET_NAME",
                               f"the vault has no secret named {secret_name!r} ({_detail(exc, status)})")
    if status in (401, 403):
        return CredentialError(
            "DATABRICKS_KEY_VAULT_URL",
            f"{_identity(client_id)} may not read secrets in this vault ({_detail(exc, status)}); grant it the role "
            "Key Vault Secrets User on the vault, or point the setting at the right vault")
    if status in _TRANSIENT_STATUSES:
        return CredentialError("DATABRICKS_KEY_VAULT_URL", f"Key Vault failed (HTTP {status}); it may answer later",
                               transient=True)
    if _is_transport_error(exc):
        if any(isinstance(cause, urllib3.exceptions.NameResolutionError) for cause in _causes(exc)):
            return CredentialError("DATABRICKS_KEY_VAULT_URL", "the vault's host name does not resolve; check the "
                                                               "vault name in the URL")
        return CredentialError("DATABRICKS_KEY_VAULT_URL", f"Key Vault could not be reached ({type(exc).__name__}); "
                                                           "it may answer later", transient=True)
    return CredentialError("DATABRICKS_KEY_VAULT_URL", f"reading secret {secret_name!r} failed ({_detail(exc, status)})")


# -- providers -----------------------------------------------------------------------------------

def _count_fetch(auth_mode: str, ok: bool) -> None:
    from telemetry.metrics import token_fetched  # databricks.token.fetches; a no-op unless telemetry is on

    token_fetched(auth_mode, ok)


class EntraTokenProvider:
    """Entra ID tokens from an azure-core `TokenCredential` (managed identity or DefaultAzureCredential)."""

    def __init__(
        self,
        credential: Any,
        workspace_resource_id: Optional[str] = None,
        refresh_lead_seconds: float = ENTRA_REFRESH_LEAD_SECONDS,
        clock: Callable[[], float] = time.time,  # epoch seconds, the scale of AccessToken.expires_on
        *,
        client_id: Optional[str] = None,
        transport: Optional[ObservedTransport] = None,
        auth_mode: str = AUTH_MANAGED_IDENTITY,
        management_scope: str = MANAGEMENT_SCOPE,
    ):
        self._auth_mode = auth_mode  # for telemetry
        self._credential = credential
        self._workspace_resource_id = workspace_resource_id
        self._refresh_lead = refresh_lead_seconds
        self._clock = clock
        self._client_id = client_id
        self._transport = transport
        self._databricks = _CachedSecret(lambda: self._fetch(DATABRICKS_SCOPE), clock)
        self._management = _CachedSecret(lambda: self._fetch(management_scope), clock)

    def _fetch(self, scope: str) -> Tuple[str, float]:
        if self._transport is not None:
            self._transport.forget()
        failure: Optional[CredentialError] = None
        try:
            access = self._credential.get_token(scope)
        except Exception as exc:  # classified below by type and status; raised outside, unchained
            status, transport_error = self._transport.last() if self._transport is not None else (None, None)
            failure = entra_failure(exc, client_id=self._client_id, status=status, transport_error=transport_error)
        _count_fetch(self._auth_mode, failure is None)
        if failure is not None:
            raise failure
        try:
            token = clean_secret("DATABRICKS_AUTH", access.token)
        except ConfigurationError:
            token = None
        if not token:
            raise CredentialError("DATABRICKS_AUTH", "the token service returned an empty token, or one with "
                                                     "whitespace or control characters inside it (not shown)")
        now = self._clock()
        # A short-lived token (under twice the lead) is refreshed at half its life instead.
        lead = min(self._refresh_lead, max(access.expires_on - now, 0) / 2)
        log.debug("Obtained an Entra ID token for %s, expires_on=%s", scope, access.expires_on)
        return token, access.expires_on - lead

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

    def __repr__(self) -> str:
        return f"EntraTokenProvider(credential={type(self._credential).__name__}, token=***)"


class KeyVaultPatProvider:
    """A PAT read from a Key Vault secret and reused for `ttl_seconds`.

    `invalidate()` (after a 401) re-reads the secret, which picks up a rotated PAT."""

    def __init__(self, secret_client: Any, secret_name: str, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic, *, client_id: Optional[str] = None,
                 identity_transport: Optional[ObservedTransport] = None):
        self._secret_client = secret_client
        self._secret_name = secret_name
        self._ttl = ttl_seconds
        self._clock = clock
        self._client_id = client_id
        self._identity_transport = identity_transport
        self._pat = _CachedSecret(self._fetch, clock)

    def _fetch(self) -> Tuple[str, float]:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import CredentialUnavailableError

        if self._identity_transport is not None:
            self._identity_transport.forget()
        failure: Optional[Exception] = None
        try:
            secret = self._secret_client.get_secret(self._secret_name)
        except Exception as exc:  # classified below by type and status; raised outside, unchained
            status, transport_error = (self._identity_transport.last() if self._identity_transport is not None
                                       else (None, None))
            identity_failed = isinstance(exc, CredentialUnavailableError) or (
                isinstance(exc, ClientAuthenticationError) and _status_of(exc) is None) or (
                transport_error is not None or (status is not None and status >= 400))
            failure = (entra_failure(exc, client_id=self._client_id, status=status, transport_error=transport_error)
                       if identity_failed else
                       key_vault_failure(exc, secret_name=self._secret_name, client_id=self._client_id))
        _count_fetch(AUTH_KEY_VAULT, failure is None)
        if failure is not None:
            raise failure
        setting = "DATABRICKS_KEY_VAULT_SECRET_NAME"
        try:
            value = clean_secret(setting, secret.value)
        except ConfigurationError as error:
            failure = ConfigurationError(setting, f"the value of Key Vault secret {self._secret_name!r} {error.problem}")
        if failure is not None:
            raise failure
        if not value:
            raise ConfigurationError(setting, f"Key Vault secret {self._secret_name!r} is empty")
        log.debug("Read the Databricks PAT from Key Vault secret %s", self._secret_name)
        return value, self._clock() + self._ttl

    def token(self) -> str:
        return self._pat.get()

    def invalidate(self) -> None:
        self._pat.clear()

    def extra_headers(self) -> Dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return f"KeyVaultPatProvider(secret_name={self._secret_name!r}, token=***)"


class StaticTokenProvider:
    """A PAT given in configuration; nothing to refresh. Cleaned like every other source."""

    def __init__(self, token: str, setting: str = "DATABRICKS_TOKEN"):
        cleaned = clean_secret(setting, token)
        if not cleaned:
            raise ConfigurationError(setting, "is empty")
        self._token = cleaned

    def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        pass

    def extra_headers(self) -> Dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=***)"


def azure_credential(settings: Settings, **kwargs: Any) -> Any:
    """The azure-identity credential for Entra ID and Key Vault access; `kwargs` go to azure-core
    (transport, retry and timeout options)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.auth == AUTH_DEFAULT_AZURE_CREDENTIAL:
        if settings.managed_identity_client_id:
            return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id, **kwargs)
        return DefaultAzureCredential(**kwargs)
    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id, **kwargs)
    return ManagedIdentityCredential(**kwargs)


def build_token_provider(settings: Settings, *, sleep_func: Callable[[float], None] = time.sleep) -> TokenProvider:
    """The provider for `settings.auth`. `sleep_func` receives azure-core's retry waits (tests)."""
    if settings.auth == AUTH_PAT:
        return StaticTokenProvider(settings.token or "")
    timeouts = {"connection_timeout": settings.http_timeout_seconds, "read_timeout": settings.http_timeout_seconds}
    identity_transport = ObservedTransport(sleep_func=sleep_func, **timeouts)
    credential = azure_credential(settings, transport=identity_transport, retry_total=AZURE_RETRY_TOTAL)
    if settings.auth in (AUTH_MANAGED_IDENTITY, AUTH_DEFAULT_AZURE_CREDENTIAL):
        return EntraTokenProvider(credential, settings.azure_workspace_resource_id,
                                  client_id=settings.managed_identity_client_id, transport=identity_transport,
                                  auth_mode=settings.auth,
                                  management_scope=settings.cloud.resource_manager_scope)
    if settings.auth == AUTH_KEY_VAULT:
        from azure.keyvault.secrets import SecretClient

        vault_transport = ObservedTransport(sleep_func=sleep_func, **timeouts)
        client = SecretClient(vault_url=settings.key_vault_url, credential=credential, transport=vault_transport,
                              retry_total=AZURE_RETRY_TOTAL)
        return KeyVaultPatProvider(client, settings.key_vault_secret_name, settings.key_vault_cache_seconds,
                                   client_id=settings.managed_identity_client_id,
                                   identity_transport=identity_transport)
    raise AssertionError(f"unhandled auth mode {settings.auth}")  # Settings validated it


_provider: ProcessWide[TokenProvider] = ProcessWide(lambda: build_token_provider(get_settings()))


def get_token_provider() -> TokenProvider:
    """The process-wide token provider built from the settings, so tokens are cached per process."""
    return _provider.get()


def reset_token_provider() -> None:
    """Forget the process-wide provider and its cached tokens (tests)."""
    _provider.reset()
