"""The feed going quiet is an alert, not a log line: the real service process and the simulator.

While something is subscribed (the always-on watchlist is), a feed that delivers no tick for longer than the stall
window raises one ``feed_down`` alert, however many times it reconnects into silence in between; when ticks flow
again one ``feed_restored`` alert follows.
"""
from __future__ import annotations

from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import sim_account


def test_feed_muted_past_stall_window_then_one_down_alert_and_one_restored_alert(db, webhook, tmp_path):
    with SimProcess(seed=47) as sim:
        seed_instruments(db)
        _, name = sim_account(db, sim, "feed", is_primary=True)
        proc = start_service(db.path, tmp_path / "svc.log", service_env(
            APP__ALERTS__URLS=webhook.url, APP__ALERTS__THROTTLE_S="0", APP__SERVICE__WS_STALL_SECONDS="1.0"))
        try:
            assert wait_for(lambda: _ticks(sim) > 0, 20), (tmp_path / "svc.out").read_text()[-2000:]
            assert not webhook.matching("feed down")
            sim.fault("mute_ws", account=name, duration_s=6)  # every reconnect inside it stays silent too
            assert wait_for(lambda: webhook.matching("feed down"), 10), [m for _, m in webhook.received]
            assert wait_for(lambda: webhook.matching("feed back"), 15), [m for _, m in webhook.received]
            assert len(webhook.matching("feed down")) == 1  # one outage, one alert, despite the reconnects
            [(_, down)] = webhook.matching("feed down")
            assert "REST quotes" in down["message"]
        finally:
            sim.clear_faults()
            assert stop_service(proc) == 0


def _ticks(sim) -> int:
    return sim.stats().get("ws_subscribed_symbols", 0)
