"""Where a rule would have fired in stored history: the rule builder's chart preview.

History is candles, not ticks, so each candle is replayed as four prints, open,
then the extreme nearer the open, the other extreme, and the close, spread over its
bucket, through the same ``ConditionBook`` the runner uses. The preview is therefore
the live semantics on an approximated path: a bar-close rule is exact, a tick rule
sees each bar's open, high, low and close but none of the prints in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from engines.market import Candle, Tick
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.evaluator import ConditionBook, ConditionFired

PREVIEW_RULE_ID = 0
MAX_PREVIEW_CANDLES = 2_000


def candle_path(candle: Candle) -> list[Tick]:
    """Four ticks that trace ``candle`` inside its bucket, volume split between them."""
    start, end = candle.timeframe.bucket(candle.start)
    step = (end - start) / 4
    if candle.close >= candle.open:
        prices = [candle.open, candle.low, candle.high, candle.close]
    else:
        prices = [candle.open, candle.high, candle.low, candle.close]
    share, rest = divmod(candle.volume, 4)
    volumes = [share, share, share, share + rest]
    return [
        Tick(candle.symbol, p, v, start + step * i + timedelta(microseconds=i))
        for i, (p, v) in enumerate(zip(prices, volumes, strict=True))
    ]


def preview_firings(
    spec: ConditionRuleSpec,
    symbol: str,
    candles: Sequence[Candle],
    prev_close: int | None = None,
) -> list[ConditionFired]:
    """Every firing of ``spec`` over ``candles`` (oldest first, at most 2,000).

    The expiry is ignored (a preview looks at the past) and a ``once`` rule is shown
    at its first firing only, as it would have behaved.
    """
    if len(candles) > MAX_PREVIEW_CANDLES:
        candles = candles[-MAX_PREVIEW_CANDLES:]
    book = ConditionBook()
    if prev_close is not None:
        book.set_prev_close(symbol, prev_close)
    book.add(PREVIEW_RULE_ID, symbol, spec.model_copy(update={"expires_at": None}))
    book.warmup_requests()
    fired: list[ConditionFired] = []
    for candle in candles:
        for tick in candle_path(candle):
            fired.extend(book.on_tick(tick).fired)
    if candles:
        last = candles[-1]
        fired.extend(book.close_until(last.timeframe.bucket(last.start)[1]).fired)
    return fired
