"""KIS realtime execution notices (H0STCNI0 real / H0STCNI9 paper): decryption and parsing.

The notice TR is subscribed with ``tr_key`` = the account's HTS id. Its subscribe
reply carries ``output.key`` and ``output.iv``; every notice payload is then
base64 of AES-256-CBC ciphertext with PKCS7 padding, where key and iv are the
UTF-8 bytes of those two strings. Decrypted, a notice is one ``^``-separated
record.

Field layout: KIS grew this record from 23 to 26 fields, appending at the end and
in the tail. The 14 leading fields we read (up to ``CNTG_YN``) sit at the same
positions in both layouts, so we *require at least 23 fields* (the shortest known
layout: fewer means a truncated record) and read by position, ignoring anything
beyond what we use.

``CNTG_YN`` says what a notice is: ``2`` is a fill and becomes a
:class:`brokers.base.Fill`; ``1`` is an order acknowledgement (accepted, modified,
cancelled or refused), which is *not* a fill and is returned as a separate typed
:class:`OrderNotice` so nobody books a position from it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from brokers.base import Fill, OrderSide
from brokers.kis.frames import NOTICE_TR_IDS, DataFrame, FrameError
from engines.market import KST

__all__ = [
    "MIN_NOTICE_FIELDS",
    "NoticeCipher",
    "OrderNotice",
    "notice_events",
    "parse_notice_record",
]

log = logging.getLogger(__name__)

MIN_NOTICE_FIELDS = 23
"""The shortest known layout; see the module docstring."""

(
    _ODER_NO,
    _OODER_NO,
    _SELN_BYOV_CLS,
    _RCTF_CLS,
    _SYMBOL,
    _CNTG_QTY,
    _CNTG_UNPR,
    _HOUR,
    _RFUS_YN,
    _CNTG_YN,
    _ACPT_YN,
    _ODER_QTY,
) = (2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 16)

_SIDES = {"01": OrderSide.SELL, "02": OrderSide.BUY}
_DIGITS = re.compile(r"[0-9]+")
_SYMBOL_RE = re.compile(r"[0-9A-Z]{6}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MAX_CIPHERTEXT = 64 * 1024


@dataclass(frozen=True, slots=True)
class OrderNotice:
    """An acknowledgement (``CNTG_YN`` = 1): the order was accepted, changed or refused.

    Not a fill. ``refused`` is ``RFUS_YN == "Y"``; ``qty`` is the order quantity.
    """

    order_id: str
    original_order_id: str
    symbol: str
    side: OrderSide
    qty: int
    refused: bool
    ts: datetime


class NoticeCipher:
    """AES-256-CBC with the key/iv of one notice subscription. Never logged or repr'd."""

    __slots__ = ("_cipher",)

    def __init__(self, key: str, iv: str) -> None:
        key_bytes, iv_bytes = key.encode("utf-8"), iv.encode("utf-8")
        if len(key_bytes) != 32:
            raise FrameError(f"notice key is {len(key_bytes)} bytes, AES-256 needs 32")
        if len(iv_bytes) != 16:
            raise FrameError(f"notice iv is {len(iv_bytes)} bytes, CBC needs 16")
        self._cipher = Cipher(algorithms.AES(key_bytes), modes.CBC(iv_bytes))

    def __repr__(self) -> str:
        return "NoticeCipher('***')"

    def decrypt(self, payload: str) -> str:
        """base64 -> AES-CBC -> PKCS7 unpad -> UTF-8. Raises :class:`FrameError`."""
        text = payload.strip()
        if not text or len(text) > _MAX_CIPHERTEXT:
            raise FrameError("notice ciphertext is empty or too long")
        if not _B64_RE.fullmatch(text):
            raise FrameError("notice payload is not base64")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError("notice payload is not valid base64") from None
        if not raw or len(raw) % 16:
            raise FrameError("notice ciphertext is not a whole number of AES blocks")
        decryptor = self._cipher.decryptor()
        padded = decryptor.update(raw) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise FrameError("notice padding is invalid (wrong key/iv or corrupted)") from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("decrypted notice is not UTF-8") from None


def _int(value: str, name: str, lo: int) -> int:
    if not _DIGITS.fullmatch(value) or len(value) > 12:
        raise FrameError(f"{name} is not a whole number")
    number = int(value)
    if number < lo:
        raise FrameError(f"{name} {number} is below {lo}")
    return number


def _ts(value: str, day: date) -> datetime:
    if len(value) != 6 or not _DIGITS.fullmatch(value):
        raise FrameError("STCK_CNTG_HOUR is not HHMMSS")
    hh, mm, ss = int(value[:2]), int(value[2:4]), int(value[4:])
    if hh > 23 or mm > 59 or ss > 59:
        raise FrameError("STCK_CNTG_HOUR is not a valid time")
    return datetime.combine(day, time(hh, mm, ss), KST).astimezone(UTC)


def parse_notice_record(fields: list[str], today: date) -> Fill | OrderNotice:
    """One decrypted notice record -> :class:`Fill` or :class:`OrderNotice`.

    ``today`` is the KST date of the session (notices carry only a time).
    Raises :class:`FrameError` with a loggable reason.
    """
    if len(fields) < MIN_NOTICE_FIELDS:
        raise FrameError(f"notice has {len(fields)} fields, at least {MIN_NOTICE_FIELDS} needed")
    order_id = fields[_ODER_NO].strip()
    if not order_id or not _DIGITS.fullmatch(order_id):
        raise FrameError("ODER_NO is missing or not numeric")
    side = _SIDES.get(fields[_SELN_BYOV_CLS])
    if side is None:
        raise FrameError("SELN_BYOV_CLS is not 01 or 02")
    symbol = fields[_SYMBOL].strip()
    if not _SYMBOL_RE.fullmatch(symbol):
        raise FrameError("STCK_SHRN_ISCD is not a 6-character code")
    ts = _ts(fields[_HOUR], today)
    kind = fields[_CNTG_YN]
    if kind == "2":
        qty = _int(fields[_CNTG_QTY], "CNTG_QTY", 1)
        price = _int(fields[_CNTG_UNPR], "CNTG_UNPR", 1)
        return Fill(order_id=order_id, symbol=symbol, side=side, qty=qty, price=price, ts=ts)
    if kind == "1":
        qty_raw = fields[_ODER_QTY] or fields[_CNTG_QTY]
        qty = _int(qty_raw, "ODER_QTY", 0)
        return OrderNotice(
            order_id=order_id,
            original_order_id=fields[_OODER_NO].strip(),
            symbol=symbol,
            side=side,
            qty=qty,
            refused=fields[_RFUS_YN] == "Y",
            ts=ts,
        )
    raise FrameError("CNTG_YN is not 1 or 2")


def notice_events(
    frame: DataFrame, cipher: NoticeCipher | None, today: date
) -> list[Fill | OrderNotice]:
    """Decrypt and parse a notice frame. Never raises; rejects are logged.

    An unencrypted notice (``enc`` 0) is read as plaintext: the sources only show
    encrypted ones, but the flag is what the frame says it is.
    """
    if frame.tr_id not in NOTICE_TR_IDS:
        log.warning("KIS notice rejected: tr_id %r is not a notice TR", frame.tr_id)
        return []
    try:
        if frame.encrypted:
            if cipher is None:
                raise FrameError("encrypted notice before its key/iv arrived")
            plain = cipher.decrypt(frame.payload)
        else:
            plain = frame.payload
        fields = plain.split("^")
        if frame.count == 1:
            records = [fields]
        elif len(fields) % frame.count == 0 and len(fields) // frame.count >= MIN_NOTICE_FIELDS:
            size = len(fields) // frame.count
            records = [fields[i * size : (i + 1) * size] for i in range(frame.count)]
        else:
            raise FrameError(f"{len(fields)} notice fields do not make {frame.count} records")
    except FrameError as exc:
        log.warning("KIS notice rejected: %s", exc.reason)
        return []
    events: list[Fill | OrderNotice] = []
    for i, record in enumerate(records):
        try:
            events.append(parse_notice_record(record, today))
        except FrameError as exc:
            log.warning("KIS notice record %d/%d rejected: %s", i + 1, frame.count, exc.reason)
    return events
