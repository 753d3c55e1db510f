"""Closed candles, kept so indicators can warm up after a restart and rules can be previewed.

One row is one closed bar of ``engines.market.Candle``; the service
``app.services.candles`` converts between the two, so nothing outside it handles
rows. The natural key ``(symbol, timeframe, start)`` is the primary key: a bar is
identified by what it measures, which is what makes re-storing a candle an
idempotent upsert rather than a duplicate.

The primary key's index, ordered ``symbol, timeframe, start``, is also the index
for the hot read, "the latest N candles of (symbol, timeframe)": both SQLite and
PostgreSQL walk it backwards from the end of the range and stop after N rows.
The second index, ``(timeframe, start)``, serves retention: pruning "1m older
than 30 days" across every symbol is then a range delete, not a full scan of a
table that grows by about a million 1m rows per trading day on the full KRX.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime


class StoredCandle(SQLModel, table=True):
    """A closed bar. Prices are whole won, ``volume`` is shares, ``start`` is UTC.

    Prices are ``BIGINT`` although today's highest KRX price fits in 32 bits: a
    volume certainly does not always (penny stocks trade billions of shares a
    day), and keeping the five numbers one type avoids a surprise on a split or
    a new listing. The check constraints repeat the service's validation in the
    database, so no writer (a migration script, a manual fix) can store a bar
    whose low is above its open.
    """

    __tablename__ = "candles"
    __table_args__ = (
        CheckConstraint(
            "low > 0 AND low <= open AND low <= close AND high >= open AND high >= close",
            name="ohlc",
        ),
        CheckConstraint("volume >= 0", name="volume"),
        Index("ix_candles_timeframe_start", "timeframe", "start"),
    )

    symbol: str = Field(
        sa_column=Column(String(12), ForeignKey("symbols.code"), primary_key=True, nullable=False)
    )
    timeframe: str = Field(sa_column=Column(String(4), primary_key=True, nullable=False))
    start: datetime = Field(sa_column=Column(UTCDateTime, primary_key=True, nullable=False))
    open: int = Field(sa_column=Column(BigInteger, nullable=False))
    high: int = Field(sa_column=Column(BigInteger, nullable=False))
    low: int = Field(sa_column=Column(BigInteger, nullable=False))
    close: int = Field(sa_column=Column(BigInteger, nullable=False))
    volume: int = Field(sa_column=Column(BigInteger, nullable=False))
