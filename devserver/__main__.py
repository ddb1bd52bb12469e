"""python -m devserver [--port 3000] [--host 127.0.0.1] [--s3-port 0] [--data-dir .local/pgdata] [--no-samples]

Exit codes: 0 stopped by Ctrl-C/SIGTERM, 1 failed to start, 2 bad option or port in use,
3 database unreachable or refused. A failure to start is one line on stderr (--verbose adds
the traceback)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from devserver.stack import DatabaseUnavailable, LocalStack, Options, PortInUse

log = logging.getLogger("devserver")


def build_parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m devserver",
        description="The paysync stack locally: embedded PostgreSQL, moto S3 and the API on one port.",
    )
    parser.add_argument("--host", default=defaults.host, help="address the API listens on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="API port (default %(default)s)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3 (moto) port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=defaults.data_dir,
        help="embedded PostgreSQL data directory, kept between runs (default .local/pgdata; unused with DATABASE_URL)",
    )
    parser.add_argument("--no-samples", action="store_true", help="do not load samples/*.json into an empty replica")
    parser.add_argument(
        "--containers",
        type=int,
        default=defaults.containers,
        help="the most concurrent invocations (containers) of each function (default %(default)s)",
    )
    parser.add_argument(
        "--s3-poll-seconds",
        type=float,
        default=defaults.s3_poll_seconds,
        help="how often the bucket is checked for new objects besides after each write (default %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback when the stack fails to start")
    return parser


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s devserver %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: one line per S3 call


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.containers < 1:
        parser.error("--containers must be at least 1")
    if not args.s3_poll_seconds > 0:
        parser.error("--s3-poll-seconds must be more than 0")
    _configure_logging()
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    options = Options(
        host=args.host,
        port=args.port,
        s3_port=args.s3_port,
        data_dir=args.data_dir.resolve(),
        samples=not args.no_samples,
        containers=args.containers,
        s3_poll_seconds=args.s3_poll_seconds,
    )
    stack = LocalStack(options)
    try:
        stack.start()
    except PortInUse as exc:
        print(f"devserver: {exc}. Stop whatever uses it, or pick another port (make run PORT=3001).", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"devserver: {exc.message}. Start it, or unset DATABASE_URL for the embedded one.", file=sys.stderr)
        return 3
    except Exception as exc:
        if args.verbose:
            log.exception("the local stack failed to start")
        print(f"devserver: failed to start: {type(exc).__name__}: {exc} (--verbose shows where)", file=sys.stderr)
        return 1
    try:
        if not stopping.is_set():
            print(stack.banner(), flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        stack.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
