"""A tick's firings reach the outbox all together or not at all, even when cancelled.

A leader that loses its lock is cancelled wherever it is, possibly while it records
a tick that fired two rules. Its successor resumes after the last tick with a trace
in the outbox, so a tick recorded in part would lose its other firings, and a tick
replayed after a partial record would double the recorded one. These tests cut the
write between the two firings of one tick (a price rule and a condition rule) and
check the outbox holds both or neither, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.models.alerts import AlertEvent, Delivery
from app.models.rules import AlertRule
from app.runtime import outbox
from app.runtime import runner as runner_module
from app.runtime.runner import Runner
from app.services import condition_rules, watchlist
from app.services import rules as rules_service
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")

NOW = datetime(2026, 3, 5, 0, 30, tzinfo=UTC)
ONE_S = timedelta(seconds=1)
REAL_STAGE = outbox._stage
PATH = ticks("005930", [69_000, 69_500, 70_500])
"""The last tick crosses 70,000: the price rule and the condition rule fire on it."""


def _condition_form() -> dict[str, str]:
    return {
        "symbol": "005930",
        "name": "",
        "timeframe": "1m",
        "logic": "and",
        "frequency": "once_per_bar",
        "hysteresis_pct": "0",
        "template": "",
        "c0.type": "compare",
        "c0.left": "price",
        "c0.op": "crossing_up",
        "c0.right": "70,000",
    }


async def _runner_before_the_double_tick() -> Runner:
    """A runner with both rules loaded that has seen every tick but the firing one."""
    runner = Runner(settings(), ReplayMarket(PATH, SYMBOLS, prev_close={"005930": 69_000}))
    await runner.sync_once()
    for tick in PATH[:-1]:
        assert await runner.handle_tick(tick) == []
    return runner


async def _setup() -> None:
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        await watchlist.add(s, user.id, "005930")
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000", repeat="rearm"
        )
        await condition_rules.create(s, user, _condition_form(), now=NOW)


async def _outbox() -> tuple[list[AlertEvent], int, list[int]]:
    async with db.session() as s:
        events = list((await s.exec(select(AlertEvent).order_by(col(AlertEvent.id)))).all())
        deliveries = len((await s.exec(select(Delivery))).all())
        counts = list(
            (await s.exec(select(AlertRule.fire_count).order_by(col(AlertRule.id)))).all()
        )
    return events, deliveries, counts


class _Gate:
    """Holds the tick write after its first firing is staged, until released."""

    def __init__(self) -> None:
        self.first_staged = asyncio.Event()
        self.release = asyncio.Event()
        self.staged = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = outbox._stage

        async def stage(session: AsyncSession, entry: outbox._Entry) -> AlertEvent:
            event = await real(session, entry)
            self.staged += 1
            if self.staged == 1:
                self.first_staged.set()
                await self.release.wait()  # a slow database between the two firings
            return event

        monkeypatch.setattr(outbox, "_stage", stage)


async def _cancel_mid_record(runner: Runner, gate: _Gate) -> asyncio.Task[object]:
    task = asyncio.create_task(runner.handle_tick(PATH[-1]))
    await asyncio.wait_for(gate.first_staged.wait(), 10)
    task.cancel()
    return task


async def test_a_cancel_mid_record_lets_the_whole_tick_commit(monkeypatch):
    await _setup()
    runner = await _runner_before_the_double_tick()
    gate = _Gate()
    gate.install(monkeypatch)
    task = await _cancel_mid_record(runner, gate)
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the write, not abandoning it half done
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, runner_module.TICK_WRITE_GRACE + 5)
    events, deliveries, counts = await _outbox()
    assert len(events) == 2  # both firings of the tick, not one
    assert {e.payload.get("kind", "price") for e in events} == {"price", "condition"}
    assert deliveries == 2  # one in-app delivery each
    assert counts == [1, 1]


async def test_a_write_stuck_past_the_grace_is_rolled_back_whole(monkeypatch):
    monkeypatch.setattr(runner_module, "TICK_WRITE_GRACE", 0.2)
    await _setup()
    runner = await _runner_before_the_double_tick()
    gate = _Gate()
    gate.install(monkeypatch)
    loop = asyncio.get_running_loop()
    task = await _cancel_mid_record(runner, gate)
    cancelled_at = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert loop.time() - cancelled_at < 2.0  # the engine still stops promptly
    events, deliveries, counts = await _outbox()
    assert events == [] and deliveries == 0  # neither firing, not one of them
    assert counts == [0, 0]

    # The successor replays the tick (no trace of it): both fire once, none doubled.
    monkeypatch.setattr(outbox, "_stage", REAL_STAGE)
    successor = await _runner_before_the_double_tick()
    await successor.handle_tick(PATH[-1])
    events, deliveries, counts = await _outbox()
    assert sorted((e.payload.get("kind", "price"), e.payload["fire_no"]) for e in events) == [
        ("condition", 1),
        ("price", 1),
    ]
    assert deliveries == 2
    assert counts == [1, 1]


async def test_a_tick_already_recorded_is_not_doubled_by_a_replay(monkeypatch):
    await _setup()
    runner = await _runner_before_the_double_tick()
    batches: list[list[outbox.TickFiring]] = []

    async def capture(
        session: AsyncSession,
        firings: list[outbox.TickFiring],
        email_enabled: bool,
        **arming: object,
    ) -> list[AlertEvent | None]:
        batches.append(list(firings))
        return await outbox.record_tick(session, firings, email_enabled, **arming)  # type: ignore[arg-type]

    monkeypatch.setattr(runner_module, "record_tick", capture)
    await runner.handle_tick(PATH[-1])
    assert runner.events_recorded == 2 and len(batches) == 1  # one batch for the tick
    # Recording the same tick again (a replay, a second runner) adds nothing.
    async with db.session() as s:
        again = await outbox.record_tick(s, batches[0], email_enabled=False)
    assert again == [None, None]
    events, deliveries, counts = await _outbox()
    assert len(events) == 2 and deliveries == 2
    assert counts == [1, 1]


async def test_a_rules_armed_state_is_stored_with_the_tick_that_changed_it():
    """Fire (disarmed), fall a band away (re-armed, a tick with no alert), and a new
    runner on the same database loads the rule armed: its first crossing fires."""
    await _setup()
    runner = await _runner_before_the_double_tick()
    await runner.handle_tick(PATH[-1])  # fires: rearm rule now disarmed
    async with db.session() as s:
        rule = (await s.exec(select(AlertRule).order_by(col(AlertRule.id)))).first()
    assert rule is not None and rule.armed is False and rule.armed_at == PATH[-1].ts
    rearm, near, cross = ticks("005930", [69_000, 69_900, 70_100], start=PATH[-1].ts + ONE_S)
    assert await runner.handle_tick(rearm) == []  # 69,000: a band (0.5%) below, re-armed
    async with db.session() as s:
        rule = await s.get(AlertRule, rule.id)
    assert rule is not None and rule.armed is True and rule.armed_at == rearm.ts
    assert await runner.handle_tick(near) == []
    successor = Runner(settings(), ReplayMarket([near], SYMBOLS, prev_close={"005930": 69_000}))
    await successor.sync_once()
    successor.book.seed_price("005930", near.price)
    fired = await successor.handle_tick(cross)
    assert [(f.rule_id, f.fire_no) for f in fired] == [(rule.id, 2)]
