"""Validation of every KIS response body into typed values.

KIS sends numbers as strings, sometimes leaves fields blank, and answers errors in
two different shapes. A body that does not look like what we asked for must never
turn into a silently wrong price, quantity or order number, and must never crash
the caller with a ``KeyError``: every parser here returns a sane typed value or
raises :class:`MalformedResponse` after logging the reason (field names and short
excerpts of non-secret values; token replies never show a value).

The functions are pure (no I/O, no clock): the caller passes the time it needs.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ParamSpec, TypeVar

from brokers.base import (
    CandlePeriod,
    Fill,
    OrderAck,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
    Position,
    Quote,
)
from brokers.kis.errors import MalformedResponse
from engines.market import KST, Candle, Timeframe

log = logging.getLogger(__name__)

__all__ = [
    "ApiStatus",
    "BalancePage",
    "CcldPage",
    "CcldRow",
    "TokenReply",
    "decode_json",
    "fill_of",
    "malformed",
    "more_pages",
    "order_status_of",
    "parse_balance_page",
    "parse_ccld_page",
    "parse_daily_candles",
    "parse_minute_candles",
    "parse_order_ack",
    "parse_quote",
    "parse_status",
    "parse_token_reply",
    "timeframe_of",
]

MAX_ABS = 10**15  # no KRX price, volume or won amount comes near this
MAX_TOKEN_LIFETIME = timedelta(days=7)  # KIS tokens live 24 h; more is a misread
MORE_PAGES = frozenset({"F", "M"})

_INT = re.compile(r"^[+-]?\d{1,18}(\.0*)?$")
_DECIMAL = re.compile(r"^[+-]?\d{1,18}(\.\d{1,12})?$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{6}$")
_TOKEN_EXPIRY = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]{8,4096}$")

P = ParamSpec("P")
R = TypeVar("R")


def malformed(reason: str) -> MalformedResponse:
    """Log why a body was refused (WARNING: it means KIS changed or misbehaved)."""
    log.warning("KIS response rejected: %s", reason)
    return MalformedResponse(reason)


def _guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Safety net: a check we forgot becomes a MalformedResponse, never a crash."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MalformedResponse:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            IndexError,
            ArithmeticError,
            RecursionError,
        ) as exc:
            raise malformed(f"{fn.__name__}: unexpected {type(exc).__name__}") from None

    return wrapper


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


# --- primitives ---------------------------------------------------------------------


def decode_json(raw: bytes | str) -> Any:
    """The JSON value of a body; MalformedResponse for invalid UTF-8 or JSON."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise malformed("body is not JSON") from None


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise malformed(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _rows(body: Mapping[str, Any], key: str, *, required: bool = True) -> list[Mapping[str, Any]]:
    """A list of row objects. KIS pads an empty result with ``[{}]``; those rows go."""
    value = body.get(key)
    if value is None and not required:
        return []
    if isinstance(value, Mapping):  # a single row sent without its list
        value = [value]
    if not isinstance(value, list):
        raise malformed(f"{key}: expected a list, got {type(value).__name__}")
    rows: list[Mapping[str, Any]] = []
    for i, row in enumerate(value):
        obj = _object(row, f"{key}[{i}]")
        if all(v in ("", None) for v in obj.values()):
            continue  # blank padding row
        rows.append(obj)
    return rows


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """KIS spells output keys lower case, order replies upper case: accept either."""
    if name in obj:
        return obj[name]
    for alt in (name.lower(), name.upper()):
        if alt in obj:
            return obj[alt]
    return None


def _int(obj: Mapping[str, Any], name: str, where: str, *, min_value: int | None = None) -> int:
    value = _get(obj, name)
    if isinstance(value, bool) or value is None:
        raise malformed(f"{where}.{name}: missing or not a number ({_show(value)})")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise malformed(f"{where}.{name}: not a whole number ({_show(value)})")
        number = int(value)
    elif isinstance(value, str) and _INT.match(value.strip()):
        number = int(value.strip().split(".")[0])
    else:
        raise malformed(f"{where}.{name}: not a whole number ({_show(value)})")
    if abs(number) >= MAX_ABS:
        raise malformed(f"{where}.{name}: out of range ({_show(value)})")
    if min_value is not None and number < min_value:
        raise malformed(f"{where}.{name}: {number} is below {min_value}")
    return number


def _decimal(obj: Mapping[str, Any], name: str, where: str, *, min_value: float = 0.0) -> float:
    value = _get(obj, name)
    if isinstance(value, bool) or value is None:
        raise malformed(f"{where}.{name}: missing or not a number ({_show(value)})")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.match(value.strip()):
        number = float(value.strip())
    else:
        raise malformed(f"{where}.{name}: not a decimal number ({_show(value)})")
    if not math.isfinite(number) or abs(number) >= MAX_ABS:
        raise malformed(f"{where}.{name}: out of range ({_show(value)})")
    if number < min_value:
        raise malformed(f"{where}.{name}: {number} is below {min_value}")
    return number


def _str(
    obj: Mapping[str, Any], name: str, where: str, *, required: bool = True, max_len: int = 100
) -> str:
    value = _get(obj, name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise malformed(f"{where}.{name}: expected text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise malformed(f"{where}.{name}: empty")
    if len(value) > max_len:
        raise malformed(f"{where}.{name}: longer than {max_len} characters")
    return value


def _date(obj: Mapping[str, Any], name: str, where: str) -> date:
    value = _get(obj, name)
    if not isinstance(value, str) or not _DATE.match(value):
        raise malformed(f"{where}.{name}: not a YYYYMMDD date ({_show(value)})")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise malformed(f"{where}.{name}: no such date ({_show(value)})") from None


def _time(obj: Mapping[str, Any], name: str, where: str) -> time:
    value = _get(obj, name)
    if not isinstance(value, str) or not _TIME.match(value):
        raise malformed(f"{where}.{name}: not an HHMMSS time ({_show(value)})")
    try:
        return time(int(value[:2]), int(value[2:4]), int(value[4:]))
    except ValueError:
        raise malformed(f"{where}.{name}: no such time ({_show(value)})") from None


def _kst(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=KST).astimezone(UTC)


# --- envelope -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """The outcome a body reports: ``ok`` and the code/message of either error shape."""

    ok: bool
    code: str
    message: str
    gateway: bool  # the non-envelope {"error_code", "error_description"} shape


@_guarded
def parse_status(body: object) -> ApiStatus:
    """Read ``rt_cd``/``msg_cd``/``msg1`` or ``error_code``/``error_description``."""
    obj = _object(body, "body")
    if "rt_cd" in obj:
        rt_cd = obj["rt_cd"]
        if isinstance(rt_cd, bool) or not isinstance(rt_cd, str | int):
            raise malformed(f"body.rt_cd: expected text, got {type(rt_cd).__name__}")
        code = obj.get("msg_cd", "")
        message = obj.get("msg1", "")
        if not isinstance(code, str) or not isinstance(message, str):
            raise malformed("body.msg_cd/msg1: expected text")
        return ApiStatus(str(rt_cd).strip() == "0", code.strip(), message.strip()[:200], False)
    if "error_code" in obj:
        code = obj["error_code"]
        message = obj.get("error_description", "")
        if not isinstance(code, str) or not isinstance(message, str):
            raise malformed("body.error_code/error_description: expected text")
        return ApiStatus(False, code.strip(), message.strip()[:200], True)
    raise malformed("body has neither rt_cd nor error_code")


def more_pages(tr_cont: str | None) -> bool:
    """Response header ``tr_cont``: ``F``/``M`` mean more pages, ``D``/``E``/blank the end."""
    return (tr_cont or "").strip().upper() in MORE_PAGES


def _context(body: Mapping[str, Any]) -> tuple[str, str]:
    """The paging context, exactly as sent (KIS pads it with spaces; it goes back as is)."""
    out = []
    for name in ("ctx_area_fk100", "ctx_area_nk100"):
        value = _get(body, name)
        if value is None:
            value = ""
        if not isinstance(value, str) or len(value) > 200:
            raise malformed(f"body.{name}: expected text of at most 200 characters")
        out.append(value)
    return out[0], out[1]


# --- token --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenReply:
    access_token: str
    expires_at: datetime  # UTC

    def __repr__(self) -> str:  # a credential: never in a log line
        return f"TokenReply(access_token='***', expires_at={self.expires_at.isoformat()})"


@_guarded
def parse_token_reply(body: object, now: datetime) -> TokenReply:
    """``POST /oauth2/tokenP``'s reply. The expiry is ``access_token_token_expired``
    (KST wall time); ``expires_in`` is used only when that field is absent, because
    misreading it has caused re-issue loops in other clients. Reasons never show values.
    """
    obj = _object(body, "token reply")
    token = obj.get("access_token")
    if not isinstance(token, str) or not _TOKEN_CHARS.match(token):
        raise malformed("token reply: access_token missing or not a token")
    token_type = obj.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.strip().lower() != "bearer":
        raise malformed("token reply: token_type is not Bearer")
    expiry_text = obj.get("access_token_token_expired")
    if isinstance(expiry_text, str) and _TOKEN_EXPIRY.match(expiry_text):
        try:
            local = datetime.strptime(expiry_text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise malformed("token reply: access_token_token_expired is no date") from None
        expires_at = local.replace(tzinfo=KST).astimezone(UTC)
    elif expiry_text is None:
        seconds = obj.get("expires_in")
        if isinstance(seconds, str) and seconds.strip().isdigit():
            seconds = int(seconds.strip())
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise malformed("token reply: no access_token_token_expired nor expires_in")
        seconds = min(seconds, int(MAX_TOKEN_LIFETIME.total_seconds()))
        log.warning("KIS token reply without access_token_token_expired; using expires_in")
        expires_at = now + timedelta(seconds=seconds)
    else:
        raise malformed("token reply: access_token_token_expired is not 'YYYY-MM-DD HH:MM:SS'")
    if expires_at <= now:
        raise malformed("token reply: the token is already expired")
    if expires_at - now > MAX_TOKEN_LIFETIME:
        raise malformed("token reply: expiry is implausibly far away")
    return TokenReply(token, expires_at)


# --- quotes and candles ---------------------------------------------------------------

_DOWN_SIGNS = {"4", "5"}  # lower limit, down
_UP_SIGNS = {"1", "2"}  # upper limit, up


@_guarded
def parse_quote(body: object, symbol: str, ts: datetime) -> Quote:
    """``inquire-price``'s ``output``. ``ts`` is the caller's clock: KIS sends no time.

    ``prdy_vrss`` (change from the previous close) is signed in the samples; when
    ``prdy_vrss_sign`` says "down" and the number is positive it is taken as a
    magnitude, so both readings give the same previous close.
    """
    out = _object(_object(body, "body").get("output"), "output")
    price = _int(out, "stck_prpr", "output", min_value=1)
    change = _int(out, "prdy_vrss", "output")
    sign = out.get("prdy_vrss_sign")
    if sign is not None:
        if not isinstance(sign, str) or sign.strip() not in {"1", "2", "3", "4", "5", ""}:
            raise malformed(f"output.prdy_vrss_sign: unknown sign {_show(sign)}")
        sign = sign.strip()
        if sign in _DOWN_SIGNS and change > 0:
            change = -change
        elif (sign in _UP_SIGNS and change < 0) or (sign == "3" and change != 0):
            raise malformed(f"output.prdy_vrss: {change} contradicts prdy_vrss_sign {sign}")
    prev_close = price - change
    if prev_close <= 0:
        raise malformed(f"output: previous close {prev_close} is not positive")
    open_ = _int(out, "stck_oprc", "output", min_value=0)
    high = _int(out, "stck_hgpr", "output", min_value=0)
    low = _int(out, "stck_lwpr", "output", min_value=0)
    volume = _int(out, "acml_vol", "output", min_value=0)
    if high and low:
        if low > high:
            raise malformed(f"output: low {low} above high {high}")
        if not low <= price <= high or (open_ and not low <= open_ <= high):
            raise malformed(f"output: price {price} or open {open_} outside {low}..{high}")
    return Quote(symbol, price, prev_close, open_, high, low, volume, ts)


def timeframe_of(period: CandlePeriod) -> Timeframe:
    """The engines timeframe of a broker period. Months have none (see rest.candles)."""
    mapping = {
        CandlePeriod.DAY: Timeframe.D1,
        CandlePeriod.WEEK: Timeframe.W1,
        CandlePeriod.MINUTE: Timeframe.M1,
    }
    if period not in mapping:
        raise ValueError(f"no engines.market.Timeframe for candle period {period!r}")
    return mapping[period]


def _ohlc(row: Mapping[str, Any], where: str, close_field: str) -> tuple[int, int, int, int]:
    o = _int(row, "stck_oprc", where, min_value=1)
    h = _int(row, "stck_hgpr", where, min_value=1)
    low = _int(row, "stck_lwpr", where, min_value=1)
    c = _int(row, close_field, where, min_value=1)
    if not (low <= min(o, c) and max(o, c) <= h):
        raise malformed(f"{where}: o/h/l/c {o}/{h}/{low}/{c} are inconsistent")
    return o, h, low, c


@_guarded
def parse_daily_candles(body: object, symbol: str, period: CandlePeriod) -> list[Candle]:
    """``inquire-daily-itemchartprice``'s ``output2``, in the order KIS sent (newest first).

    A bar is labelled the way ``engines.market`` labels its own: 09:00 KST of its
    day (``1d``) or of its week's Monday (``1w``), so fetched and live bars line up.
    """
    tf = timeframe_of(period)
    rows = _rows(_object(body, "body"), "output2")
    candles: list[Candle] = []
    for i, row in enumerate(rows):
        where = f"output2[{i}]"
        day = _date(row, "stck_bsop_date", where)
        o, h, low, c = _ohlc(row, where, "stck_clpr")
        volume = _int(row, "acml_vol", where, min_value=0)
        start, _ = tf.bucket(_kst(day, time(12)))
        candles.append(Candle(symbol, tf, start, o, h, low, c, volume))
    return candles


@_guarded
def parse_minute_candles(body: object, symbol: str) -> list[Candle]:
    """Minute rows of either minute endpoint (``output2``), in the order KIS sent.

    The close is ``stck_prpr`` and the bar's own volume ``cntg_vol``; a bar starts at
    ``stck_bsop_date`` + ``stck_cntg_hour`` (KST), seconds dropped.
    """
    rows = _rows(_object(body, "body"), "output2")
    candles: list[Candle] = []
    for i, row in enumerate(rows):
        where = f"output2[{i}]"
        day = _date(row, "stck_bsop_date", where)
        at = _time(row, "stck_cntg_hour", where).replace(second=0)
        o, h, low, c = _ohlc(row, where, "stck_prpr")
        volume = _int(row, "cntg_vol", where, min_value=0)
        candles.append(Candle(symbol, Timeframe.M1, _kst(day, at), o, h, low, c, volume))
    return candles


# --- account ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BalancePage:
    positions: tuple[Position, ...]
    cash: int | None  # from output2, when the page carries the summary
    ctx_fk: str
    ctx_nk: str


@_guarded
def parse_balance_page(body: object) -> BalancePage:
    """One page of ``inquire-balance``. Rows with ``hldg_qty`` 0 (sold today) are dropped."""
    obj = _object(body, "body")
    positions: list[Position] = []
    for i, row in enumerate(_rows(obj, "output1")):
        where = f"output1[{i}]"
        qty = _int(row, "hldg_qty", where, min_value=0)
        if qty == 0:
            continue
        positions.append(
            Position(
                symbol=_str(row, "pdno", where, max_len=12),
                name=_str(row, "prdt_name", where, required=False),
                qty=qty,
                avg_price=_decimal(row, "pchs_avg_pric", where),
                price=_int(row, "prpr", where, min_value=0),
            )
        )
    summary = _rows(obj, "output2", required=False)
    cash = _int(summary[0], "dnca_tot_amt", "output2[0]", min_value=0) if summary else None
    fk, nk = _context(obj)
    return BalancePage(tuple(positions), cash, fk, nk)


@_guarded
def parse_order_ack(body: object, day: date, client_order_id: str = "") -> OrderAck:
    """``order-cash`` / ``order-rvsecncl``'s ``output``. ``ORD_TMD`` is KST on ``day``."""
    out = _object(_object(body, "body").get("output"), "output")
    order_id = _str(out, "ODNO", "output", max_len=20)
    if not order_id.isdigit():
        raise malformed(f"output.ODNO: not an order number ({_show(order_id)})")
    branch = _str(out, "KRX_FWDG_ORD_ORGNO", "output", required=False, max_len=10)
    at = _time(out, "ORD_TMD", "output")
    return OrderAck(order_id, branch, _kst(day, at), client_order_id)


@dataclass(frozen=True, slots=True)
class CcldRow:
    """One order of ``inquire-daily-ccld`` with its aggregated executions."""

    day: date
    order_id: str
    branch: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    qty: int
    price: int
    filled_qty: int
    avg_fill_price: float
    remaining_qty: int
    rejected_qty: int
    cancelled: bool
    ts: datetime


@dataclass(frozen=True, slots=True)
class CcldPage:
    rows: tuple[CcldRow, ...]
    ctx_fk: str
    ctx_nk: str


_SIDES = {"01": OrderSide.SELL, "02": OrderSide.BUY}


@_guarded
def parse_ccld_page(body: object) -> CcldPage:
    """One page of ``inquire-daily-ccld`` (``output1``; the ``output2`` summary is unused)."""
    obj = _object(body, "body")
    rows: list[CcldRow] = []
    for i, row in enumerate(_rows(obj, "output1")):
        where = f"output1[{i}]"
        day = _date(row, "ord_dt", where)
        side_code = _str(row, "sll_buy_dvsn_cd", where, max_len=2)
        if side_code not in _SIDES:
            raise malformed(f"{where}.sll_buy_dvsn_cd: unknown side {_show(side_code)}")
        qty = _int(row, "ord_qty", where, min_value=0)
        filled = _int(row, "tot_ccld_qty", where, min_value=0)
        if filled > qty:
            raise malformed(f"{where}: filled {filled} exceeds ordered {qty}")
        avg = _decimal(row, "avg_prvs", where)
        if filled and avg <= 0:
            raise malformed(f"{where}: filled {filled} at average price {avg}")
        cancel = _str(row, "cncl_yn", where, required=False, max_len=1).upper()
        if cancel not in ("", "Y", "N"):
            raise malformed(f"{where}.cncl_yn: {_show(cancel)}")
        remaining = (
            _int(row, "rmn_qty", where, min_value=0)
            if _get(row, "rmn_qty") is not None
            else qty - filled
        )
        rejected = (
            _int(row, "rjct_qty", where, min_value=0) if _get(row, "rjct_qty") is not None else 0
        )
        dvsn = _str(row, "ord_dvsn_cd", where, required=False, max_len=2)
        rows.append(
            CcldRow(
                day=day,
                order_id=_str(row, "odno", where, max_len=20),
                branch=_str(row, "ord_gno_brno", where, required=False, max_len=10),
                symbol=_str(row, "pdno", where, max_len=12),
                side=_SIDES[side_code],
                order_type=OrderType.MARKET if dvsn == "01" else OrderType.LIMIT,
                qty=qty,
                price=_int(row, "ord_unpr", where, min_value=0),
                filled_qty=filled,
                avg_fill_price=avg,
                remaining_qty=remaining,
                rejected_qty=rejected,
                cancelled=cancel == "Y",
                ts=_kst(day, _time(row, "ord_tmd", where)),
            )
        )
    fk, nk = _context(obj)
    return CcldPage(tuple(rows), fk, nk)


def order_status_of(row: CcldRow) -> OrderStatus:
    """The state KIS's counters imply: a cancel flag, rejections, fills, or still open."""
    if row.cancelled:
        state = OrderState.CANCELLED
    elif row.qty and row.rejected_qty >= row.qty:
        state = OrderState.REJECTED
    elif row.qty and row.filled_qty >= row.qty:
        state = OrderState.FILLED
    elif row.remaining_qty == 0 and row.filled_qty < row.qty:
        state = OrderState.CANCELLED  # the rest was cancelled by a later order
    elif row.filled_qty:
        state = OrderState.PARTIAL
    else:
        state = OrderState.OPEN
    return OrderStatus(
        order_id=row.order_id,
        symbol=row.symbol,
        side=row.side,
        order_type=row.order_type,
        qty=row.qty,
        price=row.price,
        filled_qty=row.filled_qty,
        avg_fill_price=row.avg_fill_price,
        state=state,
        branch=row.branch,
    )


def fill_of(row: CcldRow) -> Fill | None:
    """The order's executions as one Fill (the daily query aggregates per order).

    ``Fill.price`` is whole won, so the average is rounded; ``ts`` is the order time
    because the daily query carries no execution time.
    """
    if row.filled_qty <= 0:
        return None
    return Fill(
        order_id=row.order_id,
        symbol=row.symbol,
        side=row.side,
        qty=row.filled_qty,
        price=round(row.avg_fill_price),
        ts=row.ts,
    )
