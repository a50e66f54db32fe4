"""Command line of devhost, a DEVELOPMENT stand-in for the Azure Functions host.

    python -m devhost serve --port 7071 [--app function_app:app] [--log-level INFO] [--auth]
    python -m devhost token --oid <object id> [--appid <id>] [--role <role>]... [--v1]
    python -m devhost demo  [--app function_app:app] [--request docs/examples/serverless.json]

``serve`` reads ``local.settings.json`` from the current (app) directory as Core Tools does: its
``Values`` become environment variables unless already set. At the default log level devhost
prints one line per workflow event (started, completed/failed/terminated, continued as new,
external event raised), as the Functions host console does, without inputs or outputs.

Production runs on the Durable Task extension in Azure Functions; never deploy devhost.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DESCRIPTION = ("devhost: a LOCAL DEVELOPMENT stand-in for the Azure Functions host (production "
               "runs on the Durable Task extension in Azure Functions). Function keys are not "
               "enforced, as with `func start`.")


LOG_LEVEL_HELP = ("Python logging level (default: WARNING, plus one INFO line per workflow event "
                  "from devhost.workflow)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=DESCRIPTION)
    parser.add_argument("--log-level", default=os.environ.get("DEVHOST_LOG_LEVEL"),
                        help=LOG_LEVEL_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="serve the app's HTTP routes, the Durable management API, Event Grid and "
                      "admin endpoints on 127.0.0.1 (real time)",
        description=DESCRIPTION + " Starts an embedded Jobs API emulator unless DATABRICKS_HOST "
                                  "is set. The first printed line is the app's base URL.")
    serve.add_argument("--port", type=int, default=7071, help="port on 127.0.0.1 (0 = free port)")
    serve.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    # Accepted after the verb too (``serve --log-level INFO``); SUPPRESS keeps the global value.
    serve.add_argument("--log-level", default=argparse.SUPPRESS, help=LOG_LEVEL_HELP)
    serve.add_argument("--auth", action="store_true",
                       help="play Entra ID: serve OpenID metadata and a key set on loopback and require "
                            "bearer tokens from `python -m devhost token` (devhost/entra.py)")
    token = sub.add_parser(
        "token", help="print an Entra-style access token signed with devhost's development key, "
                      "for `serve --auth`", description=DESCRIPTION)
    token.add_argument("--oid", required=True, help="the caller's object id (the workflow owner)")
    token.add_argument("--appid", default=None, help="the client application id (azp/appid)")
    token.add_argument("--role", action="append", default=[], help="an app role (repeat for several), "
                                                                   "e.g. Workflows.Run, Workflows.Admin")
    token.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")
    token.add_argument("--v1", action="store_true", help="a v1 token (sts.windows.net issuer, appid)")
    demo = sub.add_parser(
        "demo", help="start serve with the emulator, run one workflow over HTTP and print its "
                     "outputs (what `make demo` runs)", description=DESCRIPTION)
    demo.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    demo.add_argument("--max-retry-after", type=float, default=1.0,
                      help="cap on the Retry-After the poller honours, seconds (default 1)")
    demo.add_argument("--timeout", type=float, default=900.0, help="give up after this many s")
    demo.add_argument("--request", type=_request_file, default=None, metavar="FILE",
                      help="a JSON request body to start instead of the seed's (docs/examples/ has one "
                           "per job shape)")
    demo.add_argument("--log-level", default=argparse.SUPPRESS, help=LOG_LEVEL_HELP)
    return parser


def _request_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise argparse.ArgumentTypeError(f"{path} must hold a JSON object")
    return body


def configure_logging(level: str = None) -> None:
    """The chosen level for everything; by default WARNING, but the workflow events at INFO."""
    logging.basicConfig(level=getattr(logging, str(level or "WARNING").upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level is None:
        logging.getLogger("devhost.workflow").setLevel(logging.INFO)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "serve":
        from .serve import serve
        return serve(args.port, args.app, auth=args.auth)
    if args.command == "token":
        from . import entra
        extra = {"app_id": args.appid} if args.appid else {}
        print(entra.issue_token(args.oid, roles=args.role, lifetime_seconds=args.minutes * 60, v1=args.v1,
                                **extra))
        return 0
    from .demo import run_demo
    return run_demo(args.app, request_body=args.request, max_retry_after=args.max_retry_after,
                    timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
