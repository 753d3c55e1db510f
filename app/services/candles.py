"""Closed candles in the database: batch upsert, reads for warm-up and previews, retention.

Candles are market data, not user data, so unlike most services these take no
acting user: every user watching a symbol shares its bars.

Writes are idempotent. The runner may store a bar twice (a restart replays the
last minute, a backfill overlaps live data), so :func:`store` is an upsert on the
natural key ``(symbol, timeframe, start)``: the last write of a bar wins and
nothing errors. The upsert is a dialect-specific ``INSERT ... ON CONFLICT``
because a select-then-insert would race between two writers and cost a round
trip per bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.candles import StoredCandle
from engines.market import KST, SESSION_OPEN_HOUR, Candle, Timeframe

__all__ = [
    "RETENTION",
    "between",
    "prune",
    "recent",
    "store",
    "validate",
]

log = logging.getLogger(__name__)

_TABLE = StoredCandle.__table__
_COLUMNS = ("symbol", "timeframe", "start", "open", "high", "low", "close", "volume")
_KEY = ("symbol", "timeframe", "start")
_VALUES = ("open", "high", "low", "close", "volume")
_TF_VALUE = {tf: tf.value for tf in Timeframe}

# Rows per executemany call. Large enough that a whole backfill of one symbol is a
# handful of round trips, small enough to keep each statement's memory modest.
_CHUNK = 5_000

RETENTION: Mapping[Timeframe, timedelta | None] = {
    Timeframe.M1: timedelta(days=30),
    Timeframe.M5: timedelta(days=180),
    Timeframe.M15: None,
    Timeframe.M30: None,
    Timeframe.M60: None,
    Timeframe.D1: None,
    Timeframe.W1: None,
}
"""How long :func:`prune` keeps each timeframe; ``None`` keeps it forever.

Why these numbers: a symbol prints 390 one-minute bars a trading day, so 1m is
over 80% of all rows; on the full KRX (about 2,700 listings) that is a million
rows a day. Nothing needs old 1m bars: a 1m indicator warms up within a few
hundred bars (one or two sessions), and a rule preview on 1m looks back days,
not months. Thirty days covers both with a wide margin and caps 1m at about
8,000 bars per symbol. 5m bars are a fifth as many and make a useful half-year
preview, so they keep 180 days. From 15m up the volume is small (26 bars a day
or fewer) and long histories are what previews and backtests of slow rules
need, so they are kept.
"""


# Seconds from a UTC midnight to the session open, which anchors every label
# (0: 09:00 KST is 00:00 UTC). Fixed because KST has no daylight saving time.
_ANCHOR = SESSION_OPEN_HOUR * 3600 - int(KST.utcoffset(datetime(2000, 1, 1)).total_seconds())
_DAY = 86_400
_STEP = {tf: int(tf.span.total_seconds()) for tf in Timeframe if tf.minutes is not None}


def _is_label(tf: Timeframe, start: datetime) -> bool:
    """Whether ``start`` is the label ``tf.bucket`` gives its bucket; cheaper than calling it.

    Intraday labels are whole multiples of the bar length from 09:00 KST (pre-open
    buckets count backwards from it), a daily label is 09:00 KST, and a weekly
    one is Monday 09:00 KST. On the UNIX time line all three are plain modulo
    checks, which matters when a backfill validates 200,000 bars.
    """
    if start.microsecond:
        return False
    seconds = int(start.timestamp()) - _ANCHOR
    step = _STEP.get(tf)
    if step is not None:
        return seconds % step == 0
    if seconds % _DAY:
        return False
    return tf is Timeframe.D1 or (seconds // _DAY + 3) % 7 == 0  # 1970-01-01 was a Thursday


def _problem(candle: Candle, tf: Timeframe) -> str | None:
    """What is wrong with ``candle``, or ``None``. Kept apart so the happy path is cheap."""
    if not candle.symbol or len(candle.symbol) > 12:
        return "symbol must be 1 to 12 characters"
    start = candle.start
    if not isinstance(start, datetime) or start.utcoffset() is None:
        return "start must be a timezone-aware datetime"
    if not _is_label(tf, start):
        expected = tf.bucket(start)[0].isoformat()
        return f"start is not the label of a {tf} bucket (expected {expected})"
    o, h, lo, c, v = candle.open, candle.high, candle.low, candle.close, candle.volume
    for name, value in (("open", o), ("high", h), ("low", lo), ("close", c), ("volume", v)):
        if type(value) is not int:
            return f"{name} must be an int, got {value!r}"
    if min(o, h, lo, c) <= 0:
        return f"prices must be positive (o={o} h={h} l={lo} c={c})"
    if h < max(o, c):
        return f"high {h} is below max(open, close) {max(o, c)}"
    if lo > min(o, c):
        return f"low {lo} is above min(open, close) {min(o, c)}"
    if v < 0:
        return f"volume must be >= 0, got {v}"
    return None


def validate(candle: Candle) -> Candle:
    """Return ``candle`` with its timeframe as a :class:`Timeframe`, or raise ``ValueError``.

    Checked here, before any row is written, so a bad bar in a batch refuses the
    whole batch with a message naming the bar, rather than a constraint error
    from the database halfway through. ``start`` must be the label the
    aggregator gives the bucket: stored and live candles of the same bucket
    must share a key, or the upsert would keep both. Prices and volume must be
    plain ``int`` (not ``bool``, not a numpy integer), as everywhere in the engines.
    """
    tf = candle.timeframe
    if type(tf) is not Timeframe:
        try:
            tf = Timeframe(tf)
        except ValueError:
            tf = None
    problem = "unknown timeframe" if tf is None else _problem(candle, tf)
    if problem is not None:
        raise ValueError(
            f"candle {candle.symbol!r} {candle.timeframe!s} {candle.start!r}: {problem}"
        )
    assert tf is not None
    if tf is not candle.timeframe:
        return Candle(
            candle.symbol,
            tf,
            candle.start,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
        )
    return candle


_Row = tuple[str, str, datetime, int, int, int, int, int]


def _rows(candles: Iterable[Candle]) -> list[_Row]:
    """Validated rows in ``_COLUMNS`` order, one per key; a key given twice keeps its last.

    PostgreSQL refuses an ``ON CONFLICT DO UPDATE`` that touches one row twice in
    a statement, and "last write wins" is the rule between calls too.
    """
    by_key: dict[tuple[str, str, datetime], _Row] = {}
    for raw in candles:
        c = validate(raw)
        tf = _TF_VALUE[c.timeframe]
        by_key[(c.symbol, tf, c.start)] = (
            c.symbol,
            tf,
            c.start,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
        )
    return list(by_key.values())


def _upsert(dialect: str):  # noqa: ANN202  (a dialect-specific Insert)
    if dialect == "postgresql":
        stmt = pg_insert(_TABLE)
    elif dialect == "sqlite":
        stmt = sqlite_insert(_TABLE)
    else:
        raise NotImplementedError(f"candle upsert is not written for {dialect!r}")
    return stmt.on_conflict_do_update(
        index_elements=[_TABLE.c[k] for k in _KEY],
        set_={k: stmt.excluded[k] for k in _VALUES},
    )


@dataclass(frozen=True, slots=True)
class _DriverUpsert:
    """The upsert compiled once for a dialect, plus how to turn a row into driver parameters.

    Executed with ``exec_driver_sql`` rather than ``session.execute``: for a
    backfill of 190,000 bars SQLAlchemy's per-row parameter handling cost more
    than SQLite's own work (about 7 s against 1.5 s). The SQL is still compiled
    from the dialect's ``insert().on_conflict_do_update()``, and ``start`` still
    goes through the column type's bind processor, so what is stored is exactly
    what an ORM insert would store.
    """

    sql: str
    order: tuple[int, ...] | None  # positional drivers: row index for each placeholder
    start: Callable[[datetime], Any] | None

    def params(self, rows: Sequence[_Row]) -> list[Any]:
        proc = self.start
        if proc is not None:
            rows = [(r[0], r[1], proc(r[2]), *r[3:]) for r in rows]  # type: ignore[misc]
        if self.order is None:
            return [dict(zip(_COLUMNS, r, strict=True)) for r in rows]
        if self.order == tuple(range(len(_COLUMNS))):
            return list(rows)
        return [tuple(r[i] for i in self.order) for r in rows]


_compiled: dict[tuple[str, str], _DriverUpsert] = {}


def _driver_upsert(dialect: Dialect) -> _DriverUpsert:
    key = (dialect.name, dialect.paramstyle)
    found = _compiled.get(key)
    if found is None:
        compiled = _upsert(dialect.name).compile(dialect=dialect)
        names = compiled.positiontup if compiled.positional else None
        if names is not None and sorted(names) != sorted(_COLUMNS):
            raise NotImplementedError(f"unexpected parameters in the candle upsert: {names}")
        order = tuple(_COLUMNS.index(n) for n in names) if names is not None else None
        # dialect_impl: the processor of the dialect's own DATETIME (SQLite stores a fixed
        # text format, and keys only match if every writer uses it), wrapped in UTCDateTime's.
        start = _TABLE.c.start.type.dialect_impl(dialect).bind_processor(dialect)
        found = _compiled[key] = _DriverUpsert(str(compiled), order, start)
    return found


async def store(session: AsyncSession, candles: Sequence[Candle]) -> int:
    """Upsert closed candles in one transaction; return how many rows were written.

    All or nothing: every candle is validated first (``ValueError`` names the
    first bad one and nothing is written), and the inserts share one
    transaction that is committed at the end or rolled back on any error. A
    candle whose key is already stored overwrites it, so storing the same batch
    twice leaves the table as storing it once did. The count is of distinct
    keys written, inserted or overwritten. A symbol missing from the symbol
    master fails the foreign key (``IntegrityError``), again writing nothing.
    """
    rows = _rows(candles)
    if not rows:
        return 0
    try:
        conn = await session.connection()
        upsert = _driver_upsert(conn.dialect)
        for i in range(0, len(rows), _CHUNK):
            await conn.exec_driver_sql(upsert.sql, upsert.params(rows[i : i + _CHUNK]))
        await session.commit()
    except Exception:
        await session.rollback()
        raise
    log.debug("stored %d candles", len(rows))
    return len(rows)


def _to_candle(row: Sequence[Any]) -> Candle:
    symbol, timeframe, start, o, h, lo, c, v = row
    return Candle(symbol, Timeframe(timeframe), start, o, h, lo, c, v)


def _select_series(symbol: str, timeframe: Timeframe):  # noqa: ANN202  (a Select)
    tf = Timeframe(timeframe)
    return select(*(_TABLE.c[k] for k in _COLUMNS)).where(
        _TABLE.c.symbol == symbol, _TABLE.c.timeframe == tf.value
    )


async def recent(
    session: AsyncSession, symbol: str, timeframe: Timeframe, limit: int
) -> list[Candle]:
    """The last ``limit`` stored candles of ``(symbol, timeframe)``, oldest first.

    Oldest first because that is the order indicators are fed in when they warm
    up. Read newest-first with ``LIMIT`` (a backward walk of the primary key's
    index) and reversed here, so the cost is ``limit`` rows whatever the depth
    of the history.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0:
        return []
    stmt = _select_series(symbol, timeframe).order_by(_TABLE.c.start.desc()).limit(limit)
    rows = (await session.exec(stmt)).all()
    return [_to_candle(r) for r in reversed(rows)]


async def latest_starts(session: AsyncSession, symbol: str) -> dict[Timeframe, datetime]:
    """The newest stored candle's start per timeframe of ``symbol``: where a runner
    taking over starts rebuilding. One grouped read over the primary key."""
    stmt = (
        select(_TABLE.c.timeframe, func.max(_TABLE.c.start))
        .where(_TABLE.c.symbol == symbol)
        .group_by(_TABLE.c.timeframe)
    )
    return {Timeframe(tf): start for tf, start in (await session.exec(stmt)).all()}


async def between(
    session: AsyncSession, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
) -> list[Candle]:
    """Candles of ``(symbol, timeframe)`` labelled in ``[start, end)``, oldest first.

    Half-open, like the buckets themselves, so consecutive windows neither
    overlap nor leave a gap. Both bounds must be timezone-aware.
    """
    for name, value in (("start", start), ("end", end)):
        if value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    if end <= start:
        return []
    stmt = (
        _select_series(symbol, timeframe)
        .where(_TABLE.c.start >= start, _TABLE.c.start < end)
        .order_by(_TABLE.c.start)
    )
    rows = (await session.exec(stmt)).all()
    return [_to_candle(r) for r in rows]


async def prune(
    session: AsyncSession,
    now: datetime,
    retention: Mapping[Timeframe, timedelta | None] = RETENTION,
) -> dict[Timeframe, int]:
    """Delete candles older than their timeframe's retention; return deletions per timeframe.

    A candle is old when its ``start`` is before ``now - retention``. ``now`` is
    passed in, not read, so a test (or a catch-up run) decides what "now" is.
    Timeframes missing from ``retention`` or mapped to ``None`` are kept. One
    transaction, so a failure deletes nothing.
    """
    if now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    deleted: dict[Timeframe, int] = {}
    try:
        for tf, keep in retention.items():
            if keep is None:
                continue
            if keep <= timedelta(0):
                raise ValueError(f"retention of {tf} must be positive, got {keep}")
            result = await session.exec(
                delete(_TABLE).where(
                    _TABLE.c.timeframe == Timeframe(tf).value, _TABLE.c.start < now - keep
                )
            )
            deleted[Timeframe(tf)] = max(result.rowcount or 0, 0)
        await session.commit()
    except Exception:
        await session.rollback()
        raise
    if any(deleted.values()):
        log.info("pruned candles: %s", {str(k): v for k, v in deleted.items() if v})
    return deleted
