"""The Kiwoom adapter against a loopback fake of Kiwoom's REST API and websocket.

The same core suite as the KIS adapter: token caching and re-issue, rate limits
(the server's 1700 and our own limiter, measured at the server), paging, orders
with their exact bodies, refusals, and the realtime stream through LOGIN/REG/REAL,
PING, drops and unsubscribes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from brokers.base import (
    AuthExpired,
    Balance,
    BrokerUnavailable,
    CandlePeriod,
    OrderAck,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderType,
    Position,
    Quote,
    RateLimited,
    UnknownSymbol,
)
from brokers.kiwoom import (
    CredentialsRejected,
    KiwoomApiError,
    KiwoomBroker,
    KiwoomRest,
    KiwoomUnsupported,
    MalformedResponse,
    MemoryTokenStore,
)
from engines.market import KST, Candle, Tick, Timeframe
from tests.kiwoom_fake import NO_FUNDS_MSG, KiwoomFake, KiwoomWsFake
from tests.loopback import LoopbackServer

APP_KEY, SECRET = "kw-app-key-0123456789", "kw-secret-" + "s" * 30
NOW = datetime(2025, 3, 14, 1, 0, tzinfo=UTC)  # Friday 10:00 KST


def _clock() -> datetime:
    return NOW


def _daily_rows(n: int, last: date) -> list[dict[str, str]]:
    """``n`` weekday bars ending at ``last``, newest first as Kiwoom sends them.
    Bar i (0 = oldest) closes at 50_000 + 100 * i; prices carry direction signs."""
    days: list[date] = []
    d = last
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    days.reverse()
    rows = []
    for i, day in enumerate(days):
        close = 50_000 + 100 * i
        rows.append(
            {
                "dt": day.strftime("%Y%m%d"),
                "open_pric": f"+{close - 50}",
                "high_pric": f"+{close + 200}",
                "low_pric": f"-{close - 300}",
                "cur_prc": f"{'+' if i % 2 else '-'}{close}",
                "trde_qty": str(1_000 + i),
                "trde_prica": "0",
                "upd_stkpc_tp": "",
            }
        )
    rows.reverse()
    return rows


LAST_DAY = date(2025, 3, 13)


def _make_fake() -> KiwoomFake:
    return KiwoomFake(
        app_keys={APP_KEY: SECRET},
        quotes={
            "005930": {
                "stk_nm": "삼성전자",
                "cur_prc": "-70100",
                "base_pric": "71000",
                "pred_pre": "-900",
                "open_pric": "+71500",
                "high_pric": "+71800",
                "low_pric": "-69900",
                "trde_qty": "12345678",
            },
            "000660": {
                "stk_nm": "SK하이닉스",
                "cur_prc": "+201000",
                "base_pric": "200000",
                "open_pric": "200500",
                "high_pric": "+202000",
                "low_pric": "-199500",
                "trde_qty": "345",
            },
        },
        daily={"005930": _daily_rows(250, LAST_DAY)},
        chart_page_size=100,
        cash=10_000_000,
        holdings=[
            {"stk_cd": f"A{code}", "stk_nm": name, "rmnd_qty": qty, "avg_prc": avg, "cur_prc": cur}
            for code, name, qty, avg, cur in [
                ("005930", "삼성전자", "10", "68500.5", "-70100"),
                ("000660", "SK하이닉스", "3", "190000", "+201000"),
                ("035420", "NAVER", "0", "0", "180000"),  # sold out today: skipped
                ("035720", "카카오", "7", "41000", "-40950"),
                ("051910", "LG화학", "1", "300000", "+310000"),
            ]
        ],
        balance_page_size=2,
    )


@pytest.fixture
def kiwoom() -> Iterator[tuple[KiwoomFake, LoopbackServer]]:
    fake = _make_fake()
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
async def rest_factory(kiwoom) -> AsyncIterator[Callable[..., KiwoomRest]]:
    _, server = kiwoom
    made: list[KiwoomRest] = []

    def make(**kw) -> KiwoomRest:
        kw.setdefault("rate_per_second", 1000)
        kw.setdefault("backoff_base", 0.01)
        kw.setdefault("backoff_max", 0.05)
        client = KiwoomRest(server.base_url, APP_KEY, kw.pop("secret", SECRET), clock=_clock, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


EXPECTED_QUOTE = Quote("005930", 70100, 71000, 71500, 71800, 69900, 12345678, NOW)


# -- tokens -----------------------------------------------------------------------------


async def test_token_is_cached_and_shared_through_the_store(kiwoom, rest_factory, caplog):
    fake, _ = kiwoom
    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    first = rest_factory(store=store)
    assert await first.quote("005930") == EXPECTED_QUOTE
    assert await first.quote("005930") == EXPECTED_QUOTE
    assert fake.token_issues == [APP_KEY]
    second = rest_factory(store=store)  # a restart, or another worker
    assert await second.quote("005930") == EXPECTED_QUOTE
    assert fake.token_issues == [APP_KEY]
    token = await store.load()
    assert token is not None
    body = fake.calls("au10001")[0].body
    assert body == {"grant_type": "client_credentials", "appkey": APP_KEY, "secretkey": SECRET}
    call = fake.calls("ka10001")[0]
    assert call.headers["authorization"] == f"Bearer {token.value}"
    assert call.headers["content-type"] == "application/json;charset=UTF-8"
    assert call.path == "/api/dostk/stkinfo" and call.body == {"stk_cd": "005930"}
    # the token never reaches a log line or a repr
    assert token.value not in caplog.text
    assert token.value not in repr(token) and token.value not in repr(store)
    assert SECRET not in caplog.text and SECRET not in repr(first)
    third = rest_factory(store=MemoryTokenStore())  # nothing cached: a new token
    await third.quote("005930")
    assert fake.token_issues == [APP_KEY, APP_KEY]


async def test_expired_token_is_reissued_once(kiwoom, rest_factory):
    fake, _ = kiwoom
    store = MemoryTokenStore()
    client = rest_factory(store=store)
    await client.quote("005930")
    old = await store.load()
    fake.expire_tokens()
    assert await client.quote("005930") == EXPECTED_QUOTE
    assert len(fake.token_issues) == 2
    assert [c.code for c in fake.calls("ka10001")] == [0, 8005, 0]
    new = await store.load()
    assert new is not None and old is not None and new.value != old.value
    # a server that refuses every token: one re-issue, then AuthExpired, no loop
    fake.refuse_all_tokens = True
    with pytest.raises(AuthExpired, match="8005|Token"):
        await client.quote("005930")
    assert len(fake.token_issues) == 3
    assert [c.code for c in fake.calls("ka10001")][-2:] == [8005, 8005]


async def test_wrong_secret_is_credentials_rejected(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory(secret="wrong")
    with pytest.raises(CredentialsRejected, match="8001"):
        await client.quote("005930")
    assert fake.token_issues == [] and fake.calls("ka10001") == []


# -- rate limits ------------------------------------------------------------------------


async def test_server_rate_limit_1700_is_retried_with_backoff(kiwoom, rest_factory):
    fake, _ = kiwoom
    fake.rate_limit = 3
    client = rest_factory(max_rate_retries=30, backoff_base=0.2, backoff_max=1.0)
    results = await asyncio.gather(*(client.quote("005930") for _ in range(5)))
    assert results == [EXPECTED_QUOTE] * 5
    assert fake.rate_limited() > 0  # the server did throttle us ...
    assert sum(1 for c in fake.calls("ka10001") if c.code == 0) == 5  # ... and all got through


async def test_server_rate_limit_retries_are_bounded(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory(max_rate_retries=2)
    await client.tokens.token()
    fake.always_rate_limited = True
    with pytest.raises(RateLimited, match="1700|허용된"):
        await client.quote("005930")
    assert [c.code for c in fake.calls("ka10001")] == [1700, 1700, 1700]  # 1 + 2 retries


async def test_client_limiter_never_exceeds_its_rate_at_the_server(kiwoom, rest_factory):
    fake, _ = kiwoom
    rate = 8
    fake.rate_limit = rate  # the server enforces the same limit: any excess shows as 1700
    client = rest_factory(rate_per_second=rate)
    started = time.monotonic()
    results = await asyncio.gather(*(client.quote("005930") for _ in range(3 * rate)))
    elapsed = time.monotonic() - started
    assert results == [EXPECTED_QUOTE] * (3 * rate)
    calls = len(fake.arrivals)
    assert calls == 3 * rate + 1  # + the token issue, which also goes through the limiter
    assert fake.rate_limited() == 0
    assert fake.max_per_window(1.0) <= rate
    assert elapsed >= 3.0  # 25 calls at 8/s need 3 full windows
    logging.getLogger(__name__).warning(
        "kiwoom limiter: %d calls in %.2f s, max %d in any 1-s window at the fake",
        calls,
        elapsed,
        fake.max_per_window(1.0),
    )


# -- paging -----------------------------------------------------------------------------


async def test_daily_candles_page_through_next_key(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory()
    start, end = date(2024, 6, 3), date(2025, 3, 12)
    candles = await client.daily_candles("005930", start, end)
    rows = [r for r in reversed(fake.daily["005930"]) if "20240603" <= r["dt"] <= "20250312"]
    assert len(candles) == len(rows) == 203
    first_i = next(i for i, r in enumerate(reversed(fake.daily["005930"])) if r["dt"] == "20240603")
    assert candles[0] == Candle(
        "005930",
        Timeframe.D1,
        datetime(2024, 6, 3, 0, 0, tzinfo=UTC),  # 09:00 KST
        50_000 + 100 * first_i - 50,
        50_000 + 100 * first_i + 200,
        50_000 + 100 * first_i - 300,
        50_000 + 100 * first_i,
        1_000 + first_i,
    )
    assert candles[-1].start == datetime(2025, 3, 12, 9, tzinfo=KST)
    assert candles[-1].close == 50_000 + 100 * 248
    assert [c.start for c in candles] == sorted(c.start for c in candles)
    calls = fake.calls("ka10081")
    assert len(calls) == 3  # 100 + 100 + the page that reaches back past start
    assert calls[0].body == {"stk_cd": "005930", "base_dt": "20250312", "upd_stkpc_tp": "1"}
    assert "next-key" not in calls[0].headers
    assert calls[1].headers["cont-yn"] == "Y" and calls[1].headers["next-key"] == "chart-005930-100"
    assert calls[2].headers["next-key"] == "chart-005930-200"
    # a range inside the first page costs one call
    fake.seen.clear()
    recent = await client.daily_candles("005930", date(2025, 3, 10), date(2025, 3, 13))
    assert [c.close for c in recent] == [50_000 + 100 * i for i in (246, 247, 248, 249)]
    assert len(fake.calls("ka10081")) == 1


async def test_balance_pages_through_every_holding(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory()
    balance = await client.balance()
    assert balance == Balance(
        cash=10_000_000,
        positions=(
            Position("005930", "삼성전자", 10, 68500.5, 70100),
            Position("000660", "SK하이닉스", 3, 190000.0, 201000),
            Position("035720", "카카오", 7, 41000.0, 40950),
            Position("051910", "LG화학", 1, 300000.0, 310000),
        ),
    )
    calls = fake.calls("kt00004")
    assert len(calls) == 3
    assert calls[0].body == {"qry_tp": "0", "dmst_stex_tp": "KRX"}
    assert [c.headers.get("next-key") for c in calls] == [None, "acnt-2", "acnt-4"]


# -- orders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "order_type", "price", "api_id", "ord_uv", "trde_tp"),
    [
        (OrderSide.BUY, OrderType.LIMIT, 70000, "kt10000", "70000", "0"),
        (OrderSide.SELL, OrderType.LIMIT, 70100, "kt10001", "70100", "0"),
        (OrderSide.BUY, OrderType.MARKET, 0, "kt10000", "", "3"),
        (OrderSide.SELL, OrderType.MARKET, 0, "kt10001", "", "3"),
    ],
)
async def test_orders_send_exact_fields(
    kiwoom, rest_factory, side, order_type, price, api_id, ord_uv, trde_tp
):
    fake, _ = kiwoom
    client = rest_factory()
    order = OrderRequest("005930", side, 10, order_type, price, client_order_id="sig-42")
    ack = await client.place_order(order)
    assert ack == OrderAck("0000001", "KRX:005930", NOW, "sig-42")
    (call,) = fake.calls(api_id)
    assert call.path == "/api/dostk/ordr"
    assert call.body == {
        "dmst_stex_tp": "KRX",
        "stk_cd": "005930",
        "ord_qty": "10",
        "ord_uv": ord_uv,
        "trde_tp": trde_tp,
        "cond_uv": "",
    }


async def test_rejected_order_raises_with_kiwooms_message(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory()
    with pytest.raises(OrderRejected) as err:
        await client.place_order(OrderRequest("005930", OrderSide.BUY, 1000, price=70000))
    assert str(err.value) == NO_FUNDS_MSG
    assert [c.code for c in fake.calls("kt10000")] == [20]
    # checked before sending: off the tick grid, zero quantity
    with pytest.raises(OrderRejected, match="tick grid"):
        await client.place_order(OrderRequest("005930", OrderSide.BUY, 1, price=70010))
    with pytest.raises(OrderRejected, match="quantity"):
        await client.place_order(OrderRequest("005930", OrderSide.SELL, 0, price=70000))
    assert len(fake.calls("kt10000")) == 1 and fake.calls("kt10001") == []


async def test_modify_and_cancel_address_the_original_order(kiwoom, rest_factory):
    fake, _ = kiwoom
    client = rest_factory()
    ack = await client.place_order(OrderRequest("005930", OrderSide.BUY, 10, price=69000))
    moved = await client.modify_order(ack, 5, 69500)
    assert moved.order_id == "0000002" and moved.branch == "KRX:005930"
    partial = await client.cancel_order(moved, 2)
    everything = await client.cancel_order(moved)
    assert (partial.order_id, everything.order_id) == ("0000003", "0000004")
    assert fake.calls("kt10002")[0].body == {
        "dmst_stex_tp": "KRX",
        "orig_ord_no": "0000001",
        "stk_cd": "005930",
        "mdfy_qty": "5",
        "mdfy_uv": "69500",
        "mdfy_cond_uv": "",
    }
    assert [c.body for c in fake.calls("kt10003")] == [
        {"dmst_stex_tp": "KRX", "orig_ord_no": "0000002", "stk_cd": "005930", "cncl_qty": "2"},
        {"dmst_stex_tp": "KRX", "orig_ord_no": "0000002", "stk_cd": "005930", "cncl_qty": "0"},
    ]
    unknown = OrderAck("9999999", "KRX:005930", NOW)
    with pytest.raises(OrderRejected, match="원주문번호"):
        await client.cancel_order(unknown)


# -- errors -----------------------------------------------------------------------------


async def test_unknown_symbol_down_and_garbage(kiwoom, rest_factory, caplog):
    fake, _ = kiwoom
    client = rest_factory()
    with pytest.raises(UnknownSymbol):
        await client.quote("999999")
    fake.down = True
    with pytest.raises(BrokerUnavailable, match="503"):
        await client.quote("005930")
    fake.down, fake.garbage = False, True
    with pytest.raises(MalformedResponse, match="not JSON"):
        await client.quote("005930")
    assert "not JSON" in caplog.text
    fake.garbage = False
    fake.quotes["005930"]["cur_prc"] = "70,100"
    with pytest.raises(MalformedResponse, match="cur_prc"):
        await client.quote("005930")


async def test_fake_checks_headers_like_kiwoom(kiwoom, rest_factory):
    fake, server = kiwoom
    client = rest_factory()
    with pytest.raises(KiwoomApiError) as err:  # api-id that does not belong to the path
        await client.call("ka10001", "/api/dostk/chart", {"stk_cd": "005930"})
    assert err.value.code == 1504
    async with httpx.AsyncClient() as raw:  # no authorization header at all
        reply = await raw.post(
            server.base_url + "/api/dostk/stkinfo",
            json={"stk_cd": "005930"},
            headers={"api-id": "ka10001"},
        )
    assert reply.json()["return_code"] == 8005
    assert [c.code for c in fake.seen if c.api_id != "au10001"] == [1504, 8005]


async def test_unreachable_and_timeout_are_unavailable():
    client = KiwoomRest("http://127.0.0.1:9", APP_KEY, SECRET, timeout=0.5)
    try:
        with pytest.raises(BrokerUnavailable):
            await client.quote("005930")
    finally:
        await client.aclose()


# -- websocket --------------------------------------------------------------------------


@pytest.fixture
async def ws_fake(kiwoom) -> AsyncIterator[KiwoomWsFake]:
    fake, _ = kiwoom
    async with KiwoomWsFake(fake).running() as server:
        yield server


@pytest.fixture
async def broker(kiwoom, ws_fake) -> AsyncIterator[KiwoomBroker]:
    _, server = kiwoom
    b = KiwoomBroker(
        base_url=server.base_url,
        ws_url=ws_fake.url,
        app_key=APP_KEY,
        secret_key=SECRET,
        rate_per_second=100,
        clock=_clock,
        ws_backoff_base=0.05,
        ws_backoff_max=0.2,
    )
    yield b
    await b.close()


def _trade(time_: str, price: str, volume: str, **more: str) -> dict[str, str]:
    return {"20": time_, "10": price, "11": "-900", "12": "-1.27", "15": volume, **more}


async def _collect(it: AsyncIterator[Tick], n: int, timeout: float = 5.0) -> list[Tick]:
    out: list[Tick] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(it))
    return out


async def test_login_reg_real_gives_exact_ticks(kiwoom, ws_fake, broker):
    fake, _ = kiwoom
    ticks = broker.ticks()
    await broker.subscribe(["005930"])
    await until(lambda: bool(ws_fake.sessions) and "005930" in ws_fake.sessions[0].items)
    token = await broker.rest.tokens.token()
    first, second = ws_fake.messages[0][1], ws_fake.messages[1][1]
    assert first == {"trnm": "LOGIN", "token": token.value}
    assert second == {
        "trnm": "REG",
        "grp_no": "1",
        "refresh": "1",
        "data": [{"item": ["005930"], "type": ["0B"]}],
    }
    assert ws_fake.protocol_errors == []
    sent = await ws_fake.push(
        [
            ("005930", _trade("093001", "-70100", "+12")),
            ("005930", _trade("093001", "+70200", "-3")),
            ("005930", _trade("152959", "70000", "1500")),
        ]
    )
    assert sent == 3
    got = await _collect(ticks, 3)
    assert got == [
        Tick("005930", 70100, 12, datetime(2025, 3, 14, 0, 30, 1, tzinfo=UTC)),
        Tick("005930", 70200, 3, datetime(2025, 3, 14, 0, 30, 1, tzinfo=UTC)),
        # 15:29:59 KST is > 1 h after the clock's 10:00 KST: yesterday's late frame
        Tick("005930", 70000, 1500, datetime(2025, 3, 13, 6, 29, 59, tzinfo=UTC)),
    ]
    assert len(fake.calls("ka10001")) == 1  # subscribe verified the code once


async def test_subscribe_unknown_symbol_changes_nothing(ws_fake, broker):
    await broker.subscribe(["005930"])
    with pytest.raises(UnknownSymbol):
        await broker.subscribe(["000660", "999999"])
    with pytest.raises(UnknownSymbol):
        await broker.subscribe(["5930"])
    assert broker.stream.symbols == {"005930"}


async def test_ping_is_echoed_unchanged(ws_fake, broker):
    await broker.subscribe(["005930"])
    await until(lambda: bool(ws_fake.sessions) and ws_fake.sessions[0].items == {"005930"})
    await ws_fake.ping()
    await ws_fake.ping()
    await until(lambda: len(ws_fake.echoes) == 2)
    assert ws_fake.echoes == ws_fake.pings_sent == ['{"trnm": "PING"}'] * 2


async def test_drop_reconnects_relogs_and_reregisters(ws_fake, broker):
    ticks = broker.ticks()
    await broker.subscribe(["005930", "000660"])
    await until(lambda: bool(ws_fake.sessions) and len(ws_fake.sessions[0].items) == 2)
    await ws_fake.push([("005930", _trade("093000", "70000", "1"))])
    assert (await _collect(ticks, 1))[0].price == 70000
    await ws_fake.drop()
    await until(
        lambda: (
            bool(ws_fake.sessions)
            and ws_fake.sessions[0].number == 2
            and ws_fake.sessions[0].items == {"005930", "000660"}
        )
    )
    assert len(ws_fake.logins) == 2 and ws_fake.protocol_errors == []
    assert ws_fake.registrations(2)[0]["data"] == [{"item": ["000660", "005930"], "type": ["0B"]}]
    await ws_fake.push(
        [
            ("000660", _trade("093100", "+201500", "+4")),
            ("005930", _trade("093101", "-70050", "-9")),
        ]
    )
    got = await _collect(ticks, 2)
    assert [(t.symbol, t.price, t.volume) for t in got] == [
        ("000660", 201500, 4),
        ("005930", 70050, 9),
    ]
    assert broker.stream.sessions == 2


async def test_unsubscribe_stops_ticks_for_that_symbol(ws_fake, broker):
    ws_fake.ignore_remove = True  # frames keep coming, as if in flight: we must filter
    ticks = broker.ticks()
    await broker.subscribe(["005930", "000660"])
    await until(lambda: bool(ws_fake.sessions) and len(ws_fake.sessions[0].items) == 2)
    await broker.unsubscribe(["000660"])
    await until(lambda: any(m.get("trnm") == "REMOVE" for _, m in ws_fake.messages))
    remove = next(m for _, m in ws_fake.messages if m.get("trnm") == "REMOVE")
    assert remove == {
        "trnm": "REMOVE",
        "grp_no": "1",
        "refresh": "1",
        "data": [{"item": ["000660"], "type": ["0B"]}],
    }
    sent = await ws_fake.push(
        [
            ("000660", _trade("093200", "201000", "5")),
            ("005930", _trade("093201", "70100", "6")),
            ("000660", _trade("093202", "201000", "7")),
        ]
    )
    assert sent == 3
    got = await _collect(ticks, 1)
    assert [(t.symbol, t.volume) for t in got] == [("005930", 6)]
    await asyncio.sleep(0.1)
    assert broker.stream._queue.empty()


async def test_expired_token_at_login_is_reissued(kiwoom, ws_fake, broker):
    fake, _ = kiwoom
    await broker.quote("005930")  # caches a token
    fake.expire_tokens()
    await broker.subscribe(["005930"])  # already verified: no REST call refreshes the token
    await until(lambda: bool(ws_fake.sessions) and ws_fake.sessions[0].items == {"005930"})
    assert ws_fake.refused_logins == 1 and len(ws_fake.logins) == 1
    assert len(fake.token_issues) == 2


async def test_fake_refuses_reg_before_login(ws_fake):
    async with connect(ws_fake.url) as ws:
        await ws.send('{"trnm":"REG","grp_no":"1","refresh":"1","data":[]}')
        reply = await ws.recv()
        assert '"return_code": 100001' in reply
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    assert ws_fake.protocol_errors == ["REG before LOGIN"]


async def test_broker_surface(kiwoom, broker):
    assert broker.name == "kiwoom"
    assert await broker.list_symbols() == []
    assert await broker.quote("005930") == EXPECTED_QUOTE
    with pytest.raises(KiwoomUnsupported):
        await broker.candles("005930", CandlePeriod.MINUTE, date(2025, 3, 1), date(2025, 3, 2))
    days = await broker.candles("005930", CandlePeriod.DAY, date(2025, 3, 12), date(2025, 3, 13))
    assert [c.close for c in days] == [50_000 + 100 * 248, 50_000 + 100 * 249]
    with pytest.raises(KiwoomUnsupported):
        await broker.orders(date(2025, 3, 14))
    with pytest.raises(KiwoomUnsupported):
        await broker.fills(date(2025, 3, 14))
    with pytest.raises(KiwoomUnsupported):
        await anext(broker.executions())
