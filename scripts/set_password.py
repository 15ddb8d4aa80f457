"""Set the app's password: ``python -m scripts.set_password [--print] [--file PATH] [--clear]``.

Asks for the password twice (never on the command line: it would stay in the shell history) and writes its argon2
hash, never the password, to the password file (mode 0600; default 'algomirror.password' beside the database, see
``config.password_file_for``). From then on every page of the app asks for it, and the launcher may bind to an
address other than 127.0.0.1. ``--print`` prints the hash instead, as a line for the environment
(``APP__UI__PASSWORD_HASH``); ``--clear`` deletes the file (no login again, loopback only).
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from config import load_settings, password_file_for
from ui.auth import hash_password

MIN_LENGTH = 8


def write_hash(path: Path, hashed: str) -> None:
    """The hash in ``path``, mode 0600 (written beside it, then renamed: never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hashed + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_password(stream=None) -> str:
    """The new password, twice; from stdin lines when it is not a terminal (scripts, tests)."""
    if stream is None and sys.stdin.isatty():
        first, second = getpass.getpass("New password: "), getpass.getpass("Again: ")
    else:
        lines = (stream or sys.stdin).read().splitlines() + ["", ""]
        first, second = lines[0], lines[1]
    if first != second:
        raise SystemExit("the two passwords differ: nothing was changed")
    if len(first) < MIN_LENGTH:
        raise SystemExit(f"the password must have at least {MIN_LENGTH} characters: nothing was changed")
    return first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.set_password", description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", action="store_true", help="print the hash for APP__UI__PASSWORD_HASH instead")
    ap.add_argument("--file", help="password file (default: APP__UI__PASSWORD_FILE, else beside the database)")
    ap.add_argument("--clear", action="store_true", help="delete the password file (no login; loopback only)")
    args = ap.parse_args(argv)
    settings = load_settings()
    path = Path(args.file) if args.file else password_file_for(settings.db.path, settings.ui.password_file)
    if args.clear:
        path.unlink(missing_ok=True)
        print(f"password file {path} removed")
        return 0
    hashed = hash_password(read_password())
    if args.print:
        print(f"APP__UI__PASSWORD_HASH='{hashed}'")
        return 0
    write_hash(path, hashed)
    print(f"password hash written to {path} (mode 0600); every page of the app now asks for the password")
    if settings.ui.password_hash:
        print("note: APP__UI__PASSWORD_HASH is set and takes precedence over this file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
