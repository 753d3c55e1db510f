"""Stream faults: 10 websocket drops during a replay, reconnects, and exact candle repair.

The websocket fake replays a known tape (compressed clock: synthetic timestamps
over ~20 minutes, sent as fast as the client reads) and drops every connection 10
times, skipping the ticks "printed" while the client is away. The stream
reconnects, resubscribes and repairs the touched minutes over the real KIS REST
protocol (``KisRest.minute_candles`` -> ``KisFake``, FHKST03010200, serving the
same tape). The 1-minute candles it emits must equal those of a fault-free run
exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from brokers.gapfill import GapRepairer, GapRequest
from brokers.kis.rest import KisRest
from brokers.kis.stream import KisStream
from engines.market import KST, Candle, CandleAggregator, Tick, Timeframe
from tests.kis_fake import MINUTE_TODAY_PATH, KisFake
from tests.kis_ws_fake import KisWsFake

DAY = date(2025, 3, 4)
SYMBOLS = ("005930", "000660", "035720")
WS_KEYS = {"WSKEY-FAULTS": "WS-SECRET"}
REST_KEY, REST_SECRET = "RESTKEY-FAULTS", "REST-SECRET"
NOW = datetime(2025, 3, 4, 16, 0, tzinfo=KST).astimezone(UTC)  # after the session
# tape index -> ticks lost in the outage: within one minute, across minute
# boundaries, spanning several minutes, and zero-length (drop, nothing missed).
DROPS = {30: 5, 80: 25, 130: 3, 170: 40, 240: 0, 280: 15, 330: 60, 420: 2, 460: 12, 520: 20}
REVOKE_ON = (3, 7)  # drops after which KIS forgets the approval key
REST_URLS: dict[int, str] = {}


def make_tape(n: int = 600, seed: int = 11) -> list[Tick]:
    rng = random.Random(seed)
    prices = {"005930": 71000, "000660": 182500, "035720": 41000}
    steps = {"005930": 100, "000660": 500, "035720": 50}
    at = datetime(2025, 3, 4, 9, 0, 0, tzinfo=KST).astimezone(UTC)
    tape = []
    for i in range(n):
        at += timedelta(seconds=rng.randint(0, 4))  # KIS times have whole seconds
        symbol = SYMBOLS[i % 3] if i < 9 else rng.choice(SYMBOLS)
        prices[symbol] += steps[symbol] * rng.choice((-2, -1, 0, 0, 1, 2))
        tape.append(Tick(symbol, prices[symbol], rng.randint(1, 500), at))
    return tape


def fault_free_candles(ticks: list[Tick], until: datetime) -> list[Candle]:
    agg = CandleAggregator([Timeframe.M1])
    out = [c for t in ticks for c in agg.on_tick(t)]
    return out + agg.close_until(until)


def by_symbol(candles: list[Candle]) -> dict[str, list[Candle]]:
    out: dict[str, list[Candle]] = {}
    for c in candles:
        out.setdefault(c.symbol, []).append(c)
    return out


class FixedClock:
    """KisRest's clock: 16:00 KST on the tape's day, so every bar of it is closed."""

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture
def rest_fake() -> Iterator[KisFake]:
    fake = KisFake(app_keys={REST_KEY: REST_SECRET}, tape=make_tape())
    fake.offset = NOW - datetime.now(UTC)  # the fake's "today" is the tape's day
    server = fake.serve()
    REST_URLS[id(fake)] = server.base_url
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture
async def ws_fake() -> AsyncIterator[KisWsFake]:
    fake = KisWsFake(dict(WS_KEYS), revoke_keys_on_drop=REVOKE_ON, seed=3)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def run_replay(
    ws_fake: KisWsFake, rest_fake: KisFake, tape: list[Tick], drops: dict[int, int]
) -> tuple[KisStream, list[Candle], list[Tick]]:
    rest = KisRest(
        app_key=REST_KEY,
        app_secret=REST_SECRET,
        paper=False,
        base_url=REST_URLS[id(rest_fake)],
        clock=FixedClock(),
    )

    async def fetch_minutes(symbol: str, start: datetime, end: datetime) -> list[Candle]:
        """Over the KIS REST protocol: today's minute bars up to the end of the range."""
        until = (end - timedelta(seconds=1)).astimezone(KST).strftime("%H%M%S")
        rows = await rest.minute_candles(symbol, start.astimezone(KST).date(), until)
        return [c for c in rows if start <= c.start < end]

    stream = KisStream(
        list(WS_KEYS.items()),
        ws_url=ws_fake.ws_url,
        rest_base_url=ws_fake.base_url,
        fetch_minutes=fetch_minutes,
        backoff_base=0.01,
        backoff_max=0.05,
        backfill_delay=0,
        clock=ws_fake.now,  # the replay's compressed clock
        rng=random.Random(5),
    )
    candles: list[Candle] = []
    ticks: list[Tick] = []

    async def collect_candles() -> None:
        async for candle in stream.candles():
            candles.append(candle)

    async def collect_ticks() -> None:
        async for tick in stream.ticks():
            ticks.append(tick)

    consumers = [asyncio.create_task(collect_candles()), asyncio.create_task(collect_ticks())]
    try:
        await stream.subscribe(SYMBOLS)
        await stream.wait_ready()
        await ws_fake.replay(tape, drops=drops)
        async with asyncio.timeout(10):
            while not ticks or ticks[-1] != tape[-1]:
                await asyncio.sleep(0.005)
        end = Timeframe.M1.bucket(tape[-1].ts)[1]
        stream.close_candles_until(end)
        await stream.wait_repaired(timeout=20)
        await asyncio.sleep(0.02)
    finally:
        await stream.close()
        await rest.close()
        await asyncio.wait_for(asyncio.gather(*consumers), 5)
    return stream, candles, ticks


async def test_ten_drops_repaired_to_the_exact_fault_free_candles(
    ws_fake: KisWsFake, rest_fake: KisFake
):
    tape = rest_fake.tape
    end = Timeframe.M1.bucket(tape[-1].ts)[1]
    expected = fault_free_candles(tape, end)
    assert len(expected) > 50 and {c.symbol for c in expected} == set(SYMBOLS)

    stream, candles, ticks = await run_replay(ws_fake, rest_fake, tape, DROPS)

    # the faults really happened and really lost trades
    assert ws_fake.drops_done == 10
    assert stream.reconnects == 10 and stream.drops == 10
    assert len(ws_fake.lost) == sum(DROPS.values()) == 182
    assert set(ticks).isdisjoint(ws_fake.lost)
    assert ws_fake.multi_record_frames > 0
    naive = fault_free_candles(ticks, end)
    assert naive != expected  # without repair the candles would be wrong

    # the approval key was renewed when KIS forgot it, and only then
    assert ws_fake.approvals_issued == 1 + len(REVOKE_ON)
    # every symbol resubscribed on every reconnect, each on one connection
    assert sorted(e.tr_key for e in ws_fake.subscribe_log if e.msg_cd == "OPSP0000") == sorted(
        SYMBOLS * 11
    )

    # the repaired candles equal the fault-free run exactly, none duplicated
    key = lambda c: (c.start, c.symbol)  # noqa: E731
    assert sorted(candles, key=key) == sorted(expected, key=key)
    assert len({(c.symbol, c.start) for c in candles}) == len(candles)
    for symbol, series in by_symbol(candles).items():
        assert series == by_symbol(expected)[symbol]  # emitted in order per symbol
    status = stream.status()
    assert status["partial_minutes"] == 0 and status["gaps_pending"] == 0
    assert isinstance(status["repaired_minutes"], int) and status["repaired_minutes"] > 0
    assert len(rest_fake.uapi_requests(MINUTE_TODAY_PATH)) >= status["repaired_minutes"] // 30

    print(
        f"\nreconnects={stream.reconnects} candles={len(candles)} "
        f"repaired_minutes={status['repaired_minutes']} lost_ticks={len(ws_fake.lost)} "
        f"rest_calls={len(rest_fake.uapi_requests(MINUTE_TODAY_PATH))}"
    )


async def test_fault_free_run_gives_the_same_candles_without_rest(
    ws_fake: KisWsFake, rest_fake: KisFake
):
    tape = rest_fake.tape
    expected = fault_free_candles(tape, Timeframe.M1.bucket(tape[-1].ts)[1])
    stream, candles, _ = await run_replay(ws_fake, rest_fake, tape, {})
    assert candles == expected  # no gap: emitted in tape order, nothing held back
    assert stream.reconnects == 0
    assert rest_fake.uapi_requests(MINUTE_TODAY_PATH) == []


# ---- the repair logic on its own (pure) -----------------------------------------------------


def t(symbol: str, hhmmss: str, price: int, volume: int = 1) -> Tick:
    h, m, s = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:])
    return Tick(symbol, price, volume, datetime(2025, 3, 4, h, m, s, tzinfo=KST).astimezone(UTC))


def minute(hhmm: str) -> datetime:
    return datetime(2025, 3, 4, int(hhmm[:2]), int(hhmm[2:]), tzinfo=KST).astimezone(UTC)


def truth(ticks: list[Tick]) -> list[Candle]:
    return fault_free_candles(ticks, minute("1000"))


def rest_rows(all_ticks: list[Tick], request: GapRequest) -> list[Candle]:
    return [c for c in truth(all_ticks) if request.start <= c.start < request.end]


def test_drop_and_resume_within_one_minute_replaces_only_that_minute():
    full = [t("A00001", "090010", 100), t("A00001", "090020", 105, 4), t("A00001", "090030", 99)]
    full += [t("A00001", "090110", 101)]
    rep = GapRepairer()
    out = rep.on_tick(full[0])
    rep.on_disconnect(["A00001"])
    rep.on_reconnect(["A00001"])  # full[1] was lost
    out += rep.on_tick(full[2])
    out += rep.on_tick(full[3])  # closes 09:00 -> the gap [09:00, 09:00] is settled
    assert out == [] and rep.dirty("A00001")
    [request] = rep.take_requests()
    assert (request.start, request.end) == (minute("0900"), minute("0901"))
    out += rep.apply(request, rest_rows(full, request))
    out += rep.close_until(minute("0902"))
    assert out == truth(full)
    assert out[0].volume == 6 and out[0].high == 105  # the lost trade is in, once


def test_outage_over_several_minutes_holds_later_candles_until_repaired():
    full = [
        t("B00001", f"09{m:02d}{s:02d}", 100 + m * 10 + s % 7) for m in range(6) for s in (5, 35)
    ]
    before, lost, after = full[:3], full[3:7], full[7:]  # lost: 09:01:35 .. 09:03:05
    rep = GapRepairer()
    out: list[Candle] = []
    for tick in before:
        out += rep.on_tick(tick)
    rep.on_disconnect(["B00001"])
    rep.on_reconnect(["B00001"])
    for tick in after:
        out += rep.on_tick(tick)
    out += rep.close_until(minute("0906"))
    # 09:00 is clean and final; 09:04/09:05 are clean but wait behind the gap
    assert [c.start for c in out] == [minute("0900")]
    [request] = rep.take_requests()
    assert (request.start, request.end) == (minute("0901"), minute("0904"))
    out += rep.apply(request, rest_rows(before + lost + after, request))
    assert out == truth(full)


def test_second_drop_before_the_range_settles_extends_it():
    full = [
        t("C00001", hhmmss, p) for hhmmss, p in [("090010", 10), ("090110", 11), ("090210", 12)]
    ]
    full += [t("C00001", "090310", 13), t("C00001", "090410", 14), t("C00001", "090510", 15)]
    rep = GapRepairer()
    out = rep.on_tick(full[0])
    rep.on_disconnect(["C00001"])
    rep.on_reconnect(["C00001"])
    out += rep.on_tick(full[2])  # 09:01 lost; range [09:00, 09:02] not yet settled
    rep.on_disconnect(["C00001"])  # 09:03 lost too
    rep.on_reconnect(["C00001"])
    out += rep.on_tick(full[4])
    out += rep.on_tick(full[5])
    [request] = rep.take_requests()
    assert (request.start, request.end) == (minute("0900"), minute("0905"))
    out += rep.apply(request, rest_rows(full, request))
    out += rep.close_until(minute("0906"))
    assert out == truth(full)


def test_rest_failure_releases_the_partial_candles_instead_of_holding_forever():
    rep = GapRepairer()
    rep.on_tick(t("D00001", "090010", 50))
    rep.on_disconnect(["D00001"])
    rep.on_reconnect(["D00001"])
    rep.on_tick(t("D00001", "090130", 51))
    held = rep.on_tick(t("D00001", "090230", 52))
    assert held == []
    [request] = rep.take_requests()
    released = rep.give_up(request)
    assert [(c.start, c.close) for c in released] == [(minute("0900"), 50), (minute("0901"), 51)]
    assert rep.apply(request, []) == []  # answered once only


def test_reconnect_without_a_tick_settles_by_the_timer_at_the_reconnect_minute():
    rep = GapRepairer()
    rep.on_tick(t("E00001", "090010", 70))
    rep.on_disconnect(["E00001"], at=minute("0900") + timedelta(seconds=20))
    rep.on_reconnect(["E00001"], at=minute("0902") + timedelta(seconds=5))
    assert rep.close_until(minute("0902")) == [] and rep.take_requests() == []
    rep.close_until(minute("0903"))
    [request] = rep.take_requests()
    assert (request.start, request.end) == (minute("0900"), minute("0903"))
    rows = [Candle("E00001", Timeframe.M1, minute("0901"), 71, 72, 70, 72, 9)]
    out = rep.apply(request, rows + [Candle("OTHER1", Timeframe.M1, minute("0901"), 1, 1, 1, 1, 1)])
    # 09:00 kept live (REST lacks it: lag), 09:01 from REST, 09:02 traded nothing
    assert [(c.symbol, c.start, c.volume) for c in out] == [
        ("E00001", minute("0900"), 1),
        ("E00001", minute("0901"), 9),
    ]
    assert rep.partial_minutes == 1
