"""JobsClient over real sockets to a loopback server: the waits urllib3's Retry takes (Retry-After,
exponential backoff, the time budget), dropped connections and read timeouts. Sleeps are recorded,
not slept, so each test takes milliseconds."""
import pytest

from databricks_jobs.client import JobsClient
from databricks_jobs.errors import DatabricksApiError

RUN = {"run_id": 1, "state": {"life_cycle_state": "RUNNING"}}
GET = "/api/2.1/jobs/runs/get"
CREATE = "/api/2.1/jobs/create"


def ok(body=None):
    return (200, {}, RUN if body is None else body)


def err(status, code, headers=None):
    return (status, headers or {}, {"error_code": code, "message": f"{code} from the test"})


@pytest.fixture
def server(loopback):
    return loopback(lambda request: ok())


@pytest.fixture
def client(server, stub_tokens, sleeps):
    client = JobsClient(server.base_url, stub_tokens, timeout_seconds=2, retry_max_seconds=120,
                        sleep_func=sleeps, clock=sleeps.clock)
    yield client
    client.close()


@pytest.mark.parametrize("status, code", [(429, "REQUEST_LIMIT_EXCEEDED"), (503, "TEMPORARILY_UNAVAILABLE")])
def test_retry_after_is_honoured(client, server, sleeps, status, code):
    server.script(GET, err(status, code, {"Retry-After": "7"}), err(status, code, {"Retry-After": "3"}))
    assert client.get_run(1) == RUN
    assert sleeps.sleeps == [7, 3]
    assert len(server.calls(GET)) == 3


def test_429_without_retry_after_backs_off_exponentially(client, server, sleeps):
    server.script(GET, *[err(429, "REQUEST_LIMIT_EXCEEDED")] * 4)
    client.get_run(1)
    # urllib3 retries the first failure at once, then waits factor * 2**(n-1) plus up to 0.25 s jitter
    assert len(sleeps.sleeps) == 3
    for wait, base in zip(sleeps.sleeps, (1.0, 2.0, 4.0)):
        assert base <= wait <= base + 0.25


def test_5xx_backs_off_exponentially(client, server, sleeps):
    server.script(GET, err(500, "INTERNAL_ERROR"), err(502, "BAD_GATEWAY"), err(504, "DEADLINE_EXCEEDED"))
    assert client.get_run(1) == RUN
    assert len(sleeps.sleeps) == 2 and sleeps.sleeps[1] > sleeps.sleeps[0] >= 1.0


def test_total_retry_time_is_bounded(server, stub_tokens, sleeps):
    client = JobsClient(server.base_url, stub_tokens, retry_max_seconds=10, sleep_func=sleeps, clock=sleeps.clock)
    server.script(GET, *[err(500, "INTERNAL_ERROR")] * 20)
    with pytest.raises(DatabricksApiError) as raised:
        client.get_run(1)
    assert raised.value.status == 500
    assert sum(sleeps.sleeps) <= 10
    assert len(server.calls(GET)) < 10


def test_retry_after_larger_than_the_budget_is_not_waited_for(server, stub_tokens, sleeps):
    client = JobsClient(server.base_url, stub_tokens, retry_max_seconds=60, sleep_func=sleeps, clock=sleeps.clock)
    server.script(GET, err(503, "TEMPORARILY_UNAVAILABLE", {"Retry-After": "600"}))
    with pytest.raises(DatabricksApiError, match="^Databricks API error 503 TEMPORARILY_UNAVAILABLE"):
        client.get_run(1)
    assert sleeps.sleeps == [] and len(server.calls(GET)) == 1


def test_an_unparseable_retry_after_falls_back_to_backoff(client, server, sleeps):
    server.script(GET, err(503, "TEMPORARILY_UNAVAILABLE", {"Retry-After": "soon"}))
    assert client.get_run(1) == RUN
    assert len(server.calls(GET)) == 2


def test_a_dropped_connection_is_retried_for_get(client, server):
    server.script(GET, "drop", "drop")
    assert client.get_run(1) == RUN
    assert len(server.calls(GET)) == 3


def test_a_dropped_connection_is_not_retried_for_create(client, server):
    server.script(CREATE, "drop")
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job({"name": "nb"})
    assert (raised.value.status, raised.value.error_code) == (0, "TRANSPORT_ERROR")
    assert str(raised.value).startswith("Databricks API error 0 TRANSPORT_ERROR: POST jobs/create failed")
    assert len(server.calls(CREATE)) == 1


def test_a_503_with_retry_after_is_not_retried_for_create(client, server, sleeps):
    # urllib3 retries a Retry-After status outside status_forcelist unless told otherwise; a 5xx
    # may follow a created job, so the orchestrator's createJob retry (which looks first) decides.
    server.script(CREATE, err(503, "TEMPORARILY_UNAVAILABLE", {"Retry-After": "2"}), ok({"job_id": 5}))
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job({"name": "nb"})
    assert raised.value.status == 503
    assert len(server.calls(CREATE)) == 1 and sleeps.sleeps == []


def test_a_429_with_retry_after_is_still_retried_for_create(client, server, sleeps):
    server.script(CREATE, err(429, "REQUEST_LIMIT_EXCEEDED", {"Retry-After": "2"}), ok({"job_id": 5}))
    assert client.create_job({"name": "nb"}) == 5
    assert sleeps.sleeps == [2]


def test_a_read_timeout_is_retried_for_get_but_not_for_create(server, stub_tokens, sleeps):
    client = JobsClient(server.base_url, stub_tokens, timeout_seconds=0.2, sleep_func=sleeps, clock=sleeps.clock)
    server.script(GET, ("delay", 0.5, ok()))
    assert client.get_run(1) == RUN
    assert len(server.calls(GET)) == 2
    server.script(CREATE, ("delay", 0.5, ok({"job_id": 1})))
    with pytest.raises(DatabricksApiError, match="TRANSPORT_ERROR"):
        client.create_job({"name": "nb"})
    assert len(server.calls(CREATE)) == 1


def test_connection_refused_is_retried_then_reported(stub_tokens, sleeps, loopback):
    closed = loopback()
    url = closed.base_url
    closed.stop()
    client = JobsClient(url, stub_tokens, sleep_func=sleeps, clock=sleeps.clock)
    with pytest.raises(DatabricksApiError) as raised:
        client.create_job({"name": "nb"})  # refused before sending: safe to retry even for create
    assert raised.value.status == 0
    assert len(sleeps.sleeps) >= 3


def test_connections_are_pooled(client, server):
    for _ in range(20):
        client.get_run(1)
    # one keep-alive connection serves them all: the server saw one client port
    assert len({r["client_port"] for r in server.calls(GET)}) == 1


@pytest.mark.parametrize("status, code", [(502, "BAD_GATEWAY"), (500, "INTERNAL_ERROR"), (504, "DEADLINE_EXCEEDED")])
def test_retry_after_on_other_5xx_is_ignored_for_the_normal_backoff(client, server, sleeps, status, code):
    # A gateway's 502 + Retry-After: 100 used to sleep 100 s and then give up at the time budget.
    server.script(GET, *[err(status, code, {"Retry-After": "100"})] * 3)
    assert client.get_run(1) == RUN
    assert len(server.calls(GET)) == 4
    assert len(sleeps.sleeps) == 2  # urllib3 retries the first failure at once
    for wait, base in zip(sleeps.sleeps, (1.0, 2.0)):
        assert base <= wait <= base + 0.25


def test_a_transport_error_says_what_failed_by_type_path_and_attempts_only(client, server, sleeps):
    server.script(GET, *["drop"] * 20)
    with pytest.raises(DatabricksApiError) as raised:
        client.get_run(123456)
    message = raised.value.message
    assert message.startswith("GET jobs/runs/get failed after ")
    attempts = int(message.split("after ")[1].split(" ")[0])
    assert attempts == len(server.calls(GET)) > 1
    assert message.endswith("attempts: ConnectionError (ProtocolError)")
    assert "123456" not in message and "127.0.0.1" not in message  # no query, no URL
    assert raised.value.transient


def test_each_transport_attempt_is_observed(server, stub_tokens, sleeps):
    seen = []
    client = JobsClient(server.base_url, stub_tokens, timeout_seconds=2, sleep_func=sleeps, clock=sleeps.clock,
                        attempt_observer=seen.append)
    server.script(GET, "drop", err(429, "REQUEST_LIMIT_EXCEEDED", {"Retry-After": "5"}))
    assert client.get_run(1) == RUN
    assert [(a.attempt, a.status, a.error_type, a.retry_wait) for a in seen] == [
        (1, None, "ConnectionError (ProtocolError)", 0), (2, 429, None, 5), (3, 200, None, None)]
    assert sleeps.sleeps == [5]
