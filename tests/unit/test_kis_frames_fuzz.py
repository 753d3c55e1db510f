"""Fuzzing the KIS websocket decoder: no input may crash it or become an insane event.

Every example starts from a *valid* frame (1-3 trade records, or an encrypted
execution notice) and breaks it: truncation, wrong record counts, bad field values,
inserted/removed separators, random bytes, bad base64, wrong padding, wrong key.
The decoder (``brokers.kis.ws.decode``, the session's real path) must then

* never raise,
* return only sane events (a symbol of 6 [0-9A-Z], 1 <= price <= MAX_PRICE,
  volume >= 0, an aware UTC time on a plausible date; fills with qty and price >= 1),
* log a warning with a reason whenever it returns fewer events than the valid
  frame held (nothing is dropped silently).

Each test counts the examples it ran and asserts the count, so the total of
10,000+ frames is checked rather than assumed.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import Fill, OrderSide
from brokers.kis.frames import MAX_PRICE, ControlMessage
from brokers.kis.notices import NoticeCipher, OrderNotice
from brokers.kis.ws import decode
from engines.market import Tick
from tests.kis_ws_fake import data_frame, encrypt_notice, notice_fields, trade_record

DAY = date(2025, 3, 4)
KEY = "0123456789abcdef0123456789ABCDEF"
IV = "fedcba9876543210"
CIPHERS = {"H0STCNI0": NoticeCipher(KEY, IV), "H0STCNI9": NoticeCipher(KEY, IV)}
SYMBOL = re.compile(r"[0-9A-Z]{6}")

TRADE_EXAMPLES = 6_000
NOTICE_EXAMPLES = 2_500
BYTES_EXAMPLES = 1_500
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.reasons.append(record.getMessage())


@contextmanager
def warnings_logged() -> Iterator[_Collect]:
    handler = _Collect()
    logger = logging.getLogger("brokers.kis")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def check(message: str | bytes, expected: int) -> None:
    """Decode ``message`` (whose unbroken form held ``expected`` events) and judge it."""
    with warnings_logged() as seen:
        result = decode(message, DAY, CIPHERS)  # must not raise
    if result is None:
        assert seen.reasons, "a message was rejected without a logged reason"
        return
    if isinstance(result, ControlMessage):
        return  # the mutation produced well-formed JSON control text
    for event in result:
        if isinstance(event, Tick):
            assert SYMBOL.fullmatch(event.symbol)
            assert 1 <= event.price <= MAX_PRICE
            assert event.volume >= 0
            assert event.ts.tzinfo is UTC
            assert abs(event.ts - datetime(2025, 3, 4, tzinfo=UTC)) < timedelta(days=400_000)
        elif isinstance(event, Fill):
            assert event.qty >= 1 and event.price >= 1
            assert event.side in (OrderSide.BUY, OrderSide.SELL)
            assert SYMBOL.fullmatch(event.symbol) and event.order_id.isdigit()
            assert event.ts.tzinfo is UTC
        else:
            assert isinstance(event, OrderNotice)
            assert event.qty >= 0 and SYMBOL.fullmatch(event.symbol)
    if len(result) < expected:
        assert seen.reasons, f"{expected - len(result)} event(s) dropped without a logged reason"
    for reason in seen.reasons:
        assert "rejected" in reason and len(reason) > 25
        assert KEY not in reason and IV not in reason


# ---- strategies ----------------------------------------------------------------------------

ticks = st.builds(
    lambda sym, price, vol, sec: Tick(
        sym, price, vol, datetime(2025, 3, 4, 0, 0, tzinfo=UTC) + timedelta(seconds=sec)
    ),
    st.sampled_from(["005930", "000660", "035720", "0001A0"]),
    st.integers(1, 3_000_000),
    st.integers(0, 100_000),
    st.integers(0, 6 * 3600),
)
nasty_values = st.one_of(
    st.sampled_from(
        ["", "-1", "0", "1.5", "1e5", " 100", "100 ", "０", "٣", "NaN", "99999999999999", "^", "|"]
    ),
    st.text(max_size=12),
    st.integers(-(10**15), 10**15).map(str),
)


@st.composite
def broken_trade_frames(draw: st.DrawFn) -> tuple[str | bytes, int]:
    batch = draw(st.lists(ticks, min_size=1, max_size=3))
    records = [trade_record(t, with_date=draw(st.booleans())) for t in batch]
    how = draw(
        st.sampled_from(
            ["field", "fields", "count", "truncate", "separator", "splice", "header", "extra"]
        )
    )
    if how in ("field", "fields"):
        for _ in range(1 if how == "field" else draw(st.integers(2, 6))):
            rec = draw(st.sampled_from(records))
            rec[draw(st.integers(0, len(rec) - 1))] = draw(nasty_values)
    message = data_frame("H0STCNT0", records)
    if how == "count":
        count = draw(st.one_of(st.integers(0, 999).map(lambda n: f"{n:03d}"), st.text(max_size=4)))
        message = f"0|H0STCNT0|{count}|{message.split('|', 3)[3]}"
    elif how == "truncate":
        message = message[: draw(st.integers(0, len(message) - 1))]
    elif how == "separator":
        pos = draw(st.integers(0, len(message)))
        op = draw(st.sampled_from(["^", "|", "^^", "", "del"]))
        if op == "del":
            message = message[:pos] + message[pos + 1 :]
        else:
            message = message[:pos] + op + message[pos:]
    elif how == "splice":
        raw = message.encode()
        pos = draw(st.integers(0, len(raw)))
        junk = draw(st.binary(min_size=1, max_size=16))
        cut = draw(st.integers(0, 16))
        return raw[:pos] + junk + raw[pos + cut :], len(batch)
    elif how == "header":
        enc = draw(st.sampled_from(["0", "1", "2", "", "00", "{"]))
        tr = draw(st.sampled_from(["H0STCNT0", "H0STASP0", "H0STCNI0", "", "h0stcnt0", "X" * 20]))
        message = f"{enc}|{tr}|{message.split('|', 3)[2]}|{message.split('|', 3)[3]}"
        if tr == "H0STASP0" and enc in ("0", "1"):
            return message, 0  # a well-formed frame of a TR we do not stream: ignored
    elif how == "extra":
        # extra fields on *some* records only: the total no longer divides evenly
        extra = draw(st.integers(1, 5))
        records[draw(st.integers(0, len(records) - 1))] += ["9"] * extra
        message = data_frame("H0STCNT0", records)
    return message, len(batch)


@st.composite
def broken_notices(draw: st.DrawFn) -> tuple[str | bytes, int]:
    fields = notice_fields(
        qty=draw(st.integers(0, 1000)),
        price=draw(st.integers(0, 1_000_000)),
        side=draw(st.sampled_from(["01", "02", "03", ""])),
        cntg_yn=draw(st.sampled_from(["1", "2", "2", "3"])),
        n_fields=draw(st.integers(18, 30)),
    )
    if draw(st.booleans()):
        fields[draw(st.integers(0, len(fields) - 1))] = draw(nasty_values)
    tr_id = draw(st.sampled_from(["H0STCNI0", "H0STCNI9"]))
    plain = "^".join(fields)
    how = draw(
        st.sampled_from(["valid", "base64", "padding", "truncate", "key", "raw", "nopad", "count"])
    )
    payload = encrypt_notice(plain, KEY, IV)
    if how == "base64":
        pos = draw(st.integers(0, len(payload) - 1))
        payload = payload[:pos] + draw(st.sampled_from(list("!*-_ .~\n="))) + payload[pos + 1 :]
    elif how == "padding":
        payload = payload.rstrip("=") + draw(st.sampled_from(["", "=", "===", "A", "A="]))
    elif how == "truncate":
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    elif how == "key":
        payload = encrypt_notice(plain, "K" * 32, IV)
    elif how == "raw":
        payload = base64.b64encode(draw(st.binary(max_size=96))).decode()
    elif how == "nopad":
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        data = plain.encode()[: (len(plain.encode()) // 16) * 16] or b"0" * 16
        enc = Cipher(algorithms.AES(KEY.encode()), modes.CBC(IV.encode())).encryptor()
        payload = base64.b64encode(enc.update(data) + enc.finalize()).decode()
    count = "001"
    if how == "count":
        count = draw(st.sampled_from(["002", "000", "01", "abc", "999"]))
    return f"1|{tr_id}|{count}|{payload}", 1


# ---- the tests ----------------------------------------------------------------------------


def test_fuzz_broken_trade_frames():
    seen = 0

    @settings(FUZZ, max_examples=TRADE_EXAMPLES)
    @given(broken_trade_frames())
    def run(case: tuple[str | bytes, int]) -> None:
        nonlocal seen
        seen += 1
        check(*case)

    run()
    assert seen >= TRADE_EXAMPLES


def test_fuzz_broken_notices():
    seen = 0

    @settings(FUZZ, max_examples=NOTICE_EXAMPLES)
    @given(broken_notices())
    def run(case: tuple[str | bytes, int]) -> None:
        nonlocal seen
        seen += 1
        check(*case)

    run()
    assert seen >= NOTICE_EXAMPLES


def test_fuzz_random_bytes_and_text():
    seen = 0
    prefixes = st.sampled_from(
        ["", "0|", "1|", "0|H0STCNT0|", "0|H0STCNT0|001|", "1|H0STCNI0|001|", "{"]
    )

    @settings(FUZZ, max_examples=BYTES_EXAMPLES)
    @given(prefixes, st.one_of(st.binary(max_size=300), st.text(max_size=300)))
    def run(prefix: str, body: bytes | str) -> None:
        nonlocal seen
        seen += 1
        message = prefix.encode() + body if isinstance(body, bytes) else prefix + body
        check(message, 0)

    run()
    assert seen >= BYTES_EXAMPLES
    assert TRADE_EXAMPLES + NOTICE_EXAMPLES + BYTES_EXAMPLES >= 10_000
