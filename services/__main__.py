"""``python -m services [--db PATH] [--log-file FILE] [--debug]``: run the AlgoMirror background service."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from config import ConfigError, load_settings
from db import logmask
from db.migrations import MigrationError
from services.runner import AlreadyRunning, InstanceLock, run, settings_for


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services", description="AlgoMirror background service")
    p.add_argument("--db", help="SQLite database file (default: APP__DB__PATH or data/algomirror.db)")
    p.add_argument("--log-file", help="also write the (key-masked) log to this file")
    p.add_argument("--debug", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logmask.install(logging.DEBUG if args.debug else logging.INFO, args.log_file)
    if not args.debug:  # one line per HTTP request / job run would drown the useful lines
        for noisy in ("httpx", "httpcore", "apscheduler", "websocket"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = settings_for(args.db, load_settings())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    lock = InstanceLock(settings.db.path)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"AlgoMirror service: {exc}", file=sys.stderr)
        return 3
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        run(settings, stop)
    except MigrationError as exc:  # the database stays as it was; the operator must act, so say what and exit
        logging.getLogger("services").error("AlgoMirror service not started: %s", exc)
        return 4
    finally:
        lock.release()
    logging.getLogger("services").info("AlgoMirror service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
