"""Kiwoom REST and websocket payloads -> typed values, with no I/O.

Everything Kiwoom sends is JSON, and nearly every number arrives as a *string*.
Two conventions matter:

* **Sign prefixes are direction markers, not arithmetic signs.** Price fields such
  as ``cur_prc``, ``open_pric`` or the realtime field ``10`` carry ``+``/``-`` to say
  "above/below the previous close" (``"-160400"`` is a price of 160,400 won on a
  down day). The realtime trade volume (field ``15``) carries ``+`` for a trade
  that hit the ask and ``-`` for one that hit the bid. We always take the absolute
  value of such fields: a negative price or volume does not exist. Fields that are
  genuinely signed (``pred_pre``, the change against the previous close) are parsed
  with their sign.
* **Stock codes in account replies carry an ``A`` prefix** (``"A005930"``), the
  short-code marker of the KRX master file; we strip it so codes match everywhere.

A payload that does not have the expected shape never becomes a wrong number:
the parser raises :class:`MalformedResponse` (a :class:`BrokerUnavailable`, because
the right reaction is the same: retry later, tell the operator) and logs why. The
websocket parser drops a bad entry of a batch, logs why, and keeps the good ones,
because one garbled trade must not cost the others.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from brokers.base import BrokerUnavailable, OrderAck, Position, Quote
from engines.market import KST, Candle, Tick, Timeframe

__all__ = [
    "MalformedResponse",
    "WsMessage",
    "abs_int",
    "normalize_code",
    "parse_balance_page",
    "parse_daily_page",
    "parse_expires_dt",
    "parse_order_ack",
    "parse_quote",
    "parse_ws_message",
    "return_code",
    "signed_int",
    "ticks_from_real",
]

log = logging.getLogger(__name__)

_INT_RE = re.compile(r"^[+-]?\d{1,18}$")
_DEC_RE = re.compile(r"^[+-]?\d{1,18}(\.\d{1,8})?$")
_CODE_RE = re.compile(r"^[0-9A-Z]{6}$")

REAL_TRADE_TYPE = "0B"
"""Kiwoom's realtime type for stock trades (주식체결)."""

FID_PRICE, FID_VOLUME, FID_TIME = "10", "15", "20"
"""0B field ids: 10 current (trade) price, 15 trade volume (+ buy / - sell), 20 time HHMMSS."""

_FUTURE_SLACK = timedelta(hours=1)


class MalformedResponse(BrokerUnavailable):
    """Kiwoom answered something we cannot read safely.

    A subclass of :class:`BrokerUnavailable` so callers that already back off on an
    unavailable broker do the right thing; ``reason`` says which field was wrong,
    for the log and the operator (never the payload itself, which may hold account
    data).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed Kiwoom response: {reason}")
        self.reason = reason


def _bad(reason: str) -> MalformedResponse:
    log.warning("kiwoom: malformed response: %s", reason)
    return MalformedResponse(reason)


# -- scalars --------------------------------------------------------------------------


def signed_int(value: object, name: str, *, empty: int | None = None) -> int:
    """A Kiwoom integer field, keeping its sign. ``empty`` is the value of ``""``
    (Kiwoom leaves fields blank when there is nothing to report, e.g. before the
    open); without it a blank field is malformed."""
    if isinstance(value, bool):
        raise _bad(f"{name}: boolean")
    if isinstance(value, int):
        if abs(value) >= 10**18:
            raise _bad(f"{name}: out of range")
        return value
    if not isinstance(value, str):
        raise _bad(f"{name}: expected a numeric string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        if empty is None:
            raise _bad(f"{name}: empty")
        return empty
    if not _INT_RE.match(text):
        raise _bad(f"{name}: not an integer")
    return int(text)


def abs_int(value: object, name: str, *, empty: int | None = None) -> int:
    """A field whose sign is a direction marker (prices, trade volume): its magnitude."""
    return abs(signed_int(value, name, empty=empty))


def _abs_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(f"{name}: expected a number")
    text = str(value).strip()
    if not _DEC_RE.match(text):
        raise _bad(f"{name}: not a decimal")
    return abs(float(text))


def normalize_code(value: object, name: str = "stk_cd") -> str:
    """A 6-character KRX short code. Strips the ``A`` prefix of account replies and an
    exchange suffix (``_NX``, ``_AL``) that Kiwoom appends for NXT/SOR routing."""
    if not isinstance(value, str):
        raise _bad(f"{name}: not a string")
    code = value.strip().split("_", 1)[0]
    if len(code) == 7 and code[0] == "A":
        code = code[1:]
    if not _CODE_RE.match(code):
        raise _bad(f"{name}: not a 6-character code")
    return code


def _kst_day(value: object, name: str) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{8}", value):
        raise _bad(f"{name}: not YYYYMMDD")
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise _bad(f"{name}: not a calendar date") from None


def parse_expires_dt(value: object) -> datetime:
    """``expires_dt`` (``YYYYMMDDHHMMSS`` in KST) as an aware UTC datetime."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{14}", value):
        raise _bad("expires_dt: not YYYYMMDDHHMMSS")
    try:
        local = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=KST)
    except ValueError:
        raise _bad("expires_dt: not a valid time") from None
    return local.astimezone(UTC)


def _mapping(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise _bad(f"{what}: body is not an object")
    return body


def return_code(body: object) -> tuple[int, str]:
    """``(return_code, return_msg)`` of any Kiwoom reply; both are always present."""
    data = _mapping(body, "reply")
    code = data.get("return_code")
    if isinstance(code, bool) or not isinstance(code, (int, str)):
        raise _bad("return_code: missing")
    number = signed_int(code, "return_code")
    msg = data.get("return_msg", "")
    return number, msg if isinstance(msg, str) else ""


# -- REST bodies ----------------------------------------------------------------------


def parse_quote(body: object, symbol: str, now: datetime) -> Quote | None:
    """ka10001 (주식기본정보요청) -> :class:`Quote`, or ``None`` when Kiwoom knows no
    such code (it answers ``return_code`` 0 with blank name and price).

    The reference price is ``base_pric`` (기준가: the previous close, adjusted on
    ex-dividend days); when absent it is derived from the signed ``pred_pre``
    (change) as ``cur_prc - pred_pre``. ka10001 carries no time stamp, so ``ts`` is
    the time of the reply.
    """
    data = _mapping(body, "ka10001")
    name, raw_price = data.get("stk_nm", ""), data.get("cur_prc", "")
    if name in ("", None) and raw_price in ("", None):
        return None
    price = abs_int(raw_price, "cur_prc")
    if "base_pric" in data and str(data["base_pric"]).strip():
        prev_close = abs_int(data["base_pric"], "base_pric")
    else:
        prev_close = price - signed_int(data.get("pred_pre"), "pred_pre")
    if price <= 0 or prev_close <= 0:
        raise _bad("ka10001: price or reference price not positive")
    return Quote(
        symbol=symbol,
        price=price,
        prev_close=prev_close,
        open=abs_int(data.get("open_pric", ""), "open_pric", empty=0),
        high=abs_int(data.get("high_pric", ""), "high_pric", empty=0),
        low=abs_int(data.get("low_pric", ""), "low_pric", empty=0),
        volume=abs_int(data.get("trde_qty", ""), "trde_qty", empty=0),
        ts=now,
    )


def daily_candle_start(day: date) -> datetime:
    """The label of a daily bar in ``engines.market``: that day's 09:00 KST, in UTC."""
    return datetime.combine(day, time(9), tzinfo=KST).astimezone(UTC)


def parse_daily_page(body: object, symbol: str) -> list[tuple[date, Candle]]:
    """One page of ka10081 (주식일봉차트조회요청): ``stk_dt_pole_chart_qry`` rows,
    newest first as Kiwoom sends them. ``cur_prc`` is the close of that day."""
    data = _mapping(body, "ka10081")
    rows = data.get("stk_dt_pole_chart_qry", [])
    if rows in ("", None):
        rows = []
    if not isinstance(rows, list):
        raise _bad("ka10081: stk_dt_pole_chart_qry is not a list")
    out: list[tuple[date, Candle]] = []
    for i, row in enumerate(rows):
        row = _mapping(row, f"ka10081 row {i}")
        day = _kst_day(row.get("dt"), f"row {i} dt")
        o = abs_int(row.get("open_pric"), f"row {i} open_pric")
        h = abs_int(row.get("high_pric"), f"row {i} high_pric")
        lo = abs_int(row.get("low_pric"), f"row {i} low_pric")
        c = abs_int(row.get("cur_prc"), f"row {i} cur_prc")
        v = abs_int(row.get("trde_qty"), f"row {i} trde_qty", empty=0)
        if min(o, h, lo, c) <= 0 or not (lo <= min(o, c) and max(o, c) <= h):
            raise _bad(f"ka10081 row {i}: inconsistent OHLC")
        out.append((day, Candle(symbol, Timeframe.D1, daily_candle_start(day), o, h, lo, c, v)))
    return out


def parse_balance_page(body: object) -> tuple[int, list[Position]]:
    """One page of kt00004 (계좌평가현황요청): ``(cash, positions)``.

    ``entr`` (예수금, deposits) is the cash; every page repeats it, the caller keeps
    the first. Holdings are ``stk_acnt_evlt_prst`` rows; ``avg_prc`` is the average
    purchase price, ``cur_prc`` the current price (sign is a direction marker).
    Rows with no shares left (sold today) are skipped.
    """
    data = _mapping(body, "kt00004")
    cash = signed_int(data.get("entr"), "entr")
    rows = data.get("stk_acnt_evlt_prst", [])
    if rows in ("", None):
        rows = []
    if not isinstance(rows, list):
        raise _bad("kt00004: stk_acnt_evlt_prst is not a list")
    positions: list[Position] = []
    for i, row in enumerate(rows):
        row = _mapping(row, f"kt00004 row {i}")
        qty = signed_int(row.get("rmnd_qty"), f"row {i} rmnd_qty")
        if qty < 0:
            raise _bad(f"kt00004 row {i}: negative quantity")
        if qty == 0:
            continue
        name = row.get("stk_nm", "")
        positions.append(
            Position(
                symbol=normalize_code(row.get("stk_cd"), f"row {i} stk_cd"),
                name=name.strip() if isinstance(name, str) else "",
                qty=qty,
                avg_price=_abs_float(row.get("avg_prc"), f"row {i} avg_prc"),
                price=abs_int(row.get("cur_prc"), f"row {i} cur_prc"),
            )
        )
    return cash, positions


def parse_order_ack(
    body: object, *, symbol: str, now: datetime, client_order_id: str = ""
) -> OrderAck:
    """kt10000..kt10003 success reply -> :class:`OrderAck`.

    Kiwoom has no order branch; what it needs to modify or cancel an order is the
    exchange and the symbol, so ``branch`` carries ``"KRX:<code>"``.
    """
    data = _mapping(body, "order")
    order_no = data.get("ord_no")
    if not isinstance(order_no, str) or not order_no.strip():
        raise _bad("order: ord_no missing")
    exchange = data.get("dmst_stex_tp") or "KRX"
    if not isinstance(exchange, str):
        raise _bad("order: dmst_stex_tp not a string")
    return OrderAck(
        order_id=order_no.strip(),
        branch=f"{exchange}:{symbol}",
        ts=now,
        client_order_id=client_order_id,
    )


# -- websocket ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WsMessage:
    """One websocket frame: ``trnm`` (LOGIN, REG, REMOVE, PING, REAL, ...) and the body."""

    trnm: str
    body: Mapping[str, Any]


def parse_ws_message(raw: str | bytes) -> WsMessage:
    """Decode a frame. Raises :class:`MalformedResponse` for anything that is not a
    JSON object with a string ``trnm``."""
    try:
        body = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        raise _bad("websocket: not JSON") from None
    if not isinstance(body, dict):
        raise _bad("websocket: not an object")
    trnm = body.get("trnm")
    if not isinstance(trnm, str) or not trnm:
        raise _bad("websocket: trnm missing")
    return WsMessage(trnm, body)


def _trade_time(hhmmss: object, now: datetime) -> datetime:
    """``HHMMSS`` (KST, no date) -> UTC. Kiwoom sends today's trades, so the date is
    today's KST date; a time more than an hour ahead of ``now`` is yesterday's
    (a late frame across midnight in the after-hours session)."""
    if not isinstance(hhmmss, str) or not re.fullmatch(r"\d{6}", hhmmss):
        raise ValueError("time is not HHMMSS")
    hh, mm, ss = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:])
    if hh > 23 or mm > 59 or ss > 59:
        raise ValueError("time out of range")
    local_now = now.astimezone(KST)
    ts = datetime.combine(local_now.date(), time(hh, mm, ss), tzinfo=KST)
    if ts - local_now > _FUTURE_SLACK:
        ts -= timedelta(days=1)
    return ts.astimezone(UTC)


def _tick(entry: object, now: datetime) -> Tick | None:
    """One ``data`` entry -> Tick; ``None`` for realtime types we do not use."""
    if not isinstance(entry, Mapping):
        raise ValueError("entry is not an object")
    if entry.get("type") != REAL_TRADE_TYPE:
        return None
    values = entry.get("values")
    if not isinstance(values, Mapping):
        raise ValueError("values is not an object")
    symbol = normalize_code(entry.get("item"), "item")
    price = abs_int(values.get(FID_PRICE), "10 price")
    volume = abs_int(values.get(FID_VOLUME), "15 volume")
    if price <= 0:
        raise ValueError("price not positive")
    if volume <= 0:
        raise ValueError("volume not positive")
    return Tick(symbol, price, volume, _trade_time(values.get(FID_TIME), now))


def ticks_from_real(message: WsMessage, now: datetime) -> list[Tick]:
    """The trades of a ``REAL`` frame. Bad entries are dropped with a logged reason;
    a frame whose ``data`` is not a list raises :class:`MalformedResponse`."""
    data = message.body.get("data")
    if not isinstance(data, list):
        raise _bad("REAL: data is not a list")
    ticks: list[Tick] = []
    for i, entry in enumerate(data):
        try:
            tick = _tick(entry, now)
        except (MalformedResponse, ValueError) as exc:
            reason = exc.reason if isinstance(exc, MalformedResponse) else str(exc)
            log.warning("kiwoom: dropped REAL entry %d: %s", i, reason)
            continue
        if tick is not None:
            ticks.append(tick)
    return ticks
