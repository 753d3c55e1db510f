"""The indexed rule book: price rules evaluated at a cost of O(log n + triggered) per tick.

Thousands of users may each hold many alerts on the same popular symbols, and a busy
symbol prints several trades a second. Looping over every rule on every tick would
make the runner's cost grow with the number of *idle* rules. Instead each symbol keeps
two sorted lists of ``(level, rule_id)`` entries, and a tick that moves the price from
``p0`` to ``p1`` bisects to the entries between the two prices and touches nothing else.

Index
-----
* An *up* entry at ``L`` triggers when the price moves up to or through it:
  ``p0 < L <= p1``.
* A *down* entry at ``L`` triggers when the price moves down to or through it:
  ``p1 <= L < p0``.
* An entry's action is ``FIRE`` (report a ``Fired``) or ``ARM`` (move the rule into
  its armed state; nothing is reported).
* A rule has at most one up entry and one down entry. A rule whose placement depends
  on a price not seen yet sits in the symbol's *pending* dict instead, resolved once,
  against the next tick.
* An up tick scans only the up list, a down tick only the down list. Equal ticks
  (``p1 == p0``) scan nothing.

States (``L`` = level, ``b`` = ``spec.rearm_band()``, ``p`` = the price the rule is
placed at)
------------------------------------------------------------------------------------
Armed (a fresh rule, or one that has re-armed):

==============  =================================================================
``above``       ``p < L``: up FIRE at ``L``. ``p >= L``: pending, fires on the next
                tick if that tick's price is still ``>= L`` (a condition, not a
                crossing: "tell me when/if it is above").
``below``       mirror: ``p > L``: down FIRE at ``L``; ``p <= L``: pending.
``cross_up``    ``p < L``: up FIRE at ``L``. ``p >= L``: down ARM at ``L - 1`` (the
                price must first be strictly below ``L``), then up FIRE at ``L``.
``cross_down``  mirror: ``p > L``: down FIRE at ``L``; ``p <= L``: up ARM at ``L + 1``.
``cross``       ``p < L``: as ``cross_up``; ``p > L``: as ``cross_down``. ``p == L``:
                neither crossing is possible from the level itself (a crossing
                starts strictly on one side), so the rule *waits*: up ARM at
                ``L + 1`` and down ARM at ``L - 1``. Whichever side the price leaves
                to, the rule becomes armed for the crossing back from that side.
==============  =================================================================

After a FIRE: ``once`` removes the rule (``Fired.finished`` is true). ``rearm``
*disarms* it, and a disarmed rule re-arms once the price has moved a band away from
the level, on the side it has to come back from:

==========================  ===========================================================
``above`` / ``cross_up``    down ARM at ``L - b``; at ``p <= L - b`` it re-arms (up FIRE
                            at ``L``).
``below`` / ``cross_down``  up ARM at ``L + b``; at ``p >= L + b`` it re-arms.
``cross``                   down ARM at ``L - b`` *and* up ARM at ``L + b``. Once the
                            price is ``>= L + b`` it is armed for the downward crossing
                            (down FIRE at ``L``); once ``<= L - b``, for the upward one.
                            So after firing upward, the downward crossing counts only
                            after the price has first gone a band above the level, and
                            jitter inside ``(L - b, L + b)`` is never reported. A fire
                            whose own tick already lands a band past the level re-arms
                            for the opposite crossing in that same tick.
==========================  ===========================================================

A disarmed rule placed at a price already outside its band is armed directly.

Within one tick the triggered entries are a snapshot taken before any of them is
processed, and every placement a trigger makes is either on the opposite list (not
scanned by this tick) or beyond ``p1``. So a rule fires at most once per tick: it
cannot fire, re-arm and fire again. Pending rules are resolved after the scan, and
only those that were pending before the tick.

Adding and seeding
------------------
* ``add`` with the symbol's last price known places the rule at that price (table
  above). With the last price unknown the rule is pending and is placed against the
  first tick; only ``above``/``below`` can fire on that tick (their condition holds),
  crossings are never inferred from a single observation.
* ``fire_count > 0`` means the rule fired before (a restart, or an edit). A ``once``
  rule is then already finished and is not indexed. A ``rearm`` rule starts
  *disarmed*, so a restart never repeats an alert for a price that has not retreated
  by the band since the last one.
* ``seed_price`` sets the last price without evaluating: nothing fires, and every rule
  of the symbol is re-placed at the new price in its current armed/disarmed state (a
  gap is not a crossing, but an ``above`` rule that now holds fires on the next tick).

Fired lists are deterministic: up ticks report in ascending ``(level, rule_id)``
order, down ticks in descending order, then resolved pending rules by ``rule_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from sortedcontainers import SortedList

from engines.market import Tick
from engines.rules.spec import PriceOp, PriceRuleSpec


class Action(Enum):
    """What a triggered index entry does."""

    FIRE = "fire"
    ARM = "arm"


@dataclass(frozen=True, slots=True)
class Fired:
    """One alert. ``f"{rule_id}:{fire_no}"`` is the outbox idempotency key."""

    rule_id: int
    symbol: str
    op: PriceOp
    level: int
    price: int
    prev_price: int | None
    ts: datetime
    fire_no: int
    finished: bool


class _Rule:
    """Mutable per-rule state. Kept apart from the frozen spec so edits replace it whole."""

    __slots__ = (
        "armed",
        "band",
        "down_action",
        "down_level",
        "fire_count",
        "level",
        "once",
        "op",
        "pending",
        "rule_id",
        "symbol",
        "up_action",
        "up_level",
    )

    def __init__(self, rule_id: int, symbol: str, spec: PriceRuleSpec, fire_count: int) -> None:
        self.rule_id = rule_id
        self.symbol = symbol
        self.op = spec.op
        self.level = spec.level
        self.band = spec.rearm_band()
        self.once = spec.repeat == "once"
        self.fire_count = fire_count
        self.armed = fire_count == 0
        self.pending = False
        self.up_level: int | None = None
        self.up_action: Action | None = None
        self.down_level: int | None = None
        self.down_action: Action | None = None


class _SymbolIndex:
    """The sorted entries, pending rules and rule ids of one symbol."""

    __slots__ = ("down", "pending", "rule_ids", "up")

    def __init__(self) -> None:
        self.up: SortedList = SortedList()
        self.down: SortedList = SortedList()
        self.pending: dict[int, _Rule] = {}
        self.rule_ids: set[int] = set()


class RuleBook:
    """Price rules of all symbols, indexed so a tick costs O(log n + triggered).

    ``visited`` counts index entries (and pending rules) examined over all ticks; it
    lets tests prove that idle rules cost nothing, without timing anything.
    """

    def __init__(self) -> None:
        self._rules: dict[int, _Rule] = {}
        self._index: dict[str, _SymbolIndex] = {}
        self._last: dict[str, int] = {}
        self.visited: int = 0

    # -- collection API -------------------------------------------------------------

    def add(self, rule_id: int, symbol: str, spec: PriceRuleSpec, fire_count: int = 0) -> None:
        """Index a rule; re-adding an id replaces the old rule (that is how edits apply).

        ``fire_count`` is how often the rule has fired already (from the DB), so the
        next ``Fired.fire_no`` continues the sequence and idempotency keys stay unique.
        """
        if fire_count < 0:
            raise ValueError(f"fire_count must be >= 0, got {fire_count}")
        self.remove(rule_id)
        if spec.repeat == "once" and fire_count > 0:
            return  # already finished: a once-rule never fires a second time
        rule = _Rule(rule_id, symbol, spec, fire_count)
        idx = self._index.get(symbol)
        if idx is None:
            idx = self._index[symbol] = _SymbolIndex()
        idx.rule_ids.add(rule_id)
        self._rules[rule_id] = rule
        last = self._last.get(symbol)
        if last is None:
            self._set_pending(idx, rule)
        else:
            self._place(idx, rule, last)

    def remove(self, rule_id: int) -> None:
        """Forget a rule; absent ids are fine (a delete may race a finished rule)."""
        rule = self._rules.pop(rule_id, None)
        if rule is None:
            return
        idx = self._index[rule.symbol]
        self._clear(idx, rule)
        idx.rule_ids.discard(rule_id)
        if not idx.rule_ids:
            del self._index[rule.symbol]

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def symbols(self) -> set[str]:
        """Symbols that have at least one live rule: what the market hub must subscribe."""
        return set(self._index)

    def last_price(self, symbol: str) -> int | None:
        """The last price seen (tick or seed) for ``symbol``, or None."""
        return self._last.get(symbol)

    def seed_price(self, symbol: str, price: int) -> None:
        """Set the last price from a quote without evaluating anything.

        Used at start-up (and after a reconnect): pending rules get placed, so a
        crossing on the very first tick is recognised. Rules already placed are
        re-placed at the new price in their current armed/disarmed state, because the
        price may have jumped past their entries while nobody was watching.
        """
        prev = self._last.get(symbol)
        self._last[symbol] = price
        idx = self._index.get(symbol)
        if idx is None or prev == price:
            return
        for rule_id in sorted(idx.rule_ids):
            rule = self._rules[rule_id]
            self._clear(idx, rule)
            self._place(idx, rule, price)

    # -- evaluation -----------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[Fired]:
        """Advance ``tick.symbol`` to ``tick.price`` and report the rules that fired."""
        symbol = tick.symbol
        p1 = tick.price
        p0 = self._last.get(symbol)
        self._last[symbol] = p1
        idx = self._index.get(symbol)
        if idx is None:
            return []
        fired: list[Fired] = []
        # Snapshot the pending rules first: a rule that becomes pending while this tick
        # is processed must wait for the next tick.
        due: dict[int, _Rule] | None = None
        if idx.pending:
            due = idx.pending
            idx.pending = {}
            for rule in due.values():
                rule.pending = False
        if p0 is not None and p1 != p0:
            if p1 > p0:
                hits = list(idx.up.irange((p0 + 1,), (p1 + 1,), inclusive=(True, False)))
                self.visited += len(hits)
                for _level, rule_id in hits:
                    rule = self._rules[rule_id]
                    if rule.up_action is Action.FIRE:
                        self._fire(idx, rule, tick, p0, fired)
                    else:
                        self._arm(idx, rule, p1)
            else:
                hits = list(idx.down.irange((p1,), (p0,), inclusive=(True, False), reverse=True))
                self.visited += len(hits)
                for _level, rule_id in hits:
                    rule = self._rules[rule_id]
                    if rule.down_action is Action.FIRE:
                        self._fire(idx, rule, tick, p0, fired)
                    else:
                        self._arm(idx, rule, p1)
        if due:
            self.visited += len(due)
            for rule_id in sorted(due):
                rule = due[rule_id]
                if rule.armed and (
                    (rule.op is PriceOp.ABOVE and p1 >= rule.level)
                    or (rule.op is PriceOp.BELOW and p1 <= rule.level)
                ):
                    self._fire(idx, rule, tick, p0, fired)
                else:
                    self._place(idx, rule, p1)
        return fired

    # -- state transitions ----------------------------------------------------------

    def _fire(
        self, idx: _SymbolIndex, rule: _Rule, tick: Tick, p0: int | None, out: list[Fired]
    ) -> None:
        rule.fire_count += 1
        out.append(
            Fired(
                rule_id=rule.rule_id,
                symbol=tick.symbol,
                op=rule.op,
                level=rule.level,
                price=tick.price,
                prev_price=p0,
                ts=tick.ts,
                fire_no=rule.fire_count,
                finished=rule.once,
            )
        )
        if rule.once:
            self.remove(rule.rule_id)
            return
        self._clear(idx, rule)
        rule.armed = False
        self._place_disarmed(idx, rule, tick.price)

    def _arm(self, idx: _SymbolIndex, rule: _Rule, price: int) -> None:
        """An ARM entry triggered: the price is now on the side a FIRE must come from."""
        self._clear(idx, rule)
        rule.armed = True
        self._place_armed(idx, rule, price)

    def _place(self, idx: _SymbolIndex, rule: _Rule, price: int) -> None:
        if rule.armed:
            self._place_armed(idx, rule, price)
        else:
            self._place_disarmed(idx, rule, price)

    def _place_armed(self, idx: _SymbolIndex, rule: _Rule, price: int) -> None:
        level = rule.level
        op = rule.op
        if op is PriceOp.ABOVE:
            if price >= level:
                self._set_pending(idx, rule)
            else:
                self._put_up(idx, rule, level, Action.FIRE)
        elif op is PriceOp.BELOW:
            if price <= level:
                self._set_pending(idx, rule)
            else:
                self._put_down(idx, rule, level, Action.FIRE)
        elif op is PriceOp.CROSS_UP:
            if price < level:
                self._put_up(idx, rule, level, Action.FIRE)
            else:
                self._put_down(idx, rule, level - 1, Action.ARM)
        elif op is PriceOp.CROSS_DOWN:
            if price > level:
                self._put_down(idx, rule, level, Action.FIRE)
            else:
                self._put_up(idx, rule, level + 1, Action.ARM)
        elif price < level:  # CROSS below the level: armed as cross_up
            self._put_up(idx, rule, level, Action.FIRE)
        elif price > level:  # CROSS above the level: armed as cross_down
            self._put_down(idx, rule, level, Action.FIRE)
        else:  # CROSS exactly at the level: wait until the price leaves it
            self._put_up(idx, rule, level + 1, Action.ARM)
            self._put_down(idx, rule, level - 1, Action.ARM)

    def _place_disarmed(self, idx: _SymbolIndex, rule: _Rule, price: int) -> None:
        level = rule.level
        low = level - rule.band
        high = level + rule.band
        op = rule.op
        if op is PriceOp.ABOVE or op is PriceOp.CROSS_UP:
            rearmed = price <= low
        elif op is PriceOp.BELOW or op is PriceOp.CROSS_DOWN:
            rearmed = price >= high
        else:
            rearmed = price <= low or price >= high
        if rearmed:
            rule.armed = True
            self._place_armed(idx, rule, price)
            return
        if op is not PriceOp.BELOW and op is not PriceOp.CROSS_DOWN:
            self._put_down(idx, rule, low, Action.ARM)
        if op is not PriceOp.ABOVE and op is not PriceOp.CROSS_UP:
            self._put_up(idx, rule, high, Action.ARM)

    # -- entry bookkeeping ----------------------------------------------------------

    @staticmethod
    def _put_up(idx: _SymbolIndex, rule: _Rule, level: int, action: Action) -> None:
        idx.up.add((level, rule.rule_id))
        rule.up_level = level
        rule.up_action = action

    @staticmethod
    def _put_down(idx: _SymbolIndex, rule: _Rule, level: int, action: Action) -> None:
        idx.down.add((level, rule.rule_id))
        rule.down_level = level
        rule.down_action = action

    @staticmethod
    def _set_pending(idx: _SymbolIndex, rule: _Rule) -> None:
        idx.pending[rule.rule_id] = rule
        rule.pending = True

    @staticmethod
    def _clear(idx: _SymbolIndex, rule: _Rule) -> None:
        """Take the rule out of the index and the pending dict (O(log n))."""
        if rule.up_level is not None:
            idx.up.remove((rule.up_level, rule.rule_id))
            rule.up_level = None
            rule.up_action = None
        if rule.down_level is not None:
            idx.down.remove((rule.down_level, rule.rule_id))
            rule.down_level = None
            rule.down_action = None
        if rule.pending:
            idx.pending.pop(rule.rule_id, None)
            rule.pending = False
