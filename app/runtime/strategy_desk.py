"""The strategy desk: runs users' attached strategies on the runner's candles and ticks.

One :class:`~engines.strategies.base.StrategyHost` per enabled attachment, fed the
closed candles of its config's timeframe (and ticks, for strategies that want
them). Attachments are loaded incrementally, like the runner's rules: a sync pass
reads (id, attachment edit time, config edit time) for every enabled attachment
and rebuilds only what changed, so a pass over thousands of them is one light query.

A new host is warmed up from stored candles, with its signals thrown away, so its
indicators are ready without trading on history. Live candles already covered by
the warm-up are skipped (the runner stores candles in batches, so the newest may
arrive both ways).

Signals go by mode: an **alert** attachment's signals become outbox alerts (every
channel of the user, history, digests), exactly like a rule firing, keyed by the
signal so a replay is not a second alert. **Paper** and **live** signals go to the
:class:`~app.services.strategy_orders.OrderExecutor`, one attachment at a time and
off the tick path (a broker call must not hold up every other symbol). Before a
paper or live attachment's first order after it is loaded, its orders are
reconciled with the broker; until that succeeds the executor refuses to place.

A strategy that raises is stopped: its attachment is marked ``error`` with the
message, the exception is logged, and every other strategy carries on. It is
reloaded when its owner edits it.

ML strategies run with ``inline_training = False``: when one asks for a retrain,
:class:`~app.runtime.ml_training.MlTrainer` fits the model in a process pool, the
version is stored (``app.services.ml_models``) and installed; a restart installs the
stored active version before warming up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.config import Settings
from app.i18n import LANGUAGES, catalog, normalize_language, translate
from app.models.alerts import AlertEvent
from app.models.market import Symbol
from app.models.paper import PaperAccount, PaperOrderRow, PaperPosition
from app.models.rules import RULE_DELETED, AlertRule
from app.models.strategies import (
    MODE_ALERT,
    MODE_LIVE,
    MODE_PAPER,
    ORDER_UNKNOWN,
    STATE_ERROR,
    STATE_RECONCILING,
    STATE_RUNNING,
    StrategyAttachment,
    StrategyConfig,
)
from app.models.users import User
from app.runtime.ml_training import MlTrainer
from app.runtime.outbox import _write, channels_for
from app.services import candles as candle_store
from app.services import ml_models
from app.services.strategy_orders import OrderExecutor
from brokers.base import MarketData
from engines.market import Candle, Tick, Timeframe
from engines.strategies import registry
from engines.strategies.base import Action, Signal, Strategy, StrategyHost

__all__ = ["StrategyDesk", "record_strategy_signal", "signal_alert_key"]

log = logging.getLogger(__name__)

WARMUP_BARS = 250
"""Stored bars replayed into a new host: covers the indicators' warm-up of every
built-in with room to spare (an ML strategy asks for its training window on top)."""
MAX_WARMUP_BARS = 5000

StrategyFactory = Callable[[str, Mapping[str, Any]], Strategy]


def signal_alert_key(attachment_id: int, signal_key: str) -> str:
    """The outbox idempotency key: fits the column whatever the signal key's length."""
    digest = hashlib.sha256(signal_key.encode()).hexdigest()[:32]
    return f"strat:{attachment_id}:{digest}"


# ---- the outbox for strategy signals ------------------------------------------------


def _reason_text(signal: Signal, lang: str) -> str:
    if not signal.reason or signal.reason not in catalog(lang):
        return ""
    try:
        return translate(signal.reason, lang, **dict(signal.reason_params))
    except (KeyError, IndexError, ValueError):  # a plugin's key with other placeholders
        return translate(signal.reason, lang)


def _signal_summary(signal: Signal, lang: str, price: int) -> str:
    summary = translate(f"strategy_exec.alert.{signal.action.value}", lang, price=f"{price:,}")
    reason = _reason_text(signal, lang)
    return f"{summary} · {reason}" if reason else summary


async def _carrier_rule(session: AsyncSession, att: StrategyAttachment, label: str) -> AlertRule:
    """The hidden rule this attachment's alerts are filed under (see the model's docstring).

    Status ``deleted``: no rule list shows it, the runner's rule book skips it, and
    rule services refuse it as not found; the outbox, history and digests key alerts
    by rule, so a strategy alert goes through them unchanged.
    """
    if att.alert_rule_id is not None:
        rule = await session.get(AlertRule, att.alert_rule_id)
        if rule is not None:
            if rule.name != label:
                rule.name = label[:100]
                session.add(rule)
            return rule
    rule = AlertRule(
        user_id=att.user_id,
        symbol=att.symbol,
        name=label[:100],
        spec={"kind": "strategy", "attachment_id": att.id},
        status=RULE_DELETED,
    )
    session.add(rule)
    await session.flush()
    att.alert_rule_id = rule.id
    session.add(att)
    return rule


async def record_strategy_signal(
    session: AsyncSession,
    attachment_id: int,
    signal: Signal,
    price: int,
    fired_at: datetime,
    *,
    email_enabled: bool,
) -> AlertEvent | None:
    """Write a strategy signal to the outbox like a rule firing: one event, one delivery
    per channel of the user, in one transaction. None when already recorded (the key
    is the signal's) or when the attachment or its user is gone."""
    att = await session.get(StrategyAttachment, attachment_id)
    if att is None:
        return None
    config = await session.get(StrategyConfig, att.config_id)
    user = await session.get(User, att.user_id)
    if config is None or user is None or not user.is_active:
        return None
    sym = await session.get(Symbol, att.symbol)
    rule = await _carrier_rule(session, att, config.label)
    summaries = {lang: _signal_summary(signal, lang, price) for lang in LANGUAGES}
    lang = normalize_language(user.language)
    name = (sym.name_en if lang == "en" else sym.name_ko) if sym else att.symbol
    payload: dict[str, Any] = {
        "kind": "condition",  # rendered from its stored text, like a condition rule's
        "source": "strategy",
        "attachment_id": att.id,
        "strategy": config.strategy,
        "action": signal.action.value,
        "symbol": att.symbol,
        "name_ko": sym.name_ko if sym else att.symbol,
        "name_en": sym.name_en if sym else att.symbol,
        "rule_name": config.label,
        "summary_ko": summaries["ko"],
        "summary_en": summaries["en"],
        "timeframe": config.timeframe,
        "price": price,
        "lang": lang,
        "text": translate(
            "strategy_exec.alert.text",
            lang,
            label=config.label,
            name=name,
            symbol=att.symbol,
            summary=summaries[lang],
        ),
    }
    return await _write(
        session,
        rule,
        user,
        key=signal_alert_key(attachment_id, signal.key),
        payload=payload,
        price=price,
        fired_at=fired_at,
        fire_no=rule.fire_count + 1,
        finished=False,
        channels=channels_for(user, email_enabled),
        quiet=None,
    )


# ---- the account a strategy reads -------------------------------------------------------


class AccountView:
    """:class:`engines.strategies.base.Account` from the last broker reading.

    Refreshed by the desk (paper: from the database on every sync; live: from the
    broker's balance after each order), so ``ctx.position`` follows fills.
    """

    __slots__ = ("_positions", "cash", "equity")

    def __init__(self) -> None:
        self.cash = 0.0
        self.equity = 0.0
        self._positions: dict[str, tuple[int, float]] = {}

    def position(self, symbol: str) -> tuple[int, float]:
        return self._positions.get(symbol, (0, 0.0))

    def set(self, cash: float, equity: float, positions: dict[str, tuple[int, float]]) -> None:
        self.cash, self.equity, self._positions = cash, equity, positions


@dataclass(eq=False)
class _Slot:
    attachment_id: int
    user_id: int
    config_id: int
    symbol: str
    timeframe: Timeframe
    mode: str
    version: tuple[datetime, datetime]
    strategy: Strategy
    host: StrategyHost
    account: AccountView | None
    wants_ticks: bool
    last_start: datetime | None = None
    training: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _wants_ticks(strategy: Strategy) -> bool:
    return type(strategy).on_tick is not Strategy.on_tick


def _warmup_bars(strategy: Strategy, host: StrategyHost) -> int:
    bars = max(WARMUP_BARS, host.warmup + 1)
    params = strategy.params
    window = getattr(params, "train_window", None)
    if isinstance(window, int):
        bars = max(bars, window + int(getattr(params, "horizon", 0)) + 1)
    return min(bars, MAX_WARMUP_BARS)


class StrategyDesk:
    def __init__(
        self,
        settings: Settings,
        market: MarketData,
        *,
        wake: asyncio.Event | None = None,
        factory: StrategyFactory | None = None,
        executor: OrderExecutor | None = None,
        trainer: MlTrainer | None = None,
    ) -> None:
        self.settings = settings
        self.market = market
        self.wake = wake
        self.factory: StrategyFactory = factory or registry.create
        self.executor = executor or OrderExecutor(market, settings)
        self._trainer = trainer
        self.slots: dict[int, _Slot] = {}
        self._broken: dict[int, tuple[datetime, datetime]] = {}
        self._by_bar: dict[tuple[str, Timeframe], set[int]] = {}
        self._by_tick: dict[str, set[int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconcile_at: dict[int, float] = {}
        self.signals = 0
        self.alerts = 0
        self.orders = 0
        self.failures = 0

    @property
    def trainer(self) -> MlTrainer:
        if self._trainer is None:
            self._trainer = MlTrainer(self.settings.strategy_training_workers)
        return self._trainer

    # ---- loading ------------------------------------------------------------------

    async def sync(self, unsaved: Sequence[Candle] = ()) -> set[str]:
        """Load new and edited attachments, drop removed ones; return the symbols needed.

        ``unsaved``: candles closed but not stored yet (the runner's backlog), so a
        host loaded now warms up on them too instead of missing the newest bars.
        """
        async with db.session() as s:
            rows = (
                await s.exec(
                    select(
                        StrategyAttachment.id,
                        StrategyAttachment.updated_at,
                        StrategyConfig.updated_at,
                    )
                    .join(
                        StrategyConfig, col(StrategyConfig.id) == col(StrategyAttachment.config_id)
                    )
                    .where(col(StrategyAttachment.enabled).is_(True))
                )
            ).all()
        current = {att_id: (a_at, c_at) for att_id, a_at, c_at in rows}
        for gone in set(self.slots) - set(current):
            self._unload(gone)
        for gone in set(self._broken) - set(current):
            del self._broken[gone]
        changed = [
            att_id
            for att_id, version in current.items()
            if (self.slots[att_id].version if att_id in self.slots else self._broken.get(att_id))
            != version
        ]
        for att_id in sorted(changed):
            await self._load(att_id, unsaved)
        await self._refresh_paper_accounts()
        self._retry_reconciles()
        return self.symbols()

    def symbols(self) -> set[str]:
        return {slot.symbol for slot in self.slots.values()}

    def _unload(self, att_id: int) -> None:
        slot = self.slots.pop(att_id, None)
        if slot is None:
            return
        self._by_bar.get((slot.symbol, slot.timeframe), set()).discard(att_id)
        self._by_tick.get(slot.symbol, set()).discard(att_id)

    async def _load(self, att_id: int, unsaved: Sequence[Candle] = ()) -> None:
        self._unload(att_id)
        self._broken.pop(att_id, None)
        async with db.session() as s:
            att = await s.get(StrategyAttachment, att_id)
            config = None if att is None else await s.get(StrategyConfig, att.config_id)
        if att is None or config is None or not att.enabled:
            return
        version = (att.updated_at, config.updated_at)
        try:
            strategy = self.factory(config.strategy, json.loads(config.params))
            if hasattr(strategy, "inline_training"):
                strategy.inline_training = False  # type: ignore[attr-defined]
            account = AccountView() if att.mode in (MODE_PAPER, MODE_LIVE) else None
            host = StrategyHost(strategy, att.symbol, account)
            slot = _Slot(
                attachment_id=att_id,
                user_id=att.user_id,
                config_id=config.id or 0,
                symbol=att.symbol,
                timeframe=Timeframe(config.timeframe),
                mode=att.mode,
                version=version,
                strategy=strategy,
                host=host,
                account=account,
                wants_ticks=_wants_ticks(strategy),
            )
            await self._install_stored_model(slot)
            await self._warm_up(slot, unsaved)
        except Exception as exc:
            # A strategy no longer installed, params a new version refuses, a bug.
            log.exception("strategy of attachment %s could not start", att_id)
            self._broken[att_id] = version
            await self._mark(att_id, STATE_ERROR, f"{type(exc).__name__}: {exc}")
            return
        self.slots[att_id] = slot
        self._by_bar.setdefault((slot.symbol, slot.timeframe), set()).add(att_id)
        if slot.wants_ticks:
            self._by_tick.setdefault(slot.symbol, set()).add(att_id)
        if slot.mode in (MODE_PAPER, MODE_LIVE):
            # Nothing trades before its orders are reconciled with the broker.
            await self._mark(att_id, STATE_RECONCILING, None)
            self._spawn(self._reconcile(slot))
        else:
            await self._mark(att_id, STATE_RUNNING, "")
        self._maybe_train(slot)
        log.info(
            "strategy %s (%s) on %s loaded for attachment %s",
            config.strategy,
            slot.mode,
            slot.symbol,
            att_id,
        )

    async def _install_stored_model(self, slot: _Slot) -> None:
        install = getattr(slot.strategy, "install", None)
        if install is None:
            return
        async with db.session() as s:
            stored = await ml_models.latest(s, slot.config_id, slot.symbol)
        if stored is None:
            return
        from engines.strategies.ml import TrainedModel

        model = TrainedModel(
            version=stored.version,
            trained_through=stored.trained_through,
            n_samples=stored.n_samples,
            feature_names=tuple(stored.feature_names),
            blob=stored.blob,
            horizon=stored.horizon,
            metrics=dict(stored.metrics),
        )
        try:
            install(model)
        except ValueError as exc:  # other features or horizon: retrain instead
            log.warning("stored model %s not installed: %s", stored.version, exc)
            return
        log.info("attachment %s: model %s reinstalled", slot.attachment_id, stored.version)

    async def _warm_up(self, slot: _Slot, unsaved: Sequence[Candle]) -> None:
        bars = _warmup_bars(slot.strategy, slot.host)
        async with db.session() as s:
            history = await candle_store.recent(s, slot.symbol, slot.timeframe, bars)
        newest = history[-1].start if history else None
        extra = {  # by start: a repaired bar replaces the one built live
            c.start: c
            for c in unsaved
            if c.symbol == slot.symbol
            and c.timeframe == slot.timeframe
            and (newest is None or c.start > newest)
        }
        history += [extra[start] for start in sorted(extra)]
        for candle in history[-bars:]:
            slot.host.on_candle(candle)  # signals on history are not acted upon
            slot.last_start = candle.start
        if slot.account is not None:
            await self._refresh_account(slot)

    async def _mark(self, att_id: int, state: str, error: str | None) -> None:
        """Runner-owned columns; ``updated_at`` stays (it means "edited by the user")."""
        values: dict[str, object] = {"state": state}
        if error is not None:
            values["last_error"] = error[:500]
        try:
            async with db.session() as s:
                await s.exec(
                    update(StrategyAttachment)
                    .where(col(StrategyAttachment.id) == att_id)
                    .values(**values)
                )
                await s.commit()
        except Exception:
            log.exception("could not mark attachment %s %s", att_id, state)

    # ---- feeding ------------------------------------------------------------------

    async def on_candles(
        self, candles: Iterable[Candle], live_after: datetime | None = None
    ) -> None:
        """Closed bars, oldest first. Those that closed after ``live_after`` (all, if
        None) are traded on; older ones only warm the strategy up, because an order on
        them would be stale by the time it reached the broker.

        The runner passes the market's "now" less the order max age, which matters in
        two cases. After a takeover, the rebuilt bars (``bar_recovery``) come through
        here: a signal the old leader had already placed finds its order id taken and
        places nothing. And a bar left forming overnight is closed by the next
        morning's first trade, too late to trade on.
        """
        for candle in candles:
            ids = self._by_bar.get((candle.symbol, candle.timeframe))
            if not ids:
                continue
            for att_id in sorted(ids):
                slot = self.slots.get(att_id)
                if slot is None or (
                    slot.last_start is not None and candle.start <= slot.last_start
                ):
                    continue
                slot.last_start = candle.start
                closed_at = candle.start + candle.timeframe.span
                try:
                    signals = slot.host.on_candle(candle)
                except Exception as exc:
                    await self._fail(slot, exc)
                    continue
                if live_after is None or closed_at > live_after:  # else warm-up only
                    self._route(slot, signals, candle.close, closed_at)
                self._maybe_train(slot)

    async def on_tick(self, tick: Tick) -> None:
        ids = self._by_tick.get(tick.symbol)
        if not ids:
            return
        for att_id in sorted(ids):
            slot = self.slots.get(att_id)
            if slot is None:
                continue
            try:
                signals = slot.host.on_tick(tick)
            except Exception as exc:
                await self._fail(slot, exc)
                continue
            self._route(slot, signals, tick.price, tick.ts)

    async def _fail(self, slot: _Slot, exc: Exception) -> None:
        self.failures += 1
        log.error(
            "strategy of attachment %s failed; stopped until edited",
            slot.attachment_id,
            exc_info=exc,
        )
        self._unload(slot.attachment_id)
        self._broken[slot.attachment_id] = slot.version
        await self._mark(slot.attachment_id, STATE_ERROR, f"{type(exc).__name__}: {exc}")

    # ---- signals ------------------------------------------------------------------

    def _route(self, slot: _Slot, signals: list[Signal], price: int, at: datetime) -> None:
        for signal in signals:
            self.signals += 1
            if slot.mode == MODE_ALERT or signal.action is Action.ALERT:
                self._spawn(self._alert(slot, signal, price, at))
            else:
                self._spawn(self._order(slot, signal, price))

    async def _alert(self, slot: _Slot, signal: Signal, price: int, at: datetime) -> None:
        try:
            async with db.session() as s:
                event = await record_strategy_signal(
                    s,
                    slot.attachment_id,
                    signal,
                    int(price),
                    at,
                    email_enabled=self.settings.email_enabled,
                )
        except Exception:
            log.exception("could not record signal of attachment %s", slot.attachment_id)
            return
        if event is not None:
            self.alerts += 1
            if self.wake is not None:
                self.wake.set()

    async def _order(self, slot: _Slot, signal: Signal, price: int) -> None:
        async with slot.lock:  # one attachment's orders in signal order
            try:
                row = await self.executor.execute(slot.attachment_id, signal, price)
            except Exception:
                log.exception("order for attachment %s failed", slot.attachment_id)
                return
            if row is None:
                return
            self.orders += 1
            if row.state == ORDER_UNKNOWN:
                self._reconcile_at[slot.attachment_id] = 0.0  # retry on the next sync
            if slot.account is not None:
                await self._refresh_account(slot)

    async def _reconcile(self, slot: _Slot) -> None:
        async with slot.lock:
            loop = asyncio.get_running_loop()
            try:
                clean = await self.executor.reconcile(slot.attachment_id)
            except Exception:
                log.exception("reconciliation of attachment %s failed", slot.attachment_id)
                clean = False
            if clean:
                self._reconcile_at.pop(slot.attachment_id, None)
            else:
                self._reconcile_at[slot.attachment_id] = (
                    loop.time() + self.settings.strategy_reconcile_interval
                )
            if slot.account is not None:
                await self._refresh_account(slot)

    def _retry_reconciles(self) -> None:
        if not self._reconcile_at:
            return
        now = asyncio.get_running_loop().time()
        for att_id, due in list(self._reconcile_at.items()):
            slot = self.slots.get(att_id)
            if slot is None:
                self._reconcile_at.pop(att_id, None)
            elif due <= now and not slot.lock.locked():
                self._reconcile_at[att_id] = now + self.settings.strategy_reconcile_interval
                self._spawn(self._reconcile(slot))

    # ---- accounts -----------------------------------------------------------------

    async def _refresh_account(self, slot: _Slot) -> None:
        if slot.account is None:
            return
        try:
            if slot.mode == MODE_LIVE:
                await self._refresh_live(slot)
            else:
                await self._refresh_paper({slot.user_id})
        except Exception as exc:  # a stale view is better than no strategy
            log.warning("account of attachment %s not refreshed: %s", slot.attachment_id, exc)

    async def _refresh_live(self, slot: _Slot) -> None:
        assert slot.account is not None
        balance = await self.executor.balance(slot.attachment_id)
        if balance is None:
            return
        slot.account.set(
            float(balance.cash),
            float(balance.total),
            {p.symbol: (p.qty, p.avg_price) for p in balance.positions},
        )

    async def _refresh_paper_accounts(self) -> None:
        users = {s.user_id for s in self.slots.values() if s.mode == MODE_PAPER}
        if users:
            try:
                await self._refresh_paper(users)
            except Exception:
                log.exception("paper account views not refreshed")

    async def _refresh_paper(self, users: set[int]) -> None:
        """Cash, reservations and positions of paper accounts: three grouped queries."""
        async with db.session() as s:
            accounts = (
                await s.exec(select(PaperAccount).where(col(PaperAccount.user_id).in_(users)))
            ).all()
            by_id = {a.id: a for a in accounts}
            positions = (
                await s.exec(
                    select(PaperPosition).where(col(PaperPosition.account_id).in_(list(by_id)))
                )
            ).all()
            reserved = (
                await s.exec(
                    select(PaperOrderRow.account_id, PaperOrderRow.reserved_cash).where(
                        col(PaperOrderRow.account_id).in_(list(by_id)),
                        col(PaperOrderRow.state).in_(("open", "partial")),
                    )
                )
            ).all()
        held: dict[int, dict[str, tuple[int, float]]] = {}
        book: dict[int, int] = {}
        for p in positions:
            held.setdefault(p.account_id, {})[p.symbol] = (p.qty, p.cost / p.qty if p.qty else 0.0)
            book[p.account_id] = book.get(p.account_id, 0) + p.cost
        holds: dict[int, int] = {}
        for account_id, cash in reserved:
            holds[account_id] = holds.get(account_id, 0) + cash
        views = {
            a.user_id: (
                float(a.cash - holds.get(a.id or 0, 0)),
                float(a.cash + book.get(a.id or 0, 0)),
                held.get(a.id or 0, {}),
            )
            for a in accounts
        }
        for slot in self.slots.values():
            if slot.mode == MODE_PAPER and slot.account is not None and slot.user_id in views:
                slot.account.set(*views[slot.user_id])

    # ---- ML -----------------------------------------------------------------------

    def _maybe_train(self, slot: _Slot) -> None:
        pending = getattr(slot.strategy, "pending_job", None)
        if pending is None or slot.training:
            return
        job = pending()
        if job is None:
            return
        slot.training = True
        self._spawn(self._train(slot, job))

    async def _train(self, slot: _Slot, job: object) -> None:
        try:
            model = await self.trainer.train(job)
            async with db.session() as s:
                await ml_models.save(s, slot.config_id, slot.symbol, model)
            if self.slots.get(slot.attachment_id) is slot:
                slot.strategy.install(model)  # type: ignore[attr-defined]
                log.info(
                    "attachment %s: model %s trained on %d samples and installed",
                    slot.attachment_id,
                    model.version,
                    model.n_samples,
                )
        except Exception:
            log.exception("training for attachment %s failed", slot.attachment_id)
        finally:
            slot.training = False

    # ---- tasks --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every order, alert, reconciliation and training started has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._trainer is not None:
            await self._trainer.close()
