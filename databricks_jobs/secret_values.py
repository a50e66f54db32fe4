"""Secret values: cleaned where they are read, scrubbed from any text that leaves the package.

Pure (no I/O, no settings): the app's other secrets (the webhook password, the Event Grid topic key)
use the same two functions.

Why cleaning matters: a PAT pasted into Key Vault or an app setting with a trailing newline or a
leading space makes `requests` refuse the Authorization header with an `InvalidHeader` whose text
quotes the header, token included; that text would travel into activity failures, orchestration
history, the status route, notifications and logs. So values are stripped where they are read,
and a value that still holds whitespace, control or non-ASCII characters (no PAT or JWT does; a
header cannot carry them) is refused with a `ConfigurationError` that names the setting and never
the value.

Why scrubbing matters: third-party exception text (requests, urllib3, azure-core, azure-identity)
may quote URLs, headers or response bodies. Errors are built from exception TYPES and safe facts,
and `scrub` is applied on top to every message, problem text and log line of this package."""
from __future__ import annotations

import logging
import re
from typing import Iterable, Optional

# App Service leaves this literal in place when it cannot resolve a Key Vault reference
# (https://learn.microsoft.com/azure/app-service/app-service-key-vault-references).
KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("

REDACTED = "***"
# A shorter "secret" (a test stub) cannot be replaced without shredding ordinary words.
MIN_KNOWN_SECRET_LENGTH = 4

# Printable ASCII without the space: every PAT, Entra ID token (JWT) and Key Vault secret meant as
# a bearer token fits; http.client refuses non-latin-1 header values with an error that holds them.
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")

_PATTERNS = (
    # user:password@ in a URL. Every pattern here runs in linear time on any text (scrub also reads
    # what callers send, bench/input_patterns.py): none is tried at every character of a long run,
    # so this one starts at "://" rather than at a scheme, which any word could begin.
    (re.compile(r"(://)[^\s/@'\"]+@"), r"\1" + REDACTED + "@"),
    # an Authorization header or field, in any of the shapes it is printed in (header line, dict, JSON)
    (re.compile(r"(?i)\b((?:proxy-)?authorization)([\"']?\s*[:=]\s*[\"']?)[^\r\n\"',}]+"), r"\1\2" + REDACTED),
    # the credential after an auth scheme (short words after "basic" are prose, not base64);
    # SharedAccessKey is Event Grid namespaces' key scheme
    (re.compile(r"(?i)\b(bearer|sharedaccesskey)(\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)\b(basic)(\s+)[A-Za-z0-9+/]{8,}=*"), r"\1\2" + REDACTED),
    # Databricks personal access tokens: "dapi" and 32 hex digits, sometimes with a "-<n>" suffix
    (re.compile(r"\bdapi[0-9a-f]{32}(?:-\d+)?\b"), "dapi" + REDACTED),
    # JWTs (Entra ID access tokens): base64url header.payload.signature, where a run of base64url
    # characters begins (trying every "eyJ" inside a long run, as \b did after each '-', is quadratic)
    (re.compile(r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"), REDACTED),
    # named secrets in key=value, key: value and JSON shapes
    (re.compile(r"(?i)\b(access_token|refresh_token|id_token|client_secret|password|passwd|secret|token|"
                r"x-identity-header|x-databricks-azure-sp-management-token|aeg-sas-key|sharedaccesskey|accountkey)"
                r"([\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"), r"\1\2" + REDACTED),
    # secrets carried in query strings: function keys (?code=) and SAS signatures (&sig=)
    (re.compile(r"(?i)([?&](?:code|sig)=)[^&#\s'\"]+"), r"\1" + REDACTED),
)


def clean_secret(setting: str, value: Optional[str]) -> Optional[str]:
    """`value` without surrounding whitespace; None when unset or blank.

    Raises `ConfigurationError(setting, ...)` when the value is an App Service Key Vault reference
    that the platform did not resolve, or still contains whitespace, control or non-ASCII
    characters. The error names `setting`; it never contains the value."""
    from .errors import ConfigurationError  # errors imports scrub from here

    if value is None:
        return None
    cleaned = value.strip()
    if not cleaned:
        return None
    if cleaned.lower().startswith(KEY_VAULT_REFERENCE_PREFIX.lower()):
        raise ConfigurationError(
            setting,
            "is an unresolved Key Vault reference (@Microsoft.KeyVault(...)): App Service could not read the "
            "secret; give the app's identity permission to read it (role Key Vault Secrets User) and check the "
            "reference syntax and the app's keyVaultReferenceIdentity")
    if not _TOKEN_CHARACTERS.fullmatch(cleaned):
        raise ConfigurationError(
            setting,
            "contains whitespace, control or non-ASCII characters inside the value (often a paste mistake); "
            "store the secret as one line without spaces (the value is not shown)")
    return cleaned


def scrub(text: str, secrets: Iterable[Optional[str]] = ()) -> str:
    """`text` with the given secret values and anything that looks like a credential replaced by
    `***`: URL user info, Authorization headers, Bearer/Basic credentials, Databricks PATs, JWTs,
    `password=`/`token:`-style fields and `?code=`/`&sig=` query values. Idempotent."""
    if not text:
        return text
    known = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_KNOWN_SECRET_LENGTH}
    for secret in sorted(known, key=len, reverse=True):  # longest first: one may contain another
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class ScrubFilter(logging.Filter):
    """Logging filter that renders a record's message and exception text through `scrub`, so no
    handler (console, Application Insights) ever receives the unscrubbed text.

    A logger's filters apply to the records logged on that logger only, so each module of the
    package adds one to its own logger (`scrubbed_logger(__name__)`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def scrubbed_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with a `ScrubFilter` attached (once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, ScrubFilter) for f in logger.filters):
        logger.addFilter(ScrubFilter())
    return logger
