"""``python -m api [--db PATH] [--host H] [--port P] [--log-file FILE] [--debug]``: run the local API.

Binds 127.0.0.1 by default and refuses any other address unless ``APP__API__ALLOW_REMOTE=1`` (the API can place
orders). The access log names method, path (a webhook token cut to its first 8 characters) and status; requests'
headers (the API key) are never logged.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from dataclasses import replace

from config import ConfigError, load_settings
from db import clock, logmask

LOOPBACK_NAMES = {"localhost"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m api", description="AlgoMirror local API")
    p.add_argument("--db", help="SQLite database file (default: APP__DB__PATH or data/algomirror.db)")
    p.add_argument("--host", help="address to bind (default: APP__API__HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: APP__API__PORT, 5100)")
    p.add_argument("--log-file", help="also write the (key-masked) log to this file")
    p.add_argument("--debug", action="store_true", help="debug logging")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    api = replace(settings.api, host=args.host or settings.api.host, port=args.port or settings.api.port)
    settings = replace(settings, api=api, db=replace(settings.db, path=args.db) if args.db else settings.db)
    if not is_loopback(api.host) and api.allow_remote != 1:
        print(f"AlgoMirror API: refusing to bind {api.host}: the API can place orders, so it listens on loopback "
              "only unless APP__API__ALLOW_REMOTE=1 is set", file=sys.stderr)
        return 2
    import uvicorn

    from api.app import create_app
    try:
        app = create_app(settings)
    except ValueError as exc:  # a malformed rate setting
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    # logging is set up once the process will really serve: a refused start leaves the caller's logging as it was
    logmask.install(logging.DEBUG if args.debug else logging.INFO, args.log_file)
    # the market clock the service and the app run on (tests, the demo): entries after the cut-off are refused by it
    shift = clock.apply_settings(settings.market)
    logging.getLogger("api").info("AlgoMirror API on http://%s:%d (docs at /docs)", api.host, api.port)
    if shift:
        logging.getLogger("api").warning("market clock moved: %s (real clock %+.0f s)", clock.ist_now_str(),
                                         shift.total_seconds())
    uvicorn.run(app, host=api.host, port=api.port, log_config=None, access_log=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
