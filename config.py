"""One typed settings object shared by the service and the Streamlit app.

Every setting has a default and help text. Override any of them with an environment
variable named ``APP__<SECTION>__<KEY>`` (upper case), e.g. ``APP__SERVICE__WS_STALL_SECONDS=5``.
Settings are validated at load time, so a bad value fails fast with a clear message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _s(default, help_text: str, minimum=None):
    return field(default=default, metadata={"help": help_text, "min": minimum})


@dataclass(frozen=True)
class DbSettings:
    path: str = _s(str(ROOT / "data" / "algomirror.db"), "SQLite database file shared by the service and the UI")
    busy_timeout_ms: int = _s(5000, "SQLite busy_timeout in milliseconds (>= 5000)", 5000)
    max_pages: int = _s(0, "Cap on the database file in 4 KiB pages (0 = none); a write past it fails as 'disk full'",
                        0)


@dataclass(frozen=True)
class SecretsSettings:
    fernet_key: str = _s("", "Fernet key for API keys at rest; empty = use/create key_file")
    key_file: str = _s("", "Key file (mode 0600); empty = 'algomirror.key' beside the database")


@dataclass(frozen=True)
class BrokerSettings:
    connect_timeout_s: float = _s(3.0, "HTTP connect timeout to OpenAlgo", 0.1)
    read_timeout_s: float = _s(10.0, "HTTP read timeout to OpenAlgo (placeorder timeout => outcome unknown)", 0.1)
    order_rate_per_s: float = _s(8.0, "Token-bucket rate for order calls per account (OpenAlgo allows 10/s)", 0.1)
    read_rate_per_s: float = _s(20.0, "Token-bucket rate for read calls per account", 0.1)
    read_retries: int = _s(4, "Retries for idempotent reads (never for placeorder)", 0)
    backoff_base_s: float = _s(2.0, "Base of exponential backoff for reads and 429", 0.0)
    backoff_max_s: float = _s(60.0, "Cap of exponential backoff", 0.0)


@dataclass(frozen=True)
class ServiceSettings:
    ws_stall_seconds: float = _s(10.0, "No tick for this long while subscribed => reconnect", 0.5)
    ws_reconnect_base_s: float = _s(1.0, "WebSocket reconnect backoff base", 0.05)
    ws_reconnect_max_s: float = _s(30.0, "WebSocket reconnect backoff cap", 0.1)
    ws_failover_after: int = _s(3, "Consecutive failed connects before failing over to the next backup account", 1)
    ws_failover_cooldown_s: float = _s(60.0, "An account that failed is not retried as feed for this long", 0.0)
    dispatch_poll_s: float = _s(0.05, "Order dispatcher poll interval for queued intents", 0.005)
    control_poll_s: float = _s(0.25, "Control commands (flatten, exits, re-arm...) without a wake-up are carried out "
                                     "within this; the app's and the API's are carried out at once", 0.01)
    poller_interval_s: float = _s(1.0, "Order status poll interval per account (<= 1 request/s/account)", 1.0)
    flush_interval_s: float = _s(1.0, "Price/position batch flush to SQLite (<= 2 s)", 0.05)
    pnl_snapshot_s: float = _s(1.0, "P&L snapshot interval for charts", 0.2)
    risk_sweep_s: float = _s(5.0, "Risk sweep interval (REST fallback when a price is older than this)", 0.1)
    exit_retries: int = _s(3, "Retries of a failed exit order before flagging it loudly", 0)
    exit_partial_timeout_s: float = _s(10.0, "An exit partially filled for this long is flagged, its remainder "
                                             "cancelled and re-sent (one retry)", 0.5)
    reconcile_interval_s: float = _s(5.0, "Reconciler interval for sent/unknown intents", 0.1)
    reconcile_max_checks: int = _s(6, "Checks before an unmatched in-flight intent is settled rejected", 1)
    reconcile_window_s: float = _s(120.0, "Time window for matching an unknown intent to a broker order", 1.0)
    heartbeat_s: float = _s(2.0, "Service heartbeat interval", 0.1)
    account_ping_s: float = _s(30.0, "Every active account is pinged this often (its status, round trip and last "
                                     "error on Service Health)", 1.0)
    chain_strikes: int = _s(20, "Option-chain session: strikes each side of ATM", 1)
    chain_ttl_s: float = _s(300.0, "Option-chain session lifetime without heartbeat", 1.0)
    chain_cleanup_s: float = _s(60.0, "Option-chain session cleanup interval", 1.0)
    funds_refresh_s: float = _s(10.0, "Funds/positions/holdings refresh per account", 1.0)
    watchlist: str = _s("NSE_INDEX:NIFTY,NSE_INDEX:BANKNIFTY,BSE_INDEX:SENSEX",
                        "Always-subscribed symbols shown on the dashboard (EXCHANGE:SYMBOL, comma separated)")
    day_summary_at: str = _s("15:35", "IST time of day (HH:MM) after which the trading day's summary is written "
                                      "(the History page)")


@dataclass(frozen=True)
class UiSettings:
    refresh_s: float = _s(2.0, "Live tile refresh interval in the Streamlit app", 0.5)
    service_stale_s: float = _s(10.0, "Service heartbeat older than this => 'service down' banner", 1.0)
    margin_check_max_age_s: float = _s(120.0, "Strategies: Execute needs a margin check younger than this", 5.0)
    password_hash: str = _s("", "argon2 hash of the app's password (python -m scripts.set_password); empty = the "
                                "password file's, if any; none = no login (loopback only)")
    password_file: str = _s("", "File holding the password's argon2 hash, written by scripts.set_password; empty = "
                                "'algomirror.password' beside the database")
    session_timeout_min: float = _s(480.0, "A login lasts this many minutes; then every page asks for the password "
                                           "again", 0.1)


@dataclass(frozen=True)
class OrderGuardSettings:
    price_band_pct: float = _s(20.0, "A LIMIT/SL price further than this % from the last price needs a second "
                                     "confirmation", 0.0)
    price_cap_x: float = _s(3.0, "A LIMIT/SL price above this many times the last price (or below 1/x) is refused",
                            1.01)
    confirm_lots: int = _s(100, "An F&O order of more lots than this needs a second confirmation", 1)
    max_lots: int = _s(1000, "An F&O order of more lots than this is refused", 1)
    confirm_notional: float = _s(1_000_000.0, "An order worth more than this (rupees) needs a second confirmation",
                                 0.0)
    max_notional: float = _s(10_000_000.0, "An order worth more than this (rupees) is refused", 0.0)


@dataclass(frozen=True)
class AlertsSettings:
    urls: str = _s("", "Alert targets as apprise URLs, comma separated (tgram://, discord://, mailto://, json://...); "
                       "empty = alerts go to the log and Service Health only")
    throttle_s: float = _s(60.0, "The same alert (kind and subject) is sent at most once per this many seconds", 0.0)


@dataclass(frozen=True)
class MarketSettings:
    mis_square_off: str = _s("15:15", "Square-off time (IST, HH:MM) of MIS (intraday) positions on NSE/BSE trading "
                                      "days, like the brokers' own; 'off' = none")
    nrml_square_off: str = _s("off", "Square-off time (IST, HH:MM) of NRML (carry-forward) positions; 'off' = none "
                                     "(CNC is never squared off)")
    mis_entries_until: str = _s("square_off", "No new MIS entries from this IST time (HH:MM); 'square_off' = the MIS "
                                              "square-off time, 'off' = none. Exits always pass")
    entries_until: str = _s("off", "No new entries of any product from this IST time (HH:MM); 'off' = none. Exits "
                                   "always pass")
    square_off_check_s: float = _s(1.0, "How often the service checks the square-off time, the timed strategies' "
                                        "entry and exit times and the next trading day", 0.1)
    timed_entry_grace_s: float = _s(60.0, "A strategy's timed entry is placed up to this many seconds after its time "
                                          "(a service started later records it 'missed' with an alert, nothing "
                                          "placed); timed exits always fire", 1.0)
    clock_start_ist: str = _s("", "Market clock for tests and the demo: the process's IST clock starts at this instant "
                                  "('YYYY-MM-DD HH:MM[:SS]') and runs on in real time; empty = the real clock")
    clock_offset_s: float = _s(0.0, "Market clock shift in seconds added to the real clock (one value shared by "
                                    "several processes: simulator, service, app); 0 = the real clock")


@dataclass(frozen=True)
class ApiSettings:
    host: str = _s("127.0.0.1", "Address the local API (python -m api) binds; anything but loopback also needs "
                                "allow_remote=1")
    port: int = _s(5100, "Port of the local API", 1)
    allow_remote: int = _s(0, "1 = the local API may bind a non-loopback address (it can place orders: keep it 0 "
                              "unless a firewall guards it)", 0)
    rate_global: str = _s("1000/minute", "Local API: requests per client address, every route (limits syntax: "
                                         "N/second, N/minute, ...)")
    rate_auth: str = _s("10/minute", "Local API: failed authentications per client address")
    rate_api: str = _s("100/minute", "Local API: requests per API key, and alerts per webhook rule")
    rate_heavy: str = _s("20/minute", "Local API: fan-out calls (execute, flatten) per API key")
    webhook_dedupe_s: float = _s(60.0, "A webhook alert without an id whose body repeats within this many seconds is "
                                       "a retried delivery: logged, nothing done", 0.0)


@dataclass(frozen=True)
class Settings:
    db: DbSettings = field(default_factory=DbSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    orders: OrderGuardSettings = field(default_factory=OrderGuardSettings)
    market: MarketSettings = field(default_factory=MarketSettings)
    api: ApiSettings = field(default_factory=ApiSettings)

    @property
    def key_file(self) -> Path:
        return key_file_for(self.db.path, self.secrets.key_file)


def key_file_for(db_path: str | Path, key_file: str | Path | None = "") -> Path:
    """The Fernet key file: ``key_file`` when given, else 'algomirror.key' beside the database. The one place
    that decides the default; Settings.key_file and db.Database both ask here."""
    return Path(key_file) if key_file else Path(db_path).with_name("algomirror.key")


def password_file_for(db_path: str | Path, password_file: str | Path | None = "") -> Path:
    """The file holding the app password's hash: ``password_file`` when given, else beside the database."""
    return Path(password_file) if password_file else Path(db_path).with_name("algomirror.password")


def password_hash_of(settings: Settings) -> str:
    """The configured password hash ('' = no password): the setting, else the password file's first line. The one
    place that decides it (the login gate, the launcher's bind check and scripts.set_password all ask here)."""
    if settings.ui.password_hash:
        return settings.ui.password_hash.strip()
    path = password_file_for(settings.db.path, settings.ui.password_file)
    try:
        return path.read_text().strip().splitlines()[0].strip() if path.exists() else ""
    except (OSError, IndexError):
        return ""


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(address: str | None) -> bool:
    """Whether a bind address reaches this machine only ('' binds every interface: not loopback)."""
    a = (address or "").strip().strip("[]").lower()
    return a in LOOPBACK_HOSTS or a.startswith("127.")


class ConfigError(ValueError):
    pass


def parse_watchlist(text: str) -> list[tuple[str, str]]:
    """'NSE_INDEX:NIFTY,BSE_INDEX:SENSEX' -> [('NIFTY', 'NSE_INDEX'), ('SENSEX', 'BSE_INDEX')] (symbol, exchange)."""
    out = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        exchange, sep, symbol = item.partition(":")
        if not sep or not exchange or not symbol:
            raise ConfigError(f"watchlist item '{item}' must look like EXCHANGE:SYMBOL")
        out.append((symbol.upper(), exchange.upper()))
    return out


def parse_hhmm(text: str, name: str = "time", allowed: tuple[str, ...] = ("off",)) -> time | str | None:
    """'15:15' -> time(15, 15); 'off' -> None; another word of ``allowed`` is returned as is. ConfigError else."""
    word = (text or "").strip().lower()
    if word in allowed:
        return None if word == "off" else word
    hh, sep, mm = word.partition(":")
    if sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and int(hh) < 24 and int(mm) < 60:
        return time(int(hh), int(mm))
    raise ConfigError(f"{name}: '{text}' is not a time of day HH:MM (IST, e.g. 15:15) or one of {', '.join(allowed)}")


def parse_clock_start(text: str, name: str = "APP__MARKET__CLOCK_START_IST") -> datetime | None:
    """'2026-12-01 15:14:50' (IST, seconds optional) -> naive datetime; '' -> None; ConfigError else."""
    text = (text or "").strip()
    if not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ConfigError(f"{name}: '{text}' is not an IST instant 'YYYY-MM-DD HH:MM[:SS]' (e.g. 2026-12-01 15:14:50)")


def check_market(m: "MarketSettings") -> None:
    parse_hhmm(m.mis_square_off, "APP__MARKET__MIS_SQUARE_OFF")
    parse_hhmm(m.nrml_square_off, "APP__MARKET__NRML_SQUARE_OFF")
    parse_hhmm(m.mis_entries_until, "APP__MARKET__MIS_ENTRIES_UNTIL", ("off", "square_off"))
    parse_hhmm(m.entries_until, "APP__MARKET__ENTRIES_UNTIL")
    parse_clock_start(m.clock_start_ist)
    if m.clock_start_ist.strip() and m.clock_offset_s:
        raise ConfigError("APP__MARKET__CLOCK_START_IST and APP__MARKET__CLOCK_OFFSET_S both set: use one")
    if abs(m.clock_offset_s) > 10 * 366 * 86400:
        raise ConfigError(f"APP__MARKET__CLOCK_OFFSET_S: {m.clock_offset_s} is more than ten years")


def _convert(raw: str, typ, name: str):
    try:
        if typ in (int, "int"):
            return int(raw)
        if typ in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: '{raw}' is not a valid {typ if isinstance(typ, str) else typ.__name__}") from exc
    return raw


def load_settings(env: dict | None = None) -> Settings:
    """Build Settings from defaults + ``APP__SECTION__KEY`` environment variables; validate."""
    env = os.environ if env is None else env
    sections = {}
    for sec in fields(Settings):
        obj = sec.default_factory()
        changes = {}
        for f in fields(obj):
            name = f"APP__{sec.name.upper()}__{f.name.upper()}"
            if name in env:
                changes[f.name] = _convert(env[name], f.type, name)
            value = changes.get(f.name, getattr(obj, f.name))
            low = f.metadata.get("min")
            if low is not None and value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        sections[sec.name] = replace(obj, **changes)
    settings = Settings(**sections)
    parse_watchlist(settings.service.watchlist)  # fail fast on a malformed list
    parse_hhmm(settings.service.day_summary_at, "APP__SERVICE__DAY_SUMMARY_AT", ())
    check_market(settings.market)
    return settings


def describe() -> list[tuple[str, object, str]]:
    """(env var, default, help) for every setting: used by the README test and the Settings page."""
    rows = []
    for sec in fields(Settings):
        obj = sec.default_factory()
        for f in fields(obj):
            rows.append((f"APP__{sec.name.upper()}__{f.name.upper()}", getattr(obj, f.name), f.metadata["help"]))
    return rows
