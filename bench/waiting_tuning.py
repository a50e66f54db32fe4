"""The knobs of waiting, measured (`python -m bench.waiting --explore`; not part of `make bench`:
this module has no `run()`, so `python -m bench` skips it).

Each variant runs the real app as bench/waiting.py does, with constants of workflow.policy /
workflow.watch replaced inside the simulation's own process (the code is not changed) or a
setting changed, on the same end times as the defaults it is compared with:

- tick: WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS (5..60 s, divisors of 60), watcher at N = 100 and
  N = 1 (at N = 1 the list cadence follows the run's own schedule, the tick is only its floor);
- own: OWN_SCHEDULE (with WORKFLOW_POLL_INTERVAL_SECONDS as its ceiling): the poll-only cadence and
  the watcher's list cadence for few runs;
- safety: SAFETY_SCHEDULE (with WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS as its ceiling): the
  safety-net polls a workflow makes while signals (watcher or webhooks) are expected;
- cadence: the watcher's list cadence, today's rule against a proposal (bench/watch_credit.py);
- resignal: RESIGNAL_SECONDS, with runs whose task fails once and is retried after a pause
  (WAITING_FOR_RETRY takes the run off the active list without ending it).
Each group writes its own section of docs/benchmarks.md ("waiting-tuning-<group>")."""
from __future__ import annotations

import math
import time
from typing import List, Sequence

from bench import report, waiting

T_ALL = (60, 600, 3600, 28800, 86400)
EXPLORE_END_TIMES = 10
TICKS = (5, 10, 15, 20, 30, 60)
TICK_N = 100
TICK_T = (600, 3600, 86400)
TICK_N1_T = (60, 600, 28800)


def _schedule(first, steady, steady_until, fraction, max_seconds) -> object:
    from workflow.policy import PollSchedule
    return PollSchedule(first_seconds=first, steady_seconds=steady, steady_until=steady_until, fraction=fraction,
                        max_seconds=max_seconds)


# (label, OWN_SCHEDULE fields, poll_interval_seconds)
OWN_VARIANTS = (
    ("default 5->30 s, 5 % of age, max 300 s", (5, 30, 600, 0.05, 300), 300),
    ("10 % of age, max 300 s", (5, 30, 600, 0.10, 300), 300),
    ("10 % of age, max 600 s", (5, 30, 600, 0.10, 600), 600),
    ("10 % of age, max 900 s", (5, 30, 600, 0.10, 900), 900),
    ("30 s to 10 min, 10 % of age, max 1800 s", (30, 30, 600, 0.10, 1800), 1800),
)
# (label, SAFETY_SCHEDULE fields, webhook_poll_interval_seconds)
SAFETY_VARIANTS = (
    ("default 300 s, 25 % of age, max 900 s", (300, 300, 0, 0.25, 900), 900),
    ("600 s, 25 % of age, max 1800 s", (600, 600, 0, 0.25, 1800), 1800),
    ("600 s, 50 % of age, max 3600 s", (600, 600, 0, 0.50, 3600), 3600),
    ("1800 s, 100 % of age, max 21600 s", (1800, 1800, 0, 1.0, 21600), 21600),
    ("3600 s, 300 % of age, max 86400 s", (3600, 3600, 0, 3.0, 86400), 86400),
)
CADENCE_N = (1, 10, 25, 100)
CADENCE_T = (600, 3600, 86400)
CADENCE_VARIANTS = ("today: urgent x pages / awaited", "proposal: per-run credit (bench/watch_credit.py)")
# The values recommended from the groups above, measured together against today's defaults.
RECOMMENDED_N = (1, 25, 100, 1000)
RECOMMENDED_T = (60, 600, 3600, 86400)
RECOMMENDED_VARIANTS = ("today's defaults", "recommended constants", "recommended safety net only")


def recommended(safety_only: bool = False) -> dict:
    """The constants recommended from the groups above (the code and the list cadence unchanged):
    OWN_SCHEDULE at 10 % of the run's age up to 600 s (WORKFLOW_POLL_INTERVAL_SECONDS 600), and
    SAFETY_SCHEDULE from 30 min at 100 % of the age up to 6 h (WORKFLOW_WEBHOOK_POLL_INTERVAL_SECONDS
    21600). The tick stays 15 s."""
    safety = {"policy": {"SAFETY_SCHEDULE": _schedule(1800, 1800, 0, 1.0, 21600)},
              "settings": {"webhook_poll_interval_seconds": 21600}}
    if safety_only:
        return safety
    return {"policy": {**safety["policy"], "OWN_SCHEDULE": _schedule(5, 30, 600, 0.10, 600)},
            "settings": {**safety["settings"], "poll_interval_seconds": 600}}


RESIGNAL_VALUES = (120, 300, 600, 1800)
RESIGNAL_N = 100
RESIGNAL_T = (3600, 86400)


def retry_rounds(t: float, n: int) -> tuple:
    """Runs whose first attempt fails around t/2 and whose retry starts at 3t/4 (off the tick grid)
    and lasts 2-30 s: (rounds, retry pause). A retry shorter than the watcher's list interval may
    end without the watcher ever seeing it active again; then RESIGNAL_SECONDS (or a safety poll)
    decides when its workflow hears of it."""
    firsts = waiting.end_times(t / 2, n)
    retries = [2 + 28 * (i + waiting.STRATUM_OFFSET) / n for i in range(n)]
    return [list(zip(firsts, retries[::-1]))], 0.75 * t + 7.3


def _spec(mode: str, n, t: float, *, tick: int = waiting.TICK, end_count: int = EXPLORE_END_TIMES, **extra) -> dict:
    if mode == "watcher":
        groups = max(1, math.ceil(end_count / n))
        ends = waiting.end_times(t, n * groups)
        rounds = [ends[g::groups] for g in range(groups)]
    else:
        rounds = [waiting.end_times(t, end_count)]
    return {"mode": mode, "n": n, "t": t, "rounds": rounds, "tick": tick, **extra}


def experiments() -> List[dict]:
    out: List[dict] = []
    for tick in TICKS:
        for t in TICK_T:
            out.append({**_spec("watcher", TICK_N, t, tick=tick), "group": "tick", "variant": f"tick {tick} s"})
        for t in TICK_N1_T:
            out.append({**_spec("watcher", 1, t, tick=tick), "group": "tick", "variant": f"tick {tick} s"})
    for label, fields, ceiling in OWN_VARIANTS:
        for t in T_ALL:
            for mode, n in (("watcher", 1), ("poll", None)):
                out.append({**_spec(mode, n, t), "group": "own", "variant": label,
                            "policy": {"OWN_SCHEDULE": _schedule(*fields)},
                            "settings": {"poll_interval_seconds": ceiling}})
    for label, fields, ceiling in SAFETY_VARIANTS:
        for t in T_ALL:
            for mode, n in (("webhook", None), ("watcher", 1)):
                out.append({**_spec(mode, n, t), "group": "safety", "variant": label,
                            "policy": {"SAFETY_SCHEDULE": _schedule(*fields)},
                            "settings": {"webhook_poll_interval_seconds": ceiling}})
    from bench import watch_credit
    for index, label in enumerate(CADENCE_VARIANTS):
        for n in CADENCE_N:
            for t in CADENCE_T:
                extra = {"watch": {"list_interval": watch_credit.list_interval}} if index else {}
                out.append({**_spec("watcher", n, t), "group": "cadence", "variant": label, **extra})
    for index, label in enumerate(RECOMMENDED_VARIANTS):
        extra = [{}, recommended(), recommended(safety_only=True)][index]
        for t in RECOMMENDED_T + ((28800,) if 28800 not in RECOMMENDED_T else ()):
            for n in RECOMMENDED_N:
                if (t == 28800 and n != 1) or (n == 1000 and t > 3600):
                    continue  # 8 h is the N = 1 target's; N = 1,000 at 24 h is the main table's (28 min)
                out.append({**_spec("watcher", n, t), "group": "recommended", "variant": label, **extra})
            for mode in ("poll", "webhook"):
                out.append({**_spec(mode, None, t, end_count=waiting.SAMPLE_RUNS), "group": "recommended",
                            "variant": label, **extra})
    for value in RESIGNAL_VALUES:
        for t in RESIGNAL_T:
            rounds, pause = retry_rounds(t, RESIGNAL_N)
            out.append({"mode": "watcher", "n": RESIGNAL_N, "t": t, "rounds": rounds, "tick": waiting.TICK,
                        "retry_pause": pause, "watch": {"RESIGNAL_SECONDS": value}, "group": "resignal",
                        "variant": f"RESIGNAL_SECONDS {value}"})
    return sorted(out, key=waiting.cost, reverse=True)


TITLES = {
    "tick": "Watcher tick (WORKFLOW_RUN_WATCHER_INTERVAL_SECONDS)",
    "own": "OWN_SCHEDULE (the poll-only cadence, and the watcher's list cadence for few runs)",
    "safety": "SAFETY_SCHEDULE (safety-net polls while signals are expected)",
    "recommended": "today's defaults against the recommended values, all together",
    "cadence": "the watcher's list cadence: today's rule against a per-run credit (a proposal)",
    "resignal": "RESIGNAL_SECONDS (runs retried once: the first attempt fails at about T/2, the retry starts at 3T/4 "
                "and lasts 2-30 s)",
}


def table(rows: Sequence[dict]) -> str:
    lines = ["| variant | system | N | T | calls/run | % of Airflow | mean lag s | Airflow mean lag s | max lag s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["mode"], r["n"] or 0, r["t"], r["variant_index"])):
        air = r["airflow"]
        lines.append(f"| {r['variant']} | {r['mode']} | {r['n'] or 'any'} | {waiting.label_t(r['t'])} | "
                     f"{r['calls_per_run']:.2f} | {r['calls_per_run'] / air['calls_per_run']:.1%} | "
                     f"{waiting.seconds(r['mean_lag'])} | {waiting.seconds(air['mean_lag'])} | "
                     f"{waiting.seconds(r['max_lag'])} |")
    return "\n".join(lines)


GROUPS = ("tick", "own", "safety", "cadence", "resignal", "recommended")


def explore(selected: Sequence[str] = GROUPS) -> bool:
    unknown = set(selected) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown groups {sorted(unknown)}; choose from {GROUPS}")
    started = time.perf_counter()
    chosen = [e for e in experiments() if e["group"] in selected]
    variant_order = {label: i for i, (label, _, _) in enumerate(OWN_VARIANTS + SAFETY_VARIANTS)}
    variant_order.update({f"tick {t} s": i for i, t in enumerate(TICKS)})
    variant_order.update({f"RESIGNAL_SECONDS {v}": i for i, v in enumerate(RESIGNAL_VALUES)})
    variant_order.update({label: i for i, label in enumerate(CADENCE_VARIANTS)})
    variant_order.update({label: i for i, label in enumerate(RECOMMENDED_VARIANTS)})
    rows = []
    for result in waiting.run_all(chosen):
        r = waiting.row(result)
        spec = result["spec"]
        r.update(group=spec["group"], variant=spec["variant"], variant_index=variant_order[spec["variant"]])
        rows.append(r)
    wall = time.perf_counter() - started
    for group in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if not mine:
            continue
        text = table(mine)
        print(f"== {TITLES[group]}\n{text}\n")
        if waiting.WRITE_DOCS:
            report.write_section(f"waiting-tuning-{group}", (
                f"### Tuning: {TITLES[group]}\n\n`python -m bench.waiting --explore {group}`: {EXPLORE_END_TIMES} end "
                "times per T (N = 1 in rounds), the constants replaced inside each simulation's process (the code is "
                "unchanged), Airflow on the same end times.\n\n" + text), waiting.DOCS_DIR or report.DOCS_DIR)
    print(f"wall time: {wall:.0f} s")
    return True
