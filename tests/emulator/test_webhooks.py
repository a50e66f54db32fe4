"""Job webhook notifications, delivered by tick() when the clock passes the event."""

import pytest

HOOKS = {"on_start": [{"id": "dest-1"}], "on_success": [{"id": "dest-1"}], "on_failure": [{"id": "dest-1"}]}
NB = "/Workspace/Users/dev@example.com/"


@pytest.fixture
def hooked(make_emulator, webhook_receiver):
    emu, api = make_emulator(notification_destinations={
        "dest-1": {"url": webhook_receiver.url, "username": "hook-user", "password": "hook-pass"}})
    return emu, api, webhook_receiver


def test_on_start_then_on_success_with_basic_auth(hooked, clock):
    emu, api, receiver = hooked
    job_id = api.create_job(NB + "etl", name="hooked-job", webhook_notifications=HOOKS)
    run_id = api.run_now(job_id)
    assert emu.tick() == []  # still PENDING
    clock.advance(0.5)
    emu.tick()
    assert [r["json"]["event_type"] for r in receiver.received] == ["jobs.on_start"]
    clock.advance(3)
    emu.tick()
    emu.tick()  # nothing is delivered twice
    assert [r["json"] for r in receiver.received] == [
        {"event_type": event, "workspace_id": 1234567890123456, "run": {"run_id": run_id},
         "job": {"job_id": job_id, "name": "hooked-job"}}
        for event in ("jobs.on_start", "jobs.on_success")]
    assert {r["basic"] for r in receiver.received} == {"hook-user:hook-pass"}
    assert [(d["event_type"], d["status"]) for d in emu.deliveries] == [
        ("jobs.on_start", 200), ("jobs.on_success", 200)]
    assert "hook-pass" not in repr(emu.deliveries)


def test_jumping_past_both_events_delivers_them_in_order(hooked, clock):
    emu, api, receiver = hooked
    api.run_now(api.create_job(NB + "fail_me", webhook_notifications=HOOKS))
    clock.on_advance(emu.tick)  # how a devhost VirtualClock drives deliveries
    clock.advance(3600)
    assert [r["json"]["event_type"] for r in receiver.received] == ["jobs.on_start", "jobs.on_failure"]


def test_only_subscribed_events_and_alert_settings(hooked, clock):
    emu, api, receiver = hooked
    api.run_now(api.create_job(NB + "etl", webhook_notifications={"on_success": [{"id": "dest-1"}]}))
    api.run_now(api.create_job(NB + "skip_it", webhook_notifications=HOOKS,
                               notification_settings={"no_alert_for_skipped_runs": True}))
    api.run_now(api.create_job(NB + "etl"))  # no webhooks at all
    clock.advance(60)
    emu.tick()
    assert [r["json"]["event_type"] for r in receiver.received] == ["jobs.on_success"]


def test_cancelled_run_reports_failure(hooked, clock):
    emu, api, receiver = hooked
    run_id = api.run_now(api.create_job(NB + "etl", webhook_notifications=HOOKS))
    api.ok(api.post("runs/cancel", {"run_id": run_id}))
    clock.advance(10)
    emu.tick()
    # cancelled while PENDING: it never started, so only the failure event
    assert [r["json"]["event_type"] for r in receiver.received] == ["jobs.on_failure"]


def test_unknown_destination_and_unreachable_receiver_are_recorded(make_emulator, clock):
    emu, api = make_emulator(notification_destinations={"dead": "http://127.0.0.1:9/nothing"},
                             webhook_timeout=1)
    api.run_now(api.create_job(NB + "etl", webhook_notifications={
        "on_success": [{"id": "dead"}, {"id": "missing"}]}))
    clock.advance(10)
    records = emu.tick()
    assert [(r["destination_id"], r["status"]) for r in records] == [("dead", None), ("missing", None)]
    assert records[0]["error"] and records[1]["error"] == "unknown notification destination"


def test_ids_as_strings_option(make_emulator, webhook_receiver, clock):
    emu, api = make_emulator(notification_destinations={"d": {"url": webhook_receiver.url}},
                             webhook_ids_as_strings=True)
    run_id = api.run_now(api.create_job(NB + "etl", webhook_notifications={"on_success": [{"id": "d"}]}))
    clock.advance(10)
    emu.tick()
    assert webhook_receiver.received[0]["json"]["run"] == {"run_id": str(run_id)}
    assert webhook_receiver.received[0]["basic"] is None


def test_real_time_ticker_delivers_without_help(make_emulator, webhook_receiver):
    import time
    from jobs_emulator import Scenario
    emu, api = make_emulator(clock=time.time, scenario=Scenario(time_scale=0.01), tick_interval=0.02,
                             notification_destinations={"d": {"url": webhook_receiver.url}})
    api.run_now(api.create_job(NB + "etl", webhook_notifications={"on_success": [{"id": "d"}]}))
    deadline = time.time() + 5
    while not webhook_receiver.received and time.time() < deadline:
        time.sleep(0.02)
    assert webhook_receiver.received[0]["json"]["event_type"] == "jobs.on_success"


def test_devhost_virtual_clock_drives_deliveries(make_emulator, webhook_receiver):
    clock_module = pytest.importorskip("devhost.clock")
    vclock = clock_module.VirtualClock(start=1_700_000_000)
    emu, api = make_emulator(clock=vclock, notification_destinations={"d": {"url": webhook_receiver.url}})
    assert emu.auto_tick is False  # virtual time: deliveries follow the clock, not a thread
    vclock.on_advance(emu.tick)
    run_id = api.run_now(api.create_job(NB + "etl", webhook_notifications={"on_success": [{"id": "d"}]}))
    vclock.advance(2)
    assert webhook_receiver.received == []
    vclock.advance(1)
    assert webhook_receiver.received[0]["json"]["run"]["run_id"] == run_id
