"""Kiwoom payload parsing: exact values for good input, a logged refusal for bad input.

The fuzz tests throw ~2,000 malformed REAL frames and REST bodies at the parsers:
each is either parsed into values that make sense or refused with
``MalformedResponse`` and a log line saying why, and nothing else ever escapes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import OrderAck, Position, Quote
from brokers.kiwoom.auth import AccessToken, MemoryTokenStore, TokenManager
from brokers.kiwoom.parsing import (
    MalformedResponse,
    WsMessage,
    abs_int,
    normalize_code,
    parse_balance_page,
    parse_daily_page,
    parse_expires_dt,
    parse_order_ack,
    parse_quote,
    parse_ws_message,
    return_code,
    signed_int,
    ticks_from_real,
)
from engines.market import Candle, Tick, Timeframe

NOW = datetime(2025, 3, 14, 1, 0, tzinfo=UTC)  # 10:00 KST


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def kiwoom_logs() -> Iterator[_Records]:
    """Log records of brokers.kiwoom (hypothesis and caplog do not mix per example)."""
    handler = _Records()
    logger = logging.getLogger("brokers.kiwoom")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# -- scalars ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "signed", "absolute"),
    [("+70000", 70000, 70000), ("-160400", -160400, 160400), ("  123 ", 123, 123), (5, 5, 5)],
)
def test_numbers_keep_or_drop_the_direction_sign(raw, signed, absolute):
    assert signed_int(raw, "f") == signed
    assert abs_int(raw, "f") == absolute


@pytest.mark.parametrize("raw", ["", "1.5", "70,000", "+-1", "abc", None, True, [], "1" * 19])
def test_bad_numbers_are_malformed_with_the_field_named(raw, caplog):
    with pytest.raises(MalformedResponse) as err:
        signed_int(raw, "cur_prc")
    assert err.value.reason.startswith("cur_prc")
    assert "cur_prc" in caplog.text


def test_blank_is_allowed_only_when_the_caller_says_what_it_means():
    assert abs_int("", "open_pric", empty=0) == 0
    with pytest.raises(MalformedResponse):
        abs_int("", "open_pric")


@pytest.mark.parametrize(
    ("raw", "code"),
    [("005930", "005930"), ("A005930", "005930"), ("005930_NX", "005930"), ("0088M0", "0088M0")],
)
def test_codes_lose_the_a_prefix_and_exchange_suffix(raw, code):
    assert normalize_code(raw) == code


@pytest.mark.parametrize("raw", ["5930", "A0593", "", "0059301", 5930, "ab1234", "A0059301"])
def test_bad_codes_are_malformed(raw):
    with pytest.raises(MalformedResponse):
        normalize_code(raw)


def test_expires_dt_is_kst():
    assert parse_expires_dt("20241107083713") == datetime(2024, 11, 6, 23, 37, 13, tzinfo=UTC)
    for bad in ("2024110708371", "20241307083713", 20241107083713, None):
        with pytest.raises(MalformedResponse):
            parse_expires_dt(bad)


def test_return_code_accepts_int_or_string():
    assert return_code({"return_code": 0, "return_msg": "ok"}) == (0, "ok")
    assert return_code({"return_code": "1700", "return_msg": 5}) == (1700, "")
    for bad in ({}, {"return_code": None}, {"return_code": True}, [], "x"):
        with pytest.raises(MalformedResponse):
            return_code(bad)


# -- REST bodies ------------------------------------------------------------------------


def test_quote_exact_and_fallback_reference_price():
    body = {
        "stk_nm": "삼성전자",
        "cur_prc": "-160400",
        "base_pric": "169100",
        "open_pric": "+170000",
        "high_pric": "+171000",
        "low_pric": "-160000",
        "trde_qty": "31734276",
    }
    assert parse_quote(body, "005930", NOW) == Quote(
        "005930", 160400, 169100, 170000, 171000, 160000, 31734276, NOW
    )
    # no base_pric: reference = price - signed change
    body2 = {"stk_nm": "x", "cur_prc": "-160400", "pred_pre": "-8700", "open_pric": ""}
    q = parse_quote(body2, "005930", NOW)
    assert q is not None and (q.prev_close, q.open, q.high, q.volume) == (169100, 0, 0, 0)
    assert parse_quote({"stk_nm": "", "cur_prc": ""}, "999999", NOW) is None
    with pytest.raises(MalformedResponse):
        parse_quote({"stk_nm": "x", "cur_prc": "0", "base_pric": "1"}, "005930", NOW)


def test_daily_page_exact():
    body = {
        "stk_dt_pole_chart_qry": [
            {
                "dt": "20250313",
                "open_pric": "+54300",
                "high_pric": "+55000",
                "low_pric": "-54000",
                "cur_prc": "-54500",
                "trde_qty": "1000",
            }
        ]
    }
    ((day, candle),) = parse_daily_page(body, "005930")
    assert day == date(2025, 3, 13)
    assert candle == Candle(
        "005930",
        Timeframe.D1,
        datetime(2025, 3, 13, 0, 0, tzinfo=UTC),
        54300,
        55000,
        54000,
        54500,
        1000,
    )
    assert parse_daily_page({"stk_dt_pole_chart_qry": ""}, "005930") == []
    bad_row = dict(body["stk_dt_pole_chart_qry"][0], high_pric="54000")  # high < open
    with pytest.raises(MalformedResponse, match="OHLC"):
        parse_daily_page({"stk_dt_pole_chart_qry": [bad_row]}, "005930")


def test_balance_page_exact():
    body = {
        "entr": "000000010000000",
        "stk_acnt_evlt_prst": [
            {"stk_cd": "A005930", "stk_nm": "삼성전자", "rmnd_qty": "10", "avg_prc": "68500.5",
             "cur_prc": "-70100"},
            {"stk_cd": "A035420", "stk_nm": "NAVER", "rmnd_qty": "0", "avg_prc": "0",
             "cur_prc": "1"},
        ],
    }  # fmt: skip
    cash, positions = parse_balance_page(body)
    assert cash == 10_000_000
    assert positions == [Position("005930", "삼성전자", 10, 68500.5, 70100)]
    with pytest.raises(MalformedResponse):
        parse_balance_page({"entr": "1", "stk_acnt_evlt_prst": {"a": 1}})


def test_order_ack_carries_exchange_and_code():
    ack = parse_order_ack(
        {"ord_no": "0000024", "dmst_stex_tp": "KRX"}, symbol="005930", now=NOW, client_order_id="c"
    )
    assert ack == OrderAck("0000024", "KRX:005930", NOW, "c")
    with pytest.raises(MalformedResponse):
        parse_order_ack({"ord_no": ""}, symbol="005930", now=NOW)


# -- websocket --------------------------------------------------------------------------


def _real(*entries: object) -> str:
    return json.dumps({"trnm": "REAL", "data": list(entries)})


def test_real_frame_exact_ticks_and_dropped_entries(caplog):
    raw = _real(
        {"type": "0B", "item": "005930", "values": {"20": "090000", "10": "+70000", "15": "-12"}},
        {"type": "0D", "item": "005930", "values": {"41": "70100"}},  # order book: not a trade
        {"type": "0B", "item": "005930", "values": {"20": "250000", "10": "1", "15": "1"}},
        {"type": "0B", "item": "000660", "values": {"20": "100000", "10": "0", "15": "1"}},
    )
    message = parse_ws_message(raw)
    assert message.trnm == "REAL"
    assert ticks_from_real(message, NOW) == [
        Tick("005930", 70000, 12, datetime(2025, 3, 14, 0, 0, tzinfo=UTC))
    ]
    assert "dropped REAL entry 2: time out of range" in caplog.text
    assert "dropped REAL entry 3: price not positive" in caplog.text


@pytest.mark.parametrize("raw", ["", "{", "[]", '"PING"', '{"trnm": 1}', b"\xff", '{"x": 1}'])
def test_bad_frames_are_malformed(raw):
    with pytest.raises(MalformedResponse):
        parse_ws_message(raw)


def test_real_without_a_data_list_is_malformed():
    with pytest.raises(MalformedResponse):
        ticks_from_real(WsMessage("REAL", {"trnm": "REAL", "data": {}}), NOW)


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_numberish = st.one_of(
    st.from_regex(r"[+-]?\d{1,9}", fullmatch=True),
    st.sampled_from(["", "0", "-0", "+", "1.5", "７０", "1e3", " 12 ", "70,000"]),
    _junk,
)
_hhmmss = st.one_of(st.from_regex(r"\d{6}", fullmatch=True), st.text(max_size=8), _junk)
_entry = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["0B", "0B", "0B", "0D", "00", ""]) | _junk,
            "item": st.sampled_from(["005930", "A005930", "005930_NX", "12345", ""]) | _junk,
            "values": st.one_of(
                st.fixed_dictionaries({"10": _numberish, "15": _numberish, "20": _hhmmss}),
                st.dictionaries(st.sampled_from(["10", "15", "20", "11"]), _numberish),
                _junk,
            ),
        }
    ),
    _junk,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(_entry, max_size=5), wrap=st.sampled_from(["list", "junk", "text"]))
def test_fuzz_real_frames_parse_or_refuse_with_a_reason(entries, wrap):
    data: object = entries
    if wrap == "junk":
        data = entries[0] if entries else None
    raw = json.dumps({"trnm": "REAL", "data": data})
    if wrap == "text":
        raw = raw[:-1]  # a truncated frame
    with kiwoom_logs() as logs:
        try:
            ticks = ticks_from_real(parse_ws_message(raw), NOW)
        except MalformedResponse as exc:
            assert exc.reason and any(exc.reason in r.getMessage() for r in logs.records)
            return
    # other realtime types are ignored quietly; every other entry is a tick or a logged drop
    assert isinstance(data, list)
    others = [e for e in data if isinstance(e, dict) and e.get("type") != "0B"]
    dropped = [r for r in logs.records if "dropped REAL entry" in r.getMessage()]
    assert len(ticks) + len(dropped) == len(data) - len(others)
    for tick in ticks:
        assert tick.price > 0 and tick.volume > 0 and len(tick.symbol) == 6
        assert tick.ts.tzinfo is not None and abs((tick.ts - NOW).total_seconds()) < 86_400 + 3_600


_rest_body = st.one_of(
    _junk,
    st.fixed_dictionaries(
        {
            "stk_nm": st.text(max_size=4) | _junk,
            "cur_prc": _numberish,
            "base_pric": _numberish,
            "open_pric": _numberish,
            "high_pric": _numberish,
            "low_pric": _numberish,
            "trde_qty": _numberish,
            "pred_pre": _numberish,
        }
    ),
    st.fixed_dictionaries(
        {
            "stk_dt_pole_chart_qry": st.lists(
                st.fixed_dictionaries(
                    {
                        "dt": st.from_regex(r"\d{8}", fullmatch=True) | _junk,
                        "open_pric": _numberish,
                        "high_pric": _numberish,
                        "low_pric": _numberish,
                        "cur_prc": _numberish,
                        "trde_qty": _numberish,
                    }
                )
                | _junk,
                max_size=3,
            )
            | _junk,
        }
    ),
    st.fixed_dictionaries(
        {
            "entr": _numberish,
            "stk_acnt_evlt_prst": st.lists(
                st.fixed_dictionaries(
                    {
                        "stk_cd": st.sampled_from(["A005930", "005930", "X"]) | _junk,
                        "stk_nm": _junk,
                        "rmnd_qty": _numberish,
                        "avg_prc": _numberish,
                        "cur_prc": _numberish,
                    }
                )
                | _junk,
                max_size=3,
            )
            | _junk,
        }
    ),
    st.fixed_dictionaries({"ord_no": _junk | st.text(max_size=8), "dmst_stex_tp": _junk}),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_rest_body)
def test_fuzz_rest_bodies_parse_or_refuse_with_a_reason(body):
    parsers = [
        lambda b: parse_quote(b, "005930", NOW),
        lambda b: parse_daily_page(b, "005930"),
        lambda b: parse_balance_page(b),
        lambda b: parse_order_ack(b, symbol="005930", now=NOW),
        return_code,
    ]
    for parse in parsers:
        with kiwoom_logs() as logs:
            try:
                result = parse(body)
            except MalformedResponse as exc:
                assert any(exc.reason in r.getMessage() for r in logs.records)
                continue
        if isinstance(result, Quote):
            assert result.price > 0 and result.prev_close > 0 and result.volume >= 0
        elif isinstance(result, list):
            for _day, candle in result:
                assert candle.low <= min(candle.open, candle.close) <= candle.high
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
            assert all(p.qty > 0 and p.price >= 0 and p.avg_price >= 0 for p in result[1])


# -- tokens and the limiter -------------------------------------------------------------


def test_access_token_repr_is_redacted():
    token = AccessToken("super-secret-token", datetime(2025, 3, 15, tzinfo=UTC))
    assert "super-secret-token" not in repr(token)
    assert "super-secret-token" not in str(token)
    assert "super-secret-token" not in f"{token}"
    assert token.header == "Bearer super-secret-token"


async def test_token_manager_issues_once_for_a_burst_and_reissues_after_invalidate():
    now = [datetime(2025, 3, 14, tzinfo=UTC)]
    issued: list[str] = []

    async def issue() -> AccessToken:
        await asyncio.sleep(0.01)
        issued.append(f"t{len(issued)}")
        return AccessToken(issued[-1], datetime(2025, 3, 15, tzinfo=UTC))

    store = MemoryTokenStore()
    manager = TokenManager(issue, store, clock=lambda: now[0])
    tokens = await asyncio.gather(*(manager.token() for _ in range(10)))
    assert {t.value for t in tokens} == {"t0"} and issued == ["t0"]
    await manager.invalidate(tokens[0])
    await manager.invalidate(tokens[0])  # a second failure with the same token: no-op
    assert (await manager.token()).value == "t1"
    await manager.invalidate(tokens[0])  # stale: must not drop the fresh token
    assert (await manager.token()).value == "t1" and issued == ["t0", "t1"]
    now[0] = datetime(2025, 3, 14, 23, 56, tzinfo=UTC)  # inside the 5-minute margin
    assert (await manager.token()).value == "t2"
