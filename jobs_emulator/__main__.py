"""``python -m jobs_emulator --port PORT``: serve the emulator on real time until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

from .faults import DEFAULT_KINDS, FAULT_KINDS, Faults
from .rate_limits import RateLimits
from .scenario import Scenario
from .server import JobsEmulator


def _destination(text: str) -> tuple[str, dict]:
    """ID=URL; credentials for HTTP Basic may ride in the URL's userinfo (user:pass@host)."""
    dest_id, sep, url = text.partition("=")
    if not sep or not dest_id or not url:
        raise argparse.ArgumentTypeError("expected ID=URL")
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dest_id, {"url": clean, "username": parts.username, "password": parts.password}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs_emulator",
                                description="Azure Databricks Jobs API emulator (development tool).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see the first output line)")
    p.add_argument("--scenario", help="JSON scenario file (rules by notebook-path glob, time_scale)")
    p.add_argument("--time-scale", type=float, help="multiply every run duration (overrides the scenario's)")
    p.add_argument("--token", action="append", dest="tokens",
                   help="accepted bearer token (repeatable); default: any non-empty token")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per API request")
    p.add_argument("--fault-kinds", default=",".join(DEFAULT_KINDS),
                   help=f"comma-separated subset of {','.join(FAULT_KINDS)}")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--fault-path", action="append", dest="fault_paths",
                   help="only inject faults on paths matching this glob (repeatable), e.g. '*/runs/get'")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429/503 faults")
    p.add_argument("--slow-seconds", type=float, default=2.0, help="delay of a 'slow' fault")
    p.add_argument("--destination", action="append", type=_destination, default=[],
                   help="webhook notification destination ID=URL (https://user:pass@host/path for Basic auth)")
    p.add_argument("--workspace-id", type=int, default=1234567890123456)
    p.add_argument("--max-jobs", type=int, default=10_000,
                   help="saved-jobs quota; jobs/create beyond it answers 400 QUOTA_EXCEEDED")
    p.add_argument("--job-creation-rate-limit", type=int, default=10_000,
                   help="jobs/create + runs/submit calls allowed per window (400 INVALID_STATE beyond)")
    p.add_argument("--job-creation-rate-window", type=float, default=3600.0, help="the rate window in seconds")
    p.add_argument("--keep-runs-of-deleted-jobs", action="store_true",
                   help="keep a deleted job's runs readable and running (default: hidden and cancelled)")
    p.add_argument("--rate-limits", type=_rate_limits, default=None, metavar="databricks|ENDPOINT=RATE,...",
                   help="enforce per-endpoint request rates: 'databricks' (the published ones: 20/s for jobs "
                        "create, get, list, reset, run-now; 10/s update, delete; 100/s runs/get) or e.g. "
                        "'run-now=5,runs/get=50'; beyond them 429 REQUEST_LIMIT_EXCEEDED with Retry-After")
    p.add_argument("--max-concurrent-task-runs", type=int, default=2000,
                   help="the workspace's concurrent task-run limit (runs beyond it queue, or get 429 "
                        "without queueing); 0: no limit")
    return p


def _rate_limits(text: str) -> RateLimits:
    try:
        return RateLimits.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = Scenario.load(args.scenario) if args.scenario else Scenario()
    except (OSError, ValueError, TypeError) as exc:
        print(f"jobs_emulator: bad scenario {args.scenario}: {exc}", file=sys.stderr)
        return 2
    if args.time_scale is not None:
        if args.time_scale <= 0:
            print("--time-scale must be > 0", file=sys.stderr)
            return 2
        scenario.time_scale = args.time_scale
    try:
        faults = Faults(rate=args.fault_rate, kinds=tuple(k for k in args.fault_kinds.split(",") if k),
                        seed=args.fault_seed, retry_after=args.retry_after, slow_seconds=args.slow_seconds,
                        paths=args.fault_paths)
    except ValueError as exc:
        print(f"jobs_emulator: {exc}", file=sys.stderr)
        return 2
    try:
        emulator = JobsEmulator(scenario=scenario, faults=faults, tokens=args.tokens,
                                notification_destinations=dict(args.destination), workspace_id=args.workspace_id,
                                max_jobs=args.max_jobs, job_creation_rate_limit=args.job_creation_rate_limit,
                                job_creation_rate_window=args.job_creation_rate_window,
                                keep_runs_of_deleted_jobs=args.keep_runs_of_deleted_jobs,
                                rate_limits=args.rate_limits,
                                max_concurrent_task_runs=args.max_concurrent_task_runs or None)
    except ValueError as exc:
        print(f"jobs_emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    base_url = emulator.start(args.host, args.port)
    print(base_url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("jobs_emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
