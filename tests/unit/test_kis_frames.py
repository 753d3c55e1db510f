"""KIS websocket message parsing: data frames, control JSON, execution notices, bad input."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import pytest

from brokers.base import Fill, OrderSide
from brokers.kis.frames import (
    ControlMessage,
    DataFrame,
    FrameError,
    parse_message,
    parse_message_or_raise,
    split_records,
    trade_ticks,
)
from brokers.kis.notices import NoticeCipher, OrderNotice, notice_events
from brokers.kis.ws import decode
from engines.market import Tick
from tests.kis_ws_fake import data_frame, encrypt_notice, notice_fields, trade_record, utc

DAY = date(2025, 3, 4)
KEY = "0123456789abcdef0123456789ABCDEF"
IV = "fedcba9876543210"


def tick(symbol: str, kst: str, price: int, volume: int) -> Tick:
    return Tick(symbol, price, volume, utc(f"2025-03-04 {kst}"))


T1 = tick("005930", "09:00:01", 71000, 15)
T2 = tick("005930", "09:00:02", 71100, 3)
T3 = tick("000660", "09:00:02", 182500, 120)


def frame_of(*ticks: Tick, extra: int = 0, with_date: bool = True) -> str:
    return data_frame(
        "H0STCNT0", [trade_record(t, extra=extra, with_date=with_date) for t in ticks]
    )


def ticks_of(message: str | bytes, session_date: date | None = DAY) -> list[Tick]:
    parsed = parse_message(message)
    assert isinstance(parsed, DataFrame)
    return trade_ticks(parsed, session_date)


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---- trade frames --------------------------------------------------------------------------


def test_one_record_becomes_one_exact_tick():
    assert ticks_of(frame_of(T1)) == [
        Tick("005930", 71000, 15, datetime(2025, 3, 4, 0, 0, 1, tzinfo=UTC))
    ]


def test_three_record_frame_yields_three_ticks_in_order():
    message = frame_of(T1, T2, T3)
    assert message.startswith("0|H0STCNT0|003|")
    assert message.count("^") == 3 * 46 - 1
    assert ticks_of(message) == [T1, T2, T3]


@pytest.mark.parametrize("extra", [1, 2, 5])
def test_extra_trailing_fields_are_tolerated_in_every_record(extra: int):
    assert ticks_of(frame_of(T1, T2, T3, extra=extra)) == [T1, T2, T3]


def test_a_count_smaller_than_the_records_sent_rejects_the_frame_with_a_reason(caplog):
    # Found by the fuzz test: three whole records under a count of 1 once parsed as
    # one tick with "extra fields", silently losing the other two.
    message = frame_of(T1, T2, T3).replace("|003|", "|001|", 1)
    assert ticks_of(message) == []
    assert any("count says 1 but 138 fields hold 3 records" in m for m in warned(caplog))


def test_missing_bsop_date_uses_the_callers_session_date():
    assert ticks_of(frame_of(T1, with_date=False), DAY) == [T1]
    other = date(2025, 3, 5)
    assert ticks_of(frame_of(T1, with_date=False), other)[0].ts == datetime(
        2025, 3, 5, 0, 0, 1, tzinfo=UTC
    )


def test_missing_bsop_date_and_no_session_date_is_rejected(caplog):
    assert ticks_of(frame_of(T1, with_date=False), None) == []
    assert any("no BSOP_DATE" in m for m in warned(caplog))


def test_kst_to_utc_conversion_crosses_midnight_correctly():
    early = Tick("005930", 100, 1, utc("2025-03-04 08:30:00"))
    assert ticks_of(frame_of(early))[0].ts == datetime(2025, 3, 3, 23, 30, tzinfo=UTC)


def test_split_records_uses_the_field_count_and_rejects_uneven_totals():
    frame = DataFrame(False, "H0STCNT0", 2, "^".join(["x"] * 92))
    assert [len(r) for r in split_records(frame, 46)] == [46, 46]
    with pytest.raises(FrameError):
        split_records(DataFrame(False, "H0STCNT0", 2, "^".join(["x"] * 93)), 46)
    with pytest.raises(FrameError):
        split_records(DataFrame(False, "H0STCNT0", 2, "^".join(["x"] * 91)), 46)


def test_a_bad_record_drops_only_itself(caplog):
    records = [trade_record(t) for t in (T1, T2, T3)]
    records[1][2] = "71a00"
    assert ticks_of(data_frame("H0STCNT0", records)) == [T1, T3]
    assert warned(caplog) == [
        "KIS websocket trade record rejected: record 2/3: STCK_PRPR is not a whole number"
    ]


def _mutated(index: int, value: str) -> str:
    record = trade_record(T1)
    record[index] = value
    return data_frame("H0STCNT0", [record])


BAD_MESSAGES: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "empty message"),
    ("garbage bytes", b"\xff\xfe\x00\x81", "not UTF-8"),
    ("truncated header", "0|H0STCNT0|001", "of 4 '|' parts"),
    ("count not 3 digits", "0|H0STCNT0|1|" + "^".join(trade_record(T1)), "not 3 digits"),
    ("count letters", "0|H0STCNT0|0x1|" + "^".join(trade_record(T1)), "not 3 digits"),
    ("count zero", "0|H0STCNT0|000|abc", "record count is 0"),
    ("empty payload", "0|H0STCNT0|001|", "payload is empty"),
    ("bad tr_id", "0|h0st cnt0|001|x", "tr_id is malformed"),
    ("json garbage", "{not json", "not JSON"),
    ("json array", "[1, 2]", "not a JSON object"),
    ("json without header", '{"body": {}}', "no header object"),
    ("json without tr_id", '{"header": {"tr_key": "x"}}', "no tr_id"),
    ("starts with 2", "2|H0STCNT0|001|x", "not JSON"),
    ("NUL inside", "0|H0STCNT0|001|\x00", "NUL"),
]


@pytest.mark.parametrize(
    ("name", "message", "reason"), BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES]
)
def test_malformed_messages_are_rejected_with_a_reason(caplog, name, message, reason):
    assert parse_message(message) is None
    assert len(warned(caplog)) == 1
    assert reason in warned(caplog)[0]
    with pytest.raises(FrameError):
        parse_message_or_raise(message)


BAD_TRADES: list[tuple[str, str, str]] = [
    ("count too high", "0|H0STCNT0|002|" + "^".join(trade_record(T1)), "do not make 2 record"),
    # Two whole records under a count of 1: the count is wrong, so nothing is trusted
    # (read as one record with "extra fields", it once silently lost T2).
    ("count too low", frame_of(T1, T2).replace("|002|", "|001|"), "count says 1 but 92"),
    ("truncated payload", frame_of(T1)[:-40], "do not make 1 record"),
    ("non-numeric price", _mutated(2, "7l000"), "STCK_PRPR is not a whole number"),
    ("zero price", _mutated(2, "0"), "STCK_PRPR 0 is outside"),
    ("negative price", _mutated(2, "-71000"), "STCK_PRPR is not a whole number"),
    ("absurd price", _mutated(2, "999999999999"), "STCK_PRPR 999999999999 is outside"),
    ("decimal volume", _mutated(12, "1.5"), "CNTG_VOL is not a whole number"),
    ("bad hour", _mutated(1, "250000"), "not a valid time"),
    ("short hour", _mutated(1, "9000"), "not HHMMSS"),
    ("bad date", _mutated(33, "20251340"), "not a valid date"),
    ("date letters", _mutated(33, "2025O304"), "not YYYYMMDD"),
    ("misaligned symbol", _mutated(0, "71000"), "symbol code"),
    ("unknown tr_id", frame_of(T1).replace("H0STCNT0", "H0STXXX0"), "unknown tr_id"),
    ("flagged encrypted", "1" + frame_of(T1)[1:], "flagged encrypted"),
]


@pytest.mark.parametrize(("name", "message", "reason"), BAD_TRADES, ids=[b[0] for b in BAD_TRADES])
def test_bad_trade_frames_never_become_ticks(caplog, name, message, reason):
    events = decode(message, DAY, {})
    assert events == []
    assert len(warned(caplog)) == 1
    assert reason in warned(caplog)[0]


# ---- control messages ----------------------------------------------------------------------


def test_subscribe_reply_is_parsed_and_its_key_stays_out_of_repr():
    text = (
        '{"header":{"tr_id":"H0STCNI0","tr_key":"HTSUSER1","encrypt":"N"},'
        '"body":{"rt_cd":"0","msg_cd":"OPSP0000","msg1":"SUBSCRIBE SUCCESS",'
        f'"output":{{"iv":"{IV}","key":"{KEY}"}}}}}}'
    )
    msg = parse_message(text)
    assert msg == ControlMessage(
        tr_id="H0STCNI0",
        tr_key="HTSUSER1",
        encrypt="N",
        rt_cd="0",
        msg_cd="OPSP0000",
        msg1="SUBSCRIBE SUCCESS",
        raw=text,
        key=KEY,
        iv=IV,
    )
    assert msg.ok and not msg.is_pingpong
    assert KEY not in repr(msg) and IV not in repr(msg)


def test_error_reply_fields():
    text = (
        '{"header":{"tr_id":"H0STCNT0","tr_key":"005930","encrypt":"N"},'
        '"body":{"rt_cd":"1","msg_cd":"OPSP0008","msg1":"MAX SUBSCRIBE OVER"}}'
    )
    msg = parse_message(text)
    assert isinstance(msg, ControlMessage)
    assert (msg.ok, msg.msg_cd, msg.msg1, msg.key, msg.iv) == (
        False,
        "OPSP0008",
        "MAX SUBSCRIBE OVER",
        "",
        "",
    )


def test_pingpong_is_detected_and_keeps_its_exact_text():
    text = '{"header":{"tr_id":"PINGPONG","datetime":"20250304090000"}}'
    msg = parse_message(text)
    assert isinstance(msg, ControlMessage) and msg.is_pingpong and msg.raw == text
    assert decode(text, DAY, {}) == msg
    other = parse_message('{"header":{"tr_id":"H0STCNT0"}}')
    assert isinstance(other, ControlMessage) and not other.is_pingpong


# ---- execution notices -----------------------------------------------------------------------


def notice_frame(
    fields: list[str], *, tr_id: str = "H0STCNI0", key: str = KEY, iv: str = IV
) -> str:
    return f"1|{tr_id}|001|{encrypt_notice('^'.join(fields), key, iv)}"


def test_encrypted_fill_notice_becomes_the_exact_fill():
    message = notice_frame(
        notice_fields(
            order_id="0000012345", side="02", symbol="005930", qty=7, price=71200, hhmmss="093015"
        )
    )
    events = decode(message, DAY, {"H0STCNI0": NoticeCipher(KEY, IV)})
    assert events == [
        Fill(
            order_id="0000012345",
            symbol="005930",
            side=OrderSide.BUY,
            qty=7,
            price=71200,
            ts=datetime(2025, 3, 4, 0, 30, 15, tzinfo=UTC),
        )
    ]


def test_sell_fill_on_the_paper_tr_and_the_older_23_field_layout():
    fields = notice_fields(
        order_id="0000000077", side="01", symbol="000660", qty=3, price=182500, n_fields=23
    )
    events = decode(
        notice_frame(fields, tr_id="H0STCNI9"), DAY, {"H0STCNI9": NoticeCipher(KEY, IV)}
    )
    assert events == [
        Fill(
            "0000000077",
            "000660",
            OrderSide.SELL,
            3,
            182500,
            datetime(2025, 3, 4, 0, 30, 15, tzinfo=UTC),
        )
    ]


def test_extra_notice_fields_are_tolerated():
    fields = notice_fields(qty=1, price=500, n_fields=30)
    [fill] = decode(notice_frame(fields), DAY, {"H0STCNI0": NoticeCipher(KEY, IV)})
    assert isinstance(fill, Fill) and (fill.qty, fill.price) == (1, 500)


def test_acknowledgement_is_a_typed_event_not_a_fill():
    fields = notice_fields(
        order_id="0000000555", cntg_yn="1", qty=0, price=0, order_qty=25, refused="N"
    )
    events = decode(notice_frame(fields), DAY, {"H0STCNI0": NoticeCipher(KEY, IV)})
    assert events == [
        OrderNotice(
            order_id="0000000555",
            original_order_id="",
            symbol="005930",
            side=OrderSide.BUY,
            qty=25,
            refused=False,
            ts=datetime(2025, 3, 4, 0, 30, 15, tzinfo=UTC),
        )
    ]


def test_plaintext_notice_when_the_frame_says_unencrypted():
    message = f"0|H0STCNI0|001|{'^'.join(notice_fields(qty=2, price=900))}"
    [fill] = decode(message, DAY, {})
    assert isinstance(fill, Fill) and (fill.qty, fill.price) == (2, 900)


BAD_NOTICES: list[tuple[str, str, str]] = [
    ("wrong key", notice_frame(notice_fields(), key="X" * 32), "padding is invalid"),
    ("not base64", "1|H0STCNI0|001|@@@notbase64@@@", "not base64"),
    ("bad base64 padding", "1|H0STCNI0|001|QUJ", "not valid base64"),
    ("partial block", "1|H0STCNI0|001|" + "QUJDREVGR0g=", "whole number of AES blocks"),
    ("22 fields", notice_frame(notice_fields(n_fields=22)), "at least 23"),
    ("side 03", notice_frame(notice_fields(side="03")), "SELN_BYOV_CLS"),
    ("qty zero fill", notice_frame(notice_fields(qty=0)), "CNTG_QTY 0"),
    (
        "price text",
        notice_frame(notice_fields()[:10] + ["abc"] + notice_fields()[11:]),
        "CNTG_UNPR",
    ),
    ("bad hour", notice_frame(notice_fields(hhmmss="996000")), "not a valid time"),
    ("cntg_yn 3", notice_frame(notice_fields(cntg_yn="3")), "CNTG_YN"),
]


@pytest.mark.parametrize(
    ("name", "message", "reason"), BAD_NOTICES, ids=[b[0] for b in BAD_NOTICES]
)
def test_bad_notices_are_rejected_with_a_reason_and_no_secret(caplog, name, message, reason):
    caplog.set_level(logging.DEBUG)
    assert decode(message, DAY, {"H0STCNI0": NoticeCipher(KEY, IV)}) == []
    assert len(warned(caplog)) == 1 and reason in warned(caplog)[0]
    assert KEY not in caplog.text and IV not in caplog.text


def test_encrypted_notice_before_its_key_is_rejected(caplog):
    assert decode(notice_frame(notice_fields()), DAY, {}) == []
    assert "before its key/iv arrived" in warned(caplog)[0]


def test_notice_cipher_needs_aes256_key_and_16_byte_iv():
    with pytest.raises(FrameError, match="32"):
        NoticeCipher("short", IV)
    with pytest.raises(FrameError, match="16"):
        NoticeCipher(KEY, "short")
    assert KEY not in repr(NoticeCipher(KEY, IV))


def test_notice_events_rejects_a_non_notice_frame(caplog):
    frame = DataFrame(False, "H0STCNT0", 1, "x")
    assert notice_events(frame, None, DAY) == []
    assert "not a notice TR" in warned(caplog)[0]
