"""The KIS realtime stream: many websocket sessions behind one merged tick stream.

KIS allows one websocket session per app key and about 40 subscriptions per
session. A platform watching more symbols than that needs several app keys, so
:class:`KisStream` takes a list of credentials and runs one *lane* per app key:
each lane owns its approval key and at most one :class:`~brokers.kis.ws.KisSession`
at a time. Symbols are placed on the first lane with room (100 symbols over three
keys become 40 + 40 + 20), so every symbol is subscribed exactly once.

Faults
------
A lane whose connection drops reconnects by itself with jittered exponential
backoff (``backoff_base`` doubling up to ``backoff_max``, each delay scaled by a
random factor in [0.5, 1]) - never a tight loop, which KIS punishes by blocking
the key or the IP. The backoff only resets after a connection stayed up for
``stable_after`` seconds, so a server that accepts and at once drops us still
sees the delays grow. ``OPSP8996`` (app key in use: usually KIS still holding our
previous connection) waits ``in_use_backoff`` instead. A refused approval key is
replaced by a fresh one before the next attempt; otherwise the key is reused (the
Approval endpoint is cheap, but there is no reason to churn it). After a
reconnect everything the lane held is subscribed again.

Trades printed during an outage are lost by the websocket, so the stream repairs
the 1-minute candles the outage touched through :class:`brokers.gapfill.GapRepairer`
and the injected ``fetch_minutes`` (a REST minute-candle call).

What a consumer gets
--------------------
* :meth:`KisStream.ticks`: live trades of subscribed symbols, as received. Trades
  lost in an outage are *not* replayed here (no source has them as ticks).
* :meth:`KisStream.candles`: final 1-minute candles, exactly those a fault-free
  run would have built: per symbol in increasing ``start`` order, each minute
  once, outage minutes replaced by KIS's own REST bars (see ``brokers.gapfill``
  for the full contract). A minute is final when a later trade of the symbol
  arrives or when :meth:`KisStream.close_candles_until` passes its end (call it
  from the runner's timer with the current time). A market hub that wants exact
  parity builds 1m from this stream (and longer timeframes from the 1m bars)
  instead of aggregating :meth:`ticks` itself.
* :meth:`KisStream.executions`: fills of the account whose HTS id was given,
  from the encrypted execution-notice TR (acknowledgements are logged at debug
  level and counted, not yielded: they are not fills).

Every iterator is a fan-out: each call gets its own queue and all of them end on
:meth:`KisStream.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Generic, TypeVar

import httpx

from brokers.base import BrokerError, Fill, UnknownSymbol
from brokers.gapfill import GapRepairer, GapRequest
from brokers.kis.auth import ApprovalKey, CredentialsRejected, request_approval_key
from brokers.kis.frames import TRADE_TR_ID
from brokers.kis.notices import OrderNotice
from brokers.kis.ws import (
    DEFAULT_MAX_SUBSCRIPTIONS,
    AppKeyInUse,
    ApprovalRejected,
    KisSession,
    SubscriptionRefused,
)
from engines.market import KST, Candle, Tick

__all__ = ["FetchMinutes", "KisCredentials", "KisStream"]

log = logging.getLogger(__name__)

FetchMinutes = Callable[[str, datetime, datetime], Awaitable[list[Candle]]]
"""``fetch_minutes(symbol, start, end)``: 1m candles whose start is in ``[start, end)``
(UTC, minute-aligned), oldest first. Extra rows are tolerated and filtered out."""

_SYMBOL_RE = re.compile(r"[0-9A-Z]{6}")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KisCredentials:
    """One app key. The secret never appears in a repr (reprs end up in logs)."""

    app_key: str
    app_secret: str = field(repr=False)


class _Fanout(Generic[T]):
    """Broadcast to every open iterator; ends them all on close."""

    _END = object()

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[object]] = []
        self._closed = False

    def publish(self, item: T) -> None:
        for queue in self._queues:
            queue.put_nowait(item)

    def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(self._END)

    async def iterate(self) -> AsyncIterator[T]:
        if self._closed:
            return
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is self._END:
                    return
                yield item  # type: ignore[misc]
        finally:
            with contextlib.suppress(ValueError):
                self._queues.remove(queue)


@dataclass(eq=False)
class _Lane:
    """One app key: its approval key, its wanted subscriptions, its current session."""

    index: int
    creds: KisCredentials
    capacity: int
    wanted: dict[tuple[str, str], None] = field(default_factory=dict)
    approval: ApprovalKey | None = None
    session: KisSession | None = None
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    connected_once: bool = False
    in_outage: bool = False
    resumed: set[str] = field(default_factory=set)  # symbols streaming again this outage
    connects: int = 0

    @property
    def symbols(self) -> list[str]:
        return [key for tr, key in self.wanted if tr == TRADE_TR_ID]

    def has_room(self) -> bool:
        return len(self.wanted) < self.capacity


class KisStream:
    """Merged realtime data of one or more KIS app keys (module docstring: contract)."""

    name = "kis"

    def __init__(
        self,
        credentials: Sequence[KisCredentials | tuple[str, str]],
        *,
        ws_url: str,
        rest_base_url: str,
        http: httpx.AsyncClient | None = None,
        fetch_minutes: FetchMinutes | None = None,
        hts_id: str | None = None,
        paper: bool = False,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        in_use_backoff: float = 65.0,
        reply_timeout: float = 10.0,
        backfill_delay: float = 2.0,
        backfill_attempts: int = 4,
        stable_after: float = 60.0,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not credentials:
            raise ValueError("at least one KIS app key is needed")
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        creds = [c if isinstance(c, KisCredentials) else KisCredentials(*c) for c in credentials]
        if len({c.app_key for c in creds}) != len(creds):
            raise ValueError("each app key may appear once: KIS allows one session per key")
        self.ws_url = ws_url
        self.rest_base_url = rest_base_url
        self._http = http
        self._own_http = http is None
        self._fetch_minutes = fetch_minutes
        self.paper = paper
        self.notice_tr_id = "H0STCNI9" if paper else "H0STCNI0"
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.in_use_backoff = in_use_backoff
        self.reply_timeout = reply_timeout
        self.backfill_delay = backfill_delay
        self.backfill_attempts = max(1, backfill_attempts)
        self.stable_after = stable_after
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng = rng or random.Random()
        self.lanes = [_Lane(i, c, max_subscriptions) for i, c in enumerate(creds)]
        self._lane_of: dict[str, _Lane] = {}
        self.refused: set[str] = set()
        self._place_lock = asyncio.Lock()
        self._ticks: _Fanout[Tick] = _Fanout()
        self._fills: _Fanout[Fill] = _Fanout()
        self._candles: _Fanout[Candle] = _Fanout()
        self._repair = GapRepairer()
        self._backfills: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.reconnects = 0
        self.drops = 0
        self.acknowledgements = 0
        if hts_id:
            self.lanes[0].wanted[(self.notice_tr_id, hts_id)] = None

    # ---- public API -------------------------------------------------------------
    async def start(self) -> None:
        """Open the sessions that have something to stream (subscribe() also does)."""
        for lane in self.lanes:
            if lane.wanted:
                self._ensure_running(lane)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Add ``symbols``; each is placed on the first session with room.

        Returns once live sessions confirmed them (or refused them: see
        ``refused``); symbols on a session that is reconnecting are subscribed
        when it is back. Malformed codes raise :class:`UnknownSymbol` and change
        nothing.
        """
        wanted = list(dict.fromkeys(symbols))
        for symbol in wanted:
            if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
                raise UnknownSymbol(str(symbol))
        touched: set[_Lane] = set()
        async with self._place_lock:
            for symbol in wanted:
                if symbol in self._lane_of:
                    continue
                lane = self._place(symbol)
                if lane is not None:
                    touched.add(lane)
        await self._sync_lanes(touched)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Remove ``symbols``; codes not subscribed are ignored."""
        touched: set[_Lane] = set()
        async with self._place_lock:
            for symbol in dict.fromkeys(symbols):
                self.refused.discard(symbol)
                lane = self._lane_of.pop(symbol, None)
                if lane is None:
                    continue
                lane.wanted.pop((TRADE_TR_ID, symbol), None)
                self._repair.forget(symbol)
                touched.add(lane)
        await self._sync_lanes(touched)

    def ticks(self) -> AsyncIterator[Tick]:
        return self._ticks.iterate()

    def executions(self) -> AsyncIterator[Fill]:
        return self._fills.iterate()

    def candles(self) -> AsyncIterator[Candle]:
        """Final, gap-repaired 1m candles (module docstring and ``brokers.gapfill``)."""
        return self._candles.iterate()

    def close_candles_until(self, ts: datetime) -> None:
        """Finalize every minute that ended at or before ``ts`` (the runner's timer)."""
        self._publish_candles(self._repair.close_until(ts))
        self._start_backfills()

    @property
    def subscribed(self) -> frozenset[str]:
        """Symbols placed on a session (confirmed, or to be subscribed on reconnect)."""
        return frozenset(self._lane_of)

    def lane_of(self, symbol: str) -> int | None:
        lane = self._lane_of.get(symbol)
        return None if lane is None else lane.index

    def status(self) -> dict[str, object]:
        """For the admin page: per-session load and health; no credentials."""
        return {
            "sessions": [
                {
                    "index": lane.index,
                    "subscriptions": len(lane.wanted),
                    "capacity": lane.capacity,
                    "connected": lane.ready.is_set(),
                    "connects": lane.connects,
                }
                for lane in self.lanes
            ],
            "reconnects": self.reconnects,
            "drops": self.drops,
            "refused": sorted(self.refused),
            "gaps_pending": len(self._repair.pending()),
            "repaired_minutes": self._repair.repaired_minutes,
            "partial_minutes": self._repair.partial_minutes,
        }

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until every session that has subscriptions is connected and synced."""
        async with asyncio.timeout(timeout):
            for lane in self.lanes:
                if lane.wanted:
                    self._ensure_running(lane)
                    await lane.ready.wait()

    async def wait_repaired(self, timeout: float = 10.0) -> None:
        """Wait until no gap repair is pending (tests, and an orderly shutdown)."""
        async with asyncio.timeout(timeout):
            while self._backfills or self._repair.pending():
                if self._backfills:
                    await asyncio.wait(set(self._backfills))
                else:
                    await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Close every session, stop reconnecting, end every iterator."""
        self._closing.set()
        for lane in self.lanes:
            if lane.session is not None:
                await lane.session.close()
        tasks = [lane.task for lane in self.lanes if lane.task is not None]
        tasks += list(self._backfills)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._own_http and self._http is not None:
            await self._http.aclose()
        self._ticks.close()
        self._fills.close()
        self._candles.close()

    # ---- placement ----------------------------------------------------------------
    def _place(self, symbol: str, exclude: set[_Lane] | None = None) -> _Lane | None:
        for lane in self.lanes:
            if exclude and lane in exclude:
                continue
            if lane.has_room():
                lane.wanted[(TRADE_TR_ID, symbol)] = None
                self._lane_of[symbol] = lane
                self.refused.discard(symbol)
                if self._repair.dirty(symbol):
                    # moved off a lane mid-outage: its ticks now come from this lane
                    self._repair.on_reconnect([symbol], self._clock())
                return lane
        self.refused.add(symbol)
        log.warning("KIS: no session has room for %s; not streamed", symbol)
        return None

    async def _sync_lanes(self, lanes: set[_Lane]) -> None:
        tried: dict[str, set[_Lane]] = {}
        while lanes:
            results = await asyncio.gather(*(self._sync(lane) for lane in lanes))
            lanes = set()
            async with self._place_lock:
                for lane, refused in results:
                    for symbol in refused:
                        # KIS's own limit was lower than ours: try the next lane once.
                        tried.setdefault(symbol, set()).add(lane)
                        if self._lane_of.get(symbol) is lane:
                            del self._lane_of[symbol]
                        other = self._place(symbol, exclude=tried[symbol])
                        if other is not None:
                            lanes.add(other)

    def _ensure_running(self, lane: _Lane) -> None:
        if lane.task is None and not self._closing.is_set():
            lane.task = asyncio.create_task(self._run(lane), name=f"kis-lane-{lane.index}")

    async def _sync(self, lane: _Lane) -> tuple[_Lane, list[str]]:
        """Make the lane's session match ``wanted``. Returns symbols KIS refused."""
        self._ensure_running(lane)
        refused: list[str] = []
        async with lane.lock:
            session = lane.session
            if session is None or session.is_closed:
                return lane, refused  # the lane task subscribes after (re)connecting
            try:
                for tr_id, tr_key in list(session.subscriptions):
                    if (tr_id, tr_key) not in lane.wanted:
                        await session.unsubscribe(tr_id, tr_key)
                for tr_id, tr_key in list(lane.wanted):
                    if (tr_id, tr_key) in session.subscriptions:
                        continue
                    try:
                        await session.subscribe(tr_id, tr_key)
                    except SubscriptionRefused as exc:
                        lane.wanted.pop((tr_id, tr_key), None)
                        if exc.over_limit:
                            lane.capacity = max(1, len(session.subscriptions))
                        if tr_id == TRADE_TR_ID:
                            refused.append(tr_key)
                            self.refused.add(tr_key)
                        log.warning("KIS session %d refused %s: %s", lane.index, tr_id, exc.reason)
            except BrokerError as exc:
                log.info("KIS session %d sync interrupted: %s", lane.index, exc)
        return lane, refused

    # ---- the lane loop --------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(attempt, 30))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        return self._http

    def _session_date(self) -> date:
        return self._clock().astimezone(KST).date()

    async def _connect(self, lane: _Lane) -> KisSession:
        if lane.approval is None:
            lane.approval = await request_approval_key(
                await self._client(), self.rest_base_url, lane.creds.app_key, lane.creds.app_secret
            )
        session = KisSession(
            self.ws_url,
            lane.approval,
            on_tick=lambda tick: self._on_tick(lane, tick),
            on_notice=self._on_notice,
            session_date=self._session_date,
            max_subscriptions=lane.capacity,
            reply_timeout=self.reply_timeout,
            name=f"kis-ws-{lane.index}",
        )
        await session.open()
        return session

    async def _run(self, lane: _Lane) -> None:
        attempt = 0
        while not self._closing.is_set():
            failure: BaseException
            try:
                session = await self._connect(lane)
                lane.session = session
                await self._sync_lanes({lane})
                if session.is_closed:
                    failure = await session.wait_closed()
                else:
                    lane.connects += 1
                    if lane.connected_once:
                        self.reconnects += 1
                        log.info("KIS session %d reconnected", lane.index)
                    lane.connected_once = True
                    if lane.in_outage:
                        lane.in_outage = False
                        rest = [s for s in lane.symbols if s not in lane.resumed]
                        self._repair.on_reconnect(rest, self._clock())
                    lane.ready.set()
                    up_since = time.monotonic()
                    failure = await session.wait_closed()
                    if time.monotonic() - up_since >= self.stable_after:
                        attempt = 0  # only a connection that held resets the backoff
            except (BrokerError, OSError) as exc:
                failure = exc
            lane.ready.clear()
            if lane.session is not None:
                await lane.session.close()
                lane.session = None
            if self._closing.is_set():
                return
            if lane.connected_once and not lane.in_outage:
                lane.in_outage = True
                lane.resumed = set()
                self.drops += 1
                self._repair.on_disconnect(lane.symbols, self._clock())
            if isinstance(failure, ApprovalRejected):
                lane.approval = None
            if isinstance(failure, AppKeyInUse):
                delay = self.in_use_backoff
                log.warning(
                    "KIS session %d: app key in use by another session; retrying in %.1fs",
                    lane.index,
                    delay,
                )
            else:
                delay = self._backoff(attempt)
                level = logging.ERROR if isinstance(failure, CredentialsRejected) else logging.INFO
                log.log(
                    level,
                    "KIS session %d down (%s); reconnecting in %.2fs",
                    lane.index,
                    failure,
                    delay,
                )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    # ---- events from sessions -------------------------------------------------------------
    def _on_tick(self, lane: _Lane, tick: Tick) -> None:
        if self._lane_of.get(tick.symbol) is not lane:
            return  # unsubscribed (or moved) while the frame was in flight
        if lane.in_outage and tick.symbol not in lane.resumed:
            # The first tick of a new session can be read before the lane task
            # resumes from the subscribe reply: mark this symbol live right here,
            # so the repairer ends its gap at this tick and not a later one.
            lane.resumed.add(tick.symbol)
            self._repair.on_reconnect([tick.symbol], self._clock())
        self._ticks.publish(tick)
        self._publish_candles(self._repair.on_tick(tick))
        self._start_backfills()

    def _on_notice(self, event: Fill | OrderNotice) -> None:
        if isinstance(event, Fill):
            self._fills.publish(event)
        else:
            self.acknowledgements += 1
            log.debug("KIS order acknowledgement for order %s (not a fill)", event.order_id)

    def _publish_candles(self, candles: list[Candle]) -> None:
        for candle in candles:
            self._candles.publish(candle)

    def _start_backfills(self) -> None:
        for request in self._repair.take_requests():
            task = asyncio.create_task(self._backfill(request), name=f"kis-backfill-{request.seq}")
            self._backfills.add(task)
            task.add_done_callback(self._backfills.discard)

    async def _backfill(self, request: GapRequest) -> None:
        if self._fetch_minutes is None:
            log.warning("KIS: no REST backfill configured; gap of %s stays partial", request.symbol)
            self._publish_candles(self._repair.give_up(request))
            return
        if self.backfill_delay > 0:
            await asyncio.sleep(self.backfill_delay)  # let KIS's minute bar settle
        for attempt in range(self.backfill_attempts):
            try:
                rows = await self._fetch_minutes(request.symbol, request.start, request.end)
            except (BrokerError, httpx.HTTPError, OSError) as exc:
                delay = self._backoff(attempt)
                log.warning(
                    "KIS backfill of %s failed (%s); attempt %d, retrying in %.2fs",
                    request.symbol,
                    type(exc).__name__,
                    attempt + 1,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._publish_candles(self._repair.apply(request, rows))
            return
        self._publish_candles(self._repair.give_up(request))
