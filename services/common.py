"""Shared plumbing for service components: context (db, settings, broker clients), heartbeats, service log."""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from broker.client import OpenAlgoClient
from config import Settings
from db import Database
from db.accounts import api_key_for, list_accounts
from db.models import ServiceLog, utcnow
from db.rawsql import raw_cursor, sql_ts

IST = timezone(timedelta(hours=5, minutes=30))
log = logging.getLogger("services")


def ist_now_str() -> str:
    return datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S IST")


@dataclass
class ServiceContext:
    """What every component gets: the database, the settings and a per-account broker client cache."""
    db: Database
    settings: Settings
    _clients: dict[int, OpenAlgoClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, account_id: int) -> OpenAlgoClient:
        """One client (and so one set of token buckets) per account, shared by all components."""
        with self._lock:
            c = self._clients.get(account_id)
            if c is None:
                acct = next((a for a in list_accounts(self.db) if a.id == account_id), None)
                if acct is None:
                    raise KeyError(f"unknown account {account_id}")
                b = self.settings.broker
                c = OpenAlgoClient(acct.host_url, api_key_for(self.db, account_id), name=acct.name,
                                   connect_timeout=b.connect_timeout_s, read_timeout=b.read_timeout_s,
                                   order_rate=b.order_rate_per_s, read_rate=b.read_rate_per_s,
                                   retries=b.read_retries, backoff_base=b.backoff_base_s, backoff_max=b.backoff_max_s)
                self._clients[account_id] = c
            return c

    def drop_client(self, account_id: int) -> None:
        """Forget a cached client (the account's key or URL changed)."""
        with self._lock:
            c = self._clients.pop(account_id, None)
        if c:
            c.close()

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()


HEARTBEAT_SQL = ("INSERT INTO service_heartbeat (component, pid, status, last_beat, details_json) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (component) DO UPDATE SET pid = excluded.pid, "
                 "status = excluded.status, last_beat = excluded.last_beat, details_json = excluded.details_json")


def heartbeat(db: Database, component: str, status: str = "ok", details: dict | None = None) -> None:
    """Upsert the component's service_heartbeat row: one plain statement (several components beat every few
    seconds, and each write holds the process's writer lock that a risk exit may be waiting for)."""
    details_json = json.dumps(details or {}, default=str)
    with db.write() as s:
        raw_cursor(s).execute(HEARTBEAT_SQL, (component, os.getpid(), status, sql_ts(utcnow()), details_json))


def service_log(db: Database, component: str, level: str, message: str, keep: int = 2000) -> None:
    """Record a warning/error for the health page (and the normal log). Messages must not contain keys."""
    getattr(log, level.lower(), log.info)("%s: %s", component, message)
    with db.write() as s:
        s.add(ServiceLog(component=component, level=level.upper()[:8], message=message[:1024]))
        cutoff = s.scalar(select(ServiceLog.id).order_by(ServiceLog.id.desc()).offset(keep).limit(1))
        if cutoff:
            s.execute(delete(ServiceLog).where(ServiceLog.id <= cutoff))
