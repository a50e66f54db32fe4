"""Databricks' request limits in the emulator: per-endpoint rates counted per second of the
emulator's clock (429 REQUEST_LIMIT_EXCEEDED + Retry-After beyond them, each in the request log),
the published set behind one switch, and the workspace's concurrent task-run limit (queued where the
job queues, 429 otherwise). The official databricks-sdk, driven against it, retries its 429s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs_emulator import JobsEmulator
from jobs_emulator.rate_limits import DATABRICKS, RateLimits

from .conftest import TOKEN, Api

NB = "/Workspace/Users/dev@example.com/etl"


@pytest.fixture
def limited(clock):
    """An emulator with small limits: run-now 3/s, runs/get 5/s, 4 concurrent task runs."""
    emu = JobsEmulator(clock=clock.now, rate_limits={"run-now": 3, "runs/get": 5}, max_concurrent_task_runs=4)
    emu.start()
    api = Api(emu.base_url)
    yield emu, api
    api.session.close()
    emu.stop()


def test_beyond_the_rate_the_emulator_answers_429_with_retry_after_and_the_databricks_body(limited, clock):
    emu, api = limited
    job_id = api.create_job(NB, queue={"enabled": True}, max_concurrent_runs=100)
    clock.advance(0.25)  # 0.75 s before the next second of the clock
    answers = [api.post("run-now", {"job_id": job_id}) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[3]
    assert refused.headers["Retry-After"] == "1"  # whole seconds, until the next second starts
    body = refused.json()
    assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED" and "3 requests per second" in body["message"]
    # Each 429 is in the request log, marked as a rate refusal.
    logged = [e for e in emu.request_log if e["path"].endswith("/run-now")]
    assert [(e["status"], e.get("rate_limited", False)) for e in logged] == \
        [(200, False)] * 3 + [(429, True)] * 2
    assert [e["error_code"] for e in logged if e["status"] == 429] == ["REQUEST_LIMIT_EXCEEDED"] * 2
    # A refused request did not count: the next second serves 3 again; other endpoints are apart.
    clock.advance(0.75)
    assert [api.post("run-now", {"job_id": job_id}).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert api.get("list").status_code == 200  # jobs/list is not limited here
    assert emu.call_counts()[("POST", "run-now")] == 9  # every call counted, refused ones too


def test_the_rate_is_per_endpoint(limited, clock):
    emu, api = limited
    job_id = api.create_job(NB, queue={"enabled": True}, max_concurrent_runs=100)
    run_ids = [api.run_now(job_id) for _ in range(3)]  # run-now's 3 for this second, spent
    assert api.post("run-now", {"job_id": job_id}).status_code == 429
    # runs/get has its own 5 in the same second: run-now's refusals take nothing from it.
    statuses = [api.get("runs/get", run_id=run_ids[0]).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_the_published_limits_are_one_switch(clock):
    assert RateLimits("databricks").rates == DATABRICKS
    assert DATABRICKS["run-now"] == 20 and DATABRICKS["runs/get"] == 100 and DATABRICKS["delete"] == 10
    with JobsEmulator(clock=clock.now, rate_limits="databricks") as emu:
        api = Api(emu.base_url)
        job_id = api.create_job(NB, queue={"enabled": True}, max_concurrent_runs=100)
        statuses = [api.post("run-now", {"job_id": job_id}).status_code for _ in range(21)]
        assert statuses.count(200) == 20 and statuses[-1] == 429
        api.session.close()


@pytest.mark.parametrize("bad", [{"run-now": 0}, {"run-now": 1.5}, {"jobs/nothing": 3}, "everything"])
def test_bad_limits_are_refused_naming_what_is_wrong(bad):
    with pytest.raises(ValueError, match="rate_limits"):
        RateLimits(bad)


def test_the_command_line_switch(tmp_path):
    assert RateLimits.parse("databricks").rates == DATABRICKS
    assert RateLimits.parse("run-now=5, jobs/runs/get=50").rates == {"run-now": 5, "runs/get": 50}
    from jobs_emulator.__main__ import build_parser
    args = build_parser().parse_args(["--rate-limits", "databricks", "--max-concurrent-task-runs", "7"])
    assert args.rate_limits.rates == DATABRICKS and args.max_concurrent_task_runs == 7
    result = subprocess.run([sys.executable, "-m", "jobs_emulator", "--rate-limits", "run-now=x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "run-now" in result.stderr


def test_a_run_beyond_the_concurrent_task_run_limit_is_queued_where_the_job_queues(limited, clock):
    emu, api = limited
    job_id = api.create_job(NB, tasks=2, queue={"enabled": True}, max_concurrent_runs=100)
    first, second = api.run_now(job_id), api.run_now(job_id)  # 2 + 2 tasks: the workspace is full
    third = api.run_now(job_id)
    assert api.life(third)[0] == "QUEUED"
    assert api.life(first)[0] != "QUEUED"
    clock.advance(1.0)  # the next second: run-now's rate is fresh again
    while api.life(first)[0] not in ("TERMINATED", "INTERNAL_ERROR"):
        clock.advance(1.0)
    clock.advance(0.1)
    assert api.life(third)[0] != "QUEUED"  # it started when the first run's tasks ended
    clock.advance(60)
    assert api.life(third) == ("TERMINATED", "SUCCESS")
    # It waited in the queue until the first run ended (Databricks' start_time is the request's).
    assert emu.run(third)["queue_duration"] == emu.run(first)["end_time"] - emu.run(third)["start_time"] > 0


def test_without_queueing_a_run_beyond_the_limit_is_refused_with_429(limited, clock):
    emu, api = limited
    job_id = api.create_job(NB, tasks=2, queue={"enabled": False}, max_concurrent_runs=100)
    api.run_now(job_id), api.run_now(job_id)
    refused = api.post("run-now", {"job_id": job_id, "idempotency_token": "third"})
    assert refused.status_code == 429 and refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "4 concurrent task runs" in refused.json()["message"]
    assert len(emu.runs) == 2  # nothing started; the token is free for the retry
    clock.advance(60)
    assert api.post("run-now", {"job_id": job_id, "idempotency_token": "third"}).status_code == 200


class _SdkClock:
    """The SDK's Clock on the test's virtual clock: its retry sleeps move the emulator's time."""

    def __init__(self, clock):
        self.clock = clock
        self.slept = []

    def time(self):
        return self.clock.now()

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.clock.advance(seconds)


def test_the_databricks_sdk_retries_its_429s_and_succeeds(clock):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service import jobs

    with JobsEmulator(clock=clock.now, rate_limits="databricks") as emu:
        sdk_clock = _SdkClock(clock)
        workspace = WorkspaceClient(config=Config(host=emu.base_url, token=TOKEN, auth_type="pat", clock=sdk_clock,
                                                  retry_timeout_seconds=300, http_timeout_seconds=5))
        created = workspace.jobs.create(
            name="sdk-limits", max_concurrent_runs=100, queue=jobs.QueueSettings(enabled=True),
            tasks=[jobs.Task(task_key="main", existing_cluster_id="c-1",
                             notebook_task=jobs.NotebookTask(notebook_path=NB))])
        run_ids = [workspace.jobs.run_now(job_id=created.job_id, idempotency_token=f"sdk-{i}").run_id
                   for i in range(45)]  # 20 per second: the SDK meets 429s, waits Retry-After and goes on
        assert len(set(run_ids)) == 45
        refused = [e for e in emu.request_log if e["status"] == 429]
        assert refused and all(e["rate_limited"] and e["path"].endswith("/run-now") for e in refused)
        assert len(sdk_clock.slept) == len(refused) and all(s >= 1 for s in sdk_clock.slept)
        served = [e["time"] for e in emu.request_log if e["path"].endswith("/run-now") and e["status"] == 200]
        per_second = {}
        for t in served:
            per_second[int(t)] = per_second.get(int(t), 0) + 1
        assert max(per_second.values()) == 20  # never more than the limit in one second of the clock
        assert len(emu.runs) == 45
