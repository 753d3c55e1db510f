"""The KIS websocket session and stream against the loopback fake, over real websockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime

import httpx
import pytest
from websockets.asyncio.client import connect

from brokers.base import Fill, OrderSide
from brokers.kis.auth import request_approval_key
from brokers.kis.notices import OrderNotice
from brokers.kis.stream import KisStream
from brokers.kis.ws import AppKeyInUse, ApprovalRejected, KisSession, SubscriptionRefused
from engines.market import Tick
from tests.kis_ws_fake import KisWsFake, notice_fields, utc

DAY = date(2025, 3, 4)
KEYS = {"APPKEY-A": "SECRET-A", "APPKEY-B": "SECRET-B", "APPKEY-C": "SECRET-C"}


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


@pytest.fixture
async def fake() -> AsyncIterator[KisWsFake]:
    server = KisWsFake(dict(KEYS))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Probe:
    """A session plus what it delivered."""

    def __init__(self, fake: KisWsFake, app_key: str = "APPKEY-A", **kwargs: object) -> None:
        self.fake, self.app_key, self.kwargs = fake, app_key, kwargs
        self.ticks: list[Tick] = []
        self.events: list[Fill | OrderNotice] = []
        self.session: KisSession | None = None

    async def __aenter__(self) -> KisSession:
        async with httpx.AsyncClient() as http:
            key = await request_approval_key(
                http, self.fake.base_url, self.app_key, KEYS[self.app_key]
            )
        self.session = KisSession(
            self.fake.ws_url,
            key,
            on_tick=self.ticks.append,
            on_notice=self.events.append,
            session_date=lambda: DAY,
            reply_timeout=3.0,
            **self.kwargs,  # type: ignore[arg-type]
        )
        await self.session.open()
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()


def codes(fake: KisWsFake) -> list[tuple[str, str, str]]:
    return [(e.tr_type, e.tr_key, e.msg_cd) for e in fake.subscribe_log]


# ---- one session ----------------------------------------------------------------------------


async def test_subscribe_and_unsubscribe_replies(fake: KisWsFake):
    async with Probe(fake) as session:
        assert await session.subscribe("H0STCNT0", "005930") == "OPSP0000"
        assert await session.subscribe("H0STCNT0", "005930") == "OPSP0002"
        assert session.subscriptions == {("H0STCNT0", "005930")}
        assert session.free == 39
        assert await session.unsubscribe("H0STCNT0", "005930") == "OPSP0001"
        assert await session.unsubscribe("H0STCNT0", "005930") == "OPSP0003"
        assert session.subscriptions == frozenset()
    assert codes(fake) == [
        ("1", "005930", "OPSP0000"),
        ("1", "005930", "OPSP0002"),
        ("2", "005930", "OPSP0001"),
        ("2", "005930", "OPSP0003"),
    ]
    assert {e.app_key for e in fake.subscribe_log} == {"APPKEY-A"}


async def test_second_session_with_the_same_app_key_gets_opsp8996(fake: KisWsFake, caplog):
    async with Probe(fake) as first, Probe(fake) as second:
        assert await first.subscribe("H0STCNT0", "005930") == "OPSP0000"
        with pytest.raises(AppKeyInUse, match="OPSP8996"):
            await second.subscribe("H0STCNT0", "000660")
        assert isinstance(await asyncio.wait_for(second.wait_closed(), 3), AppKeyInUse)
        assert second.subscriptions == frozenset()
        assert not first.is_closed  # the holder is unaffected
        assert await first.subscribe("H0STCNT0", "000660") == "OPSP0000"
    assert any("in use by another session" in r.getMessage() for r in caplog.records)
    assert codes(fake) == [
        ("1", "005930", "OPSP0000"),
        ("1", "000660", "OPSP8996"),
        ("1", "000660", "OPSP0000"),
    ]


async def test_over_limit_reply_refuses_without_looping(fake: KisWsFake):
    fake.max_subscriptions = 3
    async with Probe(fake, max_subscriptions=40) as session:
        for code in ("000001", "000002", "000003"):
            assert await session.subscribe("H0STCNT0", code) == "OPSP0000"
        with pytest.raises(SubscriptionRefused) as refused:
            await session.subscribe("H0STCNT0", "000004")
        assert refused.value.over_limit and "OPSP0008" in refused.value.reason
        assert len(session.subscriptions) == 3 and not session.is_closed
    assert [c for _, _, c in codes(fake)] == ["OPSP0000"] * 3 + ["OPSP0008"]


async def test_over_limit_is_recognised_by_its_text_under_another_code(fake: KisWsFake):
    fake.max_subscriptions = 1
    fake.over_limit_reply = ("OPSP0009", "MAX SUBSCRIBE OVER")
    async with Probe(fake) as session:
        await session.subscribe("H0STCNT0", "000001")
        with pytest.raises(SubscriptionRefused) as refused:
            await session.subscribe("H0STCNT0", "000002")
        assert refused.value.over_limit


async def test_local_limit_refuses_before_sending(fake: KisWsFake):
    async with Probe(fake, max_subscriptions=2) as session:
        await session.subscribe("H0STCNT0", "000001")
        await session.subscribe("H0STCNI0", "HTSUSER1")  # counted across TRs
        with pytest.raises(SubscriptionRefused, match="local limit of 2"):
            await session.subscribe("H0STCNT0", "000002")
        assert await session.subscribe("H0STCNT0", "000001") == "OPSP0002"  # not a new one
    assert len(fake.subscribe_log) == 3


async def test_unknown_approval_key_is_rejected(fake: KisWsFake):
    async with Probe(fake) as session:
        fake.revoke_keys()
        with pytest.raises(ApprovalRejected, match="OPSP0011"):
            await session.subscribe("H0STCNT0", "005930")
        assert session.is_closed


async def test_pingpong_is_echoed_as_text_and_the_client_never_pings(fake: KisWsFake):
    async with Probe(fake) as session:
        await session.subscribe("H0STCNT0", "005930")
        for _ in range(3):
            assert await fake.send_pingpong() == 1
        await eventually(lambda: fake.pingpongs_echoed == 3)
        assert session.pingpongs == 3
        assert session.connection is not None and session.connection.ping_interval is None
        await asyncio.sleep(0.05)
    assert fake.client_pings == 0
    # guard the guard: a client that does ping is seen by the fake
    async with connect(fake.ws_url, ping_interval=None) as raw:
        await raw.ping()
        await eventually(lambda: fake.client_pings == 1)


async def test_periodic_pingpong_keeps_being_echoed():
    fake = KisWsFake(dict(KEYS), pingpong_interval=0.05)
    await fake.start()
    try:
        async with Probe(fake) as session:
            await session.subscribe("H0STCNT0", "005930")
            await eventually(lambda: fake.pingpongs_echoed >= 4)
            assert fake.pingpongs_echoed in (fake.pingpongs_sent, fake.pingpongs_sent - 1)
            assert not session.is_closed
        assert fake.client_pings == 0
    finally:
        await fake.stop()


async def test_three_record_frame_over_the_wire_yields_three_ticks(fake: KisWsFake):
    ticks = [
        Tick("005930", 71000, 10, utc("2025-03-04 09:00:01")),
        Tick("000660", 182500, 3, utc("2025-03-04 09:00:01")),
        Tick("005930", 71100, 7, utc("2025-03-04 09:00:02")),
    ]
    probe = Probe(fake)
    async with probe as session:
        await session.subscribe("H0STCNT0", "005930")
        await session.subscribe("H0STCNT0", "000660")
        await fake.send_ticks(ticks)
        await eventually(lambda: len(probe.ticks) == 3)
        assert session.frames == 1
    assert probe.ticks == ticks
    assert fake.frames_sent == 1 and fake.multi_record_frames == 1


async def test_encrypted_execution_notices_become_the_right_events(fake: KisWsFake):
    probe = Probe(fake)
    async with probe as session:
        assert await session.subscribe("H0STCNI0", "HTSUSER1") == "OPSP0000"
        fill = notice_fields(
            order_id="0000031415", side="01", symbol="000660", qty=4, price=182600, hhmmss="101502"
        )
        ack = notice_fields(order_id="0000031416", cntg_yn="1", order_qty=9, hhmmss="101503")
        assert await fake.send_notice("HTSUSER1", fill)
        assert await fake.send_notice("HTSUSER1", ack)
        await eventually(lambda: len(probe.events) == 2)
    assert probe.events == [
        Fill(
            "0000031415",
            "000660",
            OrderSide.SELL,
            4,
            182600,
            datetime(2025, 3, 4, 1, 15, 2, tzinfo=UTC),
        ),
        OrderNotice(
            "0000031416",
            "",
            "005930",
            OrderSide.BUY,
            9,
            False,
            datetime(2025, 3, 4, 1, 15, 3, tzinfo=UTC),
        ),
    ]


# ---- the stream over several sessions ------------------------------------------------------------


def make_stream(fake: KisWsFake, keys: list[str], **kwargs: object) -> KisStream:
    return KisStream(
        [(k, KEYS[k]) for k in keys],
        ws_url=fake.ws_url,
        rest_base_url=fake.base_url,
        backoff_base=0.01,
        backoff_max=0.05,
        backfill_delay=0,
        clock=lambda: datetime(2025, 3, 4, 0, 0, tzinfo=UTC),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_100_symbols_spread_over_3_sessions_each_subscribed_once(fake: KisWsFake):
    symbols = [f"{n:06d}" for n in range(1, 101)]
    stream = make_stream(fake, ["APPKEY-A", "APPKEY-B", "APPKEY-C"])
    received: list[Tick] = []

    async def consume() -> None:
        async for tick in stream.ticks():
            received.append(tick)

    consumer = asyncio.create_task(consume())
    try:
        await stream.subscribe(symbols)
        await stream.wait_ready()
        assert sorted(fake.subscribed_keys()) == symbols  # each exactly once
        per_conn = sorted(
            ((c.app_key, len(c.subs)) for c in fake.live()), key=lambda pair: pair[0] or ""
        )
        assert per_conn == [("APPKEY-A", 40), ("APPKEY-B", 40), ("APPKEY-C", 20)]
        assert [stream.lane_of(s) for s in symbols] == [0] * 40 + [1] * 40 + [2] * 20
        assert stream.refused == set()

        ts = utc("2025-03-04 09:00:05")
        await fake.send_ticks([Tick(s, 1000 + i, 1, ts) for i, s in enumerate(symbols)])
        await eventually(lambda: len(received) == 100)
        assert sorted(t.symbol for t in received) == symbols

        # unsubscribing frees a slot on the first session and takes effect on the iterator
        await stream.unsubscribe(["000001", "000050"])
        assert sorted(fake.subscribed_keys()) == [
            s for s in symbols if s not in ("000001", "000050")
        ]
        await stream.subscribe(["000101"])
        assert stream.lane_of("000101") == 0
        received.clear()
        await fake.send_ticks([Tick(s, 500, 1, ts) for s in ("000001", "000002", "000101")])
        await eventually(lambda: len(received) == 2)
        await asyncio.sleep(0.05)
        assert [t.symbol for t in received] == ["000002", "000101"]
        assert stream.reconnects == 0
    finally:
        await stream.close()
        await asyncio.wait_for(consumer, 3)  # close() ends the iterator


async def test_symbols_beyond_every_sessions_capacity_are_refused_not_looped(fake: KisWsFake):
    stream = make_stream(fake, ["APPKEY-A"], max_subscriptions=3)
    try:
        await stream.subscribe(["000001", "000002", "000003", "000004", "000005"])
        await stream.wait_ready()
        assert sorted(fake.subscribed_keys()) == ["000001", "000002", "000003"]
        assert stream.refused == {"000004", "000005"}
        assert len(fake.subscribe_log) == 3  # nothing sent for the refused ones
    finally:
        await stream.close()


async def test_server_limit_lower_than_ours_moves_the_symbol_to_the_next_session(fake: KisWsFake):
    fake.max_subscriptions = 2
    stream = make_stream(fake, ["APPKEY-A", "APPKEY-B"], max_subscriptions=3)
    try:
        await stream.subscribe(["000001", "000002", "000003"])
        await stream.wait_ready()
        assert sorted(fake.subscribed_keys()) == ["000001", "000002", "000003"]
        assert stream.lane_of("000003") == 1 and stream.refused == set()
        assert [c for _, _, c in codes(fake)].count("OPSP0008") == 1
    finally:
        await stream.close()


async def test_stream_executions_yield_fills_only(fake: KisWsFake):
    stream = make_stream(fake, ["APPKEY-A"], hts_id="HTSUSER1")
    fills: list[Fill] = []

    async def consume() -> None:
        async for fill in stream.executions():
            fills.append(fill)

    consumer = asyncio.create_task(consume())
    try:
        await stream.start()
        await stream.wait_ready()
        assert fake.subscriber("H0STCNI0", "HTSUSER1") is not None
        await fake.send_notice("HTSUSER1", notice_fields(cntg_yn="1"))
        await fake.send_notice("HTSUSER1", notice_fields(order_id="0000000009", qty=2, price=70900))
        await eventually(lambda: len(fills) == 1)
        assert fills == [
            Fill(
                "0000000009",
                "005930",
                OrderSide.BUY,
                2,
                70900,
                datetime(2025, 3, 4, 0, 30, 15, tzinfo=UTC),
            )
        ]
        assert stream.acknowledgements == 1
    finally:
        await stream.close()
        await asyncio.wait_for(consumer, 3)


async def test_paper_stream_subscribes_the_paper_notice_tr(fake: KisWsFake):
    stream = make_stream(fake, ["APPKEY-A"], hts_id="HTSUSER1", paper=True)
    try:
        await stream.start()
        await stream.wait_ready()
        assert fake.subscriber("H0STCNI9", "HTSUSER1") is not None
        assert fake.subscriber("H0STCNI0", "HTSUSER1") is None
    finally:
        await stream.close()


async def test_app_key_in_use_after_a_drop_backs_off_longer(fake: KisWsFake, caplog):
    caplog.set_level(logging.INFO, logger="brokers.kis")
    fake.in_use_after_drop = 2
    stream = make_stream(fake, ["APPKEY-A"], in_use_backoff=0.3)
    try:
        await stream.subscribe(["005930"])
        await stream.wait_ready()
        started = time.monotonic()
        await fake.drop_all()
        await eventually(lambda: stream.reconnects == 1, timeout=5)
        await stream.wait_ready()
        elapsed = time.monotonic() - started
        assert elapsed >= 0.6  # two OPSP8996 answers, 0.3 s each, not the 0.01 s drop backoff
        assert fake.subscribed_keys() == ["005930"]
        assert [c for _, _, c in codes(fake)] == ["OPSP0000", "OPSP8996", "OPSP8996", "OPSP0000"]
        in_use_logs = [r for r in caplog.records if "app key in use" in r.getMessage()]
        assert len(in_use_logs) == 2
        assert "APPKEY-A" not in caplog.text and "SECRET-A" not in caplog.text
    finally:
        await stream.close()


async def test_reconnect_backoff_is_jittered_exponential_and_never_tight(fake: KisWsFake):
    stream = make_stream(fake, ["APPKEY-A"])
    stream.backoff_base, stream.backoff_max = 0.1, 0.8
    delays = [stream._backoff(a) for a in range(6)]
    caps = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    await stream.close()
