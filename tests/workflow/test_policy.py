import collections

import pytest

from workflow import policy


@pytest.mark.parametrize("state, terminal", [
    ("QUEUED", False), ("PENDING", False), ("RUNNING", False), ("TERMINATING", False),
    ("BLOCKED", False), ("WAITING_FOR_RETRY", False), ("SOME_FUTURE_STATE", False),
    ("TERMINATED", True), ("SKIPPED", True), ("INTERNAL_ERROR", True),
])
def test_life_cycle_states_are_classified_as_databricks_documents_them(state, terminal):
    assert policy.is_terminal({"lifeCycleState": state}) is terminal


def test_jobs_2_2_status_terminated_is_terminal_even_without_life_cycle_state():
    assert policy.is_terminal({"status": {"state": "TERMINATED"}})
    assert not policy.is_terminal({"status": {"state": "WAITING"}})


@pytest.mark.parametrize("run, ours, theirs", [
    ({"lifeCycleState": "RUNNING"}, None, None),
    ({"lifeCycleState": "TERMINATED", "resultState": "SUCCESS"}, "SUCCESS", "SUCCESS"),
    ({"lifeCycleState": "TERMINATED", "resultState": "SUCCESS_WITH_FAILURES"}, "SUCCESS_WITH_FAILURES",
     "SUCCESS_WITH_FAILURES"),
    ({"lifeCycleState": "TERMINATED", "resultState": "FAILED"}, "FAILED", "FAILED"),
    ({"lifeCycleState": "TERMINATED", "resultState": "UPSTREAM_FAILED"}, "FAILED", "UPSTREAM_FAILED"),
    ({"lifeCycleState": "TERMINATED", "resultState": "TIMEDOUT"}, "TIMEDOUT", "TIMEDOUT"),
    ({"lifeCycleState": "TERMINATED", "resultState": "CANCELED"}, "CANCELED", "CANCELED"),
    ({"lifeCycleState": "TERMINATED", "resultState": "EXCLUDED"}, "SKIPPED", "EXCLUDED"),
    ({"lifeCycleState": "TERMINATED", "resultState": "A_STATE_ADDED_LATER"}, "FAILED", "A_STATE_ADDED_LATER"),
    ({"lifeCycleState": "SKIPPED"}, "SKIPPED", "SKIPPED"),
    ({"lifeCycleState": "INTERNAL_ERROR"}, "FAILED", "INTERNAL_ERROR"),
    ({"lifeCycleState": "SKIPPED", "resultState": "MAXIMUM_CONCURRENT_RUNS_REACHED"}, "SKIPPED",
     "MAXIMUM_CONCURRENT_RUNS_REACHED"),
    ({"status": {"state": "TERMINATED", "termination_details": {"code": "USER_CANCELED"}}}, "CANCELED", "USER_CANCELED"),
    ({"status": {"state": "TERMINATED", "termination_details": {"code": "DRIVER_ERROR"}}}, "FAILED", "DRIVER_ERROR"),
])
def test_every_terminal_outcome_maps_to_one_documented_result_state(run, ours, theirs):
    assert policy.result_state(run) == ours
    assert policy.databricks_result_state(run) == theirs
    assert ours is None or ours in policy.RESULT_STATES


def test_an_unknown_outcome_is_never_a_success():
    assert not policy.is_success(policy.result_state({"lifeCycleState": "TERMINATED", "resultState": "NEW"}))


def test_select_task_run_takes_the_latest_attempt_of_the_named_task():
    run = {"tasks": [
        {"taskKey": "main", "runId": 1, "attemptNumber": 0, "startTime": 10},
        {"taskKey": "other", "runId": 9, "attemptNumber": 5, "startTime": 99},
        {"taskKey": "main", "runId": 2, "attemptNumber": 1, "startTime": 20},
    ]}
    assert policy.select_task_run(run, "main")["runId"] == 2
    assert policy.select_task_run(run, "absent") is None
    assert policy.select_task_run({}, "main") is None


def test_poll_schedule_starts_fast_then_lags_in_proportion_to_the_run_up_to_its_ceiling():
    schedule = policy.PollSchedule(first_seconds=5, steady_seconds=30, steady_until=600, fraction=0.05,
                                   max_seconds=300)
    assert [schedule.delay_at(age) for age in (0, 5, 10, 20, 40, 599)] == [5, 5, 10, 20, 30, 30]
    assert schedule.delay_at(1200) == 60  # 5 % of the run so far
    assert schedule.delay_at(86400) == 300  # never past the ceiling
    assert policy.PollSchedule(max_seconds=10).delay_at(5000) == 10


def _looks(schedule, seconds):
    age, looks = 0.0, 0
    while age < seconds:
        age += schedule.delay_at(age)
        looks += 1
    return looks


def test_signals_make_polls_a_sparse_safety_net():
    own = policy.poll_schedule(signals=False, max_seconds=300)
    safety = policy.poll_schedule(signals=True, max_seconds=86400)
    assert own == policy.PollSchedule(max_seconds=300)
    # No look at age 0 either way; a signal, not a poll, ends a short run.
    assert own.delay_at(0) == 30 and safety.delay_at(0) == 3600
    # The safety net looks at 1 h, 5 h and 25 h: at most two looks before a day-long run ends.
    assert _looks(safety, 86400) == 3 and _looks(safety, 5 * 3600) == 2
    assert _looks(safety, 3600) < _looks(own, 3600) / 20
    assert policy.poll_schedule(signals=True, max_seconds=900).delay_at(7200) == 900  # the setting caps it


def test_safety_polls_of_workflows_started_together_are_spread_over_a_quarter_of_the_wait():
    firsts = [policy.poll_schedule(signals=True, max_seconds=86400, workflow_key=f"wf-{i}").delay_at(0)
              for i in range(1000)]
    assert 3600 <= min(firsts) < 3600 + 30 and 4500 - 30 < max(firsts) <= 4500
    assert max(collections.Counter(firsts).values()) <= 5  # about one a second, not 1,000 at once
    again = policy.poll_schedule(signals=True, max_seconds=86400, workflow_key="wf-7")
    assert again.delay_at(0) == firsts[7]  # the same on every replay
    # A workflow's own polls keep Airflow's grid: lag hangs on them.
    assert {policy.poll_schedule(signals=False, max_seconds=300, workflow_key=f"wf-{i}").delay_at(0)
            for i in range(100)} == {30}


def test_a_run_polling_on_its_own_looks_every_30_s_for_a_quarter_hour_then_less_often():
    own = policy.OWN_SCHEDULE
    assert {own.delay_at(age) for age in range(0, 900, 30)} == {30}
    assert own.delay_at(1200) == 120 and own.delay_at(7200) == 300
    # A 10-minute run: 20 looks, as many as a fixed 30 s poll (Airflow's) from the first interval.
    assert _looks(own, 600) == 20


def test_a_day_long_run_costs_hundreds_of_polls_not_thousands():
    assert 150 < _looks(policy.PollSchedule(), 86400) < 400


def test_the_watcher_looks_no_more_often_per_run_than_a_run_would_poll_itself():
    assert policy.own_check_interval(0) == 30 and policy.own_check_interval(7200) == 300


def test_idempotency_token_is_stable_and_fits_databricks_limit():
    assert policy.run_idempotency_token("abc") == "abc"
    long_id = "x" * 200
    token = policy.run_idempotency_token(long_id)
    assert len(token) == 64 and token == policy.run_idempotency_token(long_id)
    assert token != policy.run_idempotency_token("y" * 200)


@pytest.mark.parametrize("message, kind", [
    ("Activity function 'getJobRun' failed: DatabricksApiError: Databricks API error 503 TEMPORARILY_UNAVAILABLE: busy",
     "transient"),
    ("Activity function 'getJobRun' failed: Databricks API error 429 REQUEST_LIMIT_EXCEEDED: slow down", "transient"),
    ("Activity function 'getJobRun' failed: Databricks API error 0 TRANSPORT_ERROR: connection reset", "transient"),
    ("Activity function 'createJob' failed: Databricks API error 403 PERMISSION_DENIED: no", "permanent"),
    ("Activity function 'createJob' failed: Databricks API error 400 INVALID_PARAMETER_VALUE: bad", "permanent"),
    ("Activity function 'createJob' failed: Databricks API error 400 COULD_NOT_ACQUIRE_LOCK: try again", "transient"),
    ("Activity function 'createJob' failed: ConfigurationError: Configuration error: DATABRICKS_AUTH: unknown auth "
     "mode 'bogus'", "permanent"),
    ("Activity function 'createJob' failed: CredentialError: Credential error: DATABRICKS_KEY_VAULT_SECRET_NAME: "
     "Key Vault refused access (403)", "permanent"),
    ("Activity function 'createJob' failed: CredentialError: Credential temporarily unavailable: DATABRICKS_AUTH: "
     "token endpoint answered 503", "transient"),
    ("Timeout value of 00:05:00 was exceeded by function: Functions.getJobRun", "transient"),
    # No known kind: a bug or something unforeseen. Retrying would only hide it.
    ("Activity function 'createJob' failed: KeyError: 'job_id'", "permanent"),
    ("Activity function 'createJob' failed: ConnectionError: refused", "permanent"),
])
def test_activity_failures_are_classified_by_their_kind_and_code(message, kind):
    assert policy.failure_kind(message) == kind


def test_the_error_message_drops_the_host_wrapping_and_the_trace_and_is_bounded():
    text = ("Activity function 'createJob' failed: ConfigurationError: Configuration error: DATABRICKS_AUTH: "
            "unknown auth mode 'bogus' \n Traceback (most recent call last):\n  File \"/home/site/x.py\"")
    assert policy.error_message(text) == "Configuration error: DATABRICKS_AUTH: unknown auth mode 'bogus'"
    assert len(policy.error_message("x" * 10_000)) == policy.MAX_ERROR_CHARS


def test_activity_retry_backs_off_exponentially():
    retry = policy.ActivityRetry(max_attempts=4, first_delay_seconds=10, backoff=2)
    assert [retry.delay_before(a) for a in (2, 3, 4)] == [10, 20, 40]


def test_outputs_keep_arazzo_names_and_add_error_only_when_not_successful():
    run = {"lifeCycleState": "TERMINATED", "stateMessage": "", "runPageUrl": "https://x/run/1"}
    ok = policy.outputs(job_id=1, run_id=2, result="SUCCESS", run=run,
                        task_output={"notebookResult": "42", "error": "ignored"})
    assert ok == {"jobId": 1, "runId": 2, "resultState": "SUCCESS", "notebookResult": "42",
                  "lifeCycleState": "TERMINATED", "databricksResultState": "TERMINATED", "stateMessage": "",
                  "runPageUrl": "https://x/run/1"}
    failed = policy.outputs(job_id=1, run_id=2, result="FAILED", run=run,
                            task_output={"error": "boom", "errorTrace": "Traceback"})
    assert failed["error"] == "boom" and failed["errorTrace"] == "Traceback"
    assert failed["notebookResult"] is None


def test_status_retry_after_follows_the_workflows_age_within_bounds():
    assert [policy.status_retry_after(s) for s in (0, 99, 150, 1200, 3000, 86400)] == [10, 10, 15, 120, 300, 300]


def test_the_status_counts_repairs_only_once_there_are_some():
    plain = policy.progress_status(step="pollRun", run={"lifeCycleState": "RUNNING"}, polls=3, elapsed_seconds=90)
    assert "repairs" not in plain and plain["lifeCycleState"] == "RUNNING"
    repaired = policy.progress_status(step="pollRun", run={"runPageUrl": "https://x/#job/1/run/2"}, polls=3,
                                      elapsed_seconds=90, repairs=1)
    assert repaired["repairs"] == 1 and repaired["lifeCycleState"] is None  # unknown until the next poll
