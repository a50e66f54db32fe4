"""Detecting run completion for a whole workspace at once (issue #10): Jobs API calls per run and
detection lag, this app against Airflow and the Databricks SDK, on the same run end times.

Systems
- (a) watcher: this app as deployed by default, the workspace run watcher on (tick 15 s);
- (b) poll: this app with the watcher off (run_watcher_interval_seconds = 0): each workflow polls;
- (c) webhook: watcher off, Databricks job notifications on; lag counted from the notification's
  delivery (it goes out the moment the run ends);
- (d) airflow: DatabricksRunNowOperator, fixed 30 s poll, modelled call by call (bench/baselines.py);
- (e) sdk: databricks-sdk's run waiter, 1 s growing to 10 s plus 0-1 s jitter, seeded (baselines.py).
(a)-(c) are the REAL app: devhost's ReplayHost runs the app's functions through the real
azure-functions-durable replay engine in virtual time, activities call the Jobs API emulator over
loopback HTTP, and the emulator counts every request (bench/appsim.py). (d) and (e) are simulated on
exactly the end times the app was measured on.

End times. For each T, end times are spread one per stratum over equal strata of the window
[T - w/2, T + w/2], w = max(0.2 T, 60 s): 20 of them, or N when N > 20. Why: the window is wide
enough that a run's end falls at every phase of every fixed poll grid alike (w is a whole multiple
of Airflow's 30 s period and of the 15 s watcher tick for every T), so no system is flattered by
where the ends happen to fall; 0.2 T alone would be 12 s at T = 1 min, less than one Airflow period.

N runs start together. The watcher shares its list calls among runs, so it is measured at every
N; with N < 20 the 20 end times are taken in rounds of N (the next round starts when the previous
one ended) in the same workspace. Poll and webhook workflows do not interact, so their per-run
figures do not depend on N: they are measured on a sample of 20 concurrent runs per T (one saved
job shared by the 20: its one-time jobs/list + jobs/create + jobs/list are 0.15 calls per run).
Every call the app makes is counted: jobs/list and jobs/create once per definition (shared by the
runs of a simulation), run-now, runs/get, runs/list (the watcher), runs/get-output.

Run alone: `python -m bench.waiting` (writes docs/benchmarks.md's section, the README's table and
docs/waiting-benchmark.png); `python -m bench.waiting --explore [tick|own|safety|horizon|retried ...]`
measures the tuning knobs instead (bench/waiting_tuning.py); `python -m bench.waiting --mixes
[shared|oneTime|ownDefinition|ownDeadline|busy|busyOwn ...]` the watcher under mixed workloads
(bench/waiting_mixes.py, issue 14).
"""
from __future__ import annotations

import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from bench import baselines, report

T_VALUES = (60, 600, 3600, 86400)
N1_EXTRA_T = (28800,)  # the N = 1 target speaks of T >= 8 h
N_VALUES = (1, 10, 25, 100, 1000)
END_TIMES = 20
SAMPLE_RUNS = 20  # poll and webhook: per-run figures do not depend on N
TICK = 15
WORKERS = 2
WRITE_DOCS = True
DOCS_DIR: Optional[Path] = None  # None: the repository's docs/
README: Optional[Path] = None  # None: the repository's README.md
FLOOR_CALLS = 3  # run-now, one runs/get, one get-output: any system that returns the notebook output
WEBHOOK_MAX_CALLS = 6
WEBHOOK_MAX_LAG = 1.0
MAX_HISTORY_EVENTS = 100
SHARE_OF_AIRFLOW = 0.25  # N >= 25
N1_SHARE_OF_AIRFLOW = 0.15  # N = 1, T >= 8 h
N1_LAG_UP_TO = 600
N1_SHARE_FROM = 8 * 3600


# Where in its stratum each end falls: not the midpoint, which for some T lands exactly on a tick or
# a 30 s poll instant (the window and the grids are commensurate); the golden-ratio fraction never does.
STRATUM_OFFSET = (math.sqrt(5) - 1) / 2


def end_times(t: float, count: int) -> List[float]:
    """`count` run lengths spread evenly over [t - w/2, t + w/2], w = max(0.2 t, 60 s)."""
    width = max(0.2 * t, 60.0)
    return [t - width / 2 + (i + STRATUM_OFFSET) * width / count for i in range(count)]


def seconds(value: float) -> str:
    """One decimal, without the '-0.0' that millisecond rounding of run end times would show."""
    return "0.0" if abs(value) < 0.05 else f"{value:.1f}"


def label_t(t: float) -> str:
    return f"{t / 3600:g} h" if t >= 3600 else f"{t / 60:g} min"


def specs(t_values: Sequence[float] = None, n_values: Sequence[int] = None, end_count: int = None,
          sample: int = None, tick: int = None) -> List[dict]:
    """Every simulation of the benchmark, longest first (so the slowest starts at once)."""
    t_values = T_VALUES if t_values is None else t_values
    n_values = N_VALUES if n_values is None else n_values
    end_count = END_TIMES if end_count is None else end_count
    sample = SAMPLE_RUNS if sample is None else sample
    tick = TICK if tick is None else tick
    out = []
    for t in sorted(set(t_values) | ({*N1_EXTRA_T} if 1 in n_values else set())):
        for n in n_values:
            if t in N1_EXTRA_T and t not in t_values and n != 1:
                continue
            groups = max(1, math.ceil(end_count / n))  # rounds of n runs, at least end_count runs in all
            ends = end_times(t, n * groups)
            rounds = [ends[g::groups] for g in range(groups)]
            out.append({"mode": "watcher", "n": n, "t": t, "rounds": rounds, "tick": tick})
        for mode in ("poll", "webhook"):
            out.append({"mode": mode, "n": None, "t": t, "rounds": [end_times(t, sample)], "tick": tick})
    return sorted(out, key=cost, reverse=True)


def cost(spec: dict) -> float:
    """Rough relative cost: workflow polls (their number grows like log T) and watcher ticks."""
    runs = sum(len(r) for r in spec["rounds"])
    polls = runs * (3 + 20 * math.log1p(spec["t"] / 300.0)) * (1 + runs / 2000.0)
    ticks = (spec["t"] * len(spec["rounds"]) / spec["tick"]) * (1 + runs / 25.0) if spec["mode"] == "watcher" else 0
    return polls + ticks * 0.3


def simulate_spec(spec: dict) -> dict:
    """One simulation (in a process of its own: the app reads the watcher tick when imported)."""
    from bench import appsim

    sim = appsim.simulate(spec["mode"], spec["rounds"], tick=spec["tick"],
                          policy_overrides=spec.get("policy"), watch_overrides=spec.get("watch"),
                          settings_overrides=spec.get("settings"), retry_pause=spec.get("retry_pause"),
                          mix=spec.get("mix", "shared"), busy_runs=spec.get("busy_runs"))
    return {"spec": spec, "runs": sim.runs, "calls": sim.calls, "total_calls": sim.total_calls,
            "peak_per_second": sim.peak_per_second, "peak_after_start": sim.peak_after_start,
            "max_history": sim.max_history, "executions": sim.executions, "watcher_ticks": sim.watcher_ticks,
            "wall_seconds": sim.wall_seconds}


def run_all(all_specs: Sequence[dict], workers: int = None) -> List[dict]:
    """Each spec in a fresh process, `workers` at a time."""
    workers = WORKERS if workers is None else workers
    context = multiprocessing.get_context("spawn")
    results = []
    with context.Pool(workers, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(simulate_spec, all_specs):
            s = result["spec"]
            print(f"  measured {s['mode']:7s} {s.get('mix', ''):13s} N={s['n'] or '-':>4} T={label_t(s['t']):>7}: "
                  f"{len(result['runs'])} runs, {result['wall_seconds']:.1f} s wall", flush=True)
            results.append(result)
    return results


def row(result: dict) -> dict:
    """The figures of one simulation next to Airflow's and the SDK's on the same end times."""
    runs = result["runs"]
    ends = [r["end"] for r in runs]
    lags = [r["lag"] for r in runs]
    airflow = baselines.summary(baselines.wait_all("airflow", ends))
    sdk = baselines.summary(baselines.wait_all("sdk", ends, seed=int(result["spec"]["t"])))
    out = {
        "mode": result["spec"]["mode"], "n": result["spec"]["n"], "t": result["spec"]["t"], "runs": len(runs),
        "mix": result["spec"].get("mix", "shared"),
        "calls_per_run": result["total_calls"] / len(runs), "mean_lag": statistics.fmean(lags), "max_lag": max(lags),
        "max_history": result["max_history"], "wall_seconds": result["wall_seconds"],
        "peak_per_second": result["peak_per_second"], "peak_after_start": result["peak_after_start"],
        "calls": result["calls"], "airflow": airflow, "sdk": sdk,
    }
    if out["mode"] == "webhook":
        after = [r.get("lagAfterNotification") for r in runs]
        out["max_lag_after_notification"] = max((a for a in after if a is not None), default=math.inf)
        out["notified"] = sum(1 for a in after if a is not None)
    return out


def verdicts(rows: Sequence[dict]) -> List[tuple]:
    """(target, met, figures) for every target of the brief."""
    out = []
    watcher = {(r["n"], r["t"]): r for r in rows if r["mode"] == "watcher"}
    for (n, t), r in sorted(watcher.items()):
        air = r["airflow"]
        share = r["calls_per_run"] / air["calls_per_run"]
        if n >= 25:
            bound = SHARE_OF_AIRFLOW * air["calls_per_run"]
            ok = r["calls_per_run"] <= bound and r["mean_lag"] <= air["mean_lag"]
            note = f" (unreachable: {SHARE_OF_AIRFLOW:.0%} of Airflow's {air['calls_per_run']:.1f} calls is below " \
                   f"the {FLOOR_CALLS}-call floor)" if bound < FLOOR_CALLS else ""
            out.append((f"N={n} T={label_t(t)}: calls <= 25 % of Airflow's and mean lag <= Airflow's", ok,
                        f"calls {r['calls_per_run']:.2f} = {share:.1%} of {air['calls_per_run']:.1f}; mean lag "
                        f"{r['mean_lag']:.1f} s vs {air['mean_lag']:.1f} s{note}"))
        if n == 1 and t <= N1_LAG_UP_TO:
            ok = r["mean_lag"] <= air["mean_lag"] and r["calls_per_run"] <= air["calls_per_run"]
            out.append((f"N=1 T={label_t(t)}: mean lag <= Airflow's at no more calls", ok,
                        f"mean lag {r['mean_lag']:.1f} s vs {air['mean_lag']:.1f} s; calls {r['calls_per_run']:.2f} "
                        f"vs {air['calls_per_run']:.2f}"))
        if n == 1 and t >= N1_SHARE_FROM:
            out.append((f"N=1 T={label_t(t)}: calls <= 15 % of Airflow's",
                        r["calls_per_run"] <= N1_SHARE_OF_AIRFLOW * air["calls_per_run"],
                        f"calls {r['calls_per_run']:.2f} = {share:.1%} of {air['calls_per_run']:.1f}"))
    for r in sorted((r for r in rows if r["mode"] == "webhook"), key=lambda r: r["t"]):
        ok = r["calls_per_run"] <= WEBHOOK_MAX_CALLS and r["max_lag_after_notification"] <= WEBHOOK_MAX_LAG \
            and r["notified"] == r["runs"]
        out.append((f"webhook T={label_t(r['t'])}: <= {WEBHOOK_MAX_CALLS} calls per run, lag <= 1 s after the "
                    f"notification", ok,
                    f"calls {r['calls_per_run']:.2f}; max lag after the notification "
                    f"{r['max_lag_after_notification']:.2f} s ({r['notified']}/{r['runs']} notified)"))
    worst = max(rows, key=lambda r: r["max_history"])
    out.append((f"history events per orchestration execution <= {MAX_HISTORY_EVENTS}, runs of any length",
                worst["max_history"] <= MAX_HISTORY_EVENTS,
                f"max {worst['max_history']} ({worst['mode']} T={label_t(worst['t'])})"))
    return out


def _system(r: dict) -> str:
    return {"watcher": "(a) app, watcher", "poll": "(b) app, poll-only", "webhook": "(c) app, webhooks"}[r["mode"]]


def table(rows: Sequence[dict]) -> str:
    lines = ["| T | system | N | runs | calls/run | % of Airflow | mean lag s | max lag s | max history events |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in sorted({r["t"] for r in rows}):
        at_t = [r for r in rows if r["t"] == t]
        sample = next((r for r in at_t if r["mode"] == "poll"), at_t[0])
        for name, key in (("(d) Airflow, 30 s poll", "airflow"), ("(e) databricks-sdk waiter", "sdk")):
            b = sample[key]
            share = b["calls_per_run"] / sample["airflow"]["calls_per_run"]
            lines.append(f"| {label_t(t)} | {name} | any | {b['runs']} | {b['calls_per_run']:.2f} | {share:.0%} | "
                         f"{seconds(b['mean_lag'])} | {seconds(b['max_lag'])} | - |")
        order = {"poll": 0, "webhook": 1, "watcher": 2}
        for r in sorted(at_t, key=lambda r: (order[r["mode"]], r["n"] or 0)):
            n = f"any ({r['runs']}-run sample)" if r["n"] is None else str(r["n"])
            share = r["calls_per_run"] / r["airflow"]["calls_per_run"]
            lag = seconds(r["mean_lag"])
            if r["mode"] == "webhook":
                lag += f" ({seconds(r['max_lag_after_notification'])} max after the notification)"
            lines.append(f"| {label_t(t)} | {_system(r)} | {n} | {r['runs']} | {r['calls_per_run']:.2f} | {share:.0%} | "
                         f"{lag} | {seconds(r['max_lag'])} | {r['max_history']} |")
    return "\n".join(lines)


def calls_table(rows: Sequence[dict]) -> str:
    """Where the app's calls go, per run, by endpoint."""
    endpoints = ["GET list", "POST create", "POST run-now", "GET runs/get", "GET runs/list", "GET runs/get-output"]
    lines = ["| T | system | N | " + " | ".join(e.split(" ", 1)[1] for e in endpoints) + " |",
             "|---|---|---|" + "---|" * len(endpoints)]
    order = {"poll": 0, "webhook": 1, "watcher": 2}
    for r in sorted(rows, key=lambda r: (r["t"], order[r["mode"]], r["n"] or 0)):
        cells = " | ".join(f"{r['calls'].get(e, 0) / r['runs']:.2f}" for e in endpoints)
        lines.append(f"| {label_t(r['t'])} | {_system(r)} | {r['n'] or 'any'} | {cells} |")
    return "\n".join(lines)


def peak_table(rows: Sequence[dict]) -> str:
    big = sorted((r for r in rows if r["mode"] == "watcher" and r["n"] == max(N_VALUES)), key=lambda r: r["t"])
    if not big:
        big = sorted((r for r in rows if r["mode"] == "watcher"), key=lambda r: (-(r["n"]), r["t"]))[:1]
    lines = ["| T | N | app (watcher): peak calls/s | after the first second | Airflow: peak | after the first "
             "second | SDK: peak | after the first second |", "|---|---|---|---|---|---|---|---|"]
    for r in big:
        a, s = r["airflow"], r["sdk"]
        lines.append(f"| {label_t(r['t'])} | {r['n']} | {r['peak_per_second']} | {r['peak_after_start']} | "
                     f"{a['peak_per_second']} | {a['peak_after_start']} | {s['peak_per_second']} | "
                     f"{s['peak_after_start']} |")
    return "\n".join(lines)


def chart(rows: Sequence[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (calls_ax, lag_ax) = plt.subplots(1, 2, figsize=(13, 5.2))
    floor = 0.1  # a lag of 0 has no place on a log scale: drawn here, and said so in the legend

    def line(label, points, **style):
        points = sorted(points)
        xs = [p[0] for p in points]
        calls_ax.plot(xs, [p[1] for p in points], label=label, **style)
        lag_ax.plot(xs, [max(p[2], floor) for p in points], label=label, **style)

    sample = {r["t"]: r for r in rows if r["mode"] == "poll"}
    line("(d) Airflow, 30 s poll", [(t, r["airflow"]["calls_per_run"], r["airflow"]["mean_lag"])
                                    for t, r in sample.items()], color="black", linestyle="--", marker="s")
    line("(e) databricks-sdk waiter", [(t, r["sdk"]["calls_per_run"], r["sdk"]["mean_lag"])
                                       for t, r in sample.items()], color="grey", linestyle=":", marker="^")
    line("(b) app, poll-only (any N)", [(r["t"], r["calls_per_run"], r["mean_lag"]) for r in rows
                                        if r["mode"] == "poll"], color="tab:orange", marker="o")
    line(f"(c) app, webhooks (any N; lag 0 drawn at {floor} s)",
         [(r["t"], r["calls_per_run"], r["mean_lag"]) for r in rows if r["mode"] == "webhook"],
         color="tab:green", marker="D")
    palette = ("tab:cyan", "tab:blue", "tab:purple", "tab:red", "tab:brown")  # not the other systems' colours
    ns = sorted({r["n"] for r in rows if r["mode"] == "watcher"})
    for i, n in enumerate(ns):
        line(f"(a) app, watcher, N={n}", [(r["t"], r["calls_per_run"], r["mean_lag"]) for r in rows
                                          if r["mode"] == "watcher" and r["n"] == n],
             color=palette[i % len(palette)], marker="ov^<>"[i % 5], linewidth=1.6)
    ts = sorted({r["t"] for r in rows})
    for ax, title, unit in ((calls_ax, "Jobs API calls per run", "calls per run"),
                            (lag_ax, "Mean detection lag (run end -> workflow completed)", "seconds")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ts)
        ax.set_xticklabels([label_t(t) for t in ts])
        ax.minorticks_off()
        ax.set_xlabel("run length T")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    calls_ax.axhline(FLOOR_CALLS, color="red", linewidth=0.8, alpha=0.5)
    calls_ax.annotate("floor: run-now + runs/get + get-output", (ts[0], FLOOR_CALLS * 1.05), fontsize=8, color="red")
    handles, labels = calls_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def document(rows: Sequence[dict], checks: Sequence[tuple], wall: float) -> str:
    slowest = sorted(rows, key=lambda r: -r["wall_seconds"])[:3]
    lines = [
        "## Waiting for runs: calls per run and detection lag (`bench/waiting.py`, issue #10)",
        "",
        "![calls per run and mean lag against T](waiting-benchmark.png)",
        "",
        f"End times: for each T, {END_TIMES} (or N, when N is larger), one in each of equal strata of "
        "[T - w/2, T + w/2], w = max(0.2 T, 60 s), so every system meets ends at every phase of its poll grid. "
        "N runs of one definition start together; with N < 20 the end times run in rounds of N in one workspace. "
        "Poll-only and webhook figures do not depend on N (no cross-run interaction): a 20-run sample per T. "
        "Airflow (30 s poll: run-now, runs/get for the page URL, runs/get at 0, 30, 60 s ..., get-output) and the "
        "SDK waiter (1 s growing to 10 s plus 0-1 s jitter, seeded; run-now, polls, get-output) are simulated on the "
        "same end times; the '% of Airflow' column compares with Airflow on each row's own end times. Lag: run "
        "end on Databricks -> workflow completed (virtual seconds); for webhooks also from the notification's delivery.",
        "",
        table(rows), "",
        "### Targets", "",
        *report.target_lines(checks), "",
        f"Floor: any system that returns the notebook output spends at least {FLOOR_CALLS} calls per run (run-now, "
        "one runs/get, one get-output), so 25 % of Airflow's calls is unreachable wherever Airflow spends under "
        f"{FLOOR_CALLS / SHARE_OF_AIRFLOW:.0f} (T = 1 min: about 6).", "",
        "### Calls per run by endpoint (the app)", "",
        calls_table(rows), "",
        f"### Peak Jobs API requests per second per workspace, N = {max(r['n'] or 0 for r in rows)} starting together",
        "",
        peak_table(rows), "",
        "Virtual time: calls made at one virtual instant count in one second, as if the host ran every activity "
        "at once (the Functions host spreads the start burst over its activity concurrency; Airflow over its "
        "worker slots). 'After the first second' leaves the start burst out.", "",
        f"Measured in {wall:.0f} s wall ({WORKERS} processes). Slowest simulations: " +
        ", ".join(f"{r['mode']} N={r['n'] or '-'} T={label_t(r['t'])} {r['wall_seconds']:.0f} s" for r in slowest) + ".",
        "",
        HOT_SPOTS,
    ]
    return "\n".join(lines)


HOT_SPOTS = """### Where the simulation spends its time

Profiled with cProfile while building this benchmark (not regenerated by each run):

- devhost's management API (the Durable client's endpoint, which the watcher and the webhook function
  call) writes a response's headers and its body in two sends on a socket with Nagle's algorithm on,
  so the body waits for the client's delayed ACK: the watcher's 4 registry reads took 23 ms of a 24 ms
  tick. `bench/speedups.py` turns Nagle off in the benchmark's processes (socketserver's own switch,
  `disable_nagle_algorithm`): one 1-hour run with the watcher went from 6.1 s to 0.46 s of wall time.
- azure-functions-durable parses every history event's timestamp with dateutil on every replay
  (`HistoryEvent.__init__`): 32 % of a 100-run, 1-hour simulation. `bench/speedups.py` puts a cache in
  front of the same parser (equal datetimes, checked by a test).
- devhost's `ReplayHost._pick_work` scans every instance, up to three times and building each one's due
  list, for every step: about 2 ms a step with 1,000 instances, 35 % of the wall time at N = 1,000.
- the emulator's runs/list with `active_only` sorts every maybe-active run of the workspace on every
  page: 0.75 ms a page with 1,000 active runs, 30 of the 72 ms a 40-page list takes (O(N^2/25) a list).

The last two are devhost's and the emulator's to fix (an index of due work; `_maybe_active` kept in
start order); together they are about half of the N = 1,000, 24 h simulation's 28 minutes."""


def readme_section(rows: Sequence[dict], checks: Sequence[tuple]) -> str:
    """The README's copy: the picture, the whole table, the peak and the targets (the method and
    the per-endpoint table stay in docs/benchmarks.md)."""
    return "\n".join([
        "![calls per run and mean lag against T](docs/waiting-benchmark.png)", "",
        table(rows), "",
        f"Peak Jobs API requests per second per workspace, N = {max(r['n'] or 0 for r in rows)} runs starting "
        "together (virtual seconds):", "",
        peak_table(rows), "",
        *report.target_lines(checks),
    ])


def run(argv: Iterable[str] = ()) -> bool:
    argv = list(argv)
    if "--explore" in argv:
        from bench import waiting_tuning
        groups = [a for a in argv if not a.startswith("--")]
        return waiting_tuning.explore(groups or waiting_tuning.GROUPS)
    if "--mixes" in argv:
        from bench import waiting_mixes
        return waiting_mixes.run([a for a in argv if a != "--mixes"])
    started = time.perf_counter()
    results = run_all(specs())
    rows = [row(r) for r in results]
    wall = time.perf_counter() - started
    checks = verdicts(rows)
    print(table(rows))
    print()
    print(calls_table(rows))
    print()
    print(peak_table(rows))
    print()
    for name, ok, figures in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {figures}")
    print(f"wall time: {wall:.0f} s")
    if WRITE_DOCS:
        docs = DOCS_DIR or report.DOCS_DIR
        chart(rows, Path(docs) / "waiting-benchmark.png")
        path = report.write_section("waiting", document(rows, checks, wall), docs)
        readme = report.write_readme_section("waiting", readme_section(rows, checks), README)
        print(f"wrote {path}, {readme} and {Path(docs) / 'waiting-benchmark.png'}")
    met = all(ok for _, ok, _ in checks)
    print("target met" if met else "TARGET MISSED")
    return met


if __name__ == "__main__":
    sys.exit(0 if run(sys.argv[1:]) else 1)
