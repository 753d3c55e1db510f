"""/api/health and the admin status page report the operational snapshot: leadership,
broker sessions, outbox lag, delivery failures, strategies and the backtest queue,
with the values real work left behind, and nothing about any user."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import col, select, update

import app.app as app_module
from app import db
from app.db import is_sqlite
from app.logging_setup import JsonFormatter
from app.models.alerts import Delivery
from app.models.strategies import BacktestRun, StrategyAttachment
from app.models.users import User
from app.runtime.leader import (
    LeaderElection,
    LeaderLock,
    LocalLock,
    PgAdvisoryLock,
    current_leadership,
)
from app.runtime.runner import Runner, set_current_runner
from app.services import auth
from app.services import rules as rules_service
from app.services import strategies as strategy_service
from app.states.admin import AdminState
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")


async def _health() -> httpx.Response:
    transport = httpx.ASGITransport(app=app_module.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get("/api/health")


async def _world() -> tuple[User, Runner]:
    """A user with a firing rule, two strategy attachments (one broken), a queued
    backtest, and a runner that handled ticks into the outbox (not yet delivered)."""
    await seed_symbols()
    user = await make_user("health@example.com")
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
        config = await strategy_service.create_config(
            s,
            user.id,
            label="h",
            strategy="ma_cross",
            params={"fast": 5, "slow": 20},
            timeframe="1d",
        )
        await strategy_service.attach(s, user.id, config.id, symbol="005930", mode="alert")
        broken = await strategy_service.attach(s, user.id, config.id, symbol="000660", mode="alert")
        s.add(
            BacktestRun(
                user_id=user.id,
                config_id=config.id,
                strategy="ma_cross",
                params='{"fast": 5, "slow": 20}',
                symbols=["005930"],
                start_date=date(2025, 1, 2),
                end_date=date(2025, 6, 30),
                options={"cash": 10_000_000},
            )
        )
        await s.commit()
    runner = Runner(settings(), ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS))
    await runner.sync_once()
    for tick in ticks("005930", [69_900, 70_100, 70_300]):
        await runner.handle_tick(tick)
    async with db.session() as s:  # as the desk marks a strategy that raised
        await s.exec(
            update(StrategyAttachment)
            .where(col(StrategyAttachment.id) == broken.id)
            .values(state="error", last_error="boom: secret detail")
        )
        await s.commit()
    return user, runner


async def test_health_reports_leadership_outbox_failures_and_queues():
    user, runner = await _world()
    body = (await _health()).json()
    assert body["leadership"]["role"] == "off" and body["runner"]["active"] is False
    assert body["broker_sessions"] == []

    set_current_runner(runner)
    try:
        # Age the outbox by a minute and mark one delivery failed, as the worker would.
        async with db.session() as s:
            rows = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
            assert [d.channel for d in rows] == ["in_app"]
            first = rows[0]
            first.next_attempt_at = datetime.now(UTC) - timedelta(seconds=60)
            first.attempts, first.last_error = 2, "HTTP 503"
            s.add(first)
            await s.commit()
        response = await _health()
    finally:
        set_current_runner(None)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] is True
    assert body["leadership"] == {
        "role": "single",
        "backend": "local",
        "since": None,
        "fencing_token": None,
    }
    assert body["runner"]["active"] is True
    assert body["runner"]["ticks_seen"] == 3
    assert body["runner"]["events_recorded"] == 1
    assert body["runner"]["subscribed"] == 2  # the rule's symbol and a strategy's
    assert body["broker_sessions"] == [
        {"source": "replay", "state": "simulated", "subscriptions": 2, "capacity": None}
    ]
    assert body["outbox"]["pending"] == 1 and body["outbox"]["dead"] == 0
    assert 59 <= body["outbox"]["oldest_due_seconds"] < 120
    assert body["delivery_failures"] == {"in_app": {"last_hour": 2, "total": 2}}
    assert body["strategy_attachments"] == {"running": 1, "error": 1, "reconciling": 0}
    assert body["backtests"] == {"queued": 1, "running": 0}
    text = response.text
    for private in (user.email, "005930", "000660", "secret detail", "HTTP 503"):
        assert private not in text


async def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_health_follows_the_real_leader_election(database):
    """Two elections on one lock: the one that publishes stands by, then takes over."""
    first_lock: LeaderLock
    if is_sqlite(database):
        first_lock, second_lock = LocalLock(), LocalLock()
    else:
        name = f"health-{uuid.uuid4().hex}"
        first_lock = PgAdvisoryLock(database, name=name)
        second_lock = PgAdvisoryLock(database, name=name)
    first = LeaderElection(first_lock, lease=1.5, retry=0.05, publish=False)
    second = LeaderElection(second_lock, lease=1.5, retry=0.05)
    forever = asyncio.Event()
    first_task = asyncio.create_task(first.run(forever.wait))
    await asyncio.wait_for(first.leading.wait(), 10)
    second_task = asyncio.create_task(second.run(forever.wait))
    try:
        if not is_sqlite(database):
            await asyncio.sleep(0.2)  # the second has tried, and failed, to take the lock
            body = (await _health()).json()
            assert body["leadership"]["role"] == "standby"
            assert body["leadership"]["backend"] == "postgres"
            first_task.cancel()
        await asyncio.wait_for(second.leading.wait(), 10)
        body = (await _health()).json()
        held = second.status
        assert body["leadership"] == {
            "role": "single" if is_sqlite(database) else "leader",
            "backend": held.backend,
            "since": held.since.isoformat() if held.since else None,
            "fencing_token": held.fencing_token,
        }
        assert held.since is not None
        assert (held.fencing_token is None) == is_sqlite(database)
        db.configure("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
        down = await _health()
    finally:
        for task in (first_task, second_task):
            task.cancel()
        await asyncio.gather(first_task, second_task, return_exceptions=True)
        await db.dispose()
        db.configure(database)
    assert down.status_code == 503
    assert down.json()["status"] == "degraded" and down.json()["outbox"] is None
    assert down.json()["leadership"]["role"] in ("leader", "single")  # known without a DB
    await _until(lambda: current_leadership().role == "off")
    assert (await _health()).json()["leadership"]["role"] == "off"


def _root(token: str) -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": "en"},
            "ip": "3.3.3.3",
            "token": "client-admin-status",
            "pathname": "/admin/status",
            "asPath": "/admin/status",
        }
    )
    return root


async def _load_status(user: User) -> tuple[AdminState, object]:
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "3.3.3.3")
    root = _root(token)
    state = await root.get_state(AdminState)
    result = await AdminState.event_handlers["load_status"].fn(state)
    return state, result


async def test_admin_status_page_shows_the_same_figures_and_refuses_non_admins():
    user, runner = await _world()
    async with db.session() as s:
        await s.exec(update(Delivery).values(attempts=1, status="dead", last_error="gone"))
        await s.commit()
    set_current_runner(runner)
    try:
        state, result = await _load_status(user)  # not an admin yet
        assert state.status == {} and state.failures == []
        assert result is not None  # redirected away
        async with db.session() as s:
            row = await s.get(User, user.id)
            row.role = "admin"
            s.add(row)
            await s.commit()
            admin = await s.get(User, user.id)
        state, result = await _load_status(admin)
    finally:
        set_current_runner(None)
    assert result is None
    assert state.status["leadership"] == "Single process (local)"
    assert state.status["broker_sessions"] == "replay simulated"
    assert state.status["ticks_seen"] == "3"
    assert state.status["events_recorded"] == "1"
    assert state.status["deliveries_dead"] == "1"
    assert state.status["attachments_running"] == "1"
    assert state.status["attachments_error"] == "1"
    assert state.status["backtests_queued"] == "1"
    assert state.failures == [{"channel": "in_app", "last_hour": "1", "total": "1"}]


async def test_json_log_lines_name_the_worker_and_task_and_hide_tokens():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tickwatch.test.json")
    log.addHandler(handler)
    log.propagate = False

    async def worker() -> None:
        log.warning("send failed: Authorization: Bearer abc.DEF-123 at /x?token=zz9&a=1")

    try:
        await asyncio.create_task(worker(), name="deliver-discord")
    finally:
        log.removeHandler(handler)
    line = json.loads(stream.getvalue().strip())
    assert line["pid"] == os.getpid()
    assert line["task"] == "deliver-discord"
    assert line["level"] == "WARNING" and line["where"].startswith("test_health:")
    assert "abc.DEF-123" not in line["msg"] and "zz9" not in line["msg"]
    assert line["msg"].endswith("Bearer *** at /x?token=***&a=1")
