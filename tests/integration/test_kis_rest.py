"""The KIS REST adapter against a loopback fake of KIS over real HTTP on 127.0.0.1.

The fake speaks KIS's protocol (headers, envelopes, paging, tr_ids, token rules, its
own rate limit) and records what it saw, so these tests check the adapter's requests
at the server: the exact tr_ids and bodies, the paging context sent back, and how
many requests arrived in any one-second window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from brokers.base import (
    AuthExpired,
    BrokerUnavailable,
    CandlePeriod,
    Fill,
    MarketClosed,
    OrderAck,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    RateLimited,
    UnknownSymbol,
)
from brokers.kis import trids
from brokers.kis.clock import SystemClock
from brokers.kis.errors import InvalidOrder, MalformedResponse, Unsupported
from brokers.kis.market import KisMarketData
from brokers.kis.rest import KisRest, Paths
from brokers.kis.stream import KisStream
from brokers.kis.tokens import CachedToken, MemoryTokenStore
from brokers.paper.symbols import SYMBOLS
from brokers.ratelimit import reset_registry
from engines.market import KST, CandleAggregator, Tick, Timeframe
from tests.kis_fake import DailyRow, FakeQuote, Holding, KisFake
from tests.loopback import LoopbackServer

SECRET = "S" * 180
ACCOUNT = "50123456"
SAMSUNG = "005930"
HYNIX = "000660"
# A fixed "now" for tests about today: Thursday 2026-03-05 11:00:30 KST, a trading day.
FIXED_NOW = datetime(2026, 3, 5, 11, 0, 30, tzinfo=KST)


class ShiftClock(SystemClock):
    """Real time shifted by an offset the test controls (the fake gets the same one),
    or frozen at a given instant. Monotonic time and sleeps stay real."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.frozen: datetime | None = None

    def now(self) -> datetime:
        base = self.frozen if self.frozen is not None else super().now()
        return base + self.offset


class Kis:
    """One fake server plus the adapter(s) a test builds against it."""

    def __init__(self, fake: KisFake, server: LoopbackServer, app_key: str) -> None:
        self.fake, self.server, self.app_key = fake, server, app_key
        self.clock = ShiftClock()
        self.clients: list[KisRest] = []

    def rest(self, **kw: object) -> KisRest:
        args: dict[str, object] = {
            "app_key": self.app_key,
            "app_secret": SECRET,
            "paper": self.fake.paper,
            "account_no": ACCOUNT,
            "base_url": self.server.base_url,
            "clock": self.clock,
            "backoff_base": 0.02,
        }
        args.update(kw)
        client = KisRest(**args)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def advance(self, seconds: float) -> None:
        """Move both wall clocks (client and fake) forward: minutes pass instantly."""
        self.clock.offset += timedelta(seconds=seconds)
        self.fake.advance(seconds)

    def at(self, when: datetime) -> None:
        """Freeze both wall clocks at ``when`` (``advance`` still moves them)."""
        self.clock.frozen = self.fake.frozen_at = when.astimezone(UTC)
        self.clock.offset = self.fake.offset = timedelta(0)

    def tokens_seen(self, path: str | None = None) -> list[str]:
        return [
            r.headers.get("authorization", "").removeprefix("Bearer ")
            for r in self.fake.uapi_requests(path)
        ]


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
async def kis_factory() -> AsyncIterator[Callable[..., Kis]]:
    made: list[Kis] = []

    def make(**fake_kw: object) -> Kis:
        app_key = "PS" + secrets.token_hex(17)
        fake = KisFake(app_keys={app_key: SECRET}, **fake_kw)  # type: ignore[arg-type]
        kis = Kis(fake, fake.serve(), app_key)
        made.append(kis)
        return kis

    yield make
    for kis in made:
        for client in kis.clients:
            await client.close()
        kis.server.stop()


@pytest.fixture
def kis(kis_factory: Callable[..., Kis]) -> Kis:
    return kis_factory(quotes={SAMSUNG: FakeQuote(70_000, 69_000, 69_500, 70_500, 68_900, 1234)})


# --- tr_ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real", "paper"),
    [
        ("TTTC0012U", "VTTC0012U"),
        ("TTTC0011U", "VTTC0011U"),
        ("TTTC0013U", "VTTC0013U"),
        ("TTTC8434R", "VTTC8434R"),
        ("TTTC8001R", "VTTC8001R"),
        ("JTTT1002U", "VTTT1002U"),
        ("CTCA0903R", "VTCA0903R"),
        ("FHKST01010100", "FHKST01010100"),
        ("FHKST03010100", "FHKST03010100"),
        ("FHKST03010230", "FHKST03010230"),
        ("HHKDB669107C0", "HHKDB669107C0"),
    ],
)
def test_paper_tr_id_rule(real: str, paper: str):
    assert trids.for_mode(real, paper=False) == real
    assert trids.for_mode(real, paper=True) == paper


# --- headers and tokens ------------------------------------------------------------


async def test_headers_are_exactly_what_kis_expects(kis: Kis):
    kis.fake.holdings = [Holding(f"00{i}000", f"n{i}", 1, 100.0, 100) for i in range(3)]
    kis.fake.balance_page_size = 2
    rest = kis.rest()
    await rest.quote(SAMSUNG)
    await rest.balance()
    (token,) = set(kis.tokens_seen())
    assert len(token) > 200
    first, page1, page2 = kis.fake.uapi_requests()
    for seen, tr_id, tr_cont in (
        (first, "FHKST01010100", ""),
        (page1, "TTTC8434R", ""),
        (page2, "TTTC8434R", "N"),
    ):
        assert {k: seen.headers[k] for k in _HEADER_NAMES} == {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {token}",
            "appkey": kis.app_key,
            "appsecret": SECRET,
            "tr_id": tr_id,
            "custtype": "P",
            "tr_cont": tr_cont,
        }
    assert first.params == {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SAMSUNG}


_HEADER_NAMES = ("content-type", "authorization", "appkey", "appsecret", "tr_id", "custtype")
_HEADER_NAMES += ("tr_cont",)


async def test_fake_refuses_missing_headers_like_kis(kis: Kis):
    """Guard the guard: the fake must refuse what KIS refuses, or the header test is void."""
    rest = kis.rest()
    await rest.quote(SAMSUNG)
    token = kis.tokens_seen()[0]
    good = {
        "content-type": "application/json; charset=utf-8",
        "authorization": f"Bearer {token}",
        "appkey": kis.app_key,
        "appsecret": SECRET,
        "tr_id": "FHKST01010100",
        "custtype": "P",
    }
    url = kis.server.base_url + Paths.PRICE
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SAMSUNG}
    async with httpx.AsyncClient() as client:
        assert (await client.get(url, params=params, headers=good)).json()["rt_cd"] == "0"
        for name in ("appkey", "appsecret", "authorization", "tr_id", "custtype"):
            headers = {k: v for k, v in good.items() if k != name}
            reply = await client.get(url, params=params, headers=headers)
            assert reply.json()["rt_cd"] == "1", name
        wrong_mode = {**good, "tr_id": "VTTC8434R"}
        reply = await client.get(kis.server.base_url + Paths.BALANCE, headers=wrong_mode)
        assert reply.json()["msg_cd"] == "OPSQ0002"


async def test_token_is_cached_and_survives_a_restart(kis: Kis):
    store = MemoryTokenStore()
    first = kis.rest(token_store=store)
    await first.quote(SAMSUNG)
    await first.quote(SAMSUNG)
    assert kis.fake.issues == [kis.app_key]
    assert store.saves == 1 and store.token is not None
    await first.close()
    # A new process: new client, new limiter registry, same store.
    reset_registry()
    second = kis.rest(token_store=store)
    await second.quote(SAMSUNG)
    assert kis.fake.issues == [kis.app_key]  # no second issue
    assert len(set(kis.tokens_seen())) == 1
    # ...until the token is about to expire: within the 5-minute margin it is replaced.
    kis.advance(24 * 3600 - 4 * 60)
    third = kis.rest(token_store=store)
    await third.quote(SAMSUNG)
    assert kis.fake.issues == [kis.app_key, kis.app_key]
    assert len(set(kis.tokens_seen())) == 2
    assert store.token.access_token == kis.tokens_seen()[-1]
    # The token never shows in a repr.
    assert store.token.access_token not in repr(store) + repr(store.token) + str(store.token)
    assert "***" in repr(store.token)


async def test_expiry_comes_from_access_token_token_expired(kis: Kis):
    kis.fake.token_lifetime = timedelta(hours=2)
    kis.fake.expires_in_override = 86_400  # a misleading expires_in must not be used
    kis.at(FIXED_NOW)
    store = MemoryTokenStore()
    await kis.rest(token_store=store).quote(SAMSUNG)
    assert store.token is not None
    assert store.token.expires_at == FIXED_NOW.astimezone(UTC) + timedelta(hours=2)
    assert store.token.issued_at == FIXED_NOW.astimezone(UTC)


async def test_concurrent_callers_share_one_issue(kis: Kis):
    rest = kis.rest()
    await asyncio.gather(*(rest.quote(SAMSUNG) for _ in range(8)))
    assert kis.fake.issues == [kis.app_key]


async def test_issue_limit_egw00133_is_rate_limited_without_hammering(kis: Kis):
    await kis.rest(token_store=MemoryTokenStore()).quote(SAMSUNG)
    other = kis.rest(token_store=MemoryTokenStore())  # e.g. a process with no shared cache
    with pytest.raises(RateLimited) as caught:
        await other.quote(SAMSUNG)
    assert 0 < caught.value.retry_after <= 60
    assert "EGW00133" in str(caught.value)
    token_calls = kis.fake.token_requests
    with pytest.raises(RateLimited):  # remembered: no second request to tokenP
        await other.quote(SAMSUNG)
    assert kis.fake.token_requests == token_calls
    kis.advance(61)
    await other.quote(SAMSUNG)
    assert kis.fake.issues == [kis.app_key, kis.app_key]


async def test_reissue_within_a_minute_is_refused_locally(kis: Kis):
    rest = kis.rest()
    await rest.quote(SAMSUNG)
    kis.fake.expire_tokens()
    token_calls = kis.fake.token_requests
    with pytest.raises(RateLimited) as caught:
        await rest.quote(SAMSUNG)
    assert 0 < caught.value.retry_after <= 60
    assert kis.fake.token_requests == token_calls  # never asked


@pytest.mark.parametrize("status", [200, 500])
async def test_expired_token_egw00123_reissues_once_and_retries_once(kis: Kis, status: int):
    kis.fake.expired_status = status
    store = MemoryTokenStore()
    rest = kis.rest(token_store=store)
    await rest.quote(SAMSUNG)
    kis.fake.expire_tokens()
    kis.advance(61)
    quote = await rest.quote(SAMSUNG)
    assert quote.price == 70_000
    assert kis.fake.issues == [kis.app_key, kis.app_key]
    t1, t1_again, t2 = kis.tokens_seen()
    assert t1 == t1_again and t2 != t1
    assert store.token is not None and store.token.access_token == t2


@pytest.mark.parametrize("status", [200, 500])
async def test_second_egw00123_in_a_row_is_auth_expired(kis: Kis, status: int):
    kis.fake.expired_status = status
    rest = kis.rest()
    await rest.quote(SAMSUNG)
    kis.fake.expire_tokens()
    kis.fake.born_expired = True
    kis.advance(61)
    with pytest.raises(AuthExpired) as caught:
        await rest.quote(SAMSUNG)
    assert len(kis.fake.issues) == 2  # one re-issue, not a loop
    assert len(kis.fake.uapi_requests()) == 3  # first call, expired, one retry
    for token in set(kis.tokens_seen()):
        assert token not in str(caught.value) and token not in repr(caught.value)


async def test_revoke(kis: Kis):
    store = MemoryTokenStore()
    rest = kis.rest(token_store=store)
    await rest.quote(SAMSUNG)
    assert await rest.tokens.revoke() is True
    assert kis.fake.revocations == [kis.app_key] and store.token is None
    kis.advance(61)
    await rest.quote(SAMSUNG)
    assert len(set(kis.tokens_seen())) == 2


async def test_token_never_logged(kis: Kis, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    rest = kis.rest(token_store=store)
    await rest.quote(SAMSUNG)
    kis.fake.expire_tokens()
    kis.fake.born_expired = True
    kis.advance(61)
    with pytest.raises(AuthExpired):
        await rest.quote(SAMSUNG)
    tokens = set(kis.tokens_seen())
    assert len(tokens) == 2 and caplog.records
    for token in tokens:
        assert token not in caplog.text
        assert token[-40:] not in caplog.text
    assert SECRET not in caplog.text and SECRET not in repr(rest)


# --- rate limiting -----------------------------------------------------------------


@pytest.mark.parametrize(("paper", "calls"), [(True, 12), (False, 60)])
async def test_rate_limit_measured_at_the_fake(kis_factory, paper: bool, calls: int):
    kis = kis_factory(paper=paper, quotes={SAMSUNG: FakeQuote(100, 100, 100, 100, 100, 1)})
    limit = 2 if paper else 20
    # Two adapters of the same app key (two accounts of one user, or two tasks) share
    # one limiter; the token is issued before the clock starts.
    store = MemoryTokenStore()
    one, two = kis.rest(token_store=store), kis.rest(token_store=store)
    assert one.limiter is two.limiter
    await one.tokens.token()
    await two.tokens.token()
    kis.fake.requests.clear()
    kis.fake.arrivals.clear()
    started = time.monotonic()
    quotes = await asyncio.gather(*((one if i % 2 else two).quote(SAMSUNG) for i in range(calls)))
    elapsed = time.monotonic() - started
    assert [q.price for q in quotes] == [100] * calls
    assert len(kis.fake.arrivals[kis.app_key]) == calls  # not one EGW00201 retry
    worst = kis.fake.max_in_window(kis.app_key, 1.0)
    logging.getLogger(__name__).warning(
        "rate %d/s: %d calls in %.2f s, max %d in any 1-s window at the fake",
        limit,
        calls,
        elapsed,
        worst,
    )
    assert worst == limit  # never more, and the budget is used
    windows = math.ceil(calls / limit) - 1
    assert elapsed >= windows * 1.0
    # Not absurdly slow: a limiter that serialised or over-waited would take tens of
    # seconds. The margin is wide because the full CI session runs this on 2 cores next
    # to the session-long e2e app: 4.6 s twice there, 2.1-2.3 s alone.
    assert elapsed <= windows * 1.1 + 4.0


async def test_fake_enforces_its_own_rate_limit(kis_factory):
    """Guard the guard: an unthrottled burst does get EGW00201 from the fake."""
    kis = kis_factory(paper=True, quotes={SAMSUNG: FakeQuote(100, 100, 100, 100, 100, 1)})
    rest = kis.rest()
    token = await rest.tokens.token()
    headers = {
        "authorization": f"Bearer {token}",
        "appkey": kis.app_key,
        "appsecret": SECRET,
        "tr_id": "FHKST01010100",
        "custtype": "P",
    }
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SAMSUNG}
    async with httpx.AsyncClient() as client:
        replies = [
            await client.get(kis.server.base_url + Paths.PRICE, params=params, headers=headers)
            for _ in range(5)
        ]
    codes = [(r.status_code, r.json()["msg_cd"]) for r in replies]
    assert codes[:2] == [(200, "MCA00000")] * 2
    assert codes[2:] == [(500, "EGW00201")] * 3


@pytest.mark.parametrize("status", [200, 500])
async def test_egw00201_is_retried_with_backoff(kis: Kis, status: int):
    kis.fake.rate_limit_status = status
    rest = kis.rest()
    await rest.tokens.token()
    kis.fake.force_rate_limited = 2
    assert (await rest.quote(SAMSUNG)).price == 70_000
    assert len(kis.fake.uapi_requests()) == 3


async def test_egw00201_gives_up_after_bounded_retries(kis: Kis):
    rest = kis.rest(max_rate_retries=3)
    await rest.tokens.token()
    kis.fake.force_rate_limited = 100
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await rest.quote(SAMSUNG)
    assert len(kis.fake.uapi_requests()) == 4  # the call and three retries
    assert caught.value.retry_after is not None
    # backoff_base 0.02: 0.01-0.02, 0.02-0.04, 0.04-0.08 s of jittered pauses
    assert 0.07 <= time.monotonic() - started < 3


# --- paging ------------------------------------------------------------------------


async def test_balance_walks_three_pages(kis: Kis):
    kis.fake.cash = 1_234_567
    kis.fake.balance_page_size = 2
    kis.fake.holdings = [
        Holding(SAMSUNG, "삼성전자", 10, 68_000.5, 70_000),
        Holding(HYNIX, "SK하이닉스", 3, 150_000.0, 160_000),
        Holding("035420", "NAVER", 1, 200_000.0, 190_000),
        Holding("035720", "카카오", 0, 0.0, 40_000),  # sold today: KIS lists it with 0
        Holding("051910", "LG화학", 2, 300_000.0, 310_000),
        Holding("006400", "삼성SDI", 4, 250_000.0, 245_000),
    ]
    balance = await kis.rest().balance()
    assert balance.cash == 1_234_567
    assert [(p.symbol, p.qty, p.avg_price, p.price) for p in balance.positions] == [
        (SAMSUNG, 10, 68_000.5, 70_000),
        (HYNIX, 3, 150_000.0, 160_000),
        ("035420", 1, 200_000.0, 190_000),
        ("051910", 2, 300_000.0, 310_000),
        ("006400", 4, 250_000.0, 245_000),
    ]
    assert balance.positions[0].name == "삼성전자"
    pages = kis.fake.uapi_requests(Paths.BALANCE)
    assert [p.headers["tr_cont"] for p in pages] == ["", "N", "N"]
    assert [p.params["CTX_AREA_NK100"].strip() for p in pages] == [
        "",
        f"{ACCOUNT}^01^2",
        f"{ACCOUNT}^01^4",
    ]
    # sent back exactly as received, padding included
    assert len(pages[1].params["CTX_AREA_NK100"]) == 100


def _weekdays(first: date, count: int) -> list[date]:
    days, d = [], first
    while len(days) < count:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def _series(days: list[date]) -> list[DailyRow]:
    rows = []
    for i, d in enumerate(days):
        close = 50_000 + 100 * (i % 37)
        rows.append(DailyRow(d, close - 100, close + 200, close - 300, close, 1_000 + i))
    return rows


async def test_daily_candles_walk_back_past_100_rows(kis: Kis):
    days = _weekdays(date(2025, 1, 1), 250)
    kis.fake.daily = {SAMSUNG: _series(days)}
    rest = kis.rest()
    bars = await rest.candles(SAMSUNG, CandlePeriod.DAY, date(2024, 12, 1), days[-1])
    assert len(bars) == 250
    assert [b.start for b in bars] == [
        datetime(d.year, d.month, d.day, 9, tzinfo=KST).astimezone(UTC) for d in days
    ]
    first, last = bars[0], bars[-1]
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        49_900,
        50_200,
        49_700,
        50_000,
        1_000,
    )
    close = 50_000 + 100 * (249 % 37)
    assert (last.close, last.volume, last.timeframe) == (close, 1_249, Timeframe.D1)
    sent = [r.params["FID_INPUT_DATE_2"] for r in kis.fake.uapi_requests(Paths.DAILY_CANDLES)]
    # 100 + 100 + 50 rows, then one empty page proves nothing older exists
    assert sent == [
        days[-1].strftime("%Y%m%d"),
        (days[150] - timedelta(days=1)).strftime("%Y%m%d"),
        (days[50] - timedelta(days=1)).strftime("%Y%m%d"),
        (days[0] - timedelta(days=1)).strftime("%Y%m%d"),
    ]
    params = kis.fake.uapi_requests(Paths.DAILY_CANDLES)[0].params
    assert (params["FID_INPUT_DATE_1"], params["FID_PERIOD_DIV_CODE"]) == ("20241201", "D")
    assert params["FID_ORG_ADJ_PRC"] == "0"


async def test_daily_candles_stop_once_start_is_covered(kis: Kis):
    days = _weekdays(date(2025, 1, 1), 250)
    kis.fake.daily = {SAMSUNG: _series(days)}
    bars = await kis.rest().candles(SAMSUNG, CandlePeriod.DAY, days[120], days[239])
    assert len(bars) == 120
    assert bars[0].start.astimezone(KST).date() == days[120]
    assert bars[-1].start.astimezone(KST).date() == days[239]
    assert len(kis.fake.uapi_requests(Paths.DAILY_CANDLES)) == 2


async def test_weekly_candles_are_labelled_monday(kis: Kis):
    days = _weekdays(date(2025, 1, 6), 10)  # two full weeks
    kis.fake.daily = {SAMSUNG: _series(days)}
    bars = await kis.rest().candles(SAMSUNG, CandlePeriod.WEEK, days[0], days[-1])
    assert [(b.start.astimezone(KST), b.timeframe) for b in bars] == [
        (datetime(2025, 1, 6, 9, tzinfo=KST), Timeframe.W1),
        (datetime(2025, 1, 13, 9, tzinfo=KST), Timeframe.W1),
    ]
    assert [b.volume for b in bars] == [sum(range(1000, 1005)), sum(range(1005, 1010))]


async def test_month_candles_unsupported_without_a_request(kis: Kis):
    with pytest.raises(Unsupported):
        await kis.rest().candles(SAMSUNG, CandlePeriod.MONTH, date(2025, 1, 1), date(2025, 6, 1))
    assert kis.fake.requests == [] and kis.fake.issues == []


def _tape(day: date, start: str, minutes: int, every_s: int = 20) -> list[Tick]:
    t0 = datetime.combine(day, datetime.strptime(start, "%H%M").time(), tzinfo=KST)
    ticks = []
    for i in range(minutes * 60 // every_s):
        price = 70_000 + 100 * ((i * 7) % 11)
        ticks.append(Tick(SAMSUNG, price, 1 + i % 5, (t0 + timedelta(seconds=i * every_s))))
    return ticks


def _expected_minutes(ticks: list[Tick]) -> list:
    agg = CandleAggregator([Timeframe.M1])
    out = [c for t in ticks for c in agg.on_tick(t)]
    last = agg.current(SAMSUNG, Timeframe.M1)
    return out + ([last] if last else [])


async def test_minute_candles_of_a_past_day(kis: Kis):
    day = date(2026, 3, 4)
    today_tape = _tape(day, "0900", 150)
    # the previous trading day too: the "past data included" pages run into it
    kis.fake.tape = _tape(date(2026, 3, 3), "1400", 20) + today_tape
    kis.at(FIXED_NOW)
    bars = await kis.rest().minute_candles(SAMSUNG, day)
    assert bars == _expected_minutes(today_tape)
    assert len(bars) == 150
    assert bars[0].start == datetime(2026, 3, 4, 9, 0, tzinfo=KST).astimezone(UTC)
    assert bars[-1].start == datetime(2026, 3, 4, 11, 29, tzinfo=KST).astimezone(UTC)
    assert all(b.timeframe is Timeframe.M1 for b in bars)
    seen = kis.fake.uapi_requests(Paths.MINUTE_PAST)
    assert [r.headers["tr_id"] for r in seen] == ["FHKST03010230"] * 2
    assert [r.params["FID_INPUT_HOUR_1"] for r in seen] == ["180000", "092959"]
    assert {r.params["FID_INPUT_DATE_1"] for r in seen} == {"20260304"}
    assert kis.fake.uapi_requests(Paths.MINUTE_TODAY) == []


async def test_minute_candles_of_today(kis: Kis):
    day = FIXED_NOW.date()
    tape = _tape(day, "0900", 120) + [Tick(SAMSUNG, 71_000, 3, FIXED_NOW - timedelta(seconds=20))]
    kis.fake.tape = tape
    kis.at(FIXED_NOW)
    rest = kis.rest()
    bars = await rest.minute_candles(SAMSUNG, day)
    # 09:00..10:59 closed; the 11:00 bar is still forming at 11:00:30 and is left out
    assert bars == _expected_minutes(tape)[:-1]
    assert len(bars) == 120
    seen = kis.fake.uapi_requests(Paths.MINUTE_TODAY)
    # 30 rows a call, each walk step just before the oldest bar, then an empty page
    assert [r.params["FID_INPUT_HOUR_1"] for r in seen] == [
        "110030",
        "103059",
        "100059",
        "093059",
        "090059",
        "085959",
    ]
    upto = await rest.minute_candles(SAMSUNG, day, until_hhmmss="093000")
    assert [b.start.astimezone(KST).strftime("%H%M") for b in upto][-1] == "0930"
    assert len(upto) == 31


# --- orders ------------------------------------------------------------------------


@pytest.mark.parametrize("paper", [False, True])
async def test_orders_send_the_right_tr_ids_and_bodies(kis_factory, paper: bool):
    kis = kis_factory(paper=paper, quotes={SAMSUNG: FakeQuote(70_000, 69_000, 0, 0, 0, 0)})
    kis.at(FIXED_NOW)
    rest = kis.rest()
    buy = await rest.place_order(
        OrderRequest(SAMSUNG, OrderSide.BUY, 10, OrderType.LIMIT, 70_100, client_order_id="s-1")
    )
    sell = await rest.place_order(OrderRequest(SAMSUNG, OrderSide.SELL, 3, OrderType.MARKET, 5))
    assert buy == OrderAck("0000000001", "91252", FIXED_NOW.replace(second=30), "s-1")
    assert buy.ts == datetime(2026, 3, 5, 2, 0, 30, tzinfo=UTC)
    modified = await rest.modify_order(buy, 8, 70_000)
    assert modified.order_id == "0000000003" and modified.client_order_id == "s-1"
    await rest.cancel_order(sell, qty=1)
    await rest.cancel_order(modified)
    v = "V" if paper else "T"
    account = {"CANO": ACCOUNT, "ACNT_PRDT_CD": "01"}
    revise = {**account, "KRX_FWDG_ORD_ORGNO": "91252", "ORD_DVSN": "00"}
    assert kis.fake.orders_seen == [
        (
            f"{v}TTC0012U",
            {**account, "PDNO": SAMSUNG, "ORD_DVSN": "00", "ORD_QTY": "10", "ORD_UNPR": "70100"},
        ),
        (
            f"{v}TTC0011U",
            {**account, "PDNO": SAMSUNG, "ORD_DVSN": "01", "ORD_QTY": "3", "ORD_UNPR": "0"},
        ),
        (
            f"{v}TTC0013U",
            {
                **revise,
                "ORGN_ODNO": "0000000001",
                "RVSE_CNCL_DVSN_CD": "01",
                "ORD_QTY": "8",
                "ORD_UNPR": "70000",
                "QTY_ALL_ORD_YN": "N",
            },
        ),
        (
            f"{v}TTC0013U",
            {
                **revise,
                "ORGN_ODNO": "0000000002",
                "RVSE_CNCL_DVSN_CD": "02",
                "ORD_QTY": "1",
                "ORD_UNPR": "0",
                "QTY_ALL_ORD_YN": "N",
            },
        ),
        (
            f"{v}TTC0013U",
            {
                **revise,
                "ORGN_ODNO": "0000000003",
                "RVSE_CNCL_DVSN_CD": "02",
                "ORD_QTY": "0",
                "ORD_UNPR": "0",
                "QTY_ALL_ORD_YN": "Y",
            },
        ),
    ]


async def test_orders_and_fills_of_a_day(kis_factory):
    kis = kis_factory(quotes={SAMSUNG: FakeQuote(70_000, 69_000, 0, 0, 0, 0)})
    kis.fake.ccld_page_size = 2
    kis.at(FIXED_NOW)
    rest = kis.rest()
    a = await rest.place_order(OrderRequest(SAMSUNG, OrderSide.BUY, 10, OrderType.LIMIT, 70_000))
    b = await rest.place_order(OrderRequest(SAMSUNG, OrderSide.SELL, 4, OrderType.MARKET))
    c = await rest.place_order(OrderRequest(SAMSUNG, OrderSide.BUY, 1, OrderType.LIMIT, 69_900))
    kis.fake.fill(a.order_id, 6, 70_000)
    kis.fake.fill(a.order_id, 1, 69_900)
    kis.fake.fill(b.order_id, 4, 70_100)
    await rest.cancel_order(c)
    statuses = await rest.orders(FIXED_NOW.date())
    by_id = {s.order_id: s for s in statuses}
    assert len(statuses) == 4  # three orders and the cancel order, over two pages
    assert (by_id[a.order_id].state, by_id[a.order_id].filled_qty) == (OrderState.PARTIAL, 7)
    assert by_id[a.order_id].avg_fill_price == pytest.approx(69_985.71, abs=0.01)
    assert (by_id[b.order_id].state, by_id[b.order_id].order_type) == (
        OrderState.FILLED,
        OrderType.MARKET,
    )
    assert by_id[c.order_id].state is OrderState.CANCELLED
    assert len(kis.fake.uapi_requests(Paths.DAILY_CCLD)) == 2
    fills = await rest.fills(FIXED_NOW.date())
    ts = FIXED_NOW.replace(second=30).astimezone(UTC)
    assert sorted(fills, key=lambda f: f.order_id) == [
        Fill(a.order_id, SAMSUNG, OrderSide.BUY, 7, 69_986, ts),
        Fill(b.order_id, SAMSUNG, OrderSide.SELL, 4, 70_100, ts),
    ]
    assert kis.fake.uapi_requests(Paths.DAILY_CCLD)[-1].params["CCLD_DVSN"] == "01"


# --- errors ------------------------------------------------------------------------


async def test_closed_market_unknown_symbol_and_rejection(kis: Kis):
    rest = kis.rest()
    order = OrderRequest(SAMSUNG, OrderSide.BUY, 1, OrderType.LIMIT, 70_000)
    kis.fake.market_open = False
    with pytest.raises(MarketClosed, match="APBK0919"):
        await rest.place_order(order)
    kis.fake.market_open = True
    kis.fake.reject_next_order = "주문가능금액을 초과 했습니다"
    with pytest.raises(OrderRejected) as caught:
        await rest.place_order(order)
    assert str(caught.value) == "주문가능금액을 초과 했습니다"
    assert not isinstance(caught.value, InvalidOrder)
    with pytest.raises(UnknownSymbol) as unknown:
        await rest.quote("999990")
    assert unknown.value.symbol == "999990"
    with pytest.raises(UnknownSymbol):
        await rest.place_order(OrderRequest("999990", OrderSide.BUY, 1, OrderType.MARKET))
    assert (await rest.place_order(order)).order_id == "0000000001"


async def test_outages_are_broker_unavailable(kis: Kis):
    store = MemoryTokenStore()
    rest = kis.rest(token_store=store)
    await rest.quote(SAMSUNG)
    kis.fake.down = True
    with pytest.raises(BrokerUnavailable) as caught:
        await rest.quote(SAMSUNG)
    assert not isinstance(caught.value, MalformedResponse)
    kis.fake.down = False
    kis.fake.delay_s = 1.0
    slow = kis.rest(timeout=0.2, token_store=store)
    await slow.tokens.token()
    with pytest.raises(BrokerUnavailable, match="timed out"):
        await slow.quote(SAMSUNG)
    with pytest.raises(BrokerUnavailable, match="outcome unknown"):
        await slow.place_order(OrderRequest(SAMSUNG, OrderSide.BUY, 1, OrderType.MARKET))
    kis.fake.delay_s = 0.0
    nowhere = kis.rest(base_url="http://127.0.0.1:9")
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        await nowhere.quote(SAMSUNG)


@pytest.mark.parametrize(
    ("status", "raw", "error"),
    [
        (
            200,
            '{"rt_cd":"0","msg_cd":"MCA00000","msg1":"ok","output":{"stck_prpr":"abc"}}',
            MalformedResponse,
        ),
        (200, "not json at all", MalformedResponse),
        (200, '{"output": {}}', MalformedResponse),
        (502, "<html>Bad Gateway</html>", BrokerUnavailable),
    ],
)
async def test_garbage_answers_are_refused(kis: Kis, status: int, raw: str, error: type):
    rest = kis.rest()
    await rest.tokens.token()
    kis.fake.override_next = (status, raw)
    with pytest.raises(error):
        await rest.quote(SAMSUNG)


@pytest.mark.parametrize(
    "order",
    [
        OrderRequest(SAMSUNG, OrderSide.BUY, 0, OrderType.LIMIT, 70_000),
        OrderRequest(SAMSUNG, OrderSide.BUY, -5, OrderType.LIMIT, 70_000),
        OrderRequest(SAMSUNG, OrderSide.SELL, 1, OrderType.LIMIT, 70_050),  # tick is 100
        OrderRequest(SAMSUNG, OrderSide.SELL, 1, OrderType.LIMIT, 0),
        OrderRequest(SAMSUNG, "hold", 1, OrderType.LIMIT, 70_000),  # type: ignore[arg-type]
        OrderRequest(SAMSUNG, OrderSide.BUY, 1, "stop", 70_000),  # type: ignore[arg-type]
        OrderRequest(SAMSUNG, OrderSide.BUY, 1.5, OrderType.MARKET),  # type: ignore[arg-type]
    ],
)
async def test_bad_orders_are_refused_before_any_request(kis: Kis, order: OrderRequest):
    with pytest.raises(InvalidOrder):
        await kis.rest().place_order(order)
    assert kis.fake.requests == [] and kis.fake.issues == []


async def test_bad_modify_cancel_and_symbols_are_refused_before_any_request(kis: Kis):
    rest = kis.rest()
    ack = OrderAck("0000000001", "91252", datetime.now(UTC))
    with pytest.raises(InvalidOrder):
        await rest.modify_order(ack, 1, 1_999_999)  # tick is 1,000 above 500,000
    with pytest.raises(InvalidOrder):
        await rest.modify_order(ack, 0, 70_000)
    with pytest.raises(InvalidOrder):
        await rest.cancel_order(ack, qty=0)
    with pytest.raises(InvalidOrder):
        await rest.cancel_order(OrderAck("", "91252", datetime.now(UTC)))
    for symbol in ("12345", "0059300", "abc123", ""):
        with pytest.raises(UnknownSymbol):
            await rest.quote(symbol)
    assert kis.fake.requests == [] and kis.fake.issues == []


async def test_cached_token_repr_is_redacted():
    token = CachedToken("eyJ-very-secret", datetime.now(UTC), datetime.now(UTC))
    assert "eyJ-very-secret" not in repr(token) and "eyJ-very-secret" not in str(token)
    assert CachedToken.from_json(token.to_json()) == token


async def test_kis_broker_is_a_full_broker_over_the_users_own_key(kis_factory):
    from brokers.base import Broker, SymbolInfo
    from brokers.kis.broker import KisBroker
    from brokers.kis.stream import KisStream

    kis = kis_factory(paper=True, quotes={SAMSUNG: FakeQuote(70_000, 69_000, 0, 0, 0, 0)})
    kis.at(FIXED_NOW)
    rest = kis.rest()
    stream = KisStream(
        [(kis.app_key, SECRET)], ws_url="ws://127.0.0.1:9", rest_base_url=kis.server.base_url
    )
    broker = KisBroker(rest, stream, [SymbolInfo(SAMSUNG, "삼성전자", "Samsung", "KOSPI")])
    assert isinstance(broker, Broker)
    quote = await broker.quote(SAMSUNG)
    assert (quote.price, quote.prev_close) == (70_000, 69_000)
    ack = await broker.place_order(OrderRequest(SAMSUNG, OrderSide.BUY, 2, OrderType.LIMIT, 70_000))
    assert [tr for tr, _ in kis.fake.orders_seen] == ["VTTC0012U"]
    await broker.cancel_order(ack)
    assert [tr for tr, _ in kis.fake.orders_seen] == ["VTTC0012U", "VTTC0013U"]
    with pytest.raises(UnknownSymbol):
        await broker.quote("000000")  # not in the master list: refused before any request
    await broker.close()


async def test_minute_candles_since_stops_the_walk_and_can_keep_the_forming_bar(kis: Kis):
    """A takeover asks for the minutes since its last stored bar, forming one included:
    one call rather than the day's walk."""
    day = FIXED_NOW.date()
    tape = _tape(day, "0900", 120) + [Tick(SAMSUNG, 71_000, 3, FIXED_NOW - timedelta(seconds=20))]
    kis.fake.tape = tape
    kis.at(FIXED_NOW)
    since = datetime(day.year, day.month, day.day, 10, 50, tzinfo=KST)
    bars = await kis.rest().minute_candles(SAMSUNG, day, since=since, include_forming=True)
    everything = _expected_minutes(tape)
    assert bars == [b for b in everything if b.start >= since]
    assert bars[-1].start == datetime(day.year, day.month, day.day, 11, 0, tzinfo=KST)
    assert bars[-1].close == 71_000  # the forming bar, as far as it has traded
    assert [r.params["FID_INPUT_HOUR_1"] for r in kis.fake.uapi_requests(Paths.MINUTE_TODAY)] == [
        "110030"
    ]


async def test_market_minute_bars_is_todays_chart_from_since(kis: Kis):
    """``KisMarketData.minute_bars`` (the runner's takeover source): today's bars from
    ``since``; a ``since`` of an earlier day means all of today; unknown codes refused."""
    day = FIXED_NOW.date()
    tape = _tape(day, "0900", 40)
    kis.fake.tape = tape
    kis.at(FIXED_NOW)
    stream = KisStream([("k", "s")], ws_url="ws://127.0.0.1:9", rest_base_url="http://127.0.0.1:9")
    market = KisMarketData(kis.rest(), stream, [s.info for s in SYMBOLS])
    since = datetime(day.year, day.month, day.day, 9, 30, tzinfo=KST)
    assert await market.minute_bars(SAMSUNG, since) == [
        b for b in _expected_minutes(tape) if b.start >= since
    ]
    whole = await market.minute_bars(SAMSUNG, since - timedelta(days=1))
    assert whole == _expected_minutes(tape)
    with pytest.raises(UnknownSymbol):
        await market.minute_bars("999999", since)
