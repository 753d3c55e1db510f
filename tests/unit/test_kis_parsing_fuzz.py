"""Fuzzing the KIS response parsers: malformed bodies are refused, never crash, never lie.

Each test starts from a body KIS really sends, damages it (fields deleted, numbers
replaced by text, negative or huge values, wrong container types, random JSON), and
hands it to the parser. The outcome must be one of two things: a typed value that
is sane and agrees with the body, or ``MalformedResponse`` whose reason was logged.
Any other exception fails the test. 13,000 examples in all.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from brokers.base import Balance, CandlePeriod, OrderAck, Quote
from brokers.kis.errors import MalformedResponse
from brokers.kis.parsing import (
    BalancePage,
    CcldPage,
    decode_json,
    order_status_of,
    parse_balance_page,
    parse_ccld_page,
    parse_daily_candles,
    parse_minute_candles,
    parse_order_ack,
    parse_quote,
    parse_status,
    parse_token_reply,
)
from engines.market import KST, Candle

EXAMPLES = 1500
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NOW = datetime(2026, 3, 5, 11, 0, tzinfo=KST).astimezone(UTC)
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl"

# --- what KIS sends -----------------------------------------------------------------

OK = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다."}
QUOTE = {
    **OK,
    "output": {
        "stck_prpr": "70000",
        "prdy_vrss": "1000",
        "prdy_vrss_sign": "2",
        "prdy_ctrt": "1.45",
        "acml_vol": "1234567",
        "stck_oprc": "69500",
        "stck_hgpr": "70500",
        "stck_lwpr": "68900",
    },
}


def _bar(day: str, o: int, h: int, low: int, c: int, v: int, close_key: str) -> dict[str, str]:
    return {
        "stck_bsop_date": day,
        "stck_oprc": str(o),
        "stck_hgpr": str(h),
        "stck_lwpr": str(low),
        close_key: str(c),
        "acml_vol" if close_key == "stck_clpr" else "cntg_vol": str(v),
    }


DAILY = {
    **OK,
    "output1": {"stck_shrn_iscd": "005930"},
    "output2": [
        _bar("20260305", 70000, 70500, 69000, 70100, 1000, "stck_clpr"),
        _bar("20260304", 69000, 70000, 68500, 69900, 2000, "stck_clpr"),
        _bar("20260303", 68000, 69500, 67900, 69000, 3000, "stck_clpr"),
    ],
}
MINUTES = {
    **OK,
    "output1": {"stck_prpr": "70100"},
    "output2": [
        {**_bar("20260305", 70000, 70200, 69900, 70100, 10, "stck_prpr"), "stck_cntg_hour": "1002"},
        {**_bar("20260305", 69900, 70000, 69800, 70000, 20, "stck_prpr"), "stck_cntg_hour": "1001"},
    ],
}
for _row, _hour in zip(MINUTES["output2"], ("100200", "100100"), strict=True):
    _row["stck_cntg_hour"] = _hour
BALANCE = {
    **OK,
    "ctx_area_fk100": "50123456^01^00".ljust(100),
    "ctx_area_nk100": "50123456^01^2".ljust(100),
    "output1": [
        {
            "pdno": "005930",
            "prdt_name": "삼성전자",
            "hldg_qty": "10",
            "pchs_avg_pric": "68000.5000",
            "prpr": "70000",
        },
        {
            "pdno": "000660",
            "prdt_name": "SK하이닉스",
            "hldg_qty": "3",
            "pchs_avg_pric": "150000.0000",
            "prpr": "160000",
        },
    ],
    "output2": [{"dnca_tot_amt": "1000000", "tot_evlu_amt": "2180000"}],
}
ORDER = {
    **OK,
    "output": {"KRX_FWDG_ORD_ORGNO": "91252", "ODNO": "0000117057", "ORD_TMD": "121052"},
}
CCLD = {
    **OK,
    "ctx_area_fk100": "",
    "ctx_area_nk100": "",
    "output1": [
        {
            "ord_dt": "20260305",
            "ord_gno_brno": "91252",
            "odno": "0000117057",
            "sll_buy_dvsn_cd": "02",
            "pdno": "005930",
            "ord_qty": "10",
            "ord_unpr": "70000",
            "ord_tmd": "121052",
            "tot_ccld_qty": "7",
            "avg_prvs": "69985.71",
            "cncl_yn": "N",
            "rmn_qty": "3",
            "rjct_qty": "0",
            "ord_dvsn_cd": "00",
        }
    ],
    "output2": {"tot_ord_qty": "10"},
}
TOKEN_REPLY = {
    "access_token": TOKEN,
    "access_token_token_expired": "2026-03-06 11:00:00",
    "token_type": "Bearer",
    "expires_in": 86400,
}

# --- damage --------------------------------------------------------------------------

NUMBERISH = st.one_of(
    st.integers(-(10**19), 10**19).map(str),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "-0",
            "-1",
            "+5",
            "1e5",
            "abc",
            "7O000",
            "70,000",
            "١٢٣",
            "0x10",
            "NaN",
            "Infinity",
            "00012",
            "12.50",
            "2026-13-45",
            "20260230",
            "250000",
            "999999",
            "20260305",
            "093000",
            "01",
            "02",
            "Y",
        ]
    ),
    st.none(),
    st.booleans(),
)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree, so any value can be damaged."""
    if isinstance(node, dict):
        for key in list(node):
            yield node, key
            yield from _slots(node[key])
    elif isinstance(node, list):
        for i in range(len(node)):
            yield node, i
            yield from _slots(node[i])


def damaged(data: st.DataObject, template: dict[str, Any]) -> Any:
    body: Any = copy.deepcopy(template)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if data.draw(st.integers(0, 40), label="root") == 0:
            return data.draw(JUNK, label="root junk")
        slots = list(_slots(body))
        if not slots:
            break
        container, key = data.draw(st.sampled_from(slots), label="slot")
        action = data.draw(st.sampled_from(["delete", "number", "number", "junk", "dup"]))
        if action == "delete":
            del container[key]
        elif action == "number":
            container[key] = data.draw(NUMBERISH, label="value")
        elif action == "junk":
            container[key] = data.draw(JUNK, label="junk")
        elif isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
    return body


def outcome(caplog: pytest.LogCaptureFixture, call: Callable[[], Any]) -> Any | None:
    """The parsed value, or None after checking the refusal was logged with its reason."""
    caplog.clear()
    try:
        value = call()
    except MalformedResponse as exc:
        event("refused")
        assert exc.reason
        logged = [
            r.getMessage()
            for r in caplog.records
            if r.name == "brokers.kis.parsing" and r.levelno == logging.WARNING
        ]
        assert any(exc.reason in line for line in logged), (exc.reason, logged)
        assert TOKEN not in " ".join(logged) + str(exc)
        return None
    event("parsed")
    return value


_INT = re.compile(r"^[+-]?\d{1,18}(\.0*)?$")


def as_int(value: Any) -> int | None:
    """Our reading of a KIS number, to check a parsed value against its body."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def sane_candle(c: Candle) -> None:
    for v in (c.open, c.high, c.low, c.close, c.volume):
        assert type(v) is int
    assert 0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
    assert c.volume >= 0 and c.start.utcoffset() == timedelta(0)


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="brokers.kis.parsing")


# --- the unharmed bodies parse exactly -------------------------------------------------


def test_templates_parse_exactly():
    q = parse_quote(QUOTE, "005930", NOW)
    assert (q.price, q.prev_close, q.open, q.high, q.low, q.volume) == (
        70000,
        69000,
        69500,
        70500,
        68900,
        1234567,
    )
    bars = parse_daily_candles(DAILY, "005930", CandlePeriod.DAY)
    assert [(b.close, b.volume) for b in bars] == [(70100, 1000), (69900, 2000), (69000, 3000)]
    minutes = parse_minute_candles(MINUTES, "005930")
    assert minutes[0].start == datetime(2026, 3, 5, 10, 2, tzinfo=KST)
    page = parse_balance_page(BALANCE)
    assert page.cash == 1_000_000 and [p.qty for p in page.positions] == [10, 3]
    assert page.ctx_nk == BALANCE["ctx_area_nk100"]  # padding kept
    ack = parse_order_ack(ORDER, date(2026, 3, 5))
    assert ack == OrderAck("0000117057", "91252", datetime(2026, 3, 5, 12, 10, 52, tzinfo=KST))
    row = parse_ccld_page(CCLD).rows[0]
    assert (row.filled_qty, row.remaining_qty, order_status_of(row).state.value) == (
        7,
        3,
        "partial",
    )
    token = parse_token_reply(TOKEN_REPLY, NOW)
    assert token.expires_at == datetime(2026, 3, 6, 2, 0, tzinfo=UTC)
    assert TOKEN not in repr(token)
    assert parse_status({"error_code": "EGW00133", "error_description": "x"}).code == "EGW00133"


def test_down_sign_with_an_unsigned_change_means_down():
    """prdy_vrss may be a magnitude with the sign in prdy_vrss_sign: both readings agree."""
    body = copy.deepcopy(QUOTE)
    body["output"].update(prdy_vrss="1000", prdy_vrss_sign="5")
    signed = copy.deepcopy(body)
    signed["output"]["prdy_vrss"] = "-1000"
    assert parse_quote(body, "005930", NOW).prev_close == 71000
    assert parse_quote(signed, "005930", NOW).prev_close == 71000


# --- fuzz ------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_quote(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, QUOTE)
    quote = outcome(caplog, lambda: parse_quote(body, "005930", NOW))
    if quote is None:
        return
    assert isinstance(quote, Quote)
    for v in (quote.price, quote.prev_close, quote.open, quote.high, quote.low, quote.volume):
        assert type(v) is int
    assert quote.price > 0 and quote.prev_close > 0 and quote.volume >= 0
    assert min(quote.open, quote.high, quote.low) >= 0
    if quote.high and quote.low:
        assert quote.low <= quote.price <= quote.high
    out = body["output"]
    assert quote.price == as_int(out["stck_prpr"])
    assert abs(quote.price - quote.prev_close) == abs(as_int(out["prdy_vrss"]))
    assert quote.volume == as_int(out["acml_vol"])


@FUZZ
@given(data=st.data())
def test_fuzz_daily_candles(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, DAILY)
    bars = outcome(caplog, lambda: parse_daily_candles(body, "005930", CandlePeriod.DAY))
    if bars is None:
        return
    sent = body["output2"]
    sent = [sent] if isinstance(sent, dict) else sent  # KIS may send one row without its list
    rows = [r for r in sent if any(v not in ("", None) for v in r.values())]
    assert len(bars) == len(rows)
    for bar, row in zip(bars, rows, strict=True):
        sane_candle(bar)
        assert bar.close == as_int(row["stck_clpr"]) and bar.volume == as_int(row["acml_vol"])
        assert bar.start.astimezone(KST).strftime("%Y%m%d") == row["stck_bsop_date"]


@FUZZ
@given(data=st.data())
def test_fuzz_minute_candles(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, MINUTES)
    bars = outcome(caplog, lambda: parse_minute_candles(body, "005930"))
    if bars is None:
        return
    for bar in bars:
        sane_candle(bar)
        assert bar.start.second == 0


@FUZZ
@given(data=st.data())
def test_fuzz_balance(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, BALANCE)
    page = outcome(caplog, lambda: parse_balance_page(body))
    if page is None:
        return
    assert isinstance(page, BalancePage)
    assert page.cash is None or (type(page.cash) is int and page.cash >= 0)
    for p in page.positions:
        assert type(p.qty) is int and p.qty > 0
        assert math.isfinite(p.avg_price) and p.avg_price >= 0
        assert type(p.price) is int and p.price >= 0
        assert p.symbol
    assert isinstance(page.ctx_fk, str) and isinstance(page.ctx_nk, str)
    if page.cash is not None:
        Balance(page.cash, page.positions).total  # noqa: B018 (computable)


@FUZZ
@given(data=st.data())
def test_fuzz_order_ack(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, ORDER)
    ack = outcome(caplog, lambda: parse_order_ack(body, date(2026, 3, 5), "cid"))
    if ack is None:
        return
    assert ack.order_id.isdigit() and ack.client_order_id == "cid"
    assert ack.order_id == body["output"]["ODNO"].strip()
    assert ack.ts.astimezone(KST).date() == date(2026, 3, 5)


@FUZZ
@given(data=st.data())
def test_fuzz_daily_ccld(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, CCLD)
    page = outcome(caplog, lambda: parse_ccld_page(body))
    if page is None:
        return
    assert isinstance(page, CcldPage)
    for row in page.rows:
        assert 0 <= row.filled_qty <= row.qty
        assert row.remaining_qty >= 0 and row.price >= 0
        assert math.isfinite(row.avg_fill_price) and row.avg_fill_price >= 0
        assert row.filled_qty == 0 or row.avg_fill_price > 0
        order_status_of(row)


@FUZZ
@given(data=st.data())
def test_fuzz_token_reply(data: st.DataObject, caplog: pytest.LogCaptureFixture):
    body = damaged(data, TOKEN_REPLY)
    reply = outcome(caplog, lambda: parse_token_reply(body, NOW))
    if reply is None:
        return
    assert reply.access_token == body["access_token"]
    assert NOW < reply.expires_at <= NOW + timedelta(days=7)
    assert reply.access_token not in repr(reply)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64), JUNK.map(json.dumps)))
def test_fuzz_raw_bodies(raw: bytes | str, caplog: pytest.LogCaptureFixture):
    body = outcome(caplog, lambda: decode_json(raw))
    if body is None:
        return
    status = outcome(caplog, lambda: parse_status(body))
    if status is not None:
        assert isinstance(status.ok, bool) and isinstance(status.code, str)
        assert status.ok == (str(body["rt_cd"]).strip() == "0") if "rt_cd" in body else True


def test_enough_examples():
    """The brief: at least 10,000 generated bodies across the parsers."""
    fuzzers = [name for name in globals() if name.startswith("test_fuzz_")]
    assert len(fuzzers) * EXAMPLES >= 10_000
