"""max_concurrent_runs, queueing and cancellation."""

NB = "/Workspace/Users/dev@example.com/etl"


def test_second_concurrent_run_is_skipped_without_queueing(api, clock):
    job_id = api.create_job(NB, version="2.1")
    first = api.run_now(job_id)
    second = api.run_now(job_id)
    run = api.run(second)
    assert run["state"]["life_cycle_state"] == "SKIPPED"
    assert run["state"]["result_state"] == "MAXIMUM_CONCURRENT_RUNS_REACHED"
    assert run["status"]["termination_details"]["code"] == "MAX_CONCURRENT_RUNS_EXCEEDED"
    assert api.life(first)[0] == "PENDING"
    clock.advance(3)
    assert api.life(api.run_now(job_id))[0] == "PENDING"  # the slot is free again


def test_max_concurrent_runs_zero_skips_everything(api):
    job_id = api.create_job(NB, max_concurrent_runs=0, queue={"enabled": True})
    assert api.life(api.run_now(job_id))[0] == "SKIPPED"


def test_second_run_of_a_2_2_job_is_queued_until_the_first_ends(api, clock):
    job_id = api.create_job(NB, version="2.2")
    first = api.run_now(job_id)
    second = api.run_now(job_id)
    run = api.run(second)
    assert run["state"]["life_cycle_state"] == "QUEUED"
    assert run["status"]["state"] == "QUEUED"
    assert run["status"]["queue_details"] == {
        "code": "MAX_CONCURRENT_RUNS_REACHED", "message": "Queued due to reaching maximum concurrent runs of 1."}
    clock.advance(3)
    assert api.life(first)[1] == "SUCCESS"
    assert api.life(second)[0] == "PENDING"
    clock.advance(3)
    run = api.run(second)
    assert run["state"]["result_state"] == "SUCCESS" and run["queue_duration"] == 3000


def test_run_now_queue_flag_and_max_concurrent_runs(api, clock):
    job_id = api.create_job(NB, version="2.1", max_concurrent_runs=2)
    a, b = api.run_now(job_id), api.run_now(job_id)
    c = api.run_now(job_id, queue={"enabled": True})
    assert [api.life(r)[0] for r in (a, b, c)] == ["PENDING", "PENDING", "QUEUED"]


def test_cancel_goes_through_terminating_to_canceled(api, clock):
    run_id = api.run_now(api.create_job(NB))
    clock.advance(1)
    assert api.ok(api.post("runs/cancel", {"run_id": run_id})) == {}
    run = api.run(run_id)
    # cancellation is asynchronous: still cleaning up right after the call
    assert run["state"]["life_cycle_state"] == "TERMINATING" and "result_state" not in run["state"]
    clock.advance(0.5)
    run = api.run(run_id)
    assert run["state"]["result_state"] == "CANCELED" and run["state"]["user_cancelled_or_timedout"] is True
    assert run["status"]["termination_details"]["code"] == "USER_CANCELED"
    assert run["end_time"] == int((clock.t) * 1000)
    clock.advance(100)
    assert api.life(run_id) == ("TERMINATED", "CANCELED")  # never "finishes" later
    assert api.ok(api.post("runs/cancel", {"run_id": run_id})) == {}  # no-op on a finished run


def test_cancel_by_task_run_id_cancels_the_job_run(api, clock):
    run_id = api.run_now(api.create_job(NB))
    task_run = api.run(run_id)["tasks"][0]["run_id"]
    api.ok(api.post("runs/cancel", {"run_id": task_run}))
    clock.advance(1)
    assert api.life(run_id) == ("TERMINATED", "CANCELED")


def test_cancelling_the_active_run_lets_the_queued_one_start(api, clock):
    job_id = api.create_job(NB, version="2.2")
    first, second = api.run_now(job_id), api.run_now(job_id)
    clock.advance(1)
    api.ok(api.post("runs/cancel", {"run_id": first}))
    clock.advance(0.5)  # first has finished terminating
    assert api.life(first) == ("TERMINATED", "CANCELED")
    assert api.life(second)[0] == "PENDING"
    clock.advance(3)
    assert api.life(second) == ("TERMINATED", "SUCCESS")


def test_cancel_a_queued_run_ends_it_at_once_and_cancel_all(api, clock):
    job_id = api.create_job(NB, version="2.2")
    first, second = api.run_now(job_id), api.run_now(job_id)
    api.ok(api.post("runs/cancel", {"run_id": second}))
    assert api.life(second) == ("TERMINATED", "CANCELED")
    api.ok(api.post("runs/cancel-all", {"job_id": job_id}))
    clock.advance(1)
    assert api.life(first) == ("TERMINATED", "CANCELED")
