"""Database access shared by the service and the UI: `Database` bundles the store (engine, writer lock, write
gate) and the Fernet key."""
from __future__ import annotations

from pathlib import Path

from config import Settings, key_file_for, load_settings
from db.crypto import fernet_for
from db.engine import Store
from db.migrations import migrate


class Database:
    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, key_file: str | Path | None = None,
                 fernet_key: str = "", max_pages: int = 0):
        self.path = Path(path)
        self.store = Store(self.path, busy_timeout_ms, max_pages)
        self.engine = self.store.engine
        migrate(self.store)
        self.key_file = key_file_for(self.path, key_file)
        self.fernet = fernet_for(self.key_file, fernet_key)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Database":
        s = settings or load_settings()
        return cls(s.db.path, s.db.busy_timeout_ms, s.secrets.key_file, s.secrets.fernet_key, s.db.max_pages)

    def write(self, wait_s: float | None = None, urgent: bool = False):
        """A write transaction; ``wait_s`` bounds the wait for the write lock (default: busy_timeout). Database
        faults raise the db.errors ladder (DbLocked, DbFull, DbUnavailable). ``urgent``: an order or exit write,
        handed the process's writer lock ahead of background writers (db.engine.WriterLock)."""
        return self.store.write(wait_s, urgent)

    def read(self):
        return self.store.read()

    def own_checkpoints(self) -> None:
        """This process checkpoints the WAL itself from now on (``checkpoint()`` on a timer); see Store."""
        self.store.own_checkpoints()

    def checkpoint(self) -> tuple[int, int, int]:
        return self.store.checkpoint()
