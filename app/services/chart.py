"""What the symbol page draws: candles (stored + live), overlays and the user's alert levels.

Candles come from three places that together are the whole series: the database
(closed and flushed), the runner's backlog (closed, not yet flushed) and the
runner's aggregator (the bar still forming). Merging by start time, later
sources win, so a bar is never drawn twice while it moves from one to the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.rules import RULE_ACTIVE, AlertRule
from app.services import candles as candle_store
from engines.indicators import SMA, Bollinger
from engines.market import Candle, Timeframe
from engines.rules.conditions import (
    BreakoutCondition,
    ChannelCondition,
    CompareCondition,
    ConditionRuleSpec,
    ConstOperand,
)
from engines.rules.spec import PriceRuleSpec

CHART_TIMEFRAMES: tuple[Timeframe, ...] = (
    Timeframe.M1,
    Timeframe.M5,
    Timeframe.M15,
    Timeframe.M60,
    Timeframe.D1,
)
CHART_BARS = 200
"""Bars per chart: enough for a 60-bar average to be warm over most of the view,
small enough that a coalesced update stays a few kilobytes on a phone."""

OVERLAYS = ("ma20", "ma60", "bb")


@dataclass(frozen=True, slots=True)
class ChartLevel:
    """A horizontal line: a price one of the user's active rules watches."""

    price: float
    rule_id: int
    label: str


def merge_series(
    stored: Sequence[Candle], pending: Iterable[Candle], forming: Candle | None, limit: int
) -> list[Candle]:
    by_start: dict = {c.start: c for c in stored}
    for c in pending:
        by_start[c.start] = c
    if forming is not None:
        by_start[forming.start] = forming
    series = [by_start[k] for k in sorted(by_start)]
    return series[-limit:]


async def series(
    session: AsyncSession,
    symbol: str,
    timeframe: Timeframe,
    *,
    pending: Iterable[Candle] = (),
    forming: Candle | None = None,
    limit: int = CHART_BARS,
) -> list[Candle]:
    stored = await candle_store.recent(session, symbol, timeframe, limit)
    live = [c for c in pending if c.symbol == symbol and c.timeframe == timeframe]
    return merge_series(stored, live, forming, limit)


def overlay(candles: Sequence[Candle], kind: str) -> dict[str, list[float | None]]:
    """Overlay lines by output name, ``None`` until the indicator is warm.

    Uses the same streaming indicators as the alert engine, so a line on the chart
    is the value a rule on it would judge by.
    """
    closes = [float(c.close) for c in candles]
    if kind in ("ma20", "ma60"):
        sma = SMA(20 if kind == "ma20" else 60)
        return {"value": [sma.update(x) for x in closes]}
    if kind == "bb":
        bands = Bollinger(20, 2.0)
        values = [bands.update(x) for x in closes]
        return {
            "upper": [v.upper if v else None for v in values],
            "mid": [v.mid if v else None for v in values],
            "lower": [v.lower if v else None for v in values],
        }
    raise ValueError(f"unknown overlay {kind!r}")


def _spec_levels(rule_id: int, name: str, spec: dict) -> list[ChartLevel]:
    if spec.get("kind") == "condition":
        cspec = ConditionRuleSpec.model_validate(spec)
        levels: list[ChartLevel] = []
        for cond in cspec.conditions:
            if isinstance(cond, CompareCondition):
                for operand in (cond.left, cond.right):
                    if isinstance(operand, ConstOperand):
                        levels.append(ChartLevel(operand.value, rule_id, name))
            elif isinstance(cond, ChannelCondition):
                for operand in (cond.lower, cond.upper):
                    if isinstance(operand, ConstOperand):
                        levels.append(ChartLevel(operand.value, rule_id, name))
            elif isinstance(cond, BreakoutCondition) and cond.level is not None:
                levels.append(ChartLevel(float(cond.level), rule_id, name))
        return levels
    return [ChartLevel(float(PriceRuleSpec.model_validate(spec).level), rule_id, name)]


async def alert_levels(session: AsyncSession, user_id: int, symbol: str) -> list[ChartLevel]:
    """The acting user's active rules on ``symbol`` only: another user's levels are
    private (they reveal positions and intentions)."""
    rules = (
        await session.exec(
            select(AlertRule)
            .where(AlertRule.user_id == user_id)
            .where(AlertRule.symbol == symbol)
            .where(AlertRule.status == RULE_ACTIVE)
            .order_by(col(AlertRule.id))
        )
    ).all()
    levels: list[ChartLevel] = []
    for rule in rules:
        try:
            levels.extend(_spec_levels(rule.id or 0, rule.name or "", rule.spec))
        except ValueError:
            continue  # a corrupt spec draws nothing; the rules page reports it
    return levels
