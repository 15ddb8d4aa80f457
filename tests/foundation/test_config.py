from pathlib import Path

import pytest

from config import ConfigError, describe, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_overrides_are_typed():
    s = load_settings({"APP__SERVICE__WS_STALL_SECONDS": "2.5", "APP__SERVICE__EXIT_RETRIES": "5"})
    assert s.service.ws_stall_seconds == 2.5 and s.service.exit_retries == 5


def test_watchlist_parses_exchange_symbol_pairs():
    from config import parse_watchlist
    assert parse_watchlist("NSE_INDEX:NIFTY, bse_index:sensex") == [("NIFTY", "NSE_INDEX"), ("SENSEX", "BSE_INDEX")]


@pytest.mark.parametrize("env,msg", [({"APP__DB__BUSY_TIMEOUT_MS": "100"}, ">= 5000"),
                                     ({"APP__SERVICE__WATCHLIST": "NIFTY"}, "EXCHANGE:SYMBOL"),
                                     ({"APP__SERVICE__POLLER_INTERVAL_S": "0.2"}, ">= 1.0"),
                                     ({"APP__BROKER__READ_RETRIES": "many"}, "not a valid int")])
def test_bad_config_fails_fast(env, msg):
    with pytest.raises(ConfigError, match=msg):
        load_settings(env)


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [name for name, _, _ in describe() if name not in text]
    assert not missing, f"settings missing from README: {missing}"
