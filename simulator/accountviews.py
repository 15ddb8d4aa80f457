"""Account read views and bulk actions (orderbook, positions, funds, smart/close/cancel-all)."""

from __future__ import annotations

from .broker import AN, ROWS, Account, Broker, PreEncoded, leverage, with_rows
from .fills import COMPLETE, OPEN, REJECTED, TRIGGER_PENDING
from .timeutil import ist_stamp

START_STAMP = ist_stamp()


def orderbook(acct: Account) -> dict:
    """The orderbook response as a dict (the reference encoding of ``orderbook_json``)."""
    orders = list(acct.orders.values())[::-1]
    return {"data": {"orders": [o.book_row() for o in orders], "statistics": _book_stats(orders)},
            "status": "success", **AN}


def orderbook_json(acct: Account) -> PreEncoded:
    """The orderbook response, encoded from each order's cached encoding."""
    orders = list(acct.orders.values())[::-1]
    return with_rows({"data": {"orders": ROWS, "statistics": _book_stats(orders)}, "status": "success", **AN},
                     [o.book_json() for o in orders])


def tradebook_json(acct: Account) -> PreEncoded:
    return with_rows({"data": ROWS, "status": "success", **AN}, [t.row_json() for t in acct.trades[::-1]])


def _book_stats(orders: list) -> dict:
    return {
        "total_buy_orders": sum(o.action == "BUY" for o in orders),
        "total_completed_orders": sum(o.status == COMPLETE for o in orders),
        "total_open_orders": sum(o.status == OPEN for o in orders),
        "total_rejected_orders": sum(o.status == REJECTED for o in orders),
        "total_sell_orders": sum(o.action == "SELL" for o in orders),
        "total_trigger_pending_orders": sum(o.status == TRIGGER_PENDING for o in orders),
    }


def tradebook(acct: Account) -> dict:
    return {"data": [t.row() for t in acct.trades[::-1]], "status": "success", **AN}


def position_rows(b: Broker, acct: Account) -> list[dict]:
    rows = []
    for p in acct.positions.values():
        ltp = b.market.state((p.exchange, p.symbol)).ltp
        unreal = p.unrealized(ltp)
        cost = abs(p.quantity) * p.average_price
        pnl = round(p.realized + unreal, 2)
        rows.append({"average_price": round(p.average_price, 2), "exchange": p.exchange,
                     "lot_size": 1.0, "ltp": ltp, "pnl": pnl,
                     "pnlpercent": round(100 * unreal / cost, 2) if cost else 0.0,
                     "product": p.product, "quantity": p.quantity, "symbol": p.symbol,
                     "today_realized_pnl": round(p.realized, 2), "total_pnl_today": pnl,
                     "unrealized_pnl": round(unreal, 2)})
    return rows


def positionbook(b: Broker, acct: Account) -> dict:
    rows = position_rows(b, acct)
    real = float(round(sum(r["today_realized_pnl"] for r in rows), 2))
    unreal = float(round(sum(r["unrealized_pnl"] for r in rows), 2))
    return {"data": rows, "status": "success", "total_pnl": round(real + unreal, 2),
            "total_pnl_today": round(real + unreal, 2), "total_today_realized_pnl": real,
            "total_unrealized_pnl": unreal, **AN}


def funds(b: Broker, acct: Account) -> dict:
    rows = position_rows(b, acct)
    real = float(round(acct.realized(), 2))
    unreal = float(round(sum(r["unrealized_pnl"] for r in rows), 2))
    gross = float(sum(abs(r["quantity"]) * r["ltp"] for r in rows))
    used = b.used_margin(acct)
    data = {"availablecash": round(acct.capital + acct.realized() - used, 2), "collateral": 0.0,
            "grossexposure": round(gross, 2), "last_reset": START_STAMP, "m2mrealized": real,
            "m2munrealized": unreal, "reset_count": 0, "today_realized_pnl": real,
            "total_realized_pnl": real, "totalpnl": round(real + unreal, 2),
            "utiliseddebits": float(round(used, 2))}
    return {"data": data, "status": "success", **AN}


def holdings(b: Broker, acct: Account) -> dict:
    stats = {"totalholdingvalue": 0.0, "totalinvvalue": 0.0, "totalpnlpercentage": 0.0,
             "totalprofitandloss": 0.0}
    return {"data": {"holdings": [], "statistics": stats}, "status": "success", **AN}


def orderstatus(acct: Account, orderid: str) -> tuple[int, dict]:
    o = acct.orders.get(orderid)
    if o is None:
        return 404, {"message": f"Order {orderid} not found", "status": "error", **AN}
    return 200, {"data": o.status_row(), "status": "success", **AN}


def openposition(acct: Account, p: dict) -> dict:
    return {"quantity": acct.net_qty(p["symbol"], p["exchange"], p["product"]), "status": "success", **AN}


def cancel_all(b: Broker, acct: Account) -> dict:
    done, failed = [], []
    # sandbox quirk: only `open` orders are cancelled; `trigger pending` are skipped
    for o in list(acct.orders.values()):
        if o.status == OPEN:
            code, body = b.cancel(acct, o.orderid)
            (done if code == 200 else failed).append(o.orderid)
    return {"canceled_orders": done, "failed_cancellations": [{"orderid": x, "message": "failed"} for x in failed],
            "message": f"Canceled {len(done)} orders. Failed to cancel {len(failed)} orders.",
            "status": "success", **AN}


def close_all(b: Broker, acct: Account, strategy: str) -> dict:
    open_pos = [p for p in acct.positions.values() if p.quantity]
    if not open_pos:
        return {"message": "No open positions to close", "status": "success", **AN}
    ok = bad = 0
    for p in open_pos:
        code, _body = b.place(acct, _exit_params(p.symbol, p.exchange, p.product, -p.quantity, strategy))
        ok, bad = (ok + 1, bad) if code == 200 else (ok, bad + 1)
    return {"closed_positions": ok, "failed_closures": bad, "message": f"Closed {ok} positions",
            "status": "success", **AN}


def _exit_params(symbol, exchange, product, signed_qty, strategy) -> dict:
    return {"symbol": symbol, "exchange": exchange, "product": product, "strategy": strategy,
            "action": "BUY" if signed_qty > 0 else "SELL", "quantity": abs(signed_qty),
            "pricetype": "MARKET", "price": 0.0, "trigger_price": 0.0}


def smart_order(b: Broker, acct: Account, p: dict) -> tuple[int, dict]:
    cur = acct.net_qty(p["symbol"], p["exchange"], p["product"])
    target = int(p["position_size"])
    if target == 0 and cur == 0:
        if p["quantity"] == 0:
            return 200, {"message": "No OpenPosition Found. Not placing Exit order.", "status": "success", **AN}
        delta = p["quantity"] * (1 if p["action"] == "BUY" else -1)
    elif target == cur:
        return 200, {"message": "Positions Already Matched. No Action needed.", "status": "success", **AN}
    else:
        delta = target - cur
    # sandbox quirk: smart orders are always MARKET (price ignored)
    return b.place(acct, _exit_params(p["symbol"], p["exchange"], p["product"], delta, p["strategy"]))


__all__ = [
    "cancel_all",
    "close_all",
    "funds",
    "holdings",
    "leverage",
    "openposition",
    "orderbook",
    "orderstatus",
    "positionbook",
    "smart_order",
    "tradebook",
]
