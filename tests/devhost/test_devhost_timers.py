"""Timer-triggered functions on the ReplayHost's clock (off by default), with a durable client
that reaches THIS host's management API, and the NCRONTAB/TimeSpan parser."""
from datetime import datetime, timedelta, timezone

import pytest

import devhost_toyapp as toy
from devhost import ReplayHost
from devhost.schedules import ScheduleError, parse_schedule

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_timer_triggers_are_off_by_default(host, clock):
    clock.advance(3600)
    host.run_until_idle()
    assert toy.TIMER_SEEN == [] and host.timer_invocations == []


def test_due_timer_triggers_fire_on_the_virtual_clock_with_a_working_client(app, clock):
    host = ReplayHost(app, clock, timer_triggers=True)
    try:
        host.run_until_idle()
        assert toy.TIMER_SEEN == []
        clock.advance_to(T0 + timedelta(minutes=5))
        host.run_until_idle()
        # The function started an orchestration through its client, over loopback HTTP, into
        # this very host (no deadlock: it runs outside the host's locks).
        [seen] = toy.TIMER_SEEN
        assert seen["past_due"] is False and seen["status"] in ("Pending", "Running", "Completed")
        assert host.get_status(seen["instance"])["runtimeStatus"] == "Completed"
        assert host.timer_invocations[0]["scheduledFor"] == "2024-01-01T00:05:00Z"
        # The clock jumps past three occurrences: one late invocation, past due, as the host
        # does for a missed schedule; the next one is on the schedule again.
        clock.advance_to(T0 + timedelta(minutes=21))
        host.run_until_idle()
        assert [s["past_due"] for s in toy.TIMER_SEEN] == [False, True]
        assert host.next_timer_trigger_at() == (T0 + timedelta(minutes=25)).timestamp()
    finally:
        host.stop()


def test_run_until_complete_advances_to_timer_trigger_fires_first(app, clock):
    host = ReplayHost(app, clock, timer_triggers=["every_five_minutes"])
    try:
        iid = host.start_new("sleeper", client_input=12 * 60)
        assert host.run_until_complete(iid)["output"]["end"] == "2024-01-01T00:12:00+00:00"
        assert [i["scheduledFor"] for i in host.timer_invocations] == [
            "2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"]
        assert all(not s["past_due"] for s in toy.TIMER_SEEN)
    finally:
        host.stop()


@pytest.mark.parametrize("expression, after, expected", [
    ("0 0 3 * * *", "2026-01-01T03:00:00", "2026-01-02T03:00:00"),
    ("*/10 * * * * *", "2026-01-01T00:00:05", "2026-01-01T00:00:10"),
    ("0 */5 * * * *", "2026-01-01T00:04:59", "2026-01-01T00:05:00"),
    ("0 30 9 * * Mon-Fri", "2026-01-02T10:00:00", "2026-01-05T09:30:00"),  # Fri -> Mon
    ("0 0 12 1,15 * *", "2026-01-02T00:00:00", "2026-01-15T12:00:00"),
    ("0 0 0 1 Jan *", "2026-01-01T00:00:00", "2027-01-01T00:00:00"),
    ("0 0 0 * * 7", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),  # 7 is Sunday too
    ("01:30:00", "2026-01-01T00:00:00", "2026-01-01T01:30:00"),
])
def test_schedules(expression, after, expected):
    moment = datetime.fromisoformat(after).replace(tzinfo=timezone.utc)
    assert parse_schedule(expression).next_after(moment).isoformat() == expected + "+00:00"


@pytest.mark.parametrize("bad", ["0 0 3 * *", "60 * * * * *", "* * * * 13 *", "*/0 * * * * *",
                                 "0 0 5-1 * * *", "00:00:00", "soon"])
def test_invalid_schedules_are_refused(bad):
    with pytest.raises(ScheduleError):
        parse_schedule(bad)
