"""Builders shared by the strategy tests (no tests here): users with configs and
attachments on a real database, a KIS fake whose order replies can be held back, and
a tiny scripted strategy registered as an operator plugin would be."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse

from app import db
from app.config import Settings
from app.models.audit import AuditEntry
from app.models.common import utcnow
from app.models.paper import PaperOrderRow
from app.models.strategies import (
    MODE_LIVE,
    StrategyAttachment,
    StrategyConfig,
    StrategyOrder,
)
from app.services import credentials
from brokers.paper.market import SimulatedMarket
from engines.market import Candle, Timeframe
from engines.strategies.base import Action, Context, Signal, Strategy, StrategyParams
from tests.integration import helpers
from tests.integration.helpers import make_user, seed_symbols
from tests.kis_fake import FakeQuote, KisFake
from tests.loopback import LoopbackServer

SAMSUNG = "005930"
HYNIX = "000660"
APP_KEY = "PS" + "k" * 34
APP_SECRET = "s" * 180
ACCOUNT = "50123456"
PHRASE_EN = "I accept the risk of live trading"
PHRASE_KO = "실거래 위험을 이해하고 동의합니다"


# ---- a strategy whose signals are chosen by the test ------------------------------------


class ScriptParams(StrategyParams):
    buy_at: list[int] = Field(default_factory=list)
    sell_at: list[int] = Field(default_factory=list)
    fail_at: int = -1
    qty: int = 0


class Scripted(Strategy):
    """Buys at the bars ``buy_at`` lists and sells at ``sell_at`` (bar numbers counted
    from the first bar the host sees, warm-up included); raises at ``fail_at``."""

    name = "test_scripted"
    Params = ScriptParams
    params: ScriptParams

    def setup(self, ctx: Context) -> None:
        self.seen = 0

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        bar = ctx.bar_index
        self.seen += 1
        if bar == self.params.fail_at:
            raise RuntimeError(f"scripted failure at bar {bar}")
        if bar in self.params.buy_at:
            return ctx.buy(qty=self.params.qty) if self.params.qty else ctx.buy()
        if bar in self.params.sell_at:
            return ctx.sell()
        return None


def make_scripted(name: str, params: dict[str, Any]) -> Strategy:
    """The desk's factory in tests: the scripted strategy, or a real registry one."""
    if name == Scripted.name:
        return Scripted(params)
    from engines.strategies import registry

    return registry.create(name, params)


def candles(
    symbol: str, closes: list[int], start: datetime = helpers.T0, tf: Timeframe = Timeframe.D1
) -> list[Candle]:
    """Consecutive daily bars with the given closes (open = previous close)."""
    out = []
    prev = closes[0]
    day0 = tf.bucket(start)[0]
    for i, close in enumerate(closes):
        out.append(
            Candle(
                symbol,
                tf,
                day0 + i * tf.span,
                prev,
                max(prev, close),
                min(prev, close),
                close,
                1_000 + i,
            )
        )
        prev = close
    return out


# ---- rows ------------------------------------------------------------------------------


@dataclass
class Seeded:
    user_id: int
    config_id: int
    attachment_id: int
    symbol: str


async def seed(
    email: str = "trader@example.com",
    *,
    mode: str = "paper",
    symbol: str = SAMSUNG,
    strategy: str = "ma_cross",
    params: dict[str, Any] | None = None,
    timeframe: str = "1d",
    label: str = "my strategy",
    user_id: int | None = None,
    **columns: Any,
) -> Seeded:
    """A user (new unless ``user_id``), a config and one attachment, written directly:
    the executor and the desk must hold whatever the rows say, not only what the
    services would write."""
    if user_id is None:
        await seed_symbols()
        user_id = (await make_user(email)).id
    async with db.session() as s:
        config = StrategyConfig(
            user_id=user_id,
            label=label,
            strategy=strategy,
            params=json.dumps(params if params is not None else {"fast": 5, "slow": 20}),
            timeframe=timeframe,
        )
        s.add(config)
        await s.flush()
        att = StrategyAttachment(
            user_id=user_id, config_id=config.id, symbol=symbol, mode=mode, **columns
        )
        s.add(att)
        await s.commit()
        return Seeded(user_id, config.id, att.id, symbol)


async def live_columns(user_id: int, credential_id: int, **limits: Any) -> dict[str, Any]:
    return {
        "mode": MODE_LIVE,
        "broker_account_id": credential_id,
        "live_confirmed_at": utcnow(),
        "max_order_value": limits.get("max_order_value", 10_000_000),
        "max_position_qty": limits.get("max_position_qty", 1_000),
        "max_orders_per_day": limits.get("max_orders_per_day", 10),
    }


async def orders_of(attachment_id: int) -> list[StrategyOrder]:
    async with db.session() as s:
        return list(
            (
                await s.exec(
                    select(StrategyOrder)
                    .where(StrategyOrder.attachment_id == attachment_id)
                    .order_by(col(StrategyOrder.id))
                )
            ).all()
        )


async def paper_orders() -> list[PaperOrderRow]:
    async with db.session() as s:
        return list((await s.exec(select(PaperOrderRow).order_by(col(PaperOrderRow.id)))).all())


async def audit_actions(prefix: str = "strategy.") -> list[str]:
    async with db.session() as s:
        rows = (
            await s.exec(
                select(AuditEntry)
                .where(col(AuditEntry.action).startswith(prefix))
                .order_by(col(AuditEntry.id))
            )
        ).all()
    return [r.action for r in rows]


async def attachment(attachment_id: int) -> StrategyAttachment:
    async with db.session() as s:
        row = await s.get(StrategyAttachment, attachment_id)
    assert row is not None
    return row


def buy(key: str, qty: int = 0, symbol: str = SAMSUNG, **kw: Any) -> Signal:
    return Signal(Action.BUY, symbol, qty=qty, key=f"{symbol}|1d|{key}|0|buy", **kw)


def sell(key: str, qty: int = 0, symbol: str = SAMSUNG, **kw: Any) -> Signal:
    return Signal(Action.SELL, symbol, qty=qty, key=f"{symbol}|1d|{key}|0|sell", **kw)


def paper_market() -> SimulatedMarket:
    """The demo market, not subscribed: its quotes are the symbols' reference prices
    (005930: 71,300 won, upper limit 92,600)."""
    return SimulatedMarket(seed=1)


# ---- KIS ------------------------------------------------------------------------------


class HeldKisFake(KisFake):
    """The fake, plus a pause *after* an order has been recorded and before its reply
    goes out: the moment a crash leaves an order at the broker but no ack with us."""

    hold_reply_s: float = 0.0

    async def order_cash(self, request: Request) -> JSONResponse:
        response = await super().order_cash(request)
        if self.hold_reply_s:
            await asyncio.sleep(self.hold_reply_s)
        return response


def start_kis(cash: int = 50_000_000) -> tuple[HeldKisFake, LoopbackServer]:
    fake = HeldKisFake(app_keys={APP_KEY: APP_SECRET}, paper=True, account=ACCOUNT, cash=cash)
    fake.rate_limit = 10_000  # the client's own limiter is not what these tests measure
    fake.quotes = {
        SAMSUNG: FakeQuote(70_000, 70_000, 70_000, 70_500, 69_500, 1_000),
        HYNIX: FakeQuote(200_000, 200_000, 200_000, 201_000, 199_000, 1_000),
    }
    return fake, fake.serve()


def kis_settings(server: LoopbackServer, **overrides: Any) -> Settings:
    return helpers.settings(
        kis_paper_base_url=server.base_url, kis_paper_rate_per_s=1_000.0, **overrides
    )


def kis_env(server: LoopbackServer) -> dict[str, str]:
    return {"KIS_PAPER_BASE_URL": server.base_url, "KIS_PAPER_RATE_PER_S": "1000"}


async def kis_account(user_id: int) -> int:
    async with db.session() as s:
        row = await credentials.create_kis_account(
            s,
            user_id,
            label="KIS",
            app_key=APP_KEY,
            app_secret=APP_SECRET,
            account_no=ACCOUNT,
            product_code="01",
            hts_id="hts",
            is_paper=True,
        )
    return row.id


def kis_order_posts(fake: KisFake) -> int:
    """Cash orders the fake accepted (modify/cancel excluded)."""
    return sum(1 for o in fake.orders.values() if not o.original)


def old(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
