"""Where and how a completion CloudEvent is published, read from the shape of
WORKFLOW_COMPLETION_TOPIC_ENDPOINT. Pure: no Azure imports.

Event Grid takes events at two endpoint shapes (Event Grid docs: "Publish to custom topics",
"Publishing to an event domain", "Publish to namespace topics"):
- a custom topic or a domain: `POST https://<name>.<region>-1.eventgrid.azure.net/api/events`, a JSON
  array of CloudEvents 1.0 (the topic or domain must be created with input schema
  CloudEventSchemaV1_0), an access key in the `aeg-sas-key` header. A domain delivers each CloudEvent
  to the domain topic its `source` names, so with a domain WORKFLOW_COMPLETION_EVENT_SOURCE is that
  domain topic's name;
- a namespace topic: `POST https://<namespace>.<region>-1.eventgrid.azure.net/topics/<topic>:publish`
  with an `api-version`, CloudEvents only, the same JSON array as
  `application/cloudevents-batch+json`, an access key as `Authorization: SharedAccessKey <key>`.
Both take a Microsoft Entra token for https://eventgrid.azure.net as `Authorization: Bearer` instead
of a key (role EventGrid Data Sender)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SETTING = "WORKFLOW_COMPLETION_TOPIC_ENDPOINT"
TOPIC_OR_DOMAIN = "topic_or_domain"
NAMESPACE_TOPIC = "namespace_topic"
# Event Grid namespaces data-plane API version used when the endpoint names none.
NAMESPACE_API_VERSION = "2024-06-01"
CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"

# Namespace topic names: 3-50 letters, digits and hyphens.
_NAMESPACE_PUBLISH_PATH = re.compile(r"/topics/[A-Za-z0-9-]{3,50}:publish")


class UnknownTopicEndpoint(ValueError):
    """The endpoint has neither publishing shape; the message says which shapes are accepted."""


@dataclass(frozen=True)
class PublishTarget:
    kind: str
    url: str

    def key_headers(self, key: str) -> dict[str, str]:
        """Where an access key goes for this kind of target."""
        if self.kind == NAMESPACE_TOPIC:
            return {"Authorization": f"SharedAccessKey {key}"}
        return {"aeg-sas-key": key}


def publish_target(endpoint: str) -> PublishTarget:
    parts = urlsplit(endpoint.strip())
    path = parts.path.rstrip("/")
    if path.lower() == "/api/events":
        return PublishTarget(TOPIC_OR_DOMAIN, urlunsplit(parts))
    if _NAMESPACE_PUBLISH_PATH.fullmatch(path):
        query = parse_qsl(parts.query, keep_blank_values=True)
        if not any(name == "api-version" for name, _ in query):
            query.append(("api-version", NAMESPACE_API_VERSION))
        return PublishTarget(NAMESPACE_TOPIC, urlunsplit(parts._replace(path=path, query=urlencode(query))))
    raise UnknownTopicEndpoint(
        "must end in /api/events (an Event Grid topic or domain) or /topics/<topic>:publish (an Event Grid "
        "namespace topic)")
