"""RuleBook: semantics of every op, rearm hysteresis, pending rules, cost, and a
property test against a brute-force reference evaluator."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.market import Tick, step_ticks
from engines.rules.book import Fired, RuleBook, _Entries
from engines.rules.spec import PriceOp, PriceRuleSpec

T0 = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)
SYM = "005930"


class Feed:
    """Builds ticks with increasing timestamps, so Fired.ts is predictable."""

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self.n = 0

    def tick(self, price: int, symbol: str = SYM) -> list[Fired]:
        self.n += 1
        return self.book.on_tick(Tick(symbol, price, 1, T0 + timedelta(seconds=self.n)))

    def path(self, prices: list[int], symbol: str = SYM) -> list[list[Fired]]:
        return [self.tick(p, symbol) for p in prices]


def spec(op: str, level: int, repeat: str = "once", pct: float = 0.5) -> PriceRuleSpec:
    return PriceRuleSpec(op=op, level=level, repeat=repeat, rearm_band_pct=pct)


def ids(per_tick: list[list[Fired]]) -> list[list[tuple[int, int]]]:
    return [[(f.rule_id, f.fire_no) for f in fs] for fs in per_tick]


def flat(per_tick: list[list[Fired]]) -> list[Fired]:
    return [f for fs in per_tick for f in fs]


def book_at(price: int, *rules: tuple[int, PriceRuleSpec]) -> tuple[RuleBook, Feed]:
    book = RuleBook()
    book.seed_price(SYM, price)
    for rule_id, s in rules:
        book.add(rule_id, SYM, s)
    return book, Feed(book)


# -- crossings --------------------------------------------------------------------------


def test_cross_up_fires_once_with_full_record():
    book, feed = book_at(69900, (1, spec("cross_up", 70000)))
    out = feed.path([69900, 70100])
    assert out[0] == []
    assert out[1] == [
        Fired(
            rule_id=1,
            symbol=SYM,
            op=PriceOp.CROSS_UP,
            level=70000,
            price=70100,
            prev_price=69900,
            ts=T0 + timedelta(seconds=2),
            fire_no=1,
            finished=True,
        )
    ]
    assert 1 not in book
    assert len(book) == 0
    assert book.symbols() == set()


def test_cross_up_fires_on_touching_the_level():
    _, feed = book_at(69900, (1, spec("cross_up", 70000)))
    assert ids(feed.path([70000])) == [[(1, 1)]]


def test_once_back_and_forth_fires_exactly_once():
    _, feed = book_at(69900, (1, spec("cross_up", 70000)))
    out = feed.path([70100, 69900, 70100, 69000, 71000, 69900, 70000])
    assert ids(out) == [[(1, 1)], [], [], [], [], [], []]


def test_rearm_oscillation_inside_band_fires_once_then_retreat_rearms():
    # band = max(100-won tick, ceil(70000 * 0.5%)) = 350: re-arms at <= 69,650
    book, feed = book_at(69900, (1, spec("cross_up", 70000, "rearm")))
    out = feed.path([70100, 69900, 70100, 69700, 70000, 69700, 70200])
    assert flat(out)[0].fire_no == 1
    assert [f.fire_no for f in flat(out)] == [1]
    assert 1 in book
    out = feed.path([69600, 69800, 70000])
    assert ids(out) == [[], [], [(1, 2)]]
    assert flat(out)[0].finished is False


def test_rearm_band_boundary_is_inclusive():
    _, feed = book_at(69900, (1, spec("cross_up", 70000, "rearm")))
    # 69,650 is exactly level - band: it re-arms (<=), 69,651 does not.
    assert ids(feed.path([70000, 69651, 70000, 69650, 70000])) == [[(1, 1)], [], [], [], [(1, 2)]]


def test_cross_down_mirror():
    book, feed = book_at(70100, (1, spec("cross_down", 70000, "rearm")))
    out = feed.path([70100, 69900, 70100, 69900, 70300, 69900, 70400, 70000])
    assert ids(out) == [[], [(1, 1)], [], [], [], [], [], [(1, 2)]]
    assert flat(out)[0].op is PriceOp.CROSS_DOWN


def test_cross_down_once_mirror():
    book, feed = book_at(70100, (1, spec("cross_down", 70000)))
    assert ids(feed.path([70000, 70100, 69000])) == [[(1, 1)], [], []]
    assert 1 not in book


def test_cross_up_added_above_waits_for_price_to_go_below():
    _, feed = book_at(70100, (1, spec("cross_up", 70000)))
    assert ids(feed.path([70200, 70000, 70100])) == [[], [], []]
    assert ids(feed.path([69900, 70000])) == [[], [(1, 1)]]


def test_cross_up_added_exactly_at_level_waits():
    _, feed = book_at(70000, (1, spec("cross_up", 70000)))
    assert ids(feed.path([70100, 69900, 70000])) == [[], [], [(1, 1)]]


def test_cross_down_added_below_waits_for_price_to_go_above():
    _, feed = book_at(69900, (1, spec("cross_down", 70000)))
    assert ids(feed.path([69800, 70000, 69900, 70100, 70000])) == [[], [], [], [], [(1, 1)]]


# -- conditions ---------------------------------------------------------------------------


def test_above_added_while_above_fires_on_next_tick():
    book, feed = book_at(70500, (1, spec("above", 70000)))
    out = feed.tick(70600)
    assert [(f.rule_id, f.fire_no, f.finished, f.prev_price) for f in out] == [(1, 1, True, 70500)]
    assert 1 not in book


def test_above_added_while_above_fires_on_next_tick_at_exactly_the_level():
    _, feed = book_at(70500, (1, spec("above", 70000)))
    assert ids(feed.path([70000])) == [[(1, 1)]]


def test_above_added_while_above_fires_on_an_equal_next_tick():
    _, feed = book_at(70500, (1, spec("above", 70000)))
    assert ids([feed.tick(70500)]) == [[(1, 1)]]


def test_above_added_while_above_but_next_tick_below_waits_for_rise():
    _, feed = book_at(70500, (1, spec("above", 70000)))
    assert ids(feed.path([69900, 69800, 70000])) == [[], [], [(1, 1)]]


def test_above_added_below_fires_when_reached():
    _, feed = book_at(69000, (1, spec("above", 70000)))
    assert ids(feed.path([69500, 70000, 71000])) == [[], [(1, 1)], []]


def test_below_added_while_below_fires_on_next_tick_and_mirror():
    _, feed = book_at(69000, (1, spec("below", 70000)))
    assert ids(feed.path([69100])) == [[(1, 1)]]
    _, feed = book_at(71000, (2, spec("below", 70000)))
    assert ids(feed.path([70500, 70000])) == [[], [(2, 1)]]


def test_above_rearm_fires_again_only_after_retreat():
    _, feed = book_at(71000, (1, spec("above", 70000, "rearm", pct=1.0)))  # band 700
    out = feed.path([71000, 71500, 70000, 69500, 70000, 69300, 70100])
    assert ids(out) == [[(1, 1)], [], [], [], [], [], [(1, 2)]]


# -- pending (price unknown) --------------------------------------------------------------


def test_pending_rules_resolved_by_first_tick():
    book = RuleBook()
    feed = Feed(book)
    book.add(1, SYM, spec("above", 70000))
    book.add(2, SYM, spec("cross_up", 70000))
    book.add(3, SYM, spec("below", 70000))
    book.add(4, SYM, spec("cross_down", 70000))
    assert book.last_price(SYM) is None
    out = feed.tick(70500)
    # above holds on the first observation; a crossing is never inferred from one print
    assert [(f.rule_id, f.prev_price) for f in out] == [(1, None)]
    assert book.last_price(SYM) == 70500
    # down ticks report in descending (level, rule_id) order
    assert ids(feed.path([69900, 70100])) == [[(4, 1), (3, 1)], [(2, 1)]]
    assert len(book) == 0


def test_pending_cross_up_at_or_above_level_needs_a_dip_first():
    book = RuleBook()
    feed = Feed(book)
    book.add(1, SYM, spec("cross_up", 70000))
    assert ids(feed.path([70000, 70100, 69900, 70000])) == [[], [], [], [(1, 1)]]


def test_seed_places_pending_rules_so_first_tick_can_cross():
    book = RuleBook()
    feed = Feed(book)
    book.add(1, SYM, spec("cross_up", 70000))
    book.seed_price(SYM, 69900)
    assert book.last_price(SYM) == 69900
    assert ids([feed.tick(70100)]) == [[(1, 1)]]


def test_seed_does_not_fire_and_a_gap_is_not_a_crossing():
    book, feed = book_at(69900, (1, spec("cross_up", 70000)), (2, spec("above", 70000)))
    book.seed_price(SYM, 70500)
    assert book.last_price(SYM) == 70500
    # above now holds: it fires on the next tick; cross_up must dip below first
    assert ids(feed.path([70600, 69900, 70000])) == [[(2, 1)], [], [(1, 1)]]


# -- cross ----------------------------------------------------------------------------------


def test_cross_once_fires_on_first_crossing_either_way():
    _, feed = book_at(70100, (1, spec("cross", 70000)))
    assert ids(feed.path([69900, 70100])) == [[(1, 1)], []]
    _, feed = book_at(69900, (2, spec("cross", 70000)))
    assert ids(feed.path([70100, 69900])) == [[(2, 1)], []]


def test_cross_rearm_both_directions_with_band():
    # band 350: after the up-fire, the down crossing counts once price went >= 70,350
    book, feed = book_at(69900, (1, spec("cross", 70000, "rearm")))
    out = feed.path([70100, 69900, 70200, 69950, 70400, 70300, 69900])
    assert ids(out) == [[(1, 1)], [], [], [], [], [], [(1, 2)]]
    assert [f.op for f in flat(out)] == [PriceOp.CROSS, PriceOp.CROSS]
    # now below after a down-fire; retreat below 69,650 re-arms the up crossing
    out = feed.path([70000, 69500, 70000])
    assert ids(out) == [[], [], [(1, 3)]]


def test_cross_rearm_retreat_side_rearms_for_same_direction():
    book, feed = book_at(69900, (1, spec("cross", 70000, "rearm")))
    # fired up, then fell through the band without ever clearing it above:
    # the jitter episode counts once, and the rule re-arms for the next up crossing
    assert ids(feed.path([70100, 69500, 70000])) == [[(1, 1)], [], [(1, 2)]]


def test_cross_fire_tick_beyond_band_rearms_opposite_immediately():
    _, feed = book_at(69900, (1, spec("cross", 70000, "rearm")))
    assert ids(feed.path([71000, 69900])) == [[(1, 1)], [(1, 2)]]


def test_cross_added_exactly_at_level_waits_for_price_to_leave():
    _, feed = book_at(70000, (1, spec("cross", 70000)))
    assert ids(feed.path([70000, 70100, 70000])) == [[], [], [(1, 1)]]
    _, feed = book_at(70000, (2, spec("cross", 70000)))
    assert ids(feed.path([69900, 70000])) == [[], [(2, 1)]]


# -- gaps, edits, removal, other symbols ------------------------------------------------


def test_gap_tick_fires_every_level_in_range_in_path_order():
    book, feed = book_at(
        69000,
        (3, spec("cross_up", 71000)),
        (1, spec("above", 70000)),
        (2, spec("cross", 70500)),
        (4, spec("cross_up", 72100)),
    )
    out = feed.tick(72000)
    assert [(f.rule_id, f.level) for f in out] == [(1, 70000), (2, 70500), (3, 71000)]
    assert all(f.prev_price == 69000 and f.price == 72000 for f in out)
    out = feed.tick(68000)
    assert out == []
    book.add(5, SYM, spec("below", 67000))
    book.add(6, SYM, spec("cross_down", 66000))
    book.add(7, SYM, spec("below", 65000))
    assert [f.rule_id for f in feed.tick(64000)] == [5, 6, 7]


def test_gap_tick_cannot_fire_rearm_and_fire_again():
    # the jump crosses 70000, the re-arm level 69650 and 70000 again in one print
    book, feed = book_at(69900, (1, spec("cross_up", 70000, "rearm")))
    assert ids(feed.path([70100, 60000, 80000])) == [[(1, 1)], [], [(1, 2)]]
    book, feed = book_at(69900, (1, spec("cross", 70000, "rearm")))
    assert ids(feed.path([80000, 60000, 80000])) == [[(1, 1)], [(1, 2)], [(1, 3)]]


def test_remove_stops_firing_and_absent_remove_is_fine():
    book, feed = book_at(69900, (1, spec("cross_up", 70000)), (2, spec("cross_up", 70000)))
    book.remove(1)
    book.remove(1)
    book.remove(999)
    assert 1 not in book
    assert 2 in book
    assert ids([feed.tick(70100)]) == [[(2, 1)]]


def test_remove_pending_rule():
    book = RuleBook()
    book.add(1, SYM, spec("above", 100))
    book.remove(1)
    assert len(book) == 0
    assert Feed(book).tick(200) == []


def test_readd_replaces_rule():
    book, feed = book_at(69900, (1, spec("cross_up", 70000)))
    book.add(1, SYM, spec("cross_up", 71000))
    assert len(book) == 1
    assert ids(feed.path([70100, 71000])) == [[], [(1, 1)]]
    # replacing onto another symbol moves it
    book.add(2, SYM, spec("above", 50000))
    book.add(2, "000660", spec("above", 50000))
    assert book.symbols() == {"000660"}
    assert feed.tick(80000) == []
    assert ids([feed.tick(60000, "000660")]) == [[(2, 1)]]


def test_fire_count_continues_sequence_and_finished_once_is_not_indexed():
    book, feed = book_at(69000)
    book.add(1, SYM, spec("cross_up", 70000), fire_count=1)
    assert 1 not in book
    # a rearm rule restored after a restart starts disarmed: no repeat at the same price
    book.add(2, SYM, spec("above", 68000, "rearm"), fire_count=4)
    book.seed_price(SYM, 69000)
    assert feed.tick(69100) == []
    out = feed.path([67000, 68000])
    assert [(f.rule_id, f.fire_no) for f in flat(out)] == [(2, 5)]
    with pytest.raises(ValueError):
        book.add(3, SYM, spec("above", 1), fire_count=-1)


def test_equal_ticks_touch_nothing():
    book, feed = book_at(70000, *((i, spec("cross", 70000 + 100 * (i % 3 - 1))) for i in range(30)))
    before = book.visited
    for _ in range(100):
        assert feed.tick(70000) == []
    assert book.visited == before


def test_other_symbols_and_bookkeeping():
    book = RuleBook()
    feed = Feed(book)
    assert feed.tick(1000, "035720") == []
    assert book.last_price("035720") == 1000
    assert book.symbols() == set()
    book.add(1, "035720", spec("cross_up", 1100))
    book.add(2, SYM, spec("cross_up", 70000))
    assert book.symbols() == {"035720", SYM}
    assert len(book) == 2
    assert 1 in book and 3 not in book and "1" not in book
    assert feed.tick(1200, SYM) == []  # pending on SYM: first observation only
    assert ids([feed.tick(1100, "035720")]) == [[(1, 1)]]
    assert book.symbols() == {SYM}


def test_determinism_replay_gives_identical_fired_lists():
    rng = random.Random(7)
    specs = [
        (
            i,
            spec(
                rng.choice(list(PriceOp)).value,
                rng.randrange(60000, 80000, 100),
                rng.choice(["once", "rearm"]),
                rng.choice([0.1, 0.5, 2.0]),
            ),
        )
        for i in range(300)
    ]
    prices = [70000]
    for _ in range(3000):
        prices.append(max(50000, step_ticks(prices[-1], rng.randint(-5, 5))))

    def run() -> list[list[Fired]]:
        book = RuleBook()
        for rule_id, s in specs:
            book.add(rule_id, SYM, s, fire_count=rule_id % 2 if s.repeat == "rearm" else 0)
        return Feed(book).path(prices)

    first = run()
    assert sum(map(len, first)) > 100
    assert run() == first
    keys = [f"{f.rule_id}:{f.fire_no}" for f in flat(first)]
    assert len(keys) == len(set(keys))


# -- cost -------------------------------------------------------------------------------


def test_tick_cost_does_not_grow_with_untouched_rules():
    rng = random.Random(1)
    book, feed = book_at(70000)
    n = 100_000
    for i in range(n):
        # spread over 1,000 .. 1,000,000 won, but keep (69,900, 70,100] empty
        level = rng.randrange(1000, 1_000_000)
        if 69_900 < level <= 70_100:
            level += 1000
        s = spec(rng.choice(list(PriceOp)).value, level, rng.choice(["once", "rearm"]))
        book.add(i, SYM, s)
    book.add(n, SYM, spec("cross_up", 70100))
    book.add(n + 1, SYM, spec("above", 70100, "rearm"))
    book.add(n + 2, SYM, spec("cross", 70100))
    assert len(book) == n + 3
    feed.tick(70000)  # resolves rules that were pending (above/below holding at 70,000)

    before = book.visited
    out = feed.tick(70100)
    assert sorted(f.rule_id for f in out) == [n, n + 1, n + 2]
    assert book.visited - before <= len(out) + 2

    before = book.visited
    assert feed.tick(70000) == []  # one tick down: nothing between 70,000 and 70,100
    assert book.visited - before <= 2
    before = book.visited
    assert feed.tick(5_000, "000660") == []  # a symbol without rules
    assert book.visited == before


# -- property: the book equals a brute-force evaluator ------------------------------------


class RefRule:
    """One rule stated as plainly as possible: armed flag + conditions on (prev, cur)."""

    def __init__(self, symbol: str, s: PriceRuleSpec, fire_count: int) -> None:
        self.symbol = symbol
        self.op = s.op
        self.level = s.level
        self.band = s.rearm_band()
        self.once = s.repeat == "once"
        self.fire_count = fire_count
        self.armed = fire_count == 0

    def rearm_ok(self, p: int) -> bool:
        low, high = self.level - self.band, self.level + self.band
        if self.op in (PriceOp.ABOVE, PriceOp.CROSS_UP):
            return p <= low
        if self.op in (PriceOp.BELOW, PriceOp.CROSS_DOWN):
            return p >= high
        return p <= low or p >= high

    def condition(self, prev: int | None, cur: int) -> bool:
        lv = self.level
        up = prev is not None and prev < lv <= cur
        down = prev is not None and prev > lv >= cur
        return {
            PriceOp.ABOVE: cur >= lv,
            PriceOp.BELOW: cur <= lv,
            PriceOp.CROSS_UP: up,
            PriceOp.CROSS_DOWN: down,
            PriceOp.CROSS: up or down,
        }[self.op]


class RefBook:
    """Loops over every rule on every tick. Slow, obviously right, shares no code."""

    def __init__(self) -> None:
        self.rules: dict[int, RefRule] = {}
        self.last: dict[str, int] = {}

    def add(self, rule_id: int, symbol: str, s: PriceRuleSpec, fire_count: int) -> None:
        self.rules.pop(rule_id, None)
        if s.repeat == "once" and fire_count > 0:
            return
        rule = RefRule(symbol, s, fire_count)
        last = self.last.get(symbol)
        if not rule.armed and last is not None and rule.rearm_ok(last):
            rule.armed = True
        self.rules[rule_id] = rule

    def remove(self, rule_id: int) -> None:
        self.rules.pop(rule_id, None)

    def seed(self, symbol: str, price: int) -> None:
        for rule in self.rules.values():
            if rule.symbol == symbol and not rule.armed and rule.rearm_ok(price):
                rule.armed = True
        self.last[symbol] = price

    def tick(self, symbol: str, price: int) -> set[tuple[int, int, bool]]:
        prev = self.last.get(symbol)
        out = set()
        for rule_id, rule in list(self.rules.items()):
            if rule.symbol != symbol:
                continue
            if rule.armed and rule.condition(prev, price):
                rule.fire_count += 1
                out.add((rule_id, rule.fire_count, rule.once))
                if rule.once:
                    del self.rules[rule_id]
                    continue
                rule.armed = False
            if not rule.armed and rule.rearm_ok(price):
                rule.armed = True
        self.last[symbol] = price
        return out


SYMBOLS = ["A", "B"]
# A narrow price range makes crossings, exact touches and band edges frequent.
prices = st.integers(min_value=1, max_value=12)
rule_specs = st.builds(
    PriceRuleSpec,
    op=st.sampled_from(list(PriceOp)),
    level=st.integers(min_value=1, max_value=12),
    repeat=st.sampled_from(["once", "rearm"]),
    rearm_band_pct=st.sampled_from([0.5, 10.0, 20.0]),
)
actions = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), prices),
    st.tuples(st.just("tick"), st.just("A"), prices),
    st.tuples(st.just("tick"), st.just("A"), prices),
    st.tuples(
        st.just("add"),
        st.integers(min_value=0, max_value=5),
        st.sampled_from(SYMBOLS),
        rule_specs,
        st.sampled_from([0, 0, 0, 1, 3]),
    ),
    st.tuples(st.just("remove"), st.integers(min_value=0, max_value=5)),
    st.tuples(st.just("seed"), st.sampled_from(SYMBOLS), prices),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=20, max_size=120))
def test_book_matches_brute_force_reference(script):
    book = RuleBook()
    ref = RefBook()
    n = 0
    for action in script:
        kind = action[0]
        if kind == "tick":
            _, symbol, price = action
            n += 1
            got = book.on_tick(Tick(symbol, price, 1, T0 + timedelta(seconds=n)))
            assert len(got) == len({f.rule_id for f in got})  # at most one fire per rule
            assert {(f.rule_id, f.fire_no, f.finished) for f in got} == ref.tick(symbol, price)
            assert all(f.symbol == symbol and f.price == price for f in got)
        elif kind == "add":
            _, rule_id, symbol, s, fire_count = action
            book.add(rule_id, symbol, s, fire_count)
            ref.add(rule_id, symbol, s, fire_count)
        elif kind == "remove":
            book.remove(action[1])
            ref.remove(action[1])
        else:
            _, symbol, price = action
            book.seed_price(symbol, price)
            ref.seed(symbol, price)
        assert len(book) == len(ref.rules)
        assert all(rule_id in book for rule_id in ref.rules)
        assert book.symbols() == {r.symbol for r in ref.rules.values()}


# -- the index layout: blocks, the quiet interval, Fired ------------------------------


def test_entries_blocks_match_a_sorted_list_under_churn():
    """Small blocks so that splits, emptied blocks and multi-block ranges all occur."""
    rng = random.Random(11)
    with patch.object(_Entries, "LOAD", 3):
        entries = _Entries()
        ref: dict[int, object] = {}
        for _ in range(4000):
            roll = rng.random()
            if roll < 0.55 or not ref:
                key = rng.randrange(-500, 500)
                if key not in ref:
                    rule = object()
                    entries.add(key, rule)  # type: ignore[arg-type]
                    ref[key] = rule
            elif roll < 0.85:
                key = rng.choice(sorted(ref))
                entries.remove(key)
                del ref[key]
            else:
                lo = rng.randrange(-520, 520)
                hi = lo + rng.randrange(0, 60)
                want = [k for k in sorted(ref) if lo <= k < hi]
                assert entries.pop_between(lo, hi) == [ref.pop(k) for k in want]
            keys = sorted(ref)
            assert list(entries) == keys
            assert len(entries) == len(keys)
            assert all(0 < len(b) <= 2 * 3 for b in entries.blocks)
            assert entries.maxes == [b[-1] for b in entries.blocks]
            assert [len(r) for r in entries.rules] == [len(b) for b in entries.blocks]
            assert [ref[k] for k in keys] == [r for rs in entries.rules for r in rs]
        with pytest.raises(ValueError):
            entries.remove(10_000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=20, max_size=120))
def test_book_matches_brute_force_reference_with_tiny_blocks(script):
    """The property test again, with blocks so small that every book spans several."""
    with patch.object(_Entries, "LOAD", 1):
        test_book_matches_brute_force_reference.hypothesis.inner_test(script)


def test_many_rules_on_one_symbol_match_reference_across_blocks():
    rng = random.Random(5)
    book = RuleBook()
    ref = RefBook()
    book.seed_price(SYM, 70_000)
    ref.seed(SYM, 70_000)
    with patch.object(_Entries, "LOAD", 8):
        for rule_id in range(600):
            s = spec(
                rng.choice(list(PriceOp)).value,
                rng.randrange(66_000, 74_000, 100),
                rng.choice(["once", "rearm"]),
                rng.choice([0.1, 0.5, 1.0]),
            )
            book.add(rule_id, SYM, s)
            ref.add(rule_id, SYM, s, 0)
        price = 70_000
        for n in range(1500):
            price = min(74_500, max(65_500, step_ticks(price, rng.randint(-3, 3))))
            got = book.on_tick(Tick(SYM, price, 1, T0 + timedelta(seconds=n)))
            assert {(f.rule_id, f.fire_no, f.finished) for f in got} == ref.tick(SYM, price)
    assert len(book) == len(ref.rules)


def test_rule_added_inside_a_quiet_interval_still_triggers():
    book, feed = book_at(70_000, (1, spec("cross_up", 80_000)), (2, spec("cross_down", 60_000)))
    assert feed.path([70_100, 70_000]) == [[], []]  # the interval now spans 60,001..79,999
    visited = book.visited
    assert feed.path([70_100, 70_200]) == [[], []]
    assert book.visited == visited  # quiet ticks read no entry
    book.add(3, SYM, spec("cross_up", 70_300))
    assert ids(feed.path([70_300])) == [[(3, 1)]]
    book.add(4, SYM, spec("below", 70_200, "rearm"))
    assert ids(feed.path([70_200, 70_300, 71_000, 70_100])) == [[(4, 1)], [], [], [(4, 2)]]


def test_seed_inside_a_quiet_interval_replaces_rules():
    book, feed = book_at(70_000, (1, spec("cross_up", 71_000)))
    assert feed.path([70_100]) == [[]]
    book.seed_price(SYM, 72_000)  # a gap is not a crossing: wait for a dip below first
    assert feed.path([71_500, 71_000]) == [[], []]
    assert ids(feed.path([70_900, 71_000])) == [[], [(1, 1)]]


def test_removed_rule_does_not_fire_from_a_quiet_interval():
    book, feed = book_at(70_000, (1, spec("cross_up", 70_500)), (2, spec("cross_up", 70_600)))
    assert feed.path([70_100]) == [[]]
    book.remove(1)
    assert ids(feed.path([70_700])) == [[(2, 1)]]


def test_rule_ids_must_fit_64_signed_bits():
    book, feed = book_at(70_000)
    book.add(-(2**63), SYM, spec("cross_up", 70_100))
    book.add(2**63 - 1, SYM, spec("cross_up", 70_100))
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError):
            book.add(bad, SYM, spec("above", 1))
    assert ids(feed.path([70_100])) == [[(-(2**63), 1), (2**63 - 1, 1)]]


def test_fired_is_immutable_and_compares_by_value():
    _, feed = book_at(69_900, (1, spec("cross_up", 70_000)))
    (fired,) = feed.tick(70_000)
    with pytest.raises(AttributeError):
        fired.price = 1  # type: ignore[misc]
    assert fired == Fired(1, SYM, PriceOp.CROSS_UP, 70_000, 70_000, 69_900, fired.ts, 1, True)
    assert hash(fired) == hash(Fired(*fired))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=20, max_size=120))
def test_entries_bracket_the_last_price_and_the_quiet_interval_is_exact(script):
    """What the quiet interval rests on: up entries lie above the last price, down
    entries below it, and the interval is the gap between the nearest two."""
    book = RuleBook()
    n = 0
    for action in script:
        kind = action[0]
        if kind == "tick":
            n += 1
            book.on_tick(Tick(action[1], action[2], 1, T0 + timedelta(seconds=n)))
        elif kind == "add":
            book.add(*action[1:])
        elif kind == "remove":
            book.remove(action[1])
        else:
            book.seed_price(action[1], action[2])
        for symbol, idx in book._index.items():
            up = [k >> 64 for k in idx.up]
            down = [k >> 64 for k in idx.down]
            last = book.last_price(symbol)
            if last is None:
                assert not up and not down
            assert all(level > last for level in up)
            assert all(level < last for level in down)
            if idx.pending:
                assert idx.quiet_lo > idx.quiet_hi
            else:
                assert idx.quiet_lo == (down[-1] + 1 if down else -math.inf)
                assert idx.quiet_hi == (up[0] - 1 if up else math.inf)


# -- handover: the stored armed state restores a rule exactly ---------------------------


def _stored(book: RuleBook, store: dict[int, bool]) -> None:
    """What the runner does after each tick: keep the flips ``drain_arming`` reports."""
    store.update(book.drain_arming())


def _handover(seed: int, restore_armed: bool) -> tuple[list, list]:
    """A leader dies after a random tick k of a random walk; a successor loads each
    rule with its stored fire count (and armed state, if ``restore_armed``), seeds
    the last price and sees the rest. Returns (successor's firings, uninterrupted)."""
    rng = random.Random(seed)
    specs = {
        i: spec(
            rng.choice(list(PriceOp)).value,
            rng.randrange(69_000, 71_000, 100),
            rng.choice(["once", "rearm", "rearm"]),
            rng.choice([0.1, 0.5, 1.0]),
        )
        for i in range(1, 9)
    }
    price, prices = 70_000, []
    for _ in range(rng.randrange(20, 120)):
        price = min(71_500, max(68_500, price + rng.choice([-1, 1]) * rng.randrange(0, 400, 50)))
        prices.append(price)
    cut = rng.randrange(1, len(prices))
    whole = RuleBook()
    whole.seed_price(SYM, 70_000)
    for rule_id, s in specs.items():
        whole.add(rule_id, SYM, s)
    feed = Feed(whole)
    store: dict[int, bool] = {}
    counts = dict.fromkeys(specs, 0)
    for p in prices[:cut]:
        for f in feed.tick(p):
            counts[f.rule_id] = f.fire_no
        store.update(whole.drain_arming())  # what the runner writes with each tick
    successor = RuleBook()
    for rule_id, s in specs.items():
        armed = store.get(rule_id) if restore_armed else None
        successor.add(rule_id, SYM, s, fire_count=counts[rule_id], armed=armed)
    successor.seed_price(SYM, prices[cut - 1])
    after = Feed(successor)
    after.n = feed.n
    return ids(after.path(prices[cut:])), ids(feed.path(prices[cut:]))


def test_a_book_restored_from_stored_armed_state_continues_exactly():
    """Over 400 random handovers every firing after the handover equals the
    uninterrupted book's. The same handovers restored from the fire count alone
    differ in many runs (a rule that re-armed before the handover misses its next
    crossing), so these walks do reach the case."""
    derived_differs = 0
    for seed in range(400):
        got, expected = _handover(seed, restore_armed=True)
        assert got == expected, seed
        got, expected = _handover(seed, restore_armed=False)
        derived_differs += got != expected
    assert derived_differs >= 20, derived_differs


def test_a_rule_that_rearmed_before_a_handover_fires_on_the_next_crossing():
    """The case the property test generalises, spelled out: cross_up 70,000 with a
    1% band fires, falls to 69,000 (re-arms), climbs back to 69,900 and the leader
    dies. Restored disarmed (the fire count alone) it would wait for 69,300 again."""
    book, feed = book_at(69_500, (1, spec("cross_up", 70_000, "rearm", 1.0)))
    assert ids(feed.path([70_100])) == [[(1, 1)]]
    assert book.drain_arming() == {1: False}
    feed.path([69_000])
    assert book.drain_arming() == {1: True}
    feed.path([69_900])
    assert book.drain_arming() == {}  # no flip, nothing to store
    restored = RuleBook()
    restored.add(1, SYM, spec("cross_up", 70_000, "rearm", 1.0), fire_count=1, armed=True)
    restored.seed_price(SYM, 69_900)
    assert ids(Feed(restored).path([70_000])) == [[(1, 2)]]
    derived = RuleBook()
    derived.add(1, SYM, spec("cross_up", 70_000, "rearm", 1.0), fire_count=1)
    derived.seed_price(SYM, 69_900)
    assert ids(Feed(derived).path([70_000])) == [[]]


def test_requeued_arming_is_reported_again():
    book, feed = book_at(69_500, (1, spec("cross_up", 70_000, "rearm", 1.0)))
    feed.path([70_100])
    lost = book.drain_arming()
    book.requeue_arming(lost)
    assert book.drain_arming() == {1: False}
    assert book.drain_arming() == {}
