"""The Logic Apps contract, end to end over real HTTP through devhost serve.

A Logic Apps HTTP action with the asynchronous pattern on: POST the start route; on 202, wait
Retry-After and GET Location, again while 202; the first non-202 ends the action, whose body
is the response body; a non-2xx fails the action. Waiting happens in virtual time (the clock is
advanced by Retry-After), so the test takes well under a second of wall time.
"""
import time

import requests

from events_support import VALID_INPUT

START = "/api/workflows/create-job-and-run"


class LogicAppsHttpAction:
    """What the HTTP action does, with time.sleep(Retry-After) replaced by advancing the clock."""

    def __init__(self, clock, max_polls=200):
        self.clock = clock
        self.max_polls = max_polls
        self.polls = []

    def run(self, url, body, headers=None):
        response = requests.post(url, json=body, headers=headers or {}, timeout=10)
        while response.status_code == 202 and "Location" in response.headers:
            assert len(self.polls) < self.max_polls, "the action would time out"
            wait = int(response.headers["Retry-After"])
            assert wait >= 1
            self.clock.advance_to(self.clock.now() + wait)
            time.sleep(0.02)  # let devhost's worker take the timers that just came due
            location = response.headers["Location"]
            response = requests.get(location, timeout=10)
            self.polls.append((location, response.status_code))
        succeeded = 200 <= response.status_code < 300
        return succeeded, response


def test_http_action_ends_with_the_outputs_as_its_body(app_stack):
    stack = app_stack(webhooks=False, foreground=False)
    action = LogicAppsHttpAction(stack.clock)
    ok, response = action.run(f"{stack.base_url}{START}", VALID_INPUT, headers={"x-functions-key": "function-key"})
    assert ok and response.status_code == 200
    outputs = response.json()
    assert outputs["resultState"] == "SUCCESS" and outputs["jobId"] and outputs["runId"]
    assert set(outputs) >= {"jobId", "runId", "resultState", "notebookResult", "runPageUrl"}
    # Every poll followed the Location the app gave, which never carries a key.
    assert action.polls and not any("function-key" in loc or "code=" in loc for loc, _ in action.polls)
    assert [s for _, s in action.polls[:-1]] == [202] * (len(action.polls) - 1)


def test_run_that_did_not_succeed_fails_the_action_with_the_outputs(app_stack):
    stack = app_stack(webhooks=False, foreground=False)
    action = LogicAppsHttpAction(stack.clock)
    ok, response = action.run(f"{stack.base_url}{START}", dict(VALID_INPUT, notebookPath="/Workspace/Users/a@b.c/fail_nb"))
    assert not ok and response.status_code == 424
    body = response.json()
    assert body["resultState"] == "FAILED" and "emulated notebook failure" in body["error"]


def test_invalid_request_fails_the_action_at_once(app_stack):
    stack = app_stack(webhooks=False, foreground=False)
    action = LogicAppsHttpAction(stack.clock)
    ok, response = action.run(f"{stack.base_url}{START}", {"jobName": "x", "notebookPath": "/Workspace/nb"})
    assert not ok and response.status_code == 400 and response.json()["field"] == "taskKey"
    assert action.polls == [] and stack.host.instance_ids() == []


def test_openapi_document_is_served_anonymously_for_connector_import(app_stack, monkeypatch):
    stack = app_stack(webhooks=False, foreground=False)
    # The platform sets the app's host name (Core Tools: localhost:<port>); the document names it.
    monkeypatch.setenv("WEBSITE_HOSTNAME", stack.base_url.split("://")[1])
    doc = requests.get(f"{stack.base_url}/api/openapi.json?format=swagger2", timeout=10).json()
    assert doc["swagger"] == "2.0" and doc["host"] == stack.base_url.split("://")[1] and doc["schemes"] == ["http"]
