import pytest
from sqlalchemy import func, select

from db.chain import open_session
from db.commands import CommandError
from db.models import OptionChainSession


@pytest.mark.parametrize("underlying,exchange,expiry,msg", [
    ("NIFTY", "NFO", None, "Underlying exchange"),
    ("", "NSE_INDEX", None, "Choose an underlying"),
    ("NIFTY", "NSE_INDEX", "", "Choose an underlying"),
    ("NOPE", "NSE_INDEX", None, "No NOPE options"),
    ("NIFTY", "NSE_INDEX", "01-JAN-99", "No NIFTY options expiring 01-JAN-99"),
    ("NIFTY'; DROP TABLE instruments;--", "NSE_INDEX", None, "Choose an underlying|No "),
])
def test_open_session_when_input_is_bad_then_clear_error_and_nothing_written(seeded_db, underlying, exchange,
                                                                              expiry, msg):
    from tests.builders import seed_instruments  # noqa: F401 (seeded_db already holds the NIFTY chain)
    with seeded_db.read() as s:
        listed = s.scalar(select(func.min(OptionChainSession.id)))
    assert listed is None
    real_expiry = _expiry(seeded_db)
    with pytest.raises(CommandError, match=msg):
        open_session(seeded_db, underlying, exchange, real_expiry if expiry is None else expiry)
    with seeded_db.read() as s:
        assert s.scalar(select(func.count()).select_from(OptionChainSession)) == 0


def test_open_session_when_listed_then_requested_row(seeded_db):
    sid = open_session(seeded_db, "nifty", "NSE_INDEX", _expiry(seeded_db))
    with seeded_db.read() as s:
        row = s.get(OptionChainSession, sid)
    assert (row.underlying, row.status) == ("NIFTY", "requested")


def _expiry(db):
    from db.models import Instrument
    with db.read() as s:
        return s.scalar(select(Instrument.expiry).where(Instrument.instrumenttype == "CE").limit(1))
