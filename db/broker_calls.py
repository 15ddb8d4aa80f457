"""broker_calls: every call the service made to an account's gateway (endpoint, HTTP status, duration, outcome),
and what Service Health computes from them (recent calls, error rate, p50 / p99 latency per account)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from db.models import BrokerCall, utcnow
from db.rawsql import raw_cursor, sql_ts

KEEP_H = 24
# Outcomes that say the gateway or the key is unwell (a rejected order or a 4xx is the gateway working).
ERROR_OUTCOMES = ("auth", "not_found", "server_error", "network")
INSERT_SQL = ("INSERT INTO broker_calls (account_id, ts_utc, endpoint, http_status, duration_ms, outcome, error) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)")


def insert_calls(s, rows: list[tuple[int, datetime, str, int | None, float, str, str]]) -> None:
    """Rows of (account_id, ts_utc, endpoint, http_status, duration_ms, outcome, error), in one statement batch."""
    raw_cursor(s).executemany(INSERT_SQL, [(a, sql_ts(t), e, c, round(ms, 3), o, err[:300])
                                           for a, t, e, c, ms, o, err in rows])


def prune_calls(s, keep_h: float = KEEP_H) -> None:
    s.execute(delete(BrokerCall).where(BrokerCall.ts_utc < utcnow() - timedelta(hours=keep_h)))


def recent_calls(s, account_id: int, limit: int = 20) -> list[BrokerCall]:
    return list(s.scalars(select(BrokerCall).where(BrokerCall.account_id == account_id)
                          .order_by(BrokerCall.id.desc()).limit(limit)))


def call_stats(s, window_min: float = 15.0) -> dict[int, dict]:
    """Per account over the last ``window_min`` minutes: calls, errors, error rate, p50 / p99 ms, last error and
    its time."""
    since = utcnow() - timedelta(minutes=window_min)
    rows = s.execute(select(BrokerCall.account_id, BrokerCall.duration_ms, BrokerCall.outcome, BrokerCall.error,
                            BrokerCall.ts_utc, BrokerCall.endpoint)
                     .where(BrokerCall.ts_utc >= since).order_by(BrokerCall.id)).all()
    out: dict[int, dict] = {}
    for acct, ms, outcome, error, ts, endpoint in rows:
        d = out.setdefault(acct, {"calls": 0, "errors": 0, "durations": [], "last_error": "", "last_error_at": None})
        d["calls"] += 1
        d["durations"].append(ms)
        if outcome in ERROR_OUTCOMES:
            d["errors"] += 1
            d["last_error"], d["last_error_at"] = f"{endpoint}: {outcome}: {error}".rstrip(": "), ts
    for d in out.values():
        ms = sorted(d.pop("durations"))
        d["error_rate"] = d["errors"] / d["calls"]
        d["p50_ms"] = _pct(ms, 0.50)
        d["p99_ms"] = _pct(ms, 0.99)
    return out


def _pct(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]
