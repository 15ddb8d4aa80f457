"""One error ladder for the database, whatever raised it.

The same fault reaches us in three shapes: ``sqlite3.OperationalError`` from a raw cursor (the order hot paths,
db/rawsql.py), ``sqlalchemy.exc.OperationalError`` wrapping it from the ORM or ``text()``, and our own write gate
or writer lock giving up. Callers that must react (the risk manager retrying an exit, a form telling the user what
happened) catch these classes instead of guessing at driver types and message strings:

    DbError                 any database fault that left the transaction rolled back (nothing was written)
      DbLocked              another writer kept the lock past busy_timeout (SQLITE_BUSY/LOCKED, gate, writer lock)
      DbFull                the database could not grow (SQLITE_FULL: disk full, or the configured size cap)
      DbUnavailable         the file cannot be read or written at all (I/O error, read-only, cannot open, corrupt)

Each is also a ``sqlite3.OperationalError``, so code written against the driver keeps working. ``str()`` is
the message a user is shown.
"""
from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import DBAPIError


class DbError(sqlite3.OperationalError):
    """A database fault; the transaction that met it was rolled back."""
    headline = "database error: nothing was written"

    def __init__(self, detail: str = ""):
        self.detail = detail
        super().__init__(f"{self.headline} ({detail})" if detail else self.headline)


class DbLocked(DbError):
    headline = "database busy: nothing was written, try again"


class DbFull(DbError):
    headline = "disk full: nothing was written"


class DbUnavailable(DbError):
    headline = "database unavailable: nothing was written"


# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF); the message text is the fallback for
# errors raised without a code (our own gate, older drivers).
_BY_CODE = {5: DbLocked, 6: DbLocked, 13: DbFull, 10: DbUnavailable, 8: DbUnavailable, 14: DbUnavailable,
            11: DbUnavailable, 26: DbUnavailable}
_BY_TEXT = (("database is locked", DbLocked), ("database table is locked", DbLocked),
            ("disk is full", DbFull), ("disk i/o error", DbUnavailable), ("readonly database", DbUnavailable),
            ("unable to open database", DbUnavailable), ("malformed", DbUnavailable),
            ("file is not a database", DbUnavailable))


def classify(exc: BaseException) -> DbError | None:
    """The ladder's error for ``exc``, or None when it is not a database fault (an IntegrityError, a bug)."""
    if isinstance(exc, DbError):
        return exc
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, DbError):
        return orig
    if isinstance(orig, OSError) and orig.errno in (errno.ENOSPC, errno.EDQUOT):
        return DbFull(str(orig))
    if not isinstance(orig, sqlite3.OperationalError | sqlite3.DatabaseError) or \
            isinstance(orig, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return None
    text = str(orig)
    code = getattr(orig, "sqlite_errorcode", None)
    cls = _BY_CODE.get(code & 0xFF) if isinstance(code, int) else None
    if cls is None:
        low = text.lower()
        cls = next((c for needle, c in _BY_TEXT if needle in low), None)
    if cls is None:
        return None
    return cls(text)
