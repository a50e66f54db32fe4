"""The benchmarks still run against the current code (tiny sizes, no timing asserted: figures come
from `make bench`, never from tests)."""
import pytest

from bench import activity_overhead, poll_cost


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch):
    for name in ("DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(name, raising=False)
    yield
    import databricks_jobs
    databricks_jobs.reset_all()


def test_activity_overhead_bench_runs_and_fetches_one_token(monkeypatch, capsys):
    monkeypatch.setattr(activity_overhead, "CALLS", 20)
    monkeypatch.setattr(activity_overhead, "ROUNDS", 2)
    activity_overhead.run()
    out = capsys.readouterr().out
    assert "ratio: " in out and "managed-identity token fetches: 1 " in out


def test_poll_cost_bench_runs_and_beats_the_fixed_poll(monkeypatch, capsys):
    monkeypatch.setattr(poll_cost, "RUN_SECONDS", 3 * 3600)
    poll_cost.run()
    out = capsys.readouterr().out
    ratio = float(out.split("poll ratio: ")[1].split()[0])
    assert 0 < ratio < 1
