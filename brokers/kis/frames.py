"""Parsing of KIS realtime websocket messages: data frames and JSON control messages.

KIS multiplexes two formats on one websocket. A message whose first character is
``0`` or ``1`` is a *data frame* ``<enc>|<tr_id>|<count>|<payload>``; anything else
is a JSON *control message* (subscribe replies, PINGPONG). Data frames are not
JSON and carry no field names, so a misparse does not fail loudly by itself: a
field shifted by one turns a volume into a price. Every check here exists so that
a malformed frame is rejected with a logged reason instead of becoming a silently
wrong tick, and so that no input, however broken, raises out of the parser.

Record boundaries in a multi-record frame
-----------------------------------------
The payload is ``count`` records whose ``^``-separated fields are run together
(the last field of one record and the first of the next are joined by ``^`` as
well), so the frame itself never marks where a record ends. We split the whole
payload on ``^`` and cut records by position, using the TR's known field count
(:data:`FIELD_COUNTS`, 46 for H0STCNT0):

* ``fields == count * field_count``: the normal case, record *i* is
  ``fields[i*N:(i+1)*N]``.
* ``fields > count * field_count`` and ``fields % count == 0``: KIS has appended
  fields to a TR's layout before, and every record of one frame has the same
  layout, so each record is ``fields / count`` long and we read the known leading
  fields of each by position, ignoring the extra trailing ones -- unless that
  length is a whole multiple of ``field_count``, which means the count is wrong
  (three records sent under a count of 1), and the frame is rejected. Only then; any
  other total (too few fields, or a total that does not divide evenly) means we
  cannot know where records end, and the whole frame is rejected.
* Each record's leading fields are then re-checked (symbol code shape, time
  shape) so a misaligned cut is caught rather than trusted.

A structural fault rejects the whole frame. A bad *value* in one record (a
non-numeric price, an impossible time) rejects that record only: alignment was
already established by the count, so its neighbours are still trustworthy.

The functions are pure apart from logging; callers pass the session date.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from engines.market import KST, Tick

__all__ = [
    "FIELD_COUNTS",
    "MAX_PRICE",
    "NOTICE_TR_IDS",
    "PINGPONG",
    "TRADE_TR_ID",
    "ControlMessage",
    "DataFrame",
    "FrameError",
    "parse_message",
    "parse_message_or_raise",
    "parse_trade_record",
    "split_records",
    "trade_ticks",
]

log = logging.getLogger(__name__)

TRADE_TR_ID = "H0STCNT0"
ORDERBOOK_TR_ID = "H0STASP0"
NOTICE_TR_IDS = frozenset({"H0STCNI0", "H0STCNI9"})
PINGPONG = "PINGPONG"

FIELD_COUNTS: dict[str, int] = {TRADE_TR_ID: 46, ORDERBOOK_TR_ID: 59}
"""Known plaintext field counts per record. Execution notices are absent on purpose:
their payload is ciphertext, split only after decryption (see ``notices``)."""

MAX_PRICE = 100_000_000
"""Upper sanity bound for a trade price in won. The highest KRX share prices are a
few million won; a value beyond this is a corrupted field, not a trade."""

MAX_VOLUME = 10_000_000_000
MAX_RECORDS = 999  # three digits

# H0STCNT0 positions (see the reference document's field list).
_T_SYMBOL, _T_HOUR, _T_PRICE, _T_VOLUME, _T_BSOP_DATE = 0, 1, 2, 12, 33

_SYMBOL_RE = re.compile(r"[0-9A-Z]{6}")
_DIGITS_RE = re.compile(r"[0-9]+")
_TR_ID_RE = re.compile(r"[A-Z0-9]{4,12}")


class FrameError(ValueError):
    """A message that must not be trusted. ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DataFrame:
    """One data frame, checked for shape but not yet for its fields' values."""

    encrypted: bool
    tr_id: str
    count: int
    payload: str


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A JSON control message. ``raw`` is the exact text, which PINGPONG must echo.

    ``key``/``iv`` are the AES parameters of an encrypted TR's subscribe reply;
    they are excluded from ``repr`` because they are secrets and reprs end up in
    logs.
    """

    tr_id: str
    tr_key: str
    encrypt: str
    rt_cd: str
    msg_cd: str
    msg1: str
    raw: str
    key: str = ""
    iv: str = ""

    @property
    def is_pingpong(self) -> bool:
        return self.tr_id == PINGPONG

    @property
    def ok(self) -> bool:
        return self.rt_cd == "0"

    def __repr__(self) -> str:
        return (
            f"ControlMessage(tr_id={self.tr_id!r}, tr_key={self.tr_key!r}, "
            f"rt_cd={self.rt_cd!r}, msg_cd={self.msg_cd!r}, msg1={self.msg1[:60]!r})"
        )


def _reject(reason: str, *, what: str = "frame") -> None:
    log.warning("KIS websocket %s rejected: %s", what, reason)


def _str_field(obj: Any, name: str) -> str:
    value = obj.get(name, "") if isinstance(obj, dict) else ""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else ""


def _parse_control(text: str) -> ControlMessage:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"control message is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise FrameError("control message is not a JSON object")
    header = body.get("header")
    if not isinstance(header, dict):
        raise FrameError("control message has no header object")
    tr_id = _str_field(header, "tr_id")
    if not tr_id:
        raise FrameError("control message header has no tr_id")
    inner = body.get("body")
    inner = inner if isinstance(inner, dict) else {}
    output = inner.get("output")
    output = output if isinstance(output, dict) else {}
    return ControlMessage(
        tr_id=tr_id,
        tr_key=_str_field(header, "tr_key"),
        encrypt=_str_field(header, "encrypt"),
        rt_cd=_str_field(inner, "rt_cd"),
        msg_cd=_str_field(inner, "msg_cd"),
        msg1=_str_field(inner, "msg1"),
        raw=text,
        key=_str_field(output, "key"),
        iv=_str_field(output, "iv"),
    )


def _parse_data(text: str) -> DataFrame:
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise FrameError(f"data frame has {len(parts)} of 4 '|' parts (truncated?)")
    enc, tr_id, count_s, payload = parts
    if enc not in ("0", "1"):
        raise FrameError("encryption flag is not 0 or 1")
    if not _TR_ID_RE.fullmatch(tr_id):
        raise FrameError("tr_id is malformed")
    if len(count_s) != 3 or not _DIGITS_RE.fullmatch(count_s):
        raise FrameError("record count is not 3 digits")
    count = int(count_s)
    if count == 0:
        raise FrameError("record count is 0")
    if not payload:
        raise FrameError("payload is empty")
    return DataFrame(enc == "1", tr_id, count, payload)


def parse_message_or_raise(message: str | bytes) -> DataFrame | ControlMessage:
    """Classify and shape-check one websocket message, raising :class:`FrameError`."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        try:
            text = bytes(message).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("binary message is not UTF-8") from None
    elif isinstance(message, str):
        text = message
    else:
        raise FrameError(f"unexpected message type {type(message).__name__}")
    if not text:
        raise FrameError("empty message")
    if "\x00" in text:
        raise FrameError("message contains NUL")
    if text[0] in "01":
        return _parse_data(text)
    return _parse_control(text)


def parse_message(message: str | bytes) -> DataFrame | ControlMessage | None:
    """Classify one message; ``None`` (after a warning with the reason) if it is malformed."""
    try:
        return parse_message_or_raise(message)
    except FrameError as exc:
        _reject(exc.reason, what="message")
        return None


def split_records(frame: DataFrame, field_count: int) -> list[list[str]]:
    """Cut ``frame``'s payload into ``count`` records (module docstring: boundaries).

    Returns each record's first ``field_count`` fields. Raises :class:`FrameError`.
    """
    fields = frame.payload.split("^")
    total = len(fields)
    expected = frame.count * field_count
    if total == expected:
        size = field_count
    elif total > expected and total % frame.count == 0:
        size = total // frame.count
        if size % field_count == 0:
            # Exactly k whole records per claimed record: the count is wrong, not the
            # layout (an appended layout doubling itself is not a thing KIS does).
            raise FrameError(
                f"{frame.tr_id}: count says {frame.count} but {total} fields hold "
                f"{total // field_count} records of {field_count}"
            )
    else:
        raise FrameError(
            f"{frame.tr_id}: {total} fields do not make {frame.count} record(s) "
            f"of {field_count} fields"
        )
    return [fields[i * size : i * size + field_count] for i in range(frame.count)]


def _int_field(value: str, name: str, lo: int, hi: int) -> int:
    if not _DIGITS_RE.fullmatch(value) or len(value) > 12:
        raise FrameError(f"{name} is not a whole number")
    number = int(value)
    if number < lo or number > hi:
        raise FrameError(f"{name} {number} is outside [{lo}, {hi}]")
    return number


def _hhmmss(value: str, name: str) -> time:
    if len(value) != 6 or not _DIGITS_RE.fullmatch(value):
        raise FrameError(f"{name} is not HHMMSS")
    hh, mm, ss = int(value[:2]), int(value[2:4]), int(value[4:])
    if hh > 23 or mm > 59 or ss > 59:
        raise FrameError(f"{name} is not a valid time")
    return time(hh, mm, ss)


def _yyyymmdd(value: str, name: str) -> date:
    if len(value) != 8 or not _DIGITS_RE.fullmatch(value):
        raise FrameError(f"{name} is not YYYYMMDD")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise FrameError(f"{name} is not a valid date") from None


def parse_trade_record(record: list[str], session_date: date | None) -> Tick:
    """One H0STCNT0 record -> :class:`Tick`, raising :class:`FrameError`.

    The time is ``BSOP_DATE`` + ``STCK_CNTG_HOUR`` in KST. ``BSOP_DATE`` is absent
    from some layouts (blank or missing position); then the caller's
    ``session_date`` (the KST trading date it is streaming) is used, and with
    neither the record is rejected rather than dated by guess.
    """
    if len(record) <= _T_VOLUME:
        raise FrameError("trade record is truncated")
    symbol = record[_T_SYMBOL]
    if not _SYMBOL_RE.fullmatch(symbol):
        raise FrameError("symbol code is not 6 characters [0-9A-Z] (misaligned record?)")
    at = _hhmmss(record[_T_HOUR], "STCK_CNTG_HOUR")
    price = _int_field(record[_T_PRICE], "STCK_PRPR", 1, MAX_PRICE)
    volume = _int_field(record[_T_VOLUME], "CNTG_VOL", 0, MAX_VOLUME)
    raw_date = record[_T_BSOP_DATE] if len(record) > _T_BSOP_DATE else ""
    if raw_date:
        day = _yyyymmdd(raw_date, "BSOP_DATE")
    elif session_date is not None:
        day = session_date
    else:
        raise FrameError("no BSOP_DATE and no session date to fall back on")
    ts = datetime.combine(day, at, KST).astimezone(UTC)
    return Tick(symbol, price, volume, ts)


def trade_ticks(frame: DataFrame, session_date: date | None) -> list[Tick]:
    """Every valid tick of an H0STCNT0 frame; rejected parts are logged and skipped.

    Never raises: a wrong TR, an encrypted trade frame or a structural fault yields
    ``[]`` with a warning; a record with a bad value is dropped with a warning and
    the frame's other records are kept (see the module docstring).
    """
    if frame.tr_id != TRADE_TR_ID:
        _reject(f"tr_id {frame.tr_id!r} is not {TRADE_TR_ID}")
        return []
    if frame.encrypted:
        _reject(f"{TRADE_TR_ID} frame is flagged encrypted")
        return []
    try:
        records = split_records(frame, FIELD_COUNTS[TRADE_TR_ID])
    except FrameError as exc:
        _reject(exc.reason)
        return []
    ticks: list[Tick] = []
    for i, record in enumerate(records):
        try:
            ticks.append(parse_trade_record(record, session_date))
        except FrameError as exc:
            _reject(f"record {i + 1}/{frame.count}: {exc.reason}", what="trade record")
    return ticks
