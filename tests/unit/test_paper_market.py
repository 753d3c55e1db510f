"""The paper broker: symbol master, search, and the simulated KRX market."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from brokers.base import Broker, BrokerError, MarketData, Quote, SymbolInfo, UnknownSymbol
from brokers.paper import SYMBOLS, PaperSymbol, SimulatedMarket, by_code, search
from brokers.paper.calendar import is_krx_open
from engines.market import Tick, is_on_tick, price_limits, tick_size

KST = ZoneInfo("Asia/Seoul")
# Wednesday 2025-03-05 is a regular KRX trading day (09:00-15:30 KST).
TRADING_DAY_10AM = datetime(2025, 3, 5, 10, 0, tzinfo=KST)
ALL_CODES = [s.code for s in SYMBOLS]


def run(market: SimulatedMarket, start: datetime, steps: int, every: timedelta) -> list[Tick]:
    out: list[Tick] = []
    for i in range(steps):
        out.extend(market.step(start + i * every))
    return out


async def subscribed_market(codes: list[str], **kwargs: object) -> SimulatedMarket:
    market = SimulatedMarket(**kwargs)  # type: ignore[arg-type]
    await market.subscribe(codes)
    return market


# ---- symbol master -----------------------------------------------------------


def test_master_has_40_real_listings_with_unique_codes() -> None:
    assert len(SYMBOLS) >= 40
    codes = [s.code for s in SYMBOLS]
    assert len(set(codes)) == len(codes)
    for s in SYMBOLS:
        assert re.fullmatch(r"\d{6}", s.code), s
        assert s.market in ("KOSPI", "KOSDAQ"), s
        assert s.name_ko and s.name_en, s
        assert is_on_tick(s.ref_price), s
    assert {s.market for s in SYMBOLS} == {"KOSPI", "KOSDAQ"}


@pytest.mark.parametrize(
    ("code", "name_ko", "name_en", "market"),
    [
        ("005930", "삼성전자", "Samsung Electronics", "KOSPI"),
        ("000660", "SK하이닉스", "SK hynix", "KOSPI"),
        ("373220", "LG에너지솔루션", None, "KOSPI"),
        ("207940", "삼성바이오로직스", None, "KOSPI"),
        ("005380", "현대차", None, "KOSPI"),
        ("000270", "기아", None, "KOSPI"),
        ("068270", "셀트리온", None, "KOSPI"),
        ("035420", "NAVER", None, "KOSPI"),
        ("035720", "카카오", None, "KOSPI"),
        ("051910", "LG화학", None, "KOSPI"),
        ("006400", "삼성SDI", None, "KOSPI"),
        ("105560", "KB금융", None, "KOSPI"),
        ("055550", "신한지주", None, "KOSPI"),
        ("247540", "에코프로비엠", None, "KOSDAQ"),
        ("086520", "에코프로", None, "KOSDAQ"),
        ("196170", "알테오젠", None, "KOSDAQ"),
        ("028300", "HLB", None, "KOSDAQ"),
        ("263750", "펄어비스", None, "KOSDAQ"),
        ("293490", "카카오게임즈", None, "KOSDAQ"),
        ("035900", "JYP Ent.", None, "KOSDAQ"),
    ],
)
def test_required_listings(code: str, name_ko: str, name_en: str | None, market: str) -> None:
    sym = by_code(code)
    assert sym is not None
    assert sym.name_ko == name_ko
    assert sym.market == market
    if name_en is not None:
        assert sym.name_en == name_en


def test_reference_prices_exercise_every_tick_band() -> None:
    refs = [s.ref_price for s in SYMBOLS]
    assert {tick_size(p) for p in refs} == {1, 5, 10, 50, 100, 500, 1_000}
    assert sum(p < 2_000 for p in refs) >= 2
    assert sum(2_000 <= p < 5_000 for p in refs) >= 2
    assert max(refs) > 500_000


def test_by_code() -> None:
    sym = by_code("005930")
    assert isinstance(sym, PaperSymbol)
    assert sym.name_en == "Samsung Electronics"
    assert sym.info == SymbolInfo("005930", "삼성전자", "Samsung Electronics", "KOSPI")
    assert by_code("999999") is None
    assert by_code("5930") is None


# ---- search ----------------------------------------------------------------------


def codes_of(results: list[SymbolInfo]) -> list[str]:
    return [r.code for r in results]


def test_search_by_exact_code_and_prefix() -> None:
    assert codes_of(search("005930"))[0] == "005930"
    assert codes_of(search("  005930\t")) == ["005930"]  # trimmed
    prefixed = codes_of(search("0059"))
    assert "005930" in prefixed
    assert all(c.startswith("0059") for c in prefixed)
    # A code prefix does not match the middle of a code.
    assert "005930" not in codes_of(search("5930"))


def test_search_by_korean_name() -> None:
    assert codes_of(search("하이닉스")) == ["000660"]
    samsung = codes_of(search("삼성"))
    assert {"005930", "207940", "006400"} <= set(samsung)
    assert all("삼성" in by_code(c).name_ko for c in samsung)  # type: ignore[union-attr]


def test_search_by_english_name_is_case_insensitive() -> None:
    assert codes_of(search("samsung electronics")) == ["005930"]
    assert codes_of(search("HYNIX")) == ["000660"]
    # "EcoPro" is an exact (English) name, "EcoPro BM" only a prefix match.
    assert codes_of(search("ecopro")) == ["086520", "247540"]


def test_search_ranks_exact_then_prefix_then_substring() -> None:
    # 카카오 (exact name) before 카카오뱅크 / 카카오게임즈 (prefix).
    kakao = codes_of(search("카카오"))
    assert kakao[0] == "035720"
    assert set(kakao) == {"035720", "323410", "293490"}
    # KT (exact) before KT&G (prefix).
    assert codes_of(search("kt"))[:2] == ["030200", "033780"]
    # "에코프로": exact 086520 first, then the prefix match 247540 (에코프로비엠),
    # although 247540 comes first in the master.
    assert codes_of(search("에코프로")) == ["086520", "247540"]
    # "in": only "Industrial Bank of Korea" starts with it; "KB Financial Group" and
    # "Shinhan Financial Group" merely contain it, and come first in the master.
    inside = codes_of(search("in"))
    assert inside[0] == "024110"
    assert {"105560", "055550"} <= set(inside[1:])


def test_search_limit_and_empty_or_garbage_queries() -> None:
    assert search("") == []
    assert search("   ") == []
    assert search("zzzz-no-such-company") == []
    assert search("999999") == []
    assert len(search("0", limit=5)) == 5
    assert search("삼성", limit=0) == []


def test_search_returns_plain_symbol_info() -> None:
    (hit,) = search("005930")
    assert type(hit) is SymbolInfo
    assert hit == SymbolInfo("005930", "삼성전자", "Samsung Electronics", "KOSPI")


# ---- market: protocol, quotes, subscriptions ---------------------------------------


async def test_implements_the_market_data_protocol() -> None:
    # Market data only: orders and balances come from a PaperBroker on top of it.
    market = SimulatedMarket()
    assert isinstance(market, MarketData)
    assert not isinstance(market, Broker)
    assert market.name == "paper"
    listed = await market.list_symbols()
    assert [s.code for s in listed] == ALL_CODES
    assert all(type(s) is SymbolInfo for s in listed)


async def test_quote_before_any_trade_is_the_reference_price() -> None:
    now = TRADING_DAY_10AM.astimezone(UTC)
    market = SimulatedMarket(clock=lambda: now)
    quote = await market.quote("005930")
    ref = by_code("005930").ref_price  # type: ignore[union-attr]
    assert quote == Quote("005930", ref, ref, ref, ref, ref, 0, now)


async def test_unknown_symbol_raises_and_changes_nothing() -> None:
    market = SimulatedMarket()
    with pytest.raises(UnknownSymbol) as exc:
        await market.quote("999999")
    assert isinstance(exc.value, BrokerError)
    assert exc.value.symbol == "999999"

    with pytest.raises(UnknownSymbol):
        await market.subscribe(["005930", "999999"])
    assert market.subscribed == frozenset()
    assert market.step(TRADING_DAY_10AM) == []

    await market.subscribe(["005930"])
    with pytest.raises(UnknownSymbol):
        await market.unsubscribe(["005930", "nope"])
    assert market.subscribed == {"005930"}

    with pytest.raises(TypeError):
        await market.subscribe("005930")


async def test_only_subscribed_symbols_trade() -> None:
    market = await subscribed_market(["005930", "001510"])
    ticks = run(market, TRADING_DAY_10AM, 200, timedelta(seconds=1))
    assert {t.symbol for t in ticks} == {"005930", "001510"}
    await market.unsubscribe(["005930", "000660"])
    later = run(market, TRADING_DAY_10AM + timedelta(hours=1), 200, timedelta(seconds=1))
    assert {t.symbol for t in later} == {"001510"}


# ---- market: the price process -------------------------------------------------------


async def test_same_seed_gives_the_same_ticks() -> None:
    a = await subscribed_market(ALL_CODES, seed=42)
    b = await subscribed_market(ALL_CODES, seed=42)
    c = await subscribed_market(ALL_CODES, seed=43)
    ta = run(a, TRADING_DAY_10AM, 300, timedelta(seconds=1))
    tb = run(b, TRADING_DAY_10AM, 300, timedelta(seconds=1))
    tc = run(c, TRADING_DAY_10AM, 300, timedelta(seconds=1))
    assert ta and ta == tb
    assert ta != tc


async def test_a_symbols_sequence_does_not_depend_on_other_subscriptions() -> None:
    alone = await subscribed_market(["005930"])
    crowded = await subscribed_market(["000660", "005930", "001510", "247540"])
    late = await subscribed_market(["005930"])
    start, every = TRADING_DAY_10AM, timedelta(seconds=1)
    for i in range(500):
        if i == 250:
            await late.subscribe(ALL_CODES)  # others join halfway through
        alone.step(start + i * every)
        crowded.step(start + i * every)
        late.step(start + i * every)
    quotes = [await m.quote("005930") for m in (alone, crowded, late)]
    assert quotes[0].volume > 0
    assert quotes[0] == quotes[1] == quotes[2]

    a = await subscribed_market(["005930"])
    b = await subscribed_market(ALL_CODES)
    ta = run(a, start, 300, every)
    tb = [t for t in run(b, start, 300, every) if t.symbol == "005930"]
    assert ta == tb


async def test_long_run_prices_on_tick_within_limits_and_moving() -> None:
    market = await subscribed_market(ALL_CODES, seed=7)
    start = datetime(2025, 3, 5, 0, 0, tzinfo=KST)
    every = timedelta(minutes=1)  # 5,000 steps ~ 3.5 days, so limits roll over too
    last: dict[str, int] = {}
    per_symbol: dict[str, list[int]] = defaultdict(list)
    days = set()
    for i in range(5_000):
        now = start + i * every
        ticks = market.step(now)
        assert len({t.symbol for t in ticks}) == len(ticks)  # at most one trade each
        for t in ticks:
            quote = await market.quote(t.symbol)
            lower, upper = price_limits(quote.prev_close)
            assert is_on_tick(t.price), t
            assert lower <= t.price <= upper, (t, quote)
            assert quote.low <= t.price <= quote.high
            assert t.volume > 0
            assert t.ts == now and t.ts.tzinfo is UTC
            if t.symbol in last:
                assert t.price != last[t.symbol], t  # every print moves the price
            last[t.symbol] = t.price
            per_symbol[t.symbol].append(t.price)
            days.add(now.date())
    assert len(days) >= 3
    assert set(per_symbol) == set(ALL_CODES)
    for code, prices in per_symbol.items():
        assert len(set(prices)) > 20, code
        ups = sum(b > a for a, b in zip(prices, prices[1:], strict=False))
        downs = sum(b < a for a, b in zip(prices, prices[1:], strict=False))
        assert ups > 100 and downs > 100, code


async def test_prices_are_pulled_back_towards_the_reference() -> None:
    # Without the pull, 20,000 steps of 1-3 ticks wander ~12% on average and up
    # to ~50% from the reference (limits roll daily); with it, a few percent.
    codes = ["001510", "452260", "088350", "034220", "035720", "005930", "373220", "207940"]
    market = await subscribed_market(codes, seed=7)
    start = datetime(2025, 3, 5, 0, 0, tzinfo=UTC)
    deviations = [
        abs(t.price / by_code(t.symbol).ref_price - 1)  # type: ignore[union-attr]
        for t in run(market, start, 20_000, timedelta(seconds=30))
    ]
    assert max(deviations) < 0.2
    assert sum(deviations) / len(deviations) < 0.04


async def test_limits_clamp_and_the_price_bounces_off_them() -> None:
    # Reference 10 won: limits 7..13, so 1-3 tick moves hit both within minutes.
    tiny = PaperSymbol("900010", "테스트", "Test", "KOSDAQ", 10)
    locked = PaperSymbol("900001", "잠김", "Locked", "KOSDAQ", 1)  # limits 1..1
    market = SimulatedMarket(symbols=[tiny, locked])
    await market.subscribe(["900010", "900001"])
    ticks = run(market, TRADING_DAY_10AM, 2_000, timedelta(seconds=1))
    prices = [t.price for t in ticks if t.symbol == "900010"]
    assert set(prices) <= set(range(7, 14))
    assert {7, 13} <= set(prices)
    assert all(a != b for a, b in zip(prices, prices[1:], strict=False))
    assert {t.price for t in ticks if t.symbol == "900001"} == {1}
    assert [s.code for s in await market.list_symbols()] == ["900010", "900001"]
    with pytest.raises(UnknownSymbol):
        await market.quote("005930")


async def test_day_rollover_sets_prev_close_and_resets_the_day() -> None:
    market = await subscribed_market(["005930", "001510"], always_open=False)
    day1 = run(market, TRADING_DAY_10AM, 300, timedelta(seconds=1))
    ref = by_code("005930").ref_price  # type: ignore[union-attr]
    samsung1 = [t for t in day1 if t.symbol == "005930"]
    q1 = await market.quote("005930")
    assert q1.prev_close == ref
    assert q1.price == samsung1[-1].price
    assert q1.open == samsung1[0].price
    assert q1.high == max(t.price for t in samsung1)
    assert q1.low == min(t.price for t in samsung1)
    assert q1.volume == sum(t.volume for t in samsung1)

    # Thursday 08:00 KST: before the open, but already a new session date.
    before_open = datetime(2025, 3, 6, 8, 0, tzinfo=KST)
    assert market.step(before_open) == []
    q2 = await market.quote("005930")
    close1 = samsung1[-1].price
    assert q2.prev_close == close1 != ref
    assert (q2.price, q2.open, q2.high, q2.low, q2.volume) == (close1, close1, close1, close1, 0)
    assert q2.ts == before_open.astimezone(UTC)

    day2 = run(market, datetime(2025, 3, 6, 10, 0, tzinfo=KST), 100, timedelta(seconds=1))
    samsung2 = [t for t in day2 if t.symbol == "005930"]
    q3 = await market.quote("005930")
    assert q3.prev_close == close1
    assert q3.open == samsung2[0].price
    assert q3.volume == sum(t.volume for t in samsung2)
    assert q3.ts == samsung2[-1].ts


def test_step_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        SimulatedMarket().step(datetime(2025, 3, 5, 10, 0))


# ---- market: session hours -----------------------------------------------------------


async def test_closed_outside_krx_hours() -> None:
    market = await subscribed_market(ALL_CODES, always_open=False)
    saturday = datetime(2025, 3, 8, 10, 0, tzinfo=KST)
    night = datetime(2025, 3, 5, 3, 0, tzinfo=KST)
    holiday = datetime(2025, 3, 3, 10, 0, tzinfo=KST)  # substitute holiday for 삼일절
    for closed in (saturday, night, holiday):
        assert run(market, closed, 30, timedelta(seconds=1)) == []
    assert run(market, TRADING_DAY_10AM, 30, timedelta(seconds=1))


async def test_always_open_trades_at_night() -> None:
    market = await subscribed_market(ALL_CODES)
    assert run(market, datetime(2025, 3, 8, 3, 0, tzinfo=KST), 5, timedelta(seconds=1))


def test_is_krx_open_edges() -> None:
    assert is_krx_open(datetime(2025, 3, 5, 9, 0, tzinfo=KST))
    assert not is_krx_open(datetime(2025, 3, 5, 8, 59, 59, tzinfo=KST))
    assert is_krx_open(datetime(2025, 3, 5, 15, 29, 59, tzinfo=KST))
    assert not is_krx_open(datetime(2025, 3, 5, 15, 30, tzinfo=KST))
    # The first trading day of the year opens an hour late.
    assert not is_krx_open(datetime(2025, 1, 2, 9, 30, tzinfo=KST))
    assert is_krx_open(datetime(2025, 1, 2, 10, 0, tzinfo=KST))
    # Outside the calendar's range counts as closed instead of raising.
    assert not is_krx_open(datetime(1990, 3, 5, 10, 0, tzinfo=KST))
    with pytest.raises(ValueError):
        is_krx_open(datetime(2025, 3, 5, 10, 0))


# ---- market: the async stream -----------------------------------------------------------


def stepping_clock(start: datetime, every: timedelta) -> tuple[list[datetime], object]:
    seen: list[datetime] = []

    def clock() -> datetime:
        now = start + len(seen) * every
        seen.append(now)
        return now

    return seen, clock


async def test_ticks_stream_yields_and_stops_after_close() -> None:
    seen, clock = stepping_clock(TRADING_DAY_10AM.astimezone(UTC), timedelta(seconds=1))
    market = SimulatedMarket(tick_interval=0.01, clock=clock)  # type: ignore[arg-type]
    await market.subscribe(["005930", "000660"])
    got: list[Tick] = []

    async def consume() -> None:
        async for tick in market.ticks():
            got.append(tick)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        while len(got) < 20:
            await asyncio.sleep(0.01)
    await market.close()
    async with asyncio.timeout(2):
        await task
    n = len(got)
    await asyncio.sleep(0.05)
    assert len(got) == n  # nothing after close
    assert {t.symbol for t in got} == {"005930", "000660"}
    assert {t.ts for t in got} <= set(seen)  # stamped with the injected clock

    # The stream is the synchronous core, stepped on the clock's instants.
    replay = await subscribed_market(["005930", "000660"])
    expected = [t for now in seen for t in replay.step(now)]
    assert got == expected[: len(got)]


async def test_close_interrupts_a_long_pause() -> None:
    market = await subscribed_market(["005930"], tick_interval=60.0)
    stream = market.ticks()
    async with asyncio.timeout(5):
        first = await anext(stream)
        assert first.symbol == "005930"
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        await market.close()
        with pytest.raises(StopAsyncIteration):
            await pending
    assert market.subscribed == frozenset()


async def test_ticks_on_a_closed_market_follow_the_calendar() -> None:
    saturday = datetime(2025, 3, 8, 10, 0, tzinfo=UTC)
    market = await subscribed_market(
        ALL_CODES, always_open=False, tick_interval=0.01, clock=lambda: saturday
    )
    got: list[Tick] = []

    async def consume() -> None:
        async for tick in market.ticks():
            got.append(tick)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await market.close()
    async with asyncio.timeout(2):
        await task
    assert got == []
