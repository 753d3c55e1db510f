"""Evaluates condition rules on ticks and bar closes, sharing indicators between rules.

The runner hands every tick to ``ConditionBook.on_tick``. The book builds candles of
every timeframe (``CandleAggregator``), feeds each closed candle to the indicators
rules asked for, evaluates the rules that wait for that bar's close, then the rules
of the tick's symbol that evaluate on every tick. Closed candles are returned so the
runner can store them (warm-up after a restart, previews).

Sharing: one indicator instance per (symbol, timeframe, indicator key), however many
rules use it, ref-counted as rules come and go. An indicator that is still warming up
makes its conditions *not ready*: they are false and record no previous value, so a
crossing needs two ready evaluations and a cold indicator can never fire a rule.

Values "now": on a tick, an indicator on any timeframe is read as if its forming bar
closed now (``Indicator.peek``). At the close of a bar of timeframe T, indicators on
T are read as committed (that bar included) and the others as of now.

Cost: a tick costs O(timeframes) for the candles, plus the tick rules of its symbol;
a bar close costs the indicators and bar-close rules of that (symbol, timeframe).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engines.indicators.base import Indicator
from engines.indicators.registry import make_indicator
from engines.market import KST, Candle, CandleAggregator, Tick, Timeframe
from engines.rules.conditions import (
    BreakoutCondition,
    ChangeCondition,
    ChannelCondition,
    ChannelOp,
    CompareCondition,
    CompareOp,
    ConditionRuleSpec,
    ConstOperand,
    ExtremeCondition,
    Frequency,
    GapCondition,
    IndicatorOperand,
    MoveCondition,
    PriceOperand,
    VolumeSpikeCondition,
)

WARMUP_FACTOR = 3
"""Warm-up loads this many times an indicator's own warm-up in bars: EMA-based
indicators (EMA, RSI, MACD, ATR) converge on their seed only after several windows."""
MIN_WARMUP_BARS = 60


@dataclass(frozen=True, slots=True)
class ConditionFired:
    """A condition rule fired. ``values`` holds each indicator operand's value by label."""

    rule_id: int
    symbol: str
    ts: datetime
    price: int
    fire_no: int
    finished: bool
    on_close: bool
    prev_close: int | None
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WarmupRequest:
    """Load the last ``bars`` stored candles of (symbol, timeframe) into ``warm_up``."""

    symbol: str
    timeframe: Timeframe
    bars: int


@dataclass(slots=True)
class BookResult:
    fired: list[ConditionFired] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    closed: list[Candle] = field(default_factory=list)


def session_key(candle: Candle) -> object:
    """The VWAP session of a candle: its KST trading date."""
    return candle.start.astimezone(KST).date()


def _inputs(ind: Indicator[Any], candle: Candle) -> list[Any]:
    return [session_key(candle) if f == "session" else getattr(candle, f) for f in ind.inputs]


def _pick(value: Any, output: str | None) -> float | None:
    if value is None:
        return None
    return float(getattr(value, output) if output else value)


class _Shared:
    """An indicator fed by closed candles of one (symbol, timeframe), shared by rules.

    ``cold`` until ``warm_up`` has replayed stored candles into it: warm-up then
    rebuilds it from scratch (stored candles, then the live ones it may have seen in
    between), so history is never skipped because a live bar got there first.
    """

    __slots__ = ("cold", "fed_until", "ind", "prev", "refs")

    def __init__(self, ind: Indicator[Any]) -> None:
        self.ind = ind
        self.refs = 0
        self.cold = True
        self.prev: Any = None
        """The committed value before the last bar: "previous bars only" operands."""
        self.fed_until: datetime | None = None

    def feed(self, candle: Candle) -> None:
        if self.fed_until is not None and candle.start <= self.fed_until:
            return
        self.prev = self.ind.value
        self.ind.update(*_inputs(self.ind, candle))
        self.fed_until = candle.start

    def rebuild(self, candles: Iterable[Candle]) -> None:
        self.ind = make_indicator(self.ind.name, self.ind.params)
        self.prev = None
        self.fed_until = None
        for candle in candles:
            self.feed(candle)
        self.cold = False


class _Ctx:
    """What one evaluation reads: the symbol's price and bars, as of a tick or a close."""

    __slots__ = ("book", "close_tf", "closed", "price", "symbol", "ts")

    def __init__(
        self,
        book: ConditionBook,
        symbol: str,
        price: int,
        ts: datetime,
        close_tf: Timeframe | None,
        closed: Candle | None,
    ) -> None:
        self.book = book
        self.symbol = symbol
        self.price = price
        self.ts = ts
        self.close_tf = close_tf
        self.closed = closed

    def now(self, shared: _Shared, tf: Timeframe, output: str | None) -> float | None:
        """Committed on the closing timeframe, otherwise as if the forming bar closed now."""
        if tf is not self.close_tf:
            forming = self.book.agg.current(self.symbol, tf)
            if forming is not None and (
                shared.fed_until is None or forming.start > shared.fed_until
            ):
                return _pick(shared.ind.peek(*_inputs(shared.ind, forming)), output)
        return _pick(shared.ind.value, output)

    def before(self, shared: _Shared, tf: Timeframe) -> float | None:
        """The value over *previous* bars only (excluding the bar being judged)."""
        return _pick(shared.prev if tf is self.close_tf else shared.ind.value, None)

    def bar(self, tf: Timeframe) -> Candle | None:
        if tf is self.close_tf:
            return self.closed
        return self.book.agg.current(self.symbol, tf)


Value = Callable[[_Ctx], float | None]
Check = tuple[bool | None, bool]
"""(holds: ``None`` when not ready, loosened-by-hysteresis holds)."""


class _Compiled:
    """A condition turned into closures over shared indicators, with its edge state."""

    __slots__ = ("check", "keys")

    def __init__(self, check: Callable[[_Ctx, float], Check], keys: list[tuple]) -> None:
        self.check = check
        self.keys = keys


def _edge_state() -> list[Any]:
    return [None]


class _Rule:
    __slots__ = (
        "armed",
        "conds",
        "cooldown",
        "fire_count",
        "id",
        "last_bar",
        "last_ts",
        "labels",
        "slack",
        "spec",
        "symbol",
        "tf",
    )

    def __init__(self, rule_id: int, symbol: str, spec: ConditionRuleSpec) -> None:
        self.id = rule_id
        self.symbol = symbol
        self.spec = spec
        self.tf = spec.timeframe
        self.slack = spec.hysteresis_pct / 100.0
        self.cooldown = timedelta(minutes=spec.cooldown_minutes or 0)
        self.conds: list[_Compiled] = []
        self.labels: list[tuple[str, Value]] = []
        self.armed = True
        self.fire_count = 0
        self.last_ts: datetime | None = None
        self.last_bar: datetime | None = None

    @property
    def on_close(self) -> bool:
        return self.spec.frequency is Frequency.ONCE_PER_BAR_CLOSE


class ConditionBook:
    """Condition rules by symbol, with shared indicators; see the module docstring."""

    def __init__(self, timeframes: Iterable[Timeframe] = tuple(Timeframe)) -> None:
        self.agg = CandleAggregator(timeframes)
        self.rules: dict[int, _Rule] = {}
        self._shared: dict[tuple, _Shared] = {}
        self._by_bar: dict[tuple[str, Timeframe], dict[tuple, _Shared]] = {}
        self._tick_rules: dict[str, dict[int, _Rule]] = {}
        self._close_rules: dict[tuple[str, Timeframe], dict[int, _Rule]] = {}
        self._recent: dict[tuple[str, Timeframe], deque[Candle]] = {}
        self._pending_warmup: dict[tuple[str, Timeframe], int] = {}
        self.prev_close: dict[str, int] = {}
        self.last_price: dict[str, int] = {}
        self.evaluations = 0

    # ---- rules ----------------------------------------------------------------
    def add(
        self,
        rule_id: int,
        symbol: str,
        spec: ConditionRuleSpec,
        *,
        fire_count: int = 0,
        last_fired_at: datetime | None = None,
    ) -> None:
        """Add or replace a rule. A rule that fired before (``fire_count``) and has
        hysteresis starts disarmed, so a restart never repeats an alert."""
        self.remove(rule_id)
        if spec.frequency is Frequency.ONCE and fire_count > 0:
            return
        rule = _Rule(rule_id, symbol, spec)
        rule.fire_count = fire_count
        rule.last_ts = last_fired_at
        if last_fired_at is not None:
            rule.last_bar = rule.tf.bucket(last_fired_at)[0]
        rule.armed = not (fire_count > 0 and rule.slack > 0)
        for cond in spec.conditions:
            rule.conds.append(self._compile(rule, cond))
        for operand in spec.operands():
            tf = spec.operand_timeframe(operand)
            shared_key = self._acquire(symbol, tf, operand.name, operand.params)
            rule.labels.append((operand.label, self._reader(shared_key, tf, operand.output)))
        self.rules[rule_id] = rule
        if rule.on_close:
            self._close_rules.setdefault((symbol, rule.tf), {})[rule_id] = rule
        else:
            self._tick_rules.setdefault(symbol, {})[rule_id] = rule

    def remove(self, rule_id: int) -> None:
        rule = self.rules.pop(rule_id, None)
        if rule is None:
            return
        table = (
            self._close_rules.get((rule.symbol, rule.tf))
            if rule.on_close
            else self._tick_rules.get(rule.symbol)
        )
        if table is not None:
            table.pop(rule_id, None)
        for cond in rule.conds:
            for key in cond.keys:
                self._release(key)
        for operand in rule.spec.operands():
            tf = rule.spec.operand_timeframe(operand)
            self._release((rule.symbol, tf, make_indicator(operand.name, operand.params).key))

    def symbols(self) -> set[str]:
        return {rule.symbol for rule in self.rules.values()}

    def __len__(self) -> int:
        return len(self.rules)

    # ---- shared indicators ----------------------------------------------------
    def _acquire(
        self, symbol: str, tf: Timeframe, name: str, params: dict[str, Any] | None = None
    ) -> tuple:
        ind = make_indicator(name, params)
        key = (symbol, tf, ind.key)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = _Shared(ind)
            self._by_bar.setdefault((symbol, tf), {})[key] = shared
            bars = max(MIN_WARMUP_BARS, ind.warmup * WARMUP_FACTOR)
            pending = self._pending_warmup.get((symbol, tf), 0)
            self._pending_warmup[(symbol, tf)] = max(pending, bars)
        shared.refs += 1
        return key

    def _release(self, key: tuple) -> None:
        shared = self._shared.get(key)
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs <= 0:
            del self._shared[key]
            group = self._by_bar.get(key[:2])
            if group is not None:
                group.pop(key, None)
                if not group:
                    del self._by_bar[key[:2]]

    def _reader(self, key: tuple, tf: Timeframe, output: str | None) -> Value:
        shared = self._shared[key]
        return lambda ctx: ctx.now(shared, tf, output)

    def warmup_requests(self) -> list[WarmupRequest]:
        """Stored candles the newly added indicators need; each request is handed out once."""
        out = [WarmupRequest(s, tf, n) for (s, tf), n in self._pending_warmup.items()]
        self._pending_warmup.clear()
        return out

    def warm_up(self, symbol: str, timeframe: Timeframe, candles: Sequence[Candle]) -> None:
        """Replay stored candles (oldest first) into the cold indicators of (symbol,
        timeframe), followed by the live candles closed since the last stored one."""
        group = self._by_bar.get((symbol, timeframe))
        if not group:
            return
        last = candles[-1].start if candles else None
        live = [
            c for c in self._recent.get((symbol, timeframe), ()) if last is None or c.start > last
        ]
        history = [*candles, *live]
        for shared in group.values():
            if isinstance(shared, _MoveSeries):
                continue
            if shared.cold:
                shared.rebuild(history)
        for shared in group.values():
            if isinstance(shared, _MoveSeries) and not shared.history:
                shared.replay(self, history)

    # ---- compiling conditions -------------------------------------------------
    def _operand(self, rule: _Rule, operand: Any, keys: list[tuple]) -> Value:
        if isinstance(operand, PriceOperand):
            return lambda ctx: float(ctx.price)
        if isinstance(operand, ConstOperand):
            value = operand.value
            return lambda ctx: value
        assert isinstance(operand, IndicatorOperand)
        tf = operand.timeframe or rule.tf
        key = self._acquire(rule.symbol, tf, operand.name, operand.params)
        keys.append(key)
        return self._reader(key, tf, operand.output)

    def _compile(self, rule: _Rule, cond: Any) -> _Compiled:
        keys: list[tuple] = []
        if isinstance(cond, CompareCondition):
            left = self._operand(rule, cond.left, keys)
            right = self._operand(rule, cond.right, keys)
            return _Compiled(_compare(left, right, cond.op), keys)
        if isinstance(cond, BreakoutCondition):
            price = self._operand(rule, PriceOperand(), keys)
            if cond.level is not None:
                level = float(cond.level)
                right: Value = lambda ctx: level  # noqa: E731
            else:
                name = "pivot_high" if cond.side == "resistance" else "pivot_low"
                params = {"left": cond.pivot_left, "right": cond.pivot_right}
                key = self._acquire(rule.symbol, rule.tf, name, params)
                keys.append(key)
                shared = self._shared[key]
                tf = rule.tf
                right = lambda ctx: ctx.before(shared, tf)  # noqa: E731
            op = CompareOp.CROSSING_UP if cond.side == "resistance" else CompareOp.CROSSING_DOWN
            return _Compiled(_compare(price, right, op), keys)
        if isinstance(cond, ChannelCondition):
            value = self._operand(rule, cond.value, keys)
            lower = self._operand(rule, cond.lower, keys)
            upper = self._operand(rule, cond.upper, keys)
            return _Compiled(_channel(value, lower, upper, cond.op), keys)
        if isinstance(cond, MoveCondition):
            return _Compiled(self._move(rule, cond, keys), keys)
        if isinstance(cond, ChangeCondition):
            return _Compiled(_change(cond), keys)
        if isinstance(cond, GapCondition):
            return _Compiled(_gap(cond), keys)
        if isinstance(cond, VolumeSpikeCondition):
            key = self._acquire(rule.symbol, rule.tf, "volume_sma", {"window": cond.window})
            keys.append(key)
            return _Compiled(_volume_spike(self._shared[key], rule.tf, cond.factor), keys)
        if isinstance(cond, ExtremeCondition):
            name = "highest" if cond.side == "high" else "lowest"
            key = self._acquire(rule.symbol, Timeframe.D1, name, {"window": cond.days})
            keys.append(key)
            return _Compiled(_extreme(self._shared[key], cond.side == "high"), keys)
        raise TypeError(f"unsupported condition {type(cond).__name__}")

    def _move(self, rule: _Rule, cond: MoveCondition, keys: list[tuple]) -> Callable:
        """Keeps the operand's value at each bar close of the rule's timeframe."""
        value = self._operand(rule, cond.value, keys)
        history: deque[float] = deque(maxlen=cond.bars)
        series = _MoveSeries(value, history, isinstance(cond.value, PriceOperand))
        key = (rule.symbol, rule.tf, f"move#{id(series)}")
        self._shared[key] = series  # type: ignore[assignment]
        self._by_bar.setdefault((rule.symbol, rule.tf), {})[key] = series  # type: ignore[assignment]
        series.refs = 1
        keys.append(key)
        up = cond.direction == "up"
        amount, pct, bars = cond.amount, cond.unit == "pct", cond.bars

        def check(ctx: _Ctx, slack: float) -> Check:
            now = value(ctx)
            if now is None or len(history) < bars:
                return None, False
            past = list(history)
            if ctx.close_tf is rule.tf:
                past = past[:-1] or past
            ref = min(past) if up else max(past)
            moved = (now - ref) if up else (ref - now)
            if pct:
                if ref == 0:
                    return None, False
                moved = moved / abs(ref) * 100.0
            return moved >= amount, moved >= amount * (1 - slack)

        return check

    # ---- ticks and bars -------------------------------------------------------
    def set_prev_close(self, symbol: str, price: int) -> None:
        self.prev_close[symbol] = price

    def on_tick(self, tick: Tick) -> BookResult:
        result = BookResult()
        closed = self.agg.on_tick(tick)
        for candle in closed:
            self._on_closed(candle, result)
        self.last_price[tick.symbol] = tick.price
        rules = self._tick_rules.get(tick.symbol)
        if rules:
            ctx = _Ctx(self, tick.symbol, tick.price, tick.ts, None, None)
            for rule in list(rules.values()):
                self._evaluate(rule, ctx, result)
        return result

    def close_until(self, ts: datetime) -> BookResult:
        """The runner's timer: closes bars whose time is up even if nothing traded since."""
        result = BookResult()
        for candle in self.agg.close_until(ts):
            self._on_closed(candle, result)
        return result

    def _on_closed(self, candle: Candle, result: BookResult) -> None:
        result.closed.append(candle)
        key = (candle.symbol, candle.timeframe)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=4)
        recent.append(candle)
        group = self._by_bar.get(key)
        if group:
            for shared in list(group.values()):
                if not isinstance(shared, _MoveSeries):
                    shared.feed(candle)
            closing = _Ctx(
                self, candle.symbol, candle.close, candle.start, candle.timeframe, candle
            )
            for shared in list(group.values()):
                if isinstance(shared, _MoveSeries):
                    shared.record(closing, candle)
        rules = self._close_rules.get(key)
        if rules:
            end = candle.start + candle.timeframe.span
            ctx = _Ctx(self, candle.symbol, candle.close, end, candle.timeframe, candle)
            for rule in list(rules.values()):
                self._evaluate(rule, ctx, result)
        if candle.timeframe is Timeframe.D1:
            self.prev_close[candle.symbol] = candle.close

    def _evaluate(self, rule: _Rule, ctx: _Ctx, result: BookResult) -> None:
        self.evaluations += 1
        spec = rule.spec
        if spec.expires_at is not None and ctx.ts >= spec.expires_at:
            self.remove(rule.id)
            result.expired.append(rule.id)
            return
        holds: list[bool | None] = []
        loose: list[bool] = []
        for cond in rule.conds:
            h, lo = cond.check(ctx, rule.slack)
            holds.append(h)
            loose.append(lo)
        if spec.logic == "and":
            value = all(h is True for h in holds)
            loosened = all(loose)
        else:
            value = any(h is True for h in holds)
            loosened = any(loose)
        if not rule.armed:
            if loosened or any(h is None for h in holds):
                return
            rule.armed = True
        if not value or not self._gates_open(rule, ctx):
            return
        rule.fire_count += 1
        rule.last_ts = ctx.ts
        rule.last_bar = ctx.closed.start if ctx.closed is not None else rule.tf.bucket(ctx.ts)[0]
        if rule.slack > 0:
            rule.armed = False
        finished = spec.frequency is Frequency.ONCE
        values = {}
        for label, read in rule.labels:
            number = read(ctx)
            if number is not None and math.isfinite(number):
                values[label] = number
        result.fired.append(
            ConditionFired(
                rule_id=rule.id,
                symbol=rule.symbol,
                ts=ctx.ts,
                price=ctx.price,
                fire_no=rule.fire_count,
                finished=finished,
                on_close=ctx.close_tf is not None,
                prev_close=self.prev_close.get(rule.symbol),
                values=values,
            )
        )
        if finished:
            self.remove(rule.id)

    def _gates_open(self, rule: _Rule, ctx: _Ctx) -> bool:
        frequency = rule.spec.frequency
        if frequency is Frequency.ONCE_PER_BAR and rule.last_bar is not None:
            return rule.tf.bucket(ctx.ts)[0] != rule.last_bar
        if frequency is Frequency.COOLDOWN and rule.last_ts is not None:
            return ctx.ts - rule.last_ts >= rule.cooldown
        return True


class _MoveSeries:
    """A move condition's look-back: the operand's value at each bar close."""

    __slots__ = ("fed_until", "history", "price_only", "refs", "value")

    def __init__(self, value: Value, history: deque[float], price_only: bool) -> None:
        self.value = value
        self.history = history
        self.price_only = price_only
        self.refs = 0
        self.fed_until: datetime | None = None

    def record(self, ctx: _Ctx, candle: Candle) -> None:
        if self.fed_until is not None and candle.start <= self.fed_until:
            return
        number = self.value(ctx)
        if number is not None:
            self.history.append(number)
        self.fed_until = candle.start

    def replay(self, book: ConditionBook, candles: Sequence[Candle]) -> None:
        """Warm-up of a price operand: the stored closes. An indicator operand's past
        values are not stored, so its look-back fills from live bars instead."""
        if not self.price_only:
            return
        for candle in candles[-(self.history.maxlen or 0) :]:
            ctx = _Ctx(book, candle.symbol, candle.close, candle.start, candle.timeframe, candle)
            self.record(ctx, candle)


# ---- condition checks ---------------------------------------------------------


def _compare(left: Value, right: Value, op: CompareOp) -> Callable[[_Ctx, float], Check]:
    prev = _edge_state()

    def check(ctx: _Ctx, slack: float) -> Check:
        a, b = left(ctx), right(ctx)
        before = prev[0]
        if a is None or b is None:
            prev[0] = None
            return None, False
        prev[0] = (a, b)
        margin = abs(b) * slack
        if op is CompareOp.GREATER:
            return a > b, a > b - margin
        if op is CompareOp.LESS:
            return a < b, a < b + margin
        if op is CompareOp.CROSSING_UP:
            return (before is not None and before[0] <= before[1] and a > b), a > b - margin
        if op is CompareOp.CROSSING_DOWN:
            return (before is not None and before[0] >= before[1] and a < b), a < b + margin
        crossed = before is not None and (
            (before[0] <= before[1] and a > b) or (before[0] >= before[1] and a < b)
        )
        return crossed, abs(a - b) < margin

    return check


def _channel(value: Value, lower: Value, upper: Value, op: ChannelOp) -> Callable:
    prev = _edge_state()

    def check(ctx: _Ctx, slack: float) -> Check:
        v, lo, hi = value(ctx), lower(ctx), upper(ctx)
        before = prev[0]
        if v is None or lo is None or hi is None or lo > hi:
            prev[0] = None
            return None, False
        inside = lo <= v <= hi
        prev[0] = inside
        m_lo, m_hi = abs(lo) * slack, abs(hi) * slack
        near_inside = lo - m_lo <= v <= hi + m_hi
        near_outside = v < lo + m_lo or v > hi - m_hi
        if op is ChannelOp.INSIDE:
            return inside, near_inside
        if op is ChannelOp.OUTSIDE:
            return not inside, near_outside
        if op is ChannelOp.ENTERING:
            return (before is False and inside), near_inside
        return (before is True and not inside), near_outside

    return check


def _change(cond: ChangeCondition) -> Callable:
    up = cond.direction == "up"
    factor = 1 + cond.pct / 100.0 if up else 1 - cond.pct / 100.0

    def check(ctx: _Ctx, slack: float) -> Check:
        base = ctx.book.prev_close.get(ctx.symbol)
        if not base:
            return None, False
        threshold = base * factor
        margin = threshold * slack
        if up:
            return ctx.price >= threshold, ctx.price > threshold - margin
        return ctx.price <= threshold, ctx.price < threshold + margin

    return check


def _gap(cond: GapCondition) -> Callable:
    up = cond.direction == "up"
    factor = 1 + cond.pct / 100.0 if up else 1 - cond.pct / 100.0

    def check(ctx: _Ctx, slack: float) -> Check:
        base = ctx.book.prev_close.get(ctx.symbol)
        day = ctx.bar(Timeframe.D1)
        if not base or day is None:
            return None, False
        threshold = base * factor
        hit = day.open >= threshold if up else day.open <= threshold
        return hit, hit

    return check


def _volume_spike(shared: _Shared, tf: Timeframe, factor: float) -> Callable:
    def check(ctx: _Ctx, slack: float) -> Check:
        bar = ctx.bar(tf)
        average = ctx.before(shared, tf)
        if bar is None or average is None:
            return None, False
        threshold = factor * average
        return bar.volume >= threshold, bar.volume >= threshold * (1 - slack)

    return check


def _extreme(shared: _Shared, high: bool) -> Callable:
    def check(ctx: _Ctx, slack: float) -> Check:
        ref = ctx.before(shared, Timeframe.D1)
        if ref is None:
            return None, False
        margin = abs(ref) * slack
        if high:
            return ctx.price > ref, ctx.price > ref - margin
        return ctx.price < ref, ctx.price < ref + margin

    return check
