"""The runner: market ticks in, rule firings to the outbox, deliveries and live prices out.

It keeps every loaded rule in an indexed ``RuleBook`` so a tick costs what it
triggers, and learns about rule and watchlist edits incrementally (rules by
``updated_at`` watermark, watchlists by a cheap (count, max id) signature).
Failures in one pass are logged and retried; the runner itself keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlmodel import col, func, select

from app import db
from app.config import Settings
from app.models.alerts import AlertEvent
from app.models.common import utcnow
from app.models.market import Symbol
from app.models.rules import RULE_ACTIVE, RULE_EXPIRED, AlertRule
from app.models.watchlists import Watchlist, WatchlistItem
from app.runtime import bar_recovery
from app.runtime.delivery import DeliveryWorker
from app.runtime.hub import MarketHub
from app.runtime.live_bus import LiveBus, Snapshot, bus_for
from app.runtime.outbox import ConditionFiring, PriceFiring, RuleMeta, TickFiring, record_tick
from app.runtime.paper_desk import PaperDesk
from app.runtime.strategy_desk import StrategyDesk
from app.services import candles as candle_store
from app.services import changes
from app.services.chart import CHART_TIMEFRAMES
from brokers.base import BrokerError, MarketData
from engines.market import Candle, Tick, Timeframe
from engines.rules.book import Fired, RuleBook
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.evaluator import ConditionBook, ConditionFired
from engines.rules.spec import PriceRuleSpec
from notifiers.base import Notifier

log = logging.getLogger(__name__)
KST = ZoneInfo("Asia/Seoul")
MAX_CANDLE_BACKLOG = 100_000
"""Closed candles kept for storage while the database is unreachable; beyond this the
oldest are dropped (and logged): the runner must not grow without bound."""
PRUNE_EVERY = 3600.0
"""Seconds between retention passes over stored candles (see ``candles.RETENTION``)."""
OUTAGE_RETRY_FIRST = 0.1
OUTAGE_RETRY_MAX = 2.0
"""Backoff bounds (seconds) for a tick write waiting out a database outage."""
UI_BATCH = 0.01
"""Seconds a woken UI loop waits so the ticks of one burst share a publish."""
BUS_CONSUMER = "bus:"
"""Prefix of the hub consumers declared by pages on other workers (``live_bus``)."""
TICK_WRITE_GRACE = 2.0
"""Seconds a cancelled runner waits for the tick write in flight to commit or roll back
as a whole (it normally takes milliseconds); a leader stops its engine within
``leader.STOP_TIMEOUT``, so this stays well below it."""


TickListener = Callable[[Tick], Awaitable[None]]
"""Gets every tick after the quote update (the paper account fills orders on it)."""


class UiSink(Protocol):
    """Where a user's alerts go while their pages are open (their shared state).
    Prices go through ``self.bus`` instead, to every worker's own tabs."""

    async def push_alert(self, user_id: int, alert: dict) -> None: ...


@dataclass(slots=True)
class LiveQuote:
    price: int
    prev_close: int
    ts: datetime | None
    session_date: date | None


class Runner:
    def __init__(
        self,
        settings: Settings,
        market: MarketData,
        ui: UiSink | None = None,
        notifiers: dict[str, Notifier] | None = None,
        bus: LiveBus | None = None,
    ) -> None:
        self.settings = settings
        self.bus: LiveBus = bus or bus_for(settings.redis_url)
        """Interest from pages on other workers in, live snapshots for them out."""
        self.hub = market if isinstance(market, MarketHub) else MarketHub(lambda _i: market)
        self.market: MarketData = self.hub
        self.ui = ui
        self.book = RuleBook()
        self.conditions = ConditionBook()
        self.specs: dict[int, ConditionRuleSpec] = {}
        self.meta: dict[int, RuleMeta] = {}
        self.quotes: dict[str, LiveQuote] = {}
        self.watchers: dict[str, set[int]] = {}
        self.subscribed: set[str] = set()
        self.extra_interest: dict[str, set[str]] = {}
        """Consumers besides users' watchlists and rules: open charts, paper orders."""
        self.tick_listeners: list[TickListener] = []
        self._resubscribing = asyncio.Lock()
        self.paper = PaperDesk(self.hub, settings)
        self.delivery = DeliveryWorker(
            settings, notifiers or {}, in_app_push=ui.push_alert if ui else None
        )
        self.strategies = StrategyDesk(settings, self.hub, wake=self.delivery.wake)
        self.ticks_seen = 0
        self.events_recorded = 0
        self.write_retries = 0
        self._applied: dict[int, datetime] = {}
        self._watermark: datetime | None = None
        self._watch_signature: tuple[int, int] | None = None
        self._dirty: set[str] = set()
        self._pushed_at: dict[str, float] = {}
        self._ui_wake = asyncio.Event()
        self._changed = changes.subscribe()
        self._synced = asyncio.Event()
        self._candles: list[Candle] = []
        self._clock: tuple[datetime, float] | None = None  # (last tick ts, loop time)
        self.candles_stored = 0
        self._bars_recovered = False

    # ---- lifecycle -------------------------------------------------------
    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._sync_loop(), name="runner-sync"),
            asyncio.create_task(self._tick_loop(), name="runner-ticks"),
            asyncio.create_task(self._ui_loop(), name="runner-ui"),
            asyncio.create_task(self._bar_loop(), name="runner-bars"),
            asyncio.create_task(self._repair_loop(), name="runner-repairs"),
            asyncio.create_task(self.delivery.run(), name="runner-delivery"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(BaseException):
                await self.strategies.close()
            changes.unsubscribe(self._changed)

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # ---- rules and subscriptions -----------------------------------------
    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync_once()
                self._synced.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rule/watchlist sync failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.settings.rule_sync_interval)
            self._changed.clear()

    async def sync_once(self) -> None:
        async with db.session() as s:
            stmt = select(AlertRule, Symbol).join(Symbol, col(Symbol.code) == col(AlertRule.symbol))
            if self._watermark is not None:
                stmt = stmt.where(col(AlertRule.updated_at) >= self._watermark)
            rows = (await s.exec(stmt)).all()
            signature = tuple(
                (
                    await s.exec(select(func.count(), func.coalesce(func.max(WatchlistItem.id), 0)))
                ).one()
            )
            watch_rows = None
            if signature != self._watch_signature:
                watch_rows = (
                    await s.exec(
                        select(WatchlistItem.symbol, Watchlist.user_id).join(
                            Watchlist, col(Watchlist.id) == col(WatchlistItem.watchlist_id)
                        )
                    )
                ).all()
        for rule, sym in rows:
            try:
                self._apply_rule(rule, sym)
            except ValueError:  # pydantic's ValidationError included
                # One corrupt row must not stop every other rule from loading.
                log.exception("rule %s has an invalid spec; skipped", rule.id)
                self._applied[rule.id or 0] = rule.updated_at
                self.book.remove(rule.id or 0)
                self.conditions.remove(rule.id or 0)
            if self._watermark is None or rule.updated_at > self._watermark:
                self._watermark = rule.updated_at
        if watch_rows is not None:
            watchers: dict[str, set[int]] = {}
            for code, user_id in watch_rows:
                watchers.setdefault(code, set()).add(user_id)
            self.watchers = watchers
            self._watch_signature = signature  # type: ignore[assignment]
        try:
            paper_symbols = await self.paper.sync()
        except Exception:
            # Paper fills wait for the next pass; alerts must not.
            log.exception("paper desk sync failed; will retry")
            paper_symbols = self.paper.symbols()
        if paper_symbols:
            self.extra_interest["paper"] = paper_symbols
        else:
            self.extra_interest.pop("paper", None)
        try:
            strategy_symbols = await self.strategies.sync(self._candles)
        except Exception:
            # Strategies wait for the next pass; rules and alerts must not.
            log.exception("strategy desk sync failed; will retry")
            strategy_symbols = self.strategies.symbols()
        if strategy_symbols:
            self.extra_interest["strategies"] = strategy_symbols
        else:
            self.extra_interest.pop("strategies", None)
        await self._merge_bus_interest()
        await self._resubscribe()
        if not self._bars_recovered:
            await self._recover_bars()
            self._bars_recovered = True
        await self._warm_up()

    async def _recover_bars(self) -> None:
        """Before the first tick: the bars a runner that died was building or had not
        stored, from the broker's minute chart (``bar_recovery``). Stored first, so
        the rules' indicators warm up on them; then to the strategies as bars closed
        live, except those too old for an order to be placed on."""
        symbols = self.strategies.symbols() | self.conditions.symbols() | self._charted()
        if not symbols:
            return
        got = await bar_recovery.recover(
            self.hub.minute_bars, symbols, self.conditions.agg.timeframes
        )
        for bar in got.forming:
            self.conditions.agg.seed(bar)
        if not got.closed or got.as_of is None:
            return
        async with db.session() as s:
            self.candles_stored += await candle_store.store(s, got.closed)
        try:
            await self.strategies.on_candles(got.closed, live_after=self._trade_after(got.as_of))
        except Exception:
            log.exception("strategy desk failed on the rebuilt bars")

    async def _warm_up(self) -> None:
        """Stored candles into newly shared indicators, so a restarted or new rule
        judges with warm indicators instead of waiting (or misfiring) on cold ones."""
        requests = self.conditions.warmup_requests()
        if not requests:
            return
        async with db.session() as s:
            for req in requests:
                history = await candle_store.recent(s, req.symbol, req.timeframe, req.bars)
                self.conditions.warm_up(req.symbol, req.timeframe, history)
        log.info("warmed up %d indicator series", len(requests))

    def _apply_rule(self, rule: AlertRule, sym: Symbol) -> None:
        assert rule.id is not None
        if self._applied.get(rule.id) == rule.updated_at:
            return  # seen this version already (the watermark is inclusive)
        self._applied[rule.id] = rule.updated_at
        if rule.status != RULE_ACTIVE:
            self.book.remove(rule.id)
            self.conditions.remove(rule.id)
            self.specs.pop(rule.id, None)
            self.meta.pop(rule.id, None)
            return
        if rule.spec.get("kind") == "condition":
            cspec = ConditionRuleSpec.model_validate(rule.spec)
            self.book.remove(rule.id)
            self.conditions.add(
                rule.id,
                rule.symbol,
                cspec,
                fire_count=rule.fire_count,
                last_fired_at=rule.last_fired_at,
            )
            self.specs[rule.id] = cspec
        else:
            spec = PriceRuleSpec.model_validate(rule.spec)
            self.conditions.remove(rule.id)
            self.specs.pop(rule.id, None)
            self.book.add(rule.id, rule.symbol, spec, fire_count=rule.fire_count, armed=rule.armed)
        self.meta[rule.id] = RuleMeta(
            user_id=rule.user_id,
            symbol=rule.symbol,
            name=rule.name,
            name_ko=sym.name_ko,
            name_en=sym.name_en,
            revision=str(int(rule.updated_at.timestamp() * 1000)),
        )

    async def _merge_bus_interest(self) -> None:
        """Charts open on other workers, as consumers ``bus:<consumer>``; an unreachable
        bus keeps the last known interest rather than dropping every remote chart."""
        try:
            remote = await self.bus.interest()
        except Exception as exc:
            log.warning("live bus unreachable; keeping the last remote interest: %r", exc)
            return
        for consumer in [c for c in self.extra_interest if c.startswith(BUS_CONSUMER)]:
            if consumer[len(BUS_CONSUMER) :] not in remote:
                del self.extra_interest[consumer]
        for consumer, codes in remote.items():
            self.extra_interest[BUS_CONSUMER + consumer] = codes

    def _charted(self) -> set[str]:
        return {
            code
            for consumer, codes in self.extra_interest.items()
            if consumer.startswith(("chart:", BUS_CONSUMER + "chart:"))
            for code in codes
        }

    def live_snapshots(
        self, codes: Iterable[str], with_bars: set[str] | None = None
    ) -> dict[str, Snapshot]:
        """Price, and for ``with_bars`` (all of ``codes`` if None) the bars a chart
        shows live: the forming one and those closed but not stored yet."""
        out: dict[str, Snapshot] = {}
        for code in codes:
            quote = self.quotes.get(code)
            if quote is None:
                continue
            snap = Snapshot(quote.price, quote.prev_close, quote.ts)
            if with_bars is None or code in with_bars:
                for tf in CHART_TIMEFRAMES:
                    pending, forming = self.chart_live(code, tf)
                    if forming is not None:
                        snap.forming[tf] = forming
                    if pending:
                        snap.pending[tf] = pending
            out[code] = snap
        return out

    async def set_interest(self, consumer: str, symbols: Iterable[str]) -> None:
        """Declare what a non-user consumer needs live (an open chart, paper orders)."""
        wanted = set(symbols)
        if wanted:
            self.extra_interest[consumer] = wanted
        else:
            self.extra_interest.pop(consumer, None)
        await self._resubscribe()

    def _interest(self) -> dict[str, set[str]]:
        """Who needs which symbol live: a consumer per user, plus the extra ones.

        Declared per consumer rather than as one union so the hub can count
        references: a symbol three users watch is one upstream subscription, and
        it stays until the last of them lets go.
        """
        interest: dict[str, set[str]] = {}
        for code, users in self.watchers.items():
            for user_id in users:
                interest.setdefault(f"user:{user_id}", set()).add(code)
        for meta in self.meta.values():
            interest.setdefault(f"user:{meta.user_id}", set()).add(meta.symbol)
        # Rules whose metadata is gone (finished) may still sit in a book briefly.
        orphans = (self.book.symbols() | self.conditions.symbols()) - {
            c for codes in interest.values() for c in codes
        }
        if orphans:
            interest["rules"] = orphans
        for consumer, codes in self.extra_interest.items():
            interest.setdefault(consumer, set()).update(codes)
        return interest

    async def _resubscribe(self) -> None:
        async with self._resubscribing:
            interest = self._interest()
            wanted = {c for codes in interest.values() for c in codes}
            for code in sorted(wanted - self.subscribed - set(self.quotes)):
                try:
                    quote = await self.market.quote(code)
                except BrokerError:
                    log.warning("no quote for %s; not subscribing", code)
                    continue
                self.quotes[code] = LiveQuote(
                    quote.price, quote.prev_close, quote.ts, quote.ts.astimezone(KST).date()
                )
                if self.book.last_price(code) is None:
                    self.book.seed_price(code, quote.price)
                self.conditions.set_prev_close(code, quote.prev_close)
                self._mark_dirty(code)
            for consumer in set(self.hub.consumers()) - set(interest):
                await self.hub.drop_consumer(consumer)
            for consumer, codes in interest.items():
                await self.hub.set_interest(consumer, {c for c in codes if c in self.quotes})
            await self.hub.retry_pending()
            self.subscribed = self.hub.live_symbols()
            for code in set(self.quotes) - wanted:
                self.quotes.pop(code, None)

    # ---- ticks -----------------------------------------------------------
    async def _tick_loop(self) -> None:
        await self._synced.wait()
        delay = 1.0
        while True:
            try:
                async for tick in self.market.ticks():
                    await self.handle_tick(tick)
                    delay = 1.0
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("market stream failed; reconnecting in %.0fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def handle_tick(self, tick: Tick) -> list[Fired]:
        self.ticks_seen += 1
        quote = self.quotes.get(tick.symbol)
        if quote is not None:
            day = tick.ts.astimezone(KST).date()
            if quote.session_date is not None and day != quote.session_date:
                with contextlib.suppress(BrokerError):
                    quote.prev_close = (await self.market.quote(tick.symbol)).prev_close
                    self.conditions.set_prev_close(tick.symbol, quote.prev_close)
            quote.session_date = day
            quote.price = tick.price
            quote.ts = tick.ts
            self._mark_dirty(tick.symbol)
        self._clock = (tick.ts, asyncio.get_running_loop().time())
        await self.paper.on_tick(tick)
        try:
            await self.strategies.on_tick(tick)
        except Exception:
            log.exception("strategy desk failed on a tick of %s", tick.symbol)
        for listener in self.tick_listeners:
            try:
                await listener(tick)
            except Exception:
                log.exception("tick listener %r failed", listener)
        fired = self.book.on_tick(tick)
        await self._conditions_result(
            self.conditions.on_tick(tick), fired, quote.prev_close if quote else None, tick.ts
        )
        return fired

    async def _conditions_result(
        self,
        result: object,
        price_fired: Sequence[Fired] = (),
        prev_close: int | None = None,
        tick_at: datetime | None = None,
    ) -> list[ConditionFired]:
        """Record the firings (price ones of the same tick included) and the tick's
        armed-state changes as one unit, then hand closed candles on and mark expired
        rules. Only a tick (``tick_at``) writes armed states: the rule book changes
        them on ticks alone (and on seeding, which the next tick then stores)."""
        fired: list[ConditionFired] = getattr(result, "fired", [])
        await self._record_tick(price_fired, prev_close, fired, tick_at)
        closed = getattr(result, "closed", [])
        if closed:
            try:
                await self.strategies.on_candles(
                    closed, live_after=self._trade_after(self.market_clock())
                )
            except Exception:
                log.exception("strategy desk failed on closed candles")
            self._candles.extend(closed)
            if len(self._candles) > MAX_CANDLE_BACKLOG:
                dropped = len(self._candles) - MAX_CANDLE_BACKLOG
                del self._candles[:dropped]
                log.error("candle backlog full; dropped %d unsaved candles", dropped)
        for rule_id in getattr(result, "expired", []):
            await self._expire(rule_id)
        return fired

    def _trade_after(self, now: datetime | None) -> datetime | None:
        """Bars that closed before this are too old to place an order on (``now`` is
        market time: a replay runs in the past, and the wall clock is not it)."""
        if now is None:
            return None
        return now - timedelta(seconds=self.settings.strategy_order_max_age_seconds)

    def market_clock(self) -> datetime | None:
        """The last tick's time moved on by the real time since: closes the bars of
        quiet symbols without trusting the wall clock (a replay runs in the past)."""
        if self._clock is None:
            return None
        ts, at = self._clock
        return ts + timedelta(seconds=asyncio.get_running_loop().time() - at)

    async def _bar_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pruned_at = loop.time()
        while True:
            await asyncio.sleep(self.settings.bar_close_interval)
            try:
                now = self.market_clock()
                if now is not None:
                    await self._conditions_result(self.conditions.close_until(now))
                    self.hub.close_candles_until(now)
                await self.flush_candles()
                if loop.time() - pruned_at >= PRUNE_EVERY:
                    pruned_at = loop.time()
                    async with db.session() as s:
                        removed = await candle_store.prune(s, utcnow())
                    log.info("pruned old candles: %s", removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bar close / candle storage pass failed; will retry")

    async def _repair_loop(self) -> None:
        """Store the broker's gap-repaired 1m candles over the partial ones built live
        during an outage (the store upserts by symbol, timeframe and start)."""
        while True:
            try:
                async for candle in self.hub.repaired_candles():
                    self._candles.append(candle)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("repaired-candle stream failed; restarting")
                await asyncio.sleep(5)

    async def flush_candles(self) -> int:
        if not self._candles:
            return 0
        batch, self._candles = self._candles, []
        try:
            async with db.session() as s:
                written = await candle_store.store(s, batch)
        except Exception:
            self._candles[:0] = batch
            raise
        self.candles_stored += written
        return written

    async def _expire(self, rule_id: int) -> None:
        self.meta.pop(rule_id, None)
        self.specs.pop(rule_id, None)
        try:
            async with db.session() as s:
                rule = await s.get(AlertRule, rule_id)
                if rule is not None and rule.status == RULE_ACTIVE:
                    rule.status = RULE_EXPIRED
                    rule.updated_at = utcnow()
                    s.add(rule)
                    await s.commit()
        except Exception:
            log.exception("could not mark rule %s expired", rule_id)

    async def _record_tick(
        self,
        price_fired: Sequence[Fired],
        prev_close: int | None,
        condition_fired: Sequence[ConditionFired],
        tick_at: datetime | None = None,
    ) -> None:
        """All firings of one tick go to the outbox in one transaction, never in part.

        A successor resumes after the last tick that left a trace in the outbox; a
        tick recorded in part would lose its other firings there, and replaying it
        would double the recorded ones. The write runs shielded: a cancel arriving
        mid-write (a leader losing its lock) lets the transaction end as a whole,
        within ``TICK_WRITE_GRACE``, before the cancel goes on.
        """
        firings: list[TickFiring] = []
        for f in price_fired:
            meta = self.meta.get(f.rule_id)
            if meta is not None:
                firings.append(PriceFiring(f, meta, prev_close))
        for c in condition_fired:
            meta, spec = self.meta.get(c.rule_id), self.specs.get(c.rule_id)
            if meta is not None and spec is not None:
                firings.append(ConditionFiring(c, meta, spec))
        arming = self.book.drain_arming() if tick_at is not None else {}
        if not firings and not arming:
            return
        write = asyncio.ensure_future(self._write_tick(firings, arming, tick_at))
        try:
            events = await asyncio.shield(write)
        except asyncio.CancelledError:
            await _let_finish(write)
            raise
        except Exception:
            log.exception(
                "could not record firings of rules %s", [f.fired.rule_id for f in firings]
            )
            self.book.requeue_arming(arming)  # stored with the next tick that writes
            return
        for firing, event in zip(firings, events, strict=True):
            if firing.fired.finished:
                self.meta.pop(firing.fired.rule_id, None)
                if isinstance(firing, ConditionFiring):
                    self.specs.pop(firing.fired.rule_id, None)
            if event is not None:
                self.events_recorded += 1
        if any(event is not None for event in events):
            self.delivery.wake.set()

    async def _write_tick(
        self, firings: list[TickFiring], arming: dict[int, bool], at: datetime | None
    ) -> list[AlertEvent | None]:
        """Write the tick, waiting out a database outage rather than dropping it.

        The runner dropping a tick's alerts because PostgreSQL restarted would lose
        them for good (the price has moved on), so while the database is unreachable
        the write is retried and the tick loop waits behind it: the market stream
        backs up, and nothing after this tick is evaluated before it is stored. A
        write that is wrong rather than unlucky still fails at once, so one bad row
        cannot stop the runner. A leader that loses its lock meanwhile is cancelled
        here and its successor evaluates the tick again.
        """
        delay, waited_since = OUTAGE_RETRY_FIRST, None
        while True:
            try:
                async with db.session() as s:
                    events = await record_tick(
                        s, firings, email_enabled=self.settings.email_enabled, arming=arming, at=at
                    )
            except Exception as exc:
                if not db.is_outage(exc):
                    raise
                loop = asyncio.get_running_loop()
                if waited_since is None:
                    waited_since = loop.time()
                    log.error("database unreachable; holding the tick until it is back: %r", exc)
                self.write_retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, OUTAGE_RETRY_MAX)
                continue
            if waited_since is not None:
                log.warning(
                    "database back; tick stored after %.1fs",
                    asyncio.get_running_loop().time() - waited_since,
                )
            return events

    # ---- live prices to open pages ----------------------------------------
    async def _ui_loop(self) -> None:
        while True:
            dirty = self._dirty
            wait = min((self._ui_due(c) for c in dirty), default=None) if dirty else None
            if wait is None or wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ui_wake.wait(), wait)
            self._ui_wake.clear()
            await asyncio.sleep(UI_BATCH)  # the rest of a burst of ticks joins this push
            try:
                await self.flush_ui()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("UI push failed")

    def _mark_dirty(self, code: str) -> None:
        if code not in self._dirty:
            # The UI loop learns of the new deadline; a symbol quiet for an interval
            # goes out at once (leading edge).
            self._dirty.add(code)
            self._ui_wake.set()

    def _ui_due(self, code: str) -> float:
        """Seconds until ``code`` may be pushed again (<= 0: now)."""
        last = self._pushed_at.get(code)
        if last is None:
            return 0.0
        return last + self.settings.ui_push_interval - asyncio.get_running_loop().time()

    async def flush_ui(self) -> int:
        """Coalesced per symbol: a symbol goes out as soon as it moves if its last push
        is ``ui_push_interval`` old, else when it is, carrying its latest price; so a
        price reaches pages within one interval and a symbol is sent at most once per
        interval, whatever its tick rate. One publish per flush; every worker hands it
        to the tabs it serves. Returns how many symbols went out."""
        due = {c for c in self._dirty if self._ui_due(c) <= 0}
        if not due:
            return 0
        self._dirty -= due
        now = asyncio.get_running_loop().time()
        for code in due:
            self._pushed_at[code] = now
        snapshots = self.live_snapshots(due, with_bars=self._charted())
        try:
            await self.bus.publish(snapshots)
        except Exception as exc:  # open pages lag until the bus is back; alerts do not
            log.warning("live bus publish failed: %r", exc)
            return 0
        return len(snapshots)

    def chart_live(self, symbol: str, tf: Timeframe) -> tuple[list[Candle], Candle | None]:
        """Closed candles not yet stored, and the bar still forming, for a chart."""
        pending = [c for c in self._candles if c.symbol == symbol and c.timeframe == tf]
        return pending, self.conditions.agg.current(symbol, tf)


async def _let_finish(write: asyncio.Future[object]) -> None:
    """Give a shielded write cut off by a cancel ``TICK_WRITE_GRACE`` to end on its own.

    It ends committed or rolled back as a whole; only a write stuck past the grace (a
    dead database) is cancelled, which the database also ends as a whole. A second
    cancel while waiting cancels the write at once: stopping stays prompt.
    """
    try:
        await asyncio.wait({write}, timeout=TICK_WRITE_GRACE)
    finally:
        if not write.done():
            log.error(
                "tick write still running %.1f s after a cancel; cancelling it", TICK_WRITE_GRACE
            )
            write.cancel()
    if write.done() and not write.cancelled() and write.exception() is not None:
        log.error("tick write failed while the runner stopped", exc_info=write.exception())


_current: Runner | None = None


def current_runner() -> Runner | None:
    return _current


def set_current_runner(runner: Runner | None) -> None:
    global _current
    _current = runner
