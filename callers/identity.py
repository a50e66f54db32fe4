"""Caller identity: the one module that tells callers apart.

- **Entra ID bearer tokens** (`Authorization: Bearer ...`), validated here on every hosting plan:
  issuer (v1 `https://sts.windows.net/<tid>/` or v2 `https://login.microsoftonline.com/<tid>/v2.0`,
  as Entra issues them, or the issuer the metadata document names), audience, expiry and the RS256
  signature against the keys of the OpenID metadata's `jwks_uri` (PyJWT's `PyJWKClient`, cached).
  The caller is the token's `oid`, with `appid` (v1) / `azp` (v2), `roles` and `tid`.
- **App Service Authentication** (`X-MS-CLIENT-PRINCIPAL`, base64 JSON) only when
  `WEBSITE_AUTH_ENABLED` is true: then the platform strips the header from outside requests and sets
  it itself. Otherwise every `X-MS-CLIENT-PRINCIPAL*` header is ignored, whoever sent it.
- **Neither configured** (a single-team install): the caller is whoever holds a function key, as
  before; `Caller.function_key()`.

Fetching the metadata and keys is blocking I/O: entry points call `identify` through
`asyncio.to_thread`. Tokens are never logged or stored; only the caller's ids leave this module.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, FrozenSet, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

ADMIN_ROLE = "Workflows.Admin"  # sees and cancels every caller's workflows
RUN_ROLE = "Workflows.Run"  # may start workflows (with the policy's `default` when not listed)

SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("WORKFLOW_AUTH_TENANT_ID", "",
     "Entra ID tenant (directory) id whose tokens the HTTP API accepts. Set with WORKFLOW_AUTH_AUDIENCE to require "
     "an Entra ID bearer token on every HTTP API route (function keys then no longer authenticate). Empty: "
     "single-team mode, function keys."),
    ("WORKFLOW_AUTH_AUDIENCE", "",
     "Accepted token audiences, comma-separated: the app registration's client id and/or its Application ID URI "
     "(`api://...`)."),
    ("WORKFLOW_AUTH_METADATA_URL", "",
     "OpenID Connect metadata document whose `jwks_uri` has the signing keys. Empty: "
     "`https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration`."),
)
DEFAULT_METADATA_URL = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"

MAX_TOKEN_CHARS = 16_384  # Entra access tokens are a few KB; anything larger is not one
MAX_PRINCIPAL_CHARS = 65_536
MAX_METADATA_BYTES = 1_048_576
METADATA_CACHE_SECONDS = 24 * 3600
KEYS_CACHE_SECONDS = 3600  # PyJWKClient refetches at once (after its cool-down) for an unknown kid
FETCH_TIMEOUT_SECONDS = 10
CLOCK_SKEW_SECONDS = 120

OID_CLAIM_TYPES = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
TID_CLAIM_TYPES = ("tid", "http://schemas.microsoft.com/identity/claims/tenantid")
APPID_CLAIM_TYPES = ("azp", "appid")


@dataclass(frozen=True)
class Caller:
    """Who started or asks about a workflow. `id` is recorded as the workflow's owner: never a secret."""

    id: Optional[str]  # Entra object id, a policy `sources` caller, or None for the function-key caller
    kind: str  # "entra" | "easyauth" | "functionKey" | "eventgrid" | "queue"
    app_id: Optional[str] = None
    tenant_id: Optional[str] = None
    roles: FrozenSet[str] = field(default_factory=frozenset)

    @classmethod
    def function_key(cls) -> "Caller":
        return cls(None, "functionKey")

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def may_see(self, owner: Optional[str]) -> bool:
        """Owners see their own workflows, admins every one. Without identities (a single-team
        install) every key holder is the same caller; an owned workflow stays the owner's."""
        if self.is_admin:
            return True
        return owner == self.id


class AuthSettingError(ValueError):
    """A WORKFLOW_AUTH_* setting is invalid; 503 on every request, naming it."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        super().__init__(f"Configuration error: {setting}: {problem}")


class Unauthenticated(Exception):
    """401: no credential, or one that does not hold. The message is safe to answer with."""


class KeysUnavailable(Exception):
    """503: the metadata or keys could not be fetched right now; the caller may try again."""

    setting = "WORKFLOW_AUTH_METADATA_URL"


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class AuthConfig:
    tenant_id: Optional[str]
    audiences: Tuple[str, ...]
    metadata_url: Optional[str]
    easy_auth: bool

    @property
    def entra(self) -> bool:
        return bool(self.tenant_id)

    @property
    def required(self) -> bool:
        """Callers must prove who they are (else: the single-team, function-key mode)."""
        return self.entra or self.easy_auth

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "AuthConfig":
        env = os.environ if env is None else env
        tenant = (env.get("WORKFLOW_AUTH_TENANT_ID") or "").strip() or None
        audiences = tuple(a.strip() for a in (env.get("WORKFLOW_AUTH_AUDIENCE") or "").split(",") if a.strip())
        metadata = (env.get("WORKFLOW_AUTH_METADATA_URL") or "").strip() or None
        if tenant and not audiences:
            raise AuthSettingError("WORKFLOW_AUTH_AUDIENCE", "is required with WORKFLOW_AUTH_TENANT_ID (the app "
                                   "registration's client id or Application ID URI)")
        if audiences and not tenant:
            raise AuthSettingError("WORKFLOW_AUTH_TENANT_ID", "is required with WORKFLOW_AUTH_AUDIENCE")
        if metadata and not tenant:
            raise AuthSettingError("WORKFLOW_AUTH_TENANT_ID", "is required with WORKFLOW_AUTH_METADATA_URL")
        if tenant:
            metadata = metadata or DEFAULT_METADATA_URL.format(tenant=tenant)
            if not (metadata.startswith("https://") or _loopback(metadata)):
                raise AuthSettingError("WORKFLOW_AUTH_METADATA_URL", "must be an https URL (http only on loopback)")
        return cls(tenant, audiences, metadata, _truthy(env.get("WEBSITE_AUTH_ENABLED")))


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return urlsplit(url).scheme == "http" and (host in ("localhost", "::1") or host.startswith("127."))


# -- tokens -------------------------------------------------------------------------------------------

def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 (https or loopback)
        raw = response.read(MAX_METADATA_BYTES + 1)
    if len(raw) > MAX_METADATA_BYTES:
        raise ValueError(f"{url} answered more than {MAX_METADATA_BYTES} bytes")
    return json.loads(raw)


class TokenValidator:
    """Validates bearer tokens for one configuration; metadata and keys cached for the process."""

    def __init__(self, config: AuthConfig, fetch_json: Callable[[str], Any] = _fetch_json,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self._fetch_json = fetch_json
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: Optional[dict] = None
        self._metadata_at = 0.0
        self._jwks = None

    def _keys(self):
        """(PyJWKClient, accepted issuers), fetching the metadata at most once a day."""
        import jwt

        with self._lock:
            if self._metadata is None or self._clock() - self._metadata_at > METADATA_CACHE_SECONDS:
                try:
                    metadata = self._fetch_json(self.config.metadata_url)
                    jwks_uri = metadata["jwks_uri"]
                    issuer = str(metadata.get("issuer") or "")
                except Exception as exc:
                    if self._metadata is None:
                        raise KeysUnavailable(f"the OpenID metadata at {self.config.metadata_url} could not be read "
                                              f"({type(exc).__name__})") from None
                    log.warning("OpenID metadata refresh failed (%s); keeping the cached copy", type(exc).__name__)
                else:
                    if self._jwks is None or self._metadata.get("jwks_uri") != jwks_uri:
                        self._jwks = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=KEYS_CACHE_SECONDS,
                                                     timeout=FETCH_TIMEOUT_SECONDS)
                    self._metadata = {"jwks_uri": jwks_uri, "issuer": issuer}
                    self._metadata_at = self._clock()
            tenant = self.config.tenant_id
            issuers = {f"https://login.microsoftonline.com/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"}
            if self._metadata["issuer"]:
                issuers.add(self._metadata["issuer"].replace("{tenantid}", tenant))
            return self._jwks, sorted(issuers)

    def validate(self, token: str) -> Caller:
        """The caller a token names; Unauthenticated or KeysUnavailable otherwise (blocking)."""
        import jwt

        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the bearer token is too long to be an Entra ID access token")
        jwks, issuers = self._keys()
        try:
            key = jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise KeysUnavailable("the token signing keys could not be fetched") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not signed by a key of the configured tenant") from None
        try:
            claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=list(self.config.audiences),
                                issuer=issuers, leeway=CLOCK_SKEW_SECONDS,
                                options={"require": ["exp", "iss", "aud", "oid"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the bearer token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the bearer token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer token is not valid ({type(exc).__name__})") from None
        tid = claims.get("tid")
        if tid is not None and tid != self.config.tenant_id:
            raise Unauthenticated("the bearer token is from another tenant")
        return _caller_of(claims, "entra")


def _caller_of(claims: Mapping[str, Any], kind: str) -> Caller:
    oid = claims.get("oid")
    if not isinstance(oid, str) or not oid:
        raise Unauthenticated("the credential names no object id (oid)")
    roles = claims.get("roles") or ()
    if isinstance(roles, str):
        roles = (roles,)
    app_id = next((claims[c] for c in APPID_CLAIM_TYPES if isinstance(claims.get(c), str)), None)
    return Caller(oid, kind, app_id, claims.get("tid") if isinstance(claims.get("tid"), str) else None,
                  frozenset(r for r in roles if isinstance(r, str)))


_validators: dict = {}
_validators_lock = threading.Lock()


def validator_for(config: AuthConfig) -> TokenValidator:
    with _validators_lock:
        if config not in _validators:
            _validators[config] = TokenValidator(config)
        return _validators[config]


def reset() -> None:
    """Forget cached metadata and keys (tests; a changed configuration gets its own validator anyway)."""
    with _validators_lock:
        _validators.clear()


# -- App Service Authentication -----------------------------------------------------------------------

def _easy_auth_caller(encoded: str) -> Caller:
    if len(encoded) > MAX_PRINCIPAL_CHARS:
        raise Unauthenticated("X-MS-CLIENT-PRINCIPAL is too long")
    try:
        principal = json.loads(base64.b64decode(encoded, validate=False))
        entries = principal.get("claims") or []
        role_type = principal.get("role_typ") or "roles"
    except (binascii.Error, ValueError, AttributeError, TypeError):
        raise Unauthenticated("X-MS-CLIENT-PRINCIPAL is not the platform's principal") from None
    claims: dict = {}
    roles = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        typ, val = entry.get("typ"), entry.get("val")
        if typ in (role_type, "roles"):
            roles.append(val)
        for names in (OID_CLAIM_TYPES, TID_CLAIM_TYPES, APPID_CLAIM_TYPES):
            if typ in names:
                claims.setdefault(names[0] if names is not APPID_CLAIM_TYPES else typ, val)
    claims["roles"] = roles
    return _caller_of(claims, "easyauth")


# -- the entry point ----------------------------------------------------------------------------------

def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def identify(headers: Mapping[str, str], config: Optional[AuthConfig] = None) -> Caller:
    """The caller of an HTTP request (blocking: run it off the event loop).

    Raises Unauthenticated (401), KeysUnavailable (503) or AuthSettingError (503)."""
    config = config or AuthConfig.from_env()
    if not config.required:
        return Caller.function_key()
    if config.easy_auth:
        principal = _header(headers, "X-MS-CLIENT-PRINCIPAL")
        if principal:
            return _easy_auth_caller(principal)
    if config.entra:
        authorization = _header(headers, "Authorization") or ""
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return validator_for(config).validate(token.strip())
    raise Unauthenticated("this API needs an Entra ID bearer token (Authorization: Bearer <token>)")
