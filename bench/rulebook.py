"""RuleBook throughput: does a tick's cost stay flat as the number of rules grows?

The book is meant to cost O(log n + triggered) per tick. This replays one seeded
random walk (in whole KRX ticks, so levels are hit exactly as on the exchange) against
books of 1k, 10k and 100k price rules over 50 symbols, and reports per size the time
per tick (median of three runs) and the index entries visited per tick. If
``visited_per_tick`` tracks ``fired / ticks`` rather than the rule count, the index
does its job; ``ns_per_tick`` should then grow only with log n.
"""

from __future__ import annotations

import gc
import logging
import math
import platform
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from engines.market import Direction, Tick, price_limits, round_to_tick, step_ticks
from engines.rules import PriceOp, PriceRuleSpec, RuleBook

log = logging.getLogger("bench.rulebook")

SEED = 20240603
N_SYMBOLS = 50
SIZES = (1_000, 10_000, 100_000)
N_TICKS = 200_000
RUNS = 3
T0 = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)

Rule = tuple[int, str, PriceRuleSpec]


def _symbols(rng: random.Random) -> dict[str, int]:
    """Symbol code -> opening price, log-uniform between 1,000 and 500,000 won."""
    out: dict[str, int] = {}
    for i in range(N_SYMBOLS):
        raw = int(math.exp(rng.uniform(math.log(1_000), math.log(500_000))))
        out[f"{100_000 + 20 * i:06d}"] = round_to_tick(raw, Direction.DOWN)
    return out


def _ticks(rng: random.Random, opens: dict[str, int]) -> list[Tick]:
    """A random walk per symbol in whole ticks, kept inside the daily price limits."""
    codes = list(opens)
    price = dict(opens)
    limits = {code: price_limits(p) for code, p in opens.items()}
    steps = (-2, -1, -1, 0, 1, 1, 2)
    ticks: list[Tick] = []
    for i in range(N_TICKS):
        code = codes[rng.randrange(len(codes))]
        step = steps[rng.randrange(len(steps))]
        p = step_ticks(price[code], step)
        low, high = limits[code]
        if not low <= p <= high:
            p = step_ticks(price[code], -step)
        price[code] = p
        ticks.append(Tick(code, p, 1 + rng.randrange(100), T0 + timedelta(milliseconds=i)))
    return ticks


def _rules(rng: random.Random, opens: dict[str, int], n: int) -> list[Rule]:
    """``n`` rules, levels on the tick grid within ±30% of the symbol's open."""
    codes = list(opens)
    ops = list(PriceOp)
    rules: list[Rule] = []
    for rule_id in range(n):
        code = codes[rng.randrange(len(codes))]
        level = round_to_tick(max(1, int(opens[code] * rng.uniform(0.7, 1.3))))
        spec = PriceRuleSpec(
            op=ops[rng.randrange(len(ops))],
            level=level,
            repeat="rearm" if rng.random() < 0.5 else "once",
            rearm_band_pct=rng.choice((0.5, 1.0, 2.0)),
        )
        rules.append((rule_id, code, spec))
    return rules


def _build(rules: list[Rule], opens: dict[str, int]) -> tuple[RuleBook, int]:
    """A book as the runner builds it at start-up: rules from the DB, then quotes."""
    start = time.perf_counter_ns()
    book = RuleBook()
    for rule_id, code, spec in rules:
        book.add(rule_id, code, spec)
    for code, price in opens.items():
        book.seed_price(code, price)
    return book, time.perf_counter_ns() - start


def _replay(book: RuleBook, ticks: list[Tick]) -> tuple[int, int]:
    """Feed every tick; return (elapsed ns, number of Fired)."""
    on_tick = book.on_tick
    fired = 0
    gc.collect()
    start = time.perf_counter_ns()
    for tick in ticks:
        fired += len(on_tick(tick))
    return time.perf_counter_ns() - start, fired


def run() -> dict:
    """Run every size RUNS times; the JSON the runner prints."""
    rng = random.Random(SEED)
    opens = _symbols(rng)
    ticks = _ticks(rng, opens)
    log.info("generated %d ticks over %d symbols", len(ticks), len(opens))

    empty_ns, _ = _replay(RuleBook(), ticks)
    results: list[dict] = []
    for size in SIZES:
        rules = _rules(random.Random(SEED + size), opens, size)
        times: list[int] = []
        builds: list[int] = []
        fired_counts: set[int] = set()
        visited = 0
        for attempt in range(RUNS):
            book, build_ns = _build(rules, opens)
            elapsed, fired = _replay(book, ticks)
            times.append(elapsed)
            builds.append(build_ns)
            fired_counts.add(fired)
            visited = book.visited
            log.info("%d rules, run %d: %.0f ns/tick", size, attempt + 1, elapsed / len(ticks))
        if len(fired_counts) != 1:
            raise RuntimeError(f"replays disagree on the number fired: {sorted(fired_counts)}")
        results.append(
            {
                "rules": size,
                "ticks": len(ticks),
                "fired": fired_counts.pop(),
                "ns_per_tick": round(statistics.median(times) / len(ticks)),
                "visited_per_tick": round(visited / len(ticks), 4),
                "build_ms": round(statistics.median(builds) / 1e6, 1),
            }
        )
    return {
        "benchmark": "rulebook",
        "seed": SEED,
        "symbols": N_SYMBOLS,
        "runs": RUNS,
        "python": platform.python_version(),
        "empty_book_ns_per_tick": round(empty_ns / len(ticks)),
        "sizes": results,
    }
