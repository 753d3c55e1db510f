"""What web workers and the engine tell each other across processes.

With one process the web pages call the runner in memory. With several workers only
the leader runs the engine, and a page served by any other worker (or by the web
tier of an operator who runs ``python -m app.runtime`` apart) cannot reach it. Two
things must still cross:

* **interest**: an open chart needs its symbol streamed even when nobody watches it.
  A worker declares ``consumer -> symbols`` with an expiry; the leader merges every
  live declaration into the market hub's interest at each sync pass. A worker that
  dies stops refreshing and its declarations expire (``INTEREST_TTL``).
* **live snapshots**: the last price of each symbol, and for charted symbols the bar
  still forming and the closed bars not yet stored. The leader writes them at its
  coalesced UI pace; a page reads them when it opens or redraws.
* **in-app alerts** from an engine run apart (``python -m app.runtime``), which has no
  Reflex app of its own: it queues them, and one web worker shows each.

Prices themselves reach open pages through Reflex's shared states (the state
manager is Redis then, and pushes cross workers by itself); this bus is for what a
page asks for, not for what is pushed to it.

:class:`LocalLiveBus` (no ``REDIS_URL``) answers from the runner in this process;
:class:`RedisLiveBus` keeps both in Redis: one hash for interest, one key per symbol
for snapshots, written in one pipeline per push.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from engines.market import Candle, Timeframe, change_pct

log = logging.getLogger(__name__)

INTEREST_TTL = 30.0
"""Seconds a declaration lives unless renewed; the chart renews it while it follows."""
SNAPSHOT_TTL = 120
"""Seconds a symbol's snapshot outlives the leader that wrote it (a stale price is
better than none; a price older than this is not shown as live)."""
KEY_PREFIX = "tickwatch"
STATUS_TTL = 10.0
"""Seconds the leader's published figures count as current (it publishes every 2 s)."""
STATUS_EVERY = 2.0
ALERT_BACKLOG = 10_000
"""In-app alerts kept for web workers that are all away; older ones are dropped (the
alert itself is stored and listed on the alerts page either way)."""
ALERT_TTL = 3600
ALERT_POLL = 0.2
"""Seconds between polls of an empty alert queue: a pop-up waits at most this long."""
ALERT_BATCH = 100


def candle_to_json(c: Candle) -> dict[str, Any]:
    return {
        "tf": c.timeframe.value,
        "start": c.start.isoformat(),
        "o": c.open,
        "h": c.high,
        "l": c.low,
        "c": c.close,
        "v": c.volume,
    }


def candle_from_json(symbol: str, d: dict[str, Any]) -> Candle:
    return Candle(
        symbol=symbol,
        timeframe=Timeframe(d["tf"]),
        start=datetime.fromisoformat(d["start"]),
        open=int(d["o"]),
        high=int(d["h"]),
        low=int(d["l"]),
        close=int(d["c"]),
        volume=int(d["v"]),
    )


def quote_view(price: int, prev_close: int, ts: datetime | None) -> dict[str, str]:
    """A price as the pages show it (strings: shared states carry no formatting code)."""
    diff = price - prev_close
    return {
        "price": f"{price:,}",
        "change": f"{change_pct(price, prev_close):+.2f}%",
        "diff": f"{diff:+,}",
        "dir": "up" if diff > 0 else "down" if diff < 0 else "flat",
        # The trade's time in epoch ms: pages show how fresh a price is, and
        # ``python -m bench ui`` measures tick-to-browser latency from it.
        "at": str(int(ts.timestamp() * 1000)) if ts else "",
    }


class Snapshot:
    """One symbol's live state as a page sees it."""

    __slots__ = ("forming", "pending", "prev_close", "price", "ts")

    def __init__(
        self,
        price: int,
        prev_close: int,
        ts: datetime | None,
        forming: dict[Timeframe, Candle] | None = None,
        pending: dict[Timeframe, list[Candle]] | None = None,
    ) -> None:
        self.price = price
        self.prev_close = prev_close
        self.ts = ts
        self.forming = forming or {}
        self.pending = pending or {}

    def view(self) -> dict[str, str]:
        return quote_view(self.price, self.prev_close, self.ts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "p": self.price,
                "pc": self.prev_close,
                "ts": self.ts.isoformat() if self.ts else None,
                "forming": [candle_to_json(c) for c in self.forming.values()],
                "pending": [candle_to_json(c) for cs in self.pending.values() for c in cs],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, symbol: str, raw: str | bytes) -> Snapshot:
        d = json.loads(raw)
        forming = {(c := candle_from_json(symbol, x)).timeframe: c for x in d.get("forming", [])}
        pending: dict[Timeframe, list[Candle]] = {}
        for x in d.get("pending", []):
            c = candle_from_json(symbol, x)
            pending.setdefault(c.timeframe, []).append(c)
        ts = d.get("ts")
        return cls(
            int(d["p"]),
            int(d["pc"]),
            datetime.fromisoformat(ts) if ts else None,
            forming,
            pending,
        )


QuoteViews = dict[str, dict[str, str]]
"""``code -> quote_view(...)``: what one coalesced push carries to open pages."""
QuoteListener = Callable[[QuoteViews], Awaitable[None]]


class LiveBus(Protocol):
    async def declare(self, consumer: str, symbols: Iterable[str]) -> None:
        """Web side: ``consumer`` needs these symbols live (empty: no longer)."""
        ...

    async def interest(self) -> dict[str, set[str]]:
        """Engine side: every live declaration made through the bus."""
        ...

    async def publish(self, snapshots: dict[str, Snapshot]) -> None:
        """Engine side: the latest snapshot of each symbol that moved."""
        ...

    async def snapshot(self, symbol: str) -> Snapshot | None:
        """Web side: the latest snapshot of ``symbol``, or None if none is known."""
        ...

    def quote_stream(self) -> AsyncIterator[QuoteViews]:
        """Web side: every coalesced push, for the pages this worker serves."""
        ...

    async def snapshots(self, symbols: list[str]) -> dict[str, Snapshot]: ...

    async def publish_status(self, status: dict[str, Any]) -> None:
        """Engine side: the runner's figures, for health, metrics and the admin page
        of workers that do not run it."""
        ...

    async def leader_status(self) -> dict[str, Any] | None:
        """The last figures the leader published, or None if none are fresh."""
        ...

    async def push_alert(self, user_id: int, alert: dict[str, Any]) -> None:
        """An in-app alert for the user's open pages, from an engine without the web app."""
        ...

    def alerts(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Alerts pushed, each handed to exactly one reader (one web worker shows it;
        the user's shared state then reaches every tab on every worker)."""
        ...

    async def close(self) -> None: ...


class BusAlertSink:
    """The runner's in-app window when it runs apart (``python -m app.runtime``): it has
    no Reflex app to write the user's shared state, so alerts go on the bus and a web
    worker writes them (``app.states.live.relay_alerts``)."""

    def __init__(self, bus: LiveBus) -> None:
        self.bus = bus

    async def push_alert(self, user_id: int, alert: dict[str, Any]) -> None:
        await self.bus.push_alert(user_id, alert)


class LocalLiveBus:
    """One process: declarations go straight to the runner, snapshots come from it,
    and a push is handed to this process's quote streams in memory."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[QuoteViews]] = set()
        self._status: tuple[float, dict[str, Any]] | None = None
        self._alerts: asyncio.Queue[tuple[int, dict[str, Any]]] | None = None

    async def declare(self, consumer: str, symbols: Iterable[str]) -> None:
        from app.runtime.runner import current_runner

        runner = current_runner()
        if runner is not None:
            await runner.set_interest(consumer, symbols)

    async def interest(self) -> dict[str, set[str]]:
        return {}  # declared in the runner itself

    async def publish(self, snapshots: dict[str, Snapshot]) -> None:
        if snapshots and self._queues:
            views = {code: snap.view() for code, snap in snapshots.items()}
            for queue in self._queues:
                queue.put_nowait(views)

    async def quote_stream(self) -> AsyncIterator[QuoteViews]:
        queue: asyncio.Queue[QuoteViews] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def snapshot(self, symbol: str) -> Snapshot | None:
        return (await self.snapshots([symbol])).get(symbol)

    async def snapshots(self, symbols: list[str]) -> dict[str, Snapshot]:
        from app.runtime.runner import current_runner

        runner = current_runner()
        return {} if runner is None else runner.live_snapshots(symbols)

    async def publish_status(self, status: dict[str, Any]) -> None:
        self._status = (time.monotonic(), status)

    async def leader_status(self) -> dict[str, Any] | None:
        if self._status is None or time.monotonic() - self._status[0] > STATUS_TTL:
            return None
        return self._status[1]

    async def push_alert(self, user_id: int, alert: dict[str, Any]) -> None:
        """Kept only while something reads them: with nobody to show them to (an
        engine alone without Redis) they would pile up in memory."""
        if self._alerts is not None and self._alerts.qsize() < ALERT_BACKLOG:
            self._alerts.put_nowait((user_id, alert))

    async def alerts(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        if self._alerts is None:
            self._alerts = asyncio.Queue()
        queue = self._alerts
        try:
            while True:
                yield await queue.get()
        finally:
            if self._alerts is queue:
                self._alerts = None

    async def close(self) -> None:
        return None


class RedisLiveBus:
    def __init__(
        self, redis_url: str, *, ttl: float = INTEREST_TTL, prefix: str = KEY_PREFIX
    ) -> None:
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl = ttl
        self.interest_key = f"{prefix}:interest"
        self.snapshot_prefix = f"{prefix}:live:"
        self.quotes_channel = f"{prefix}:quotes"
        self.status_key = f"{prefix}:leader-status"
        self.alerts_key = f"{prefix}:alerts"
        self._url = redis_url

    async def declare(self, consumer: str, symbols: Iterable[str]) -> None:
        wanted = sorted(set(symbols))
        if wanted:
            value = json.dumps({"s": wanted, "until": time.time() + self.ttl})
            await self._client.hset(self.interest_key, consumer, value)
        else:
            await self._client.hdel(self.interest_key, consumer)

    async def interest(self) -> dict[str, set[str]]:
        raw = await self._client.hgetall(self.interest_key)
        now = time.time()
        out: dict[str, set[str]] = {}
        expired: list[bytes] = []
        for consumer, value in raw.items():
            try:
                d = json.loads(value)
                if float(d["until"]) < now:
                    expired.append(consumer)
                    continue
                out[consumer.decode()] = {str(s) for s in d["s"]}
            except (ValueError, KeyError, TypeError):
                expired.append(consumer)  # unreadable: written by nothing we know
        if expired:
            await self._client.hdel(self.interest_key, *expired)
        return out

    async def publish(self, snapshots: dict[str, Snapshot]) -> None:
        if not snapshots:
            return
        pipe = self._client.pipeline(transaction=False)
        for symbol, snap in snapshots.items():
            pipe.set(self.snapshot_prefix + symbol, snap.to_json(), ex=SNAPSHOT_TTL)
        views = {code: snap.view() for code, snap in snapshots.items()}
        pipe.publish(self.quotes_channel, json.dumps(views, separators=(",", ":")))
        await pipe.execute()

    async def quote_stream(self) -> AsyncIterator[QuoteViews]:
        """Pub/sub: a worker that was away (Redis restarting) misses the pushes of that
        time and catches up with the next one; pages never wait on a backlog."""
        import redis.asyncio as redis

        client = redis.Redis.from_url(self._url, socket_connect_timeout=2)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.quotes_channel)
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    views = json.loads(message["data"])
                except ValueError:
                    log.warning("unreadable quote push ignored")
                    continue
                if isinstance(views, dict):
                    yield views
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def snapshot(self, symbol: str) -> Snapshot | None:
        return (await self.snapshots([symbol])).get(symbol)

    async def snapshots(self, symbols: list[str]) -> dict[str, Snapshot]:
        if not symbols:
            return {}
        values = await self._client.mget([self.snapshot_prefix + s for s in symbols])
        out: dict[str, Snapshot] = {}
        for symbol, raw in zip(symbols, values, strict=True):
            if raw is None:
                continue
            try:
                out[symbol] = Snapshot.from_json(symbol, raw)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable live snapshot for %s; ignored", symbol)
        return out

    async def publish_status(self, status: dict[str, Any]) -> None:
        await self._client.set(self.status_key, json.dumps(status), ex=int(STATUS_TTL))

    async def leader_status(self) -> dict[str, Any] | None:
        raw = await self._client.get(self.status_key)
        if raw is None:
            return None
        try:
            status = json.loads(raw)
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    async def push_alert(self, user_id: int, alert: dict[str, Any]) -> None:
        """A list, not pub/sub: each alert is popped by one worker, and one pushed while
        every web worker restarts is shown when the first is back (up to
        ``ALERT_BACKLOG`` of them, for ``ALERT_TTL``)."""
        payload = json.dumps({"u": user_id, "a": alert}, separators=(",", ":"), default=str)
        pipe = self._client.pipeline(transaction=True)
        pipe.lpush(self.alerts_key, payload)
        pipe.ltrim(self.alerts_key, 0, ALERT_BACKLOG - 1)
        pipe.expire(self.alerts_key, ALERT_TTL)
        await pipe.execute()

    async def alerts(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Polled rather than a blocking pop. A worker shutting down cancels this and
        waits for it, and a cancel lands reliably in a sleep; with blocking pops, CI
        once hung 300 s on readers that were cancelled. An empty poll costs one round
        trip every ``ALERT_POLL`` seconds per worker."""
        while True:
            batch = await self._client.rpop(self.alerts_key, ALERT_BATCH)
            if not batch:
                await asyncio.sleep(ALERT_POLL)
                continue
            for raw in batch:
                try:
                    d = json.loads(raw)
                    user_id, alert = int(d["u"]), d["a"]
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable alert on the bus ignored")
                    continue
                if isinstance(alert, dict):
                    yield user_id, alert

    async def close(self) -> None:
        await self._client.aclose()


_bus: LiveBus | None = None
_local = LocalLiveBus()
"""The one in-memory bus of this process: the runner publishes where pages listen."""


def bus_for(redis_url: str) -> LiveBus:
    """Redis when a URL is set (several workers may serve pages), else this process's."""
    url = redis_url.strip()
    return RedisLiveBus(url) if url else _local


def get_live_bus() -> LiveBus:
    """The pages' bus, from ``REDIS_URL``."""
    global _bus
    if _bus is None:
        from app.config import get_settings

        _bus = bus_for(get_settings().redis_url)
    return _bus


def set_live_bus(bus: LiveBus | None) -> None:
    """Tests, and a process that reconfigures itself."""
    global _bus
    _bus = bus


class LiveQuotedMarket:
    """A market for a process that does not run the engine (a web worker): quotes are
    the leader's live prices from the bus, so a paper order placed on any worker fills
    at the price its page shows; everything else, and a symbol the bus does not know,
    comes from ``fallback`` (the configured source).

    Without it, a worker with no runner quoted from its own simulated market, whose
    prices wander apart from the leader's: the page said 70,100 and the order filled
    at 69,400.
    """

    def __init__(self, fallback: Any, bus: LiveBus | None = None) -> None:
        self._fallback = fallback
        self._bus = bus
        self.name = getattr(fallback, "name", "market")

    def __getattr__(self, item: str) -> Any:
        return getattr(self._fallback, item)

    async def quote(self, symbol: str) -> Any:
        base = await self._fallback.quote(symbol)
        try:
            snap = await (self._bus or get_live_bus()).snapshot(symbol)
        except Exception as exc:
            log.warning("live price of %s unavailable; quoting the source: %r", symbol, exc)
            return base
        if snap is None:
            return base
        # The day's range must hold the live price; prev_close is the leader's too.
        return replace(
            base,
            price=snap.price,
            prev_close=snap.prev_close,
            high=max(base.high, snap.price),
            low=min(base.low, snap.price) if base.low else snap.price,
            ts=snap.ts or base.ts,
        )
