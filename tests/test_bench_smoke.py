"""The benchmarks still run against the current code (tiny sizes, no timing asserted: figures come
from `make bench`, never from tests)."""
import pytest

from bench import (activity_overhead, baselines, cold_start, jobs_per_definition, poll_cost, report, speedups, waiting,
                   waiting_mixes, waiting_tuning)


from bench import (activity_overhead, baselines, burst, cold_start, jobs_per_definition, poll_cost, report, speedups,
                   waiting, waiting_tuning)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch):
    for name in ("DATABRICKS_HOST", "DATABRICKS_AUTH", "DATABRICKS_TOKEN", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
                 "DATABRICKS_NOTIFICATION_DESTINATION_ID", "DATABRICKS_WEBHOOK_USERNAME", "DATABRICKS_WEBHOOK_PASSWORD",
                 "WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS"):
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


# -- the waiting benchmark -----------------------------------------------------------------------

def test_airflow_model_polls_every_30_s_from_the_start_and_fetches_the_output_once():
    waited = baselines.airflow_run_now(45.0)
    assert waited.seen == 60.0 and waited.lag == 15.0
    assert [c for c in waited.calls] == [(0.0, "POST run-now"), (0.0, "GET runs/get"), (0.0, "GET runs/get"),
                                         (30.0, "GET runs/get"), (60.0, "GET runs/get"), (60.0, "GET runs/get-output")]
    assert baselines.airflow_run_now(60.0).lag == 0.0  # terminal at the poll instant itself


def test_sdk_model_backs_off_from_1_to_10_s_with_seeded_jitter():
    waited = baselines.sdk_waiter(3600.0, seed=7)
    polls = [t for t, name in waited.calls if name == "GET runs/get"]
    gaps = [b - a for a, b in zip(polls, polls[1:])]
    assert all(min(i + 1, 10) <= gap < min(i + 1, 10) + 1 for i, gap in enumerate(gaps))
    assert waited.seen >= 3600.0 and waited.calls[0] == (0.0, "POST run-now")
    assert baselines.sdk_waiter(3600.0, seed=7) == waited and baselines.sdk_waiter(3600.0, seed=8) != waited


def test_end_times_sample_the_window_evenly_and_avoid_the_poll_grid():
    ends = waiting.end_times(60, 20)
    assert len(ends) == 20 and 30 < min(ends) and max(ends) < 90  # w = 60 s at T = 1 min
    assert all(abs(e / 15 - round(e / 15)) > 1e-6 for t in waiting.T_VALUES for e in waiting.end_times(t, 20))
    long = waiting.end_times(86400, 1000)
    assert 0.9 * 86400 < min(long) and max(long) < 1.1 * 86400


def test_watcher_is_measured_at_every_n_and_in_rounds_of_n_below_the_end_time_count():
    every = waiting.specs()
    watcher = {(s["n"], s["t"]): s for s in every if s["mode"] == "watcher"}
    assert {n for n, _ in watcher} == set(waiting.N_VALUES)
    assert [len(r) for r in watcher[(1, 60)]["rounds"]] == [1] * waiting.END_TIMES
    assert [len(r) for r in watcher[(10, 600)]["rounds"]] == [10, 10]
    assert [len(r) for r in watcher[(1000, 86400)]["rounds"]] == [1000]
    assert (1, 28800) in watcher and (1000, 28800) not in watcher
    assert every[0]["n"] == 1000 and every[0]["t"] == 86400  # the longest starts first


def test_waiting_bench_runs_the_real_app_in_each_mode(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(waiting, "T_VALUES", (60,))
    monkeypatch.setattr(waiting, "N_VALUES", (1, 2))
    monkeypatch.setattr(waiting, "N1_EXTRA_T", ())
    monkeypatch.setattr(waiting, "END_TIMES", 2)
    monkeypatch.setattr(waiting, "SAMPLE_RUNS", 2)
    monkeypatch.setattr(waiting, "DOCS_DIR", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# app\n\n## Benchmarks\n\n<!-- waiting:start -->\nold\n<!-- waiting:end -->\n\nafter\n", "utf-8")
    monkeypatch.setattr(waiting, "README", readme)
    waiting.run()
    out = capsys.readouterr().out
    assert "| 1 min | (a) app, watcher | 2 | 2 |" in out
    assert "| 1 min | (d) Airflow, 30 s poll | any | 2 |" in out
    assert "PASS  webhook T=1 min" in out  # notified runs complete at the notification's instant
    assert ("PASS  history events" in out) and ("MISS" in out or "PASS" in out)
    text = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "<!-- waiting:start -->" in text and "(c) app, webhooks" in text
    assert (tmp_path / "waiting-benchmark.png").read_bytes()[:4] == b"\x89PNG"
    readme_text = readme.read_text("utf-8")  # the README gets the picture, the table and the targets
    assert "old" not in readme_text and readme_text.endswith("<!-- waiting:end -->\n\nafter\n")
    assert "(docs/waiting-benchmark.png)" in readme_text and "| 1 min | (a) app, watcher | 2 | 2 |" in readme_text
    assert "**PASS** webhook T=1 min" in readme_text


def test_app_simulation_counts_every_call_and_shares_one_job():
    [result] = waiting.run_all([{"mode": "poll", "n": None, "t": 60, "rounds": [[55.0, 65.0]], "tick": 15}], 1)
    calls = result["calls"]
    assert calls["POST create"] == 1 and calls["POST run-now"] == 2 and calls["GET runs/get-output"] == 2
    assert result["total_calls"] == sum(calls.values())
    assert sorted(round(r["end"], 3) for r in result["runs"]) == [55.0, 65.0]  # each run lasts what it was asked
    for run in result["runs"]:
        assert 0 <= run["lag"] <= 30  # the own schedule looks every 30 s at that age
        assert run["maxHistory"] <= 100


def test_tuning_explorer_covers_every_knob_and_measures_variants(monkeypatch, tmp_path, capsys):
    groups = {e["group"] for e in waiting_tuning.experiments()}
    assert groups == set(waiting_tuning.GROUPS)
    ticks = {e["tick"] for e in waiting_tuning.experiments() if e["group"] == "tick"}
    assert ticks == {5, 10, 15, 20, 30, 60} and all(60 % t == 0 for t in ticks)
    monkeypatch.setattr(waiting, "DOCS_DIR", tmp_path)
    monkeypatch.setattr(waiting_tuning, "EXPLORE_END_TIMES", 2)
    monkeypatch.setattr(waiting_tuning, "HORIZON_N", (2,))
    monkeypatch.setattr(waiting_tuning, "HORIZON_T", (60,))
    monkeypatch.setattr(waiting_tuning, "HORIZONS", (21600, 3600))
    monkeypatch.setattr(waiting_tuning, "RETRIED_T", (600,))
    monkeypatch.setattr(waiting_tuning, "RETRIED_N", 2)
    waiting_tuning.explore(["horizon", "retried"])
    out = capsys.readouterr().out
    assert "| default: 6 h of credit | watcher | 2 | 1 min |" in out
    assert "| 1 h of credit | watcher | 2 | 1 min |" in out
    assert "| default | watcher | 2 | 10 min |" in out  # retried runs complete
    text = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "<!-- waiting-tuning-horizon:start -->" in text and "<!-- waiting-tuning-retried:start -->" in text


def test_waiting_mixes_cover_every_workload_and_each_runs_the_real_app(monkeypatch, tmp_path, capsys):
    every = waiting_mixes.specs()
    assert {s["mix"] for s in every} == set(waiting_mixes.MIXES)
    assert {(s["n"], s["t"]) for s in every if s["mix"] == "shared"} == {(100, 600), (100, 3600), (1000, 600),
                                                                         (1000, 3600)}
    monkeypatch.setattr(waiting, "DOCS_DIR", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# app\n\n<!-- waiting-mixes:start -->\nold\n<!-- waiting-mixes:end -->\n", "utf-8")
    monkeypatch.setattr(waiting, "README", readme)
    monkeypatch.setattr(waiting_mixes, "ONLY_AT_N", {})
    monkeypatch.setattr(waiting_mixes, "BUSY_RUNS", 30)
    waiting.run(["--mixes", "ownDefinition", "busyOwn", "--n=3", "--t=60"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| (")]
    assert len(rows) == 2 and all("| 3 | 1 min |" in line for line in rows)
    by_mix = {line.split(" | ")[0]: line.split(" | ") for line in rows}
    # A saved job per definition (jobs/list + jobs/create) ...
    assert float(by_mix["| (c) every workflow its own definition"][-1].rstrip(" |")) >= 2
    # ... and in the busy workspace (30 other runs here) the lists cost no more than 30 s polls would.
    busy_row = by_mix["| (e') busy workspace, every workflow its own definition"]
    assert 0 < float(busy_row[11]) <= float(busy_row[7]) - 3  # runs/list per run <= Airflow's runs/get
    text = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "<!-- waiting-mixes:start -->" in text and "busy workspace" in text
    assert (tmp_path / "waiting-mixes.png").read_bytes()[:4] == b"\x89PNG"
    assert "old" not in readme.read_text("utf-8") and "(docs/waiting-mixes.png)" in readme.read_text("utf-8")
    assert len(__import__("json").loads((tmp_path / "waiting-mixes.json").read_text("utf-8"))) == 2


# -- the other benchmarks ------------------------------------------------------------------------

def test_jobs_per_definition_bench_keeps_one_job_and_the_baseline_one_per_workflow(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(jobs_per_definition, "WORKFLOWS", 4)
    monkeypatch.setattr(jobs_per_definition, "BATCH", 2)
    monkeypatch.setattr(jobs_per_definition, "DOCS_DIR", tmp_path)
    monkeypatch.setattr(jobs_per_definition, "LEFTOVERS", 120)
    jobs_per_definition.run()  # its targets are for 1,000 workflows: creating the job weighs more in 2
    out = capsys.readouterr().out
    # Cold worker among 120 same-named leftovers: 2 + 2 list pages at 100 a page, 5 + 5 at 25.
    assert "| 100 a page | 120 | 4 | 1 | 1 | 6 |" in out and "| 25 a page (baseline) | 120 | 10 | 1 | 1 | 12 |" in out
    assert "PASS  cold worker, 120 same-named leftovers: jobs/list pages <= 4" in out
    results_line = [line for line in out.splitlines() if line.startswith("| private-kept | 3-4 | warm")]
    assert results_line and results_line[0].endswith("| 4 |")  # one kept job per workflow
    # A cold cache learns who the app is and looks the job up once.
    assert "| shared | 5-6 | cold | 1 | 1 | 0 | 2 | 2.00 | 1 |" in out
    assert "PASS  shared: saved jobs left = 1" in out
    assert "<!-- jobs_per_definition:start -->" in (tmp_path / "benchmarks.md").read_text("utf-8")


def test_cold_start_bench_compares_with_the_functions_libraries(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cold_start, "REPETITIONS", 1)
    monkeypatch.setattr(cold_start, "DOCS_DIR", tmp_path)
    cold_start.run()
    out = capsys.readouterr().out
    assert "ratio, telemetry off: " in out and "ratio, telemetry on: " in out and "(all)" in out
    assert "exporter ready in the background" in out
    page = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "| (all) |" in page and "| telemetry on (`APPLICATIONINSIGHTS_CONNECTION_STRING` set) |" in page


def test_speedups_keep_the_timestamps_the_engine_sees_and_are_undone():
    import socketserver
    with speedups.applied():
        speedups.check()
        assert socketserver.StreamRequestHandler.disable_nagle_algorithm is True
    assert socketserver.StreamRequestHandler.disable_nagle_algorithm is False
    with pytest.raises(AssertionError):
        speedups.check()


def test_report_sections_are_replaced_in_place_and_kept_in_order(tmp_path):
    report.write_section("cold_start", "cold v1", tmp_path)
    report.write_section("waiting", "waiting v1", tmp_path)
    report.write_section("cold_start", "cold v2", tmp_path)
    text = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "cold v1" not in text and text.count("cold v2") == 1
    assert text.index("waiting v1") < text.index("cold v2")


# -- input patterns ------------------------------------------------------------------------------

def test_input_patterns_bench_runs_every_case_through_the_real_paths(monkeypatch, capsys):
    from bench import input_patterns
    from workflow.inputs import InputError

    monkeypatch.setattr(input_patterns, "REPETITIONS", 1)
    input_patterns.run(size=400)
    out = capsys.readouterr().out
    assert "worst ratio: " in out and "steepest growth: " in out
    cases = input_patterns.cases(400)
    assert {len(hostile) for _, _, _, hostile, _ in cases} <= {400, 401, 404}
    for name, path, function, hostile, benign in cases:
        outcome, ordinary = function(hostile), function(benign)
        if path == "scrub":  # no case holds a token: scrub leaves it as it is
            assert outcome == hostile, name
            continue
        # Each case reaches the pattern it is about: the benign text makes a valid request (a
        # parameter name that long breaks a length rule either way), and no value is refused as a token.
        assert not isinstance(ordinary, InputError) or path.endswith("a parameter name"), (name, ordinary)
        if path.endswith("a parameter value"):
            assert not isinstance(outcome, InputError), (name, outcome)


def test_large_results_bench_runs_and_keeps_the_history_small(monkeypatch, capsys, azurite_blob):
    from bench import large_results

    monkeypatch.setattr(large_results, "BLOB_SERVICE", azurite_blob)
    monkeypatch.setattr(large_results, "TASKS", 3)
    monkeypatch.setattr(large_results, "RESULT_BYTES", 300_000)
    thousand = large_results.thousand_task_outputs
    monkeypatch.setattr(large_results, "thousand_task_outputs", lambda: thousand(1000))  # 1 KB results
    large_results.run()
    out = capsys.readouterr().out
    assert "3 tasks cut inline, 3 kept copies" in out and "memory ratio: " in out and "status answer: " in out
    assert "1,000 tasks x 5 MB: outputs " in out
    assert float(out.split("history ratio: ")[1].split()[0]) < 1  # 3 x 64 KB inline of 3 x 300 KB


def test_burst_bench_starts_every_workflow_once_on_concurrent_workers(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(burst, "DOCS_DIR", tmp_path)
    burst.main(["--n", "24", "--definitions", "1", "3", "--workers", "2", "--processes", "2",
                "--json", str(tmp_path / "burst.json")])
    out = capsys.readouterr().out
    import json
    results = json.loads((tmp_path / "burst.json").read_text("utf-8"))
    assert len(results) == 4 and {(r["definitions"], r["limits"]) for r in results} == \
        {(1, True), (1, False), (3, True), (3, False)}
    for r in results:
        assert r["success"] == r["runs_started"] == 24 and r["failed_workflows"] == 0
        assert r["calls_by_endpoint"]["run-now"] >= 24 and r["workers"] == 2
    assert "PASS  N=24 definitions=1: exactly N runs" in out
    page = (tmp_path / "benchmarks.md").read_text("utf-8")
    assert "<!-- burst:start -->" in page and "| 24 | 3 | on |" in page
