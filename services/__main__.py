"""``python -m services [--db PATH] [--log-file FILE] [--debug]``: run the AlgoMirror background service."""
from __future__ import annotations

import signal

# A SIGTERM while the imports below run (seconds on a busy machine) would kill the process by default, before
# the handlers of stop_on_signals exist: a launcher stopping a service that is still starting would see -15, not
# a clean stop. Until then, a stop request is only remembered; main() then starts and stops at once.
_EARLY_STOP: list[int] = []
if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, lambda signum, frame: _EARLY_STOP.append(signum))

import argparse  # noqa: E402
import logging  # noqa: E402
import queue  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from config import ConfigError, load_settings  # noqa: E402
from db import logmask  # noqa: E402
from db.commands import RegistryError  # noqa: E402
from db.migrations import MigrationError  # noqa: E402
from services.runner import AlreadyRunning, InstanceLock, run, settings_for  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services", description="AlgoMirror background service")
    p.add_argument("--db", help="SQLite database file (default: APP__DB__PATH or data/algomirror.db)")
    p.add_argument("--log-file", help="also write the (key-masked) log to this file")
    p.add_argument("--debug", action="store_true", help="debug logging")
    return p.parse_args(argv)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set ``stop``, through a thread. A Python signal handler runs in the main thread between two
    bytecodes, possibly inside ``stop.wait()`` while that holds the event's internal lock; a handler calling
    ``stop.set()`` would then wait for that lock forever, and the service would run on (a SIGTERM just after
    start did that). ``SimpleQueue.put`` is safe in a signal handler; the relay thread does the ``set()``."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def relay() -> None:
        signals.get()
        stop.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.put(signum))
    if _EARLY_STOP:  # asked to stop while it was still starting
        signals.put(_EARLY_STOP[0])


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
    stop_on_signals(stop)
    try:
        run(settings, stop)
    except MigrationError as exc:  # the database stays as it was; the operator must act, so say what and exit
        logging.getLogger("services").error("AlgoMirror service not started: %s", exc)
        return 4
    except RegistryError as exc:  # a release whose commands and handlers disagree: refuse to run it at all
        logging.getLogger("services").error("AlgoMirror service not started: %s", exc)
        return 5
    finally:
        lock.release()
    logging.getLogger("services").info("AlgoMirror service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
