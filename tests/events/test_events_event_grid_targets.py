"""The completion event reaches every kind of Event Grid target: a custom topic, a domain (its topic
named by the CloudEvent's source) and a namespace topic (another path, an api-version and another
key header). Through `responses`, so the exact request Event Grid would get is asserted."""
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from activities import notifications
from activities.notifications import notifyCompletion
from databricks_jobs.errors import ConfigurationError
from messaging import event_grid_targets

KEY = "eventgrid-key-SECRET-0123456789"
TOPIC = "https://jobs.westeurope-1.eventgrid.azure.net/api/events"
DOMAIN = "https://jobs-domain.westeurope-1.eventgrid.azure.net/api/events"
NAMESPACE_TOPIC = "https://jobs-ns.westeurope-1.eventgrid.azure.net/topics/completions:publish"
OUTPUTS = {"jobId": 11, "runId": 22, "resultState": "SUCCESS"}


def call(payload):
    return notifyCompletion.build().get_user_function()(payload)


@pytest.mark.parametrize("endpoint, kind, url", [
    (TOPIC, event_grid_targets.TOPIC_OR_DOMAIN, TOPIC),
    (TOPIC + "/", event_grid_targets.TOPIC_OR_DOMAIN, TOPIC + "/"),
    (NAMESPACE_TOPIC, event_grid_targets.NAMESPACE_TOPIC, NAMESPACE_TOPIC + "?api-version=2024-06-01"),
    (NAMESPACE_TOPIC + "?api-version=2023-11-01", event_grid_targets.NAMESPACE_TOPIC,
     NAMESPACE_TOPIC + "?api-version=2023-11-01"),
])
def test_the_endpoint_shape_says_what_kind_of_target_it_is(endpoint, kind, url):
    target = event_grid_targets.publish_target(endpoint)
    assert (target.kind, target.url) == (kind, url)


@pytest.mark.parametrize("endpoint", [
    "https://jobs.westeurope-1.eventgrid.azure.net/",
    "https://jobs-ns.westeurope-1.eventgrid.azure.net/topics/completions",
    "https://jobs-ns.westeurope-1.eventgrid.azure.net/topics/completions:receive",
])
def test_an_endpoint_of_neither_shape_is_a_configuration_error_before_any_request(endpoint):
    with responses.RequestsMock() as mocked:
        with pytest.raises(ConfigurationError) as raised:
            notifications.publish_to_topic({"id": "x"}, endpoint, KEY)
        assert not mocked.calls
    assert raised.value.setting == "WORKFLOW_COMPLETION_TOPIC_ENDPOINT" and "/api/events" in raised.value.problem


@responses.activate
def test_a_namespace_topic_gets_the_cloudevents_batch_with_its_key_as_a_shared_access_key(monkeypatch):
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", NAMESPACE_TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", KEY)
    responses.post(NAMESPACE_TOPIC, status=200)
    result = call({"instanceId": "queue-1", "outputs": OUTPUTS})
    assert result["topic"] is True
    [sent] = responses.calls
    assert parse_qs(urlsplit(sent.request.url).query) == {"api-version": ["2024-06-01"]}
    assert sent.request.headers["Authorization"] == f"SharedAccessKey {KEY}"
    assert "aeg-sas-key" not in sent.request.headers
    assert sent.request.headers["Content-Type"] == "application/cloudevents-batch+json; charset=utf-8"
    [event] = json.loads(sent.request.body)
    assert event["specversion"] == "1.0" and event["id"] == "queue-1" and event["data"] == OUTPUTS


@responses.activate
def test_a_namespace_topic_without_a_key_gets_the_identitys_token():
    responses.post(NAMESPACE_TOPIC, status=200)
    notifications.publish_to_topic({"id": "x"}, NAMESPACE_TOPIC, "", token_provider=lambda: "aad-token")
    [sent] = responses.calls
    assert sent.request.headers["Authorization"] == "Bearer aad-token"


@responses.activate
def test_a_domain_gets_the_event_with_the_domain_topic_as_its_source(monkeypatch):
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", DOMAIN)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", KEY)
    monkeypatch.setenv("WORKFLOW_COMPLETION_EVENT_SOURCE", "tenant-a-completions")
    responses.post(DOMAIN, status=200)
    call({"instanceId": "queue-1", "outputs": OUTPUTS})
    [sent] = responses.calls
    assert sent.request.headers["aeg-sas-key"] == KEY
    [event] = json.loads(sent.request.body)
    assert event["source"] == "tenant-a-completions"


@responses.activate
def test_a_namespace_refusal_is_permanent_and_never_echoes_the_key(monkeypatch):
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_ENDPOINT", NAMESPACE_TOPIC)
    monkeypatch.setenv("WORKFLOW_COMPLETION_TOPIC_KEY", KEY)
    responses.post(NAMESPACE_TOPIC, status=401, body=f"bad SharedAccessKey {KEY}")
    with pytest.raises(notifications.NotificationError) as raised:
        call({"instanceId": "i", "outputs": OUTPUTS})
    assert str(raised.value).startswith("Notification refused: Event Grid topic answered 401")
    assert raised.value.transient is False
    # Event Grid's text is scrubbed: a key it quoted back never reaches history or logs.
    assert KEY not in str(raised.value)
