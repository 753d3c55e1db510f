"""Alerts reach the user's own channels through the outbox, over a real (loopback) API.

A rule fires in the runner; one delivery row per enabled channel is written with
the event; the worker decrypts the webhook URL only to send, and a webhook that
Discord no longer knows marks the channel gone so nothing more is sent there.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlmodel import col, select

from app import db
from app.config import get_settings
from app.models.alerts import Delivery
from app.runtime.runner import Runner
from app.services import channels
from app.services import rules as rules_service
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from notifiers.discord import DiscordNotifier
from tests.discord_fake import DiscordFake
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")

TOKEN = "T" * 68


async def _run(market: ReplayMarket, runner: Runner) -> None:
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(market.drained.wait(), 15)
        for _ in range(200):
            async with db.session() as s:
                busy = (
                    await s.exec(
                        select(Delivery).where(col(Delivery.status).in_(["pending", "sending"]))
                    )
                ).all()
                total = (await s.exec(select(Delivery))).all()
            if total and not busy:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_alert_reaches_each_enabled_channel_once_and_a_dead_webhook_is_marked_gone(
    monkeypatch,
):
    await seed_symbols()
    user = await make_user("dc@example.com")
    other = await make_user("other@example.com")
    fake = DiscordFake()
    fake.add_webhook("111111111111111111", TOKEN)
    server = fake.serve()
    base = server.base_url
    monkeypatch.setenv("DISCORD_API_BASE", base)  # the loopback fake is "discord.com" here
    get_settings.cache_clear()
    try:
        async with db.session() as s:
            live = await channels.add_discord(
                s, user.id, f"{base}/api/webhooks/111111111111111111/{TOKEN}", "room"
            )
            dead = await channels.add_discord(
                s, user.id, f"{base}/api/webhooks/222222222222222222/{TOKEN}", "deleted room"
            )
            off = await channels.add_discord(
                s, user.id, f"{base}/api/webhooks/333333333333333333/{TOKEN}", "muted"
            )
            await channels.set_enabled(s, user.id, off.id, False)
            await channels.add_discord(
                s, other.id, f"{base}/api/webhooks/111111111111111111/{TOKEN}", "not yours"
            )
            await rules_service.create_price_rule(
                s, user.id, symbol_query="005930", op="cross_up", level="70000"
            )
        market = ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS)
        cfg = settings(discord_api_base=base)
        runner = Runner(cfg, market, notifiers={"discord": DiscordNotifier(api_base=base)})
        await _run(market, runner)
        async with db.session() as s:
            deliveries = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
            listed = {c.id: c for c in await channels.list_channels(s, user.id)}
        by_channel = {d.channel: (d.status, d.attempts) for d in deliveries}
        assert by_channel == {
            "in_app": ("sent", 1),
            f"discord:{live.id}": ("sent", 1),
            f"discord:{dead.id}": ("dead", 1),
        }
        assert len(fake.posted) == 1 and fake.posted[0].webhook_id == "111111111111111111"
        embed = fake.posted[0].payload["embeds"][0]
        assert "005930" in embed["title"] + embed["description"]
        assert listed[dead.id].gone and not listed[dead.id].enabled
        assert listed[live.id].enabled and not listed[live.id].gone
        assert all(TOKEN not in d.last_error for d in deliveries)
    finally:
        server.stop()
        get_settings.cache_clear()
