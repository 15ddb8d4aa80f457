"""Database access shared by the service and the UI: `Database` bundles the engine and the Fernet key."""
from __future__ import annotations

from pathlib import Path

from config import Settings, load_settings
from db.crypto import fernet_for
from db.engine import get_engine, read_session, write_session
from db.migrations import migrate


class Database:
    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, key_file: str | Path | None = None,
                 fernet_key: str = "", max_pages: int = 0):
        self.path = Path(path)
        self.engine = get_engine(self.path, busy_timeout_ms, max_pages)
        migrate(self.engine)
        self.fernet = fernet_for(Path(key_file) if key_file else self.path.with_name("algomirror.key"), fernet_key)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Database":
        s = settings or load_settings()
        return cls(s.db.path, s.db.busy_timeout_ms, s.key_file, s.secrets.fernet_key, s.db.max_pages)

    def write(self, wait_s: float | None = None):
        """A write transaction; ``wait_s`` bounds the wait for the write lock (default: busy_timeout). Database
        faults raise the db.errors ladder (DbLocked, DbFull, DbUnavailable)."""
        return write_session(self.engine, wait_s)

    def read(self):
        return read_session(self.engine)
