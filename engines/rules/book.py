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

How the cost stays low
----------------------
The benchmark (``python -m bench rules``) replays 10^6 ticks over 10^6 rules; at that
size most of a tick's time went to interpreter overhead and cache misses, not to the
bisect itself, so the layout is built to touch little:

* An entry is one int, ``level << 64 | (rule_id + 2**63)``: int order is
  ``(level, rule_id)`` order, and ints compare far faster than tuples. Entries sit in
  sorted blocks with their rules alongside (``_Entries``), so a triggered entry hands
  over its rule without a lookup in the book-wide dict.
* Every up entry lies above the last price and every down entry below it (each is
  placed on the side it waits for, and the price cannot reach one without
  triggering it). Each symbol caches the gap between the highest down and the lowest
  up level, its *quiet interval* (``_SymbolIndex.settle``, O(1), redone after every
  change). A tick to a price inside it cannot trigger anything and returns after two
  comparisons, without reading an entry; most ticks do.
* A tick takes the entries it passed out with one slice deletion per block (each of
  them is re-placed anyway), and ``Fired`` is a named tuple built with
  ``tuple.__new__``.

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
  by the band since the last one, unless ``armed`` says how it was stored: every
  flip of a rule's armed state is reported by ``drain_arming``, so a runner taking
  over from another restores each rule exactly as the old one left it.
* ``seed_price`` sets the last price without evaluating: nothing fires, and every rule
  of the symbol is re-placed at the new price in its current armed/disarmed state (a
  gap is not a crossing, but an ``above`` rule that now holds fires on the next tick).

Fired lists are deterministic: up ticks report in ascending ``(level, rule_id)``
order, down ticks in descending order, then resolved pending rules by ``rule_id``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import Enum
from typing import NamedTuple

from engines.market import Tick
from engines.rules.spec import PriceOp, PriceRuleSpec


class Action(Enum):
    """What a triggered index entry does."""

    FIRE = "fire"
    ARM = "arm"


class Fired(NamedTuple):
    """One alert. ``f"{rule_id}:{fire_no}"`` is the outbox idempotency key.

    A named tuple rather than a frozen dataclass: it is just as immutable and has the
    same fields, but a frozen dataclass pays one ``object.__setattr__`` per field on
    construction (about 1.2 us a record against 0.3 us, measured on the benchmark
    machine), a large share of what a fire costs.
    """

    rule_id: int
    symbol: str
    op: PriceOp
    level: int
    price: int
    prev_price: int | None
    ts: datetime
    fire_no: int
    finished: bool


_ABOVE = PriceOp.ABOVE
_BELOW = PriceOp.BELOW
_CROSS_UP = PriceOp.CROSS_UP
_CROSS_DOWN = PriceOp.CROSS_DOWN
_FIRE = Action.FIRE
_ARM = Action.ARM

_SHIFT = 64
"""An entry is one int, ``level << 64 | (rule_id + 2**63)``: ordering ints orders by
``(level, rule_id)``, and comparing ints is several times cheaper than comparing
tuples, which is what every bisect of a tick does."""
_ID_OFFSET = 1 << 63
_ID_MIN = -_ID_OFFSET
_ID_MAX = _ID_OFFSET - 1

_new_fired = tuple.__new__
_EMPTY_LO = 1.0  # quiet_lo > quiet_hi: no price is quiet
_EMPTY_HI = 0.0


class _Entries:
    """One side (up or down) of a symbol's index: entry keys in sorted blocks, with
    each entry's rule in a parallel block.

    The same layout as ``sortedcontainers.SortedList`` (a list of sorted blocks plus
    each block's maximum), specialised: keys are plain ints, so every bisect is a
    C-level loop of int comparisons; there is no positional index to rebuild after a
    change; and the rules ride along, so a triggered entry needs no lookup in the
    book-wide rule dict (a cache miss or three on a large book). Blocks bound the cost
    of an insert or delete by the block size rather than by the rules on the symbol.
    """

    __slots__ = ("blocks", "maxes", "rules")

    LOAD = 1000
    """Blocks are split in halves of ``LOAD`` entries when they exceed ``2 * LOAD``."""

    def __init__(self) -> None:
        self.blocks: list[list[int]] = []
        self.rules: list[list[_Rule]] = []
        self.maxes: list[int] = []

    def __len__(self) -> int:
        return sum(map(len, self.blocks))

    def __iter__(self) -> Iterator[int]:
        """Every key, ascending."""
        for block in self.blocks:
            yield from block

    def add(self, key: int, rule: _Rule) -> None:
        """Insert ``key`` for ``rule`` (keys are unique: one entry per rule and side)."""
        maxes = self.maxes
        blocks = self.blocks
        if not maxes:
            blocks.append([key])
            self.rules.append([rule])
            maxes.append(key)
            return
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            pos -= 1
            block = blocks[pos]
            block.append(key)
            self.rules[pos].append(rule)
            maxes[pos] = key
        else:
            block = blocks[pos]
            i = bisect_left(block, key)
            block.insert(i, key)
            self.rules[pos].insert(i, rule)
        load = self.LOAD
        if len(block) > 2 * load:
            rules = self.rules[pos]
            blocks.insert(pos + 1, block[load:])
            self.rules.insert(pos + 1, rules[load:])
            del block[load:]
            del rules[load:]
            maxes.insert(pos, block[-1])

    def remove(self, key: int) -> None:
        """Delete ``key``; a missing key is a bug in the caller and raises ``ValueError``."""
        maxes = self.maxes
        pos = bisect_left(maxes, key)
        if pos < len(maxes):
            block = self.blocks[pos]
            i = bisect_left(block, key)
            if block[i] == key:
                del block[i]
                if not block:
                    del self.blocks[pos]
                    del self.rules[pos]
                    del maxes[pos]
                    return
                del self.rules[pos][i]
                if i == len(block):
                    maxes[pos] = block[-1]
                return
        raise ValueError(f"entry key {key} not in index")

    def pop_between(self, lo: int, hi: int) -> list[_Rule]:
        """Remove the entries with keys ``lo <= k < hi``; return their rules, ascending.

        A tick takes every entry it passed out in one slice deletion per block rather
        than one bisect and delete per entry: each of them is re-placed anyway.
        """
        maxes = self.maxes
        blocks = self.blocks
        all_rules = self.rules
        pos = bisect_left(maxes, lo)
        out: list[_Rule] = []
        while pos < len(maxes):
            block = blocks[pos]
            rules = all_rules[pos]
            i = bisect_left(block, lo)
            j = bisect_left(block, hi)
            out += rules[i:j]
            if j < len(block):  # the range ends inside this block: its maximum stays
                del block[i:j]
                del rules[i:j]
                break
            del block[i:]
            del rules[i:]
            if block:
                maxes[pos] = block[-1]
                pos += 1
            else:
                del blocks[pos]
                del all_rules[pos]
                del maxes[pos]
        return out


class _Rule:
    """Mutable per-rule state. Kept apart from the frozen spec so edits replace it whole."""

    __slots__ = (
        "armed",
        "down_action",
        "down_key",
        "fire_count",
        "high",
        "id_bits",
        "level",
        "low",
        "once",
        "op",
        "pending",
        "rule_id",
        "symbol",
        "up_action",
        "up_key",
    )

    def __init__(self, rule_id: int, symbol: str, spec: PriceRuleSpec, fire_count: int) -> None:
        self.rule_id = rule_id
        self.id_bits = rule_id + _ID_OFFSET
        self.symbol = symbol
        self.op = spec.op
        self.level = spec.level
        band = spec.rearm_band()
        self.low = self.level - band  # a disarmed rule re-arms at or beyond these
        self.high = self.level + band
        self.once = spec.repeat == "once"
        self.fire_count = fire_count
        self.armed = fire_count == 0
        self.pending = False
        self.up_key: int | None = None
        self.up_action: Action = _FIRE  # meaningful only while up_key is set
        self.down_key: int | None = None
        self.down_action: Action = _FIRE  # meaningful only while down_key is set


class _SymbolIndex:
    """The sorted entries, pending rules and rule ids of one symbol.

    ``quiet_lo``/``quiet_hi`` bracket the prices a tick can move to without
    triggering anything (see ``settle``); such a tick is answered with two
    comparisons, without touching the entry lists, whose ints lie scattered over
    memory and cost cache misses to read.
    """

    __slots__ = ("changed", "down", "pending", "quiet_hi", "quiet_lo", "rule_ids", "up")

    def __init__(self, changed: list[int]) -> None:
        self.changed = changed  # the book's list of rules whose armed state flipped
        self.up = _Entries()
        self.down = _Entries()
        self.pending: dict[int, _Rule] = {}
        self.rule_ids: set[int] = set()
        self.quiet_lo: float = -math.inf
        self.quiet_hi: float = math.inf

    def settle(self) -> None:
        """Recompute the quiet interval from the entries; O(1). Call after any change.

        A tick to ``p1`` triggers up entries at levels ``<= p1`` and down entries at
        levels ``>= p1`` (and only those of them on its path). So when ``p1`` lies
        strictly above the highest down level and strictly below the lowest up level,
        nothing can trigger, whatever the previous price was. Both ends are the first
        and last key of a list, so no bisect is needed. Since every entry is placed
        on the side of the price it waits for, and the price cannot reach an entry
        without triggering (and so removing) it, the lowest up and highest down entry
        are exactly the nearest ones around the last price: every tick that leaves
        the interval has work to do. Pending rules must see the next tick whatever
        it is, so while there are any the interval is empty.
        """
        if self.pending:
            self.quiet_lo = _EMPTY_LO
            self.quiet_hi = _EMPTY_HI
            return
        down = self.down.maxes
        up = self.up.blocks
        self.quiet_lo = (down[-1] >> _SHIFT) + 1 if down else -math.inf
        self.quiet_hi = (up[0][0] >> _SHIFT) - 1 if up else math.inf


class RuleBook:
    """Price rules of all symbols, indexed so a tick costs O(log n + triggered).

    ``visited`` counts index entries (and pending rules) examined over all ticks; it
    lets tests prove that idle rules cost nothing, without timing anything.
    """

    def __init__(self) -> None:
        self._rules: dict[int, _Rule] = {}
        self._index: dict[str, _SymbolIndex] = {}
        self._last: dict[str, int] = {}
        self._changed: list[int] = []
        self.visited: int = 0

    # -- collection API -------------------------------------------------------------

    def add(
        self,
        rule_id: int,
        symbol: str,
        spec: PriceRuleSpec,
        fire_count: int = 0,
        armed: bool | None = None,
    ) -> None:
        """Index a rule; re-adding an id replaces the old rule (that is how edits apply).

        ``fire_count`` is how often the rule has fired already (from the DB), so the
        next ``Fired.fire_no`` continues the sequence and idempotency keys stay unique.
        ``armed`` is the state stored from ``drain_arming`` (a leader taking over must
        go on where the old one was: a rule that re-armed before the handover fires on
        the next crossing); ``None`` derives it from ``fire_count``.
        ``rule_id`` must fit a signed 64-bit integer (any database id does): it is
        packed into the entry keys.
        """
        if fire_count < 0:
            raise ValueError(f"fire_count must be >= 0, got {fire_count}")
        if not _ID_MIN <= rule_id <= _ID_MAX:
            raise ValueError(f"rule_id must fit in 64 signed bits, got {rule_id}")
        self.remove(rule_id)
        if spec.repeat == "once" and fire_count > 0:
            return  # already finished: a once-rule never fires a second time
        rule = _Rule(rule_id, symbol, spec, fire_count)
        if armed is not None:
            rule.armed = armed
        idx = self._index.get(symbol)
        if idx is None:
            idx = self._index[symbol] = _SymbolIndex(self._changed)
        idx.rule_ids.add(rule_id)
        self._rules[rule_id] = rule
        last = self._last.get(symbol)
        if last is None:
            _set_pending(idx, rule)
        else:
            _place(idx, rule, last)
        idx.settle()

    def remove(self, rule_id: int) -> None:
        """Forget a rule; absent ids are fine (a delete may race a finished rule)."""
        rule = self._rules.get(rule_id)
        if rule is None:
            return
        idx = self._index[rule.symbol]
        _clear(idx, rule)
        self._forget(idx, rule)
        idx.settle()

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def symbols(self) -> set[str]:
        """Symbols that have at least one live rule: what the market hub must subscribe."""
        return set(self._index)

    def is_armed(self, rule_id: int) -> bool | None:
        """The rule's armed state, or None if it is not in the book."""
        rule = self._rules.get(rule_id)
        return None if rule is None else rule.armed

    def drain_arming(self) -> dict[int, bool]:
        """Rules whose armed state changed since the last call, with their state now.

        The runner stores these with the tick that changed them, so a successor
        restores each repeating rule armed or disarmed exactly as it was (see
        ``add``). Finished rules are left out: their status says it all. O(changed).
        """
        if not self._changed:
            return {}
        rules = self._rules
        out = {rid: rule.armed for rid in self._changed if (rule := rules.get(rid)) is not None}
        self._changed.clear()
        return out

    def requeue_arming(self, rule_ids: Iterable[int]) -> None:
        """Report these rules again at the next drain (their write failed)."""
        self._changed.extend(rule_ids)

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
            _clear(idx, rule)
            _place(idx, rule, price)
        idx.settle()

    # -- evaluation -----------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[Fired]:
        """Advance ``tick.symbol`` to ``tick.price`` and report the rules that fired.

        Most ticks trigger nothing: they stay inside the symbol's cached quiet
        interval and return before any entry is looked at.
        """
        symbol = tick.symbol
        p1 = tick.price
        last = self._last
        p0 = last.get(symbol)
        last[symbol] = p1
        idx = self._index.get(symbol)
        if idx is None or idx.quiet_lo <= p1 <= idx.quiet_hi:
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
                hits = idx.up.pop_between((p0 + 1) << _SHIFT, (p1 + 1) << _SHIFT)
                if hits:
                    self._trigger_up(idx, hits, tick, p0, fired)
            else:
                hits = idx.down.pop_between(p1 << _SHIFT, p0 << _SHIFT)
                if hits:
                    self._trigger_down(idx, hits, tick, p0, fired)
        if due:
            self.visited += len(due)
            for rule_id in sorted(due):
                rule = due[rule_id]
                if rule.armed and (
                    (rule.op is _ABOVE and p1 >= rule.level)
                    or (rule.op is _BELOW and p1 <= rule.level)
                ):
                    self._fire(idx, rule, tick, p0, fired)
                else:
                    _place(idx, rule, p1)
        idx.settle()
        return fired

    def _trigger_up(
        self, idx: _SymbolIndex, hits: list[_Rule], tick: Tick, p0: int, fired: list[Fired]
    ) -> None:
        """Process the up entries a tick passed (already taken out), ascending.

        ``hits`` is the snapshot: every placement a trigger makes is on the down list
        or above ``p1``, so nothing processed here can be hit again by this tick.
        """
        self.visited += len(hits)
        p1 = tick.price
        for rule in hits:
            rule.up_key = None  # the entry left the list with the slice
            if rule.down_key is not None:  # a waiting or disarmed cross rule
                idx.down.remove(rule.down_key)
                rule.down_key = None
            if rule.up_action is _FIRE:
                self._fire(idx, rule, tick, p0, fired)
            else:
                if not rule.armed:
                    rule.armed = True
                    idx.changed.append(rule.rule_id)
                _place_armed(idx, rule, p1)

    def _trigger_down(
        self, idx: _SymbolIndex, hits: list[_Rule], tick: Tick, p0: int, fired: list[Fired]
    ) -> None:
        """Mirror of ``_trigger_up``: down entries, in descending (path) order."""
        self.visited += len(hits)
        p1 = tick.price
        for rule in reversed(hits):
            rule.down_key = None
            if rule.up_key is not None:
                idx.up.remove(rule.up_key)
                rule.up_key = None
            if rule.down_action is _FIRE:
                self._fire(idx, rule, tick, p0, fired)
            else:
                if not rule.armed:
                    rule.armed = True
                    idx.changed.append(rule.rule_id)
                _place_armed(idx, rule, p1)

    # -- state transitions ----------------------------------------------------------

    def _fire(
        self, idx: _SymbolIndex, rule: _Rule, tick: Tick, p0: int | None, out: list[Fired]
    ) -> None:
        """Report ``rule``, whose entries the caller has already taken out."""
        fire_no = rule.fire_count = rule.fire_count + 1
        once = rule.once
        price = tick.price
        # tuple.__new__ skips the generated __new__'s Python frame; the field order is
        # the class's.
        out.append(
            _new_fired(
                Fired,
                (rule.rule_id, tick.symbol, rule.op, rule.level, price, p0, tick.ts, fire_no, once),
            )
        )
        if once:
            self._forget(idx, rule)
        else:
            rule.armed = False
            idx.changed.append(rule.rule_id)
            _place_disarmed(idx, rule, price)

    def _forget(self, idx: _SymbolIndex, rule: _Rule) -> None:
        """Drop an unindexed rule from the book, and its symbol once that has no rules."""
        rule_id = rule.rule_id
        del self._rules[rule_id]
        rule_ids = idx.rule_ids
        rule_ids.discard(rule_id)
        if not rule_ids:
            del self._index[rule.symbol]


# -- placement ------------------------------------------------------------------------
# Module functions rather than methods: they need no book state, and a global lookup
# is cheaper than a bound-method lookup on the fire path.


def _place(idx: _SymbolIndex, rule: _Rule, price: int) -> None:
    if rule.armed:
        _place_armed(idx, rule, price)
    else:
        _place_disarmed(idx, rule, price)


def _place_armed(idx: _SymbolIndex, rule: _Rule, price: int) -> None:
    level = rule.level
    op = rule.op
    if op is _ABOVE:
        if price >= level:
            _set_pending(idx, rule)
        else:
            _put_up(idx, rule, level, _FIRE)
    elif op is _BELOW:
        if price <= level:
            _set_pending(idx, rule)
        else:
            _put_down(idx, rule, level, _FIRE)
    elif op is _CROSS_UP:
        if price < level:
            _put_up(idx, rule, level, _FIRE)
        else:
            _put_down(idx, rule, level - 1, _ARM)
    elif op is _CROSS_DOWN:
        if price > level:
            _put_down(idx, rule, level, _FIRE)
        else:
            _put_up(idx, rule, level + 1, _ARM)
    elif price < level:  # CROSS below the level: armed as cross_up
        _put_up(idx, rule, level, _FIRE)
    elif price > level:  # CROSS above the level: armed as cross_down
        _put_down(idx, rule, level, _FIRE)
    else:  # CROSS exactly at the level: wait until the price leaves it
        _put_up(idx, rule, level + 1, _ARM)
        _put_down(idx, rule, level - 1, _ARM)


def _place_disarmed(idx: _SymbolIndex, rule: _Rule, price: int) -> None:
    low = rule.low
    high = rule.high
    op = rule.op
    if op is _ABOVE or op is _CROSS_UP:
        if price > low:
            _put_down(idx, rule, low, _ARM)
            return
    elif op is _BELOW or op is _CROSS_DOWN:
        if price < high:
            _put_up(idx, rule, high, _ARM)
            return
    elif low < price < high:
        _put_down(idx, rule, low, _ARM)
        _put_up(idx, rule, high, _ARM)
        return
    # already a band away on the side it has to come back from: armed directly
    rule.armed = True
    idx.changed.append(rule.rule_id)
    _place_armed(idx, rule, price)


# -- entry bookkeeping ----------------------------------------------------------------


def _put_up(idx: _SymbolIndex, rule: _Rule, level: int, action: Action) -> None:
    key = (level << _SHIFT) | rule.id_bits
    idx.up.add(key, rule)
    rule.up_key = key
    rule.up_action = action


def _put_down(idx: _SymbolIndex, rule: _Rule, level: int, action: Action) -> None:
    key = (level << _SHIFT) | rule.id_bits
    idx.down.add(key, rule)
    rule.down_key = key
    rule.down_action = action


def _set_pending(idx: _SymbolIndex, rule: _Rule) -> None:
    idx.pending[rule.rule_id] = rule
    rule.pending = True


def _clear(idx: _SymbolIndex, rule: _Rule) -> None:
    """Take the rule out of the index and the pending dict (O(log n))."""
    if rule.up_key is not None:
        idx.up.remove(rule.up_key)
        rule.up_key = None
    if rule.down_key is not None:
        idx.down.remove(rule.down_key)
        rule.down_key = None
    if rule.pending:
        del idx.pending[rule.rule_id]
        rule.pending = False
