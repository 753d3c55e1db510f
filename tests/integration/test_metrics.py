"""/metrics through the real FastAPI app: valid exposition, the runner, outbox and
delivery series present, and their values following real work (a runner handling
ticks into the outbox, the delivery worker failing against a loopback Discord)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

import app.app as app_module
from app import db
from app.config import get_settings
from app.models.alerts import Delivery
from app.runtime.runner import Runner, set_current_runner
from app.services import channels
from app.services import rules as rules_service
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from notifiers.discord import DiscordNotifier
from tests.discord_fake import DiscordFake
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")

TOKEN = "T" * 68
WEBHOOK = "111111111111111111"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _client(client_host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app_module.api, client=(client_host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _scrape(headers: dict[str, str] | None = None) -> Samples:
    async with _client() as client:
        response = await client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def _deliveries() -> dict[str, tuple[str, int]]:
    async with db.session() as s:
        rows = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
    return {d.channel.split(":")[0]: (d.status, d.attempts) for d in rows}


@pytest.fixture
def no_metrics_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICS_TOKEN", raising=False)


@pytest.mark.usefixtures("no_metrics_token")
async def test_series_follow_ticks_outbox_and_failing_deliveries(monkeypatch):
    await seed_symbols()
    user = await make_user("metrics@example.com")
    fake = DiscordFake(force_5xx=1000)  # Discord answers 503 to every post
    fake.add_webhook(WEBHOOK, TOKEN)
    server = fake.serve()
    base = server.base_url
    monkeypatch.setenv("DISCORD_API_BASE", base)
    get_settings.cache_clear()
    runner: Runner | None = None
    try:
        async with db.session() as s:
            await channels.add_discord(s, user.id, f"{base}/api/webhooks/{WEBHOOK}/{TOKEN}", "r")
            await rules_service.create_price_rule(
                s, user.id, symbol_query="005930", op="cross_up", level="70000"
            )
        before = await _scrape()
        # No runner in this process: the runner series exist and say so.
        assert _value(before, "tickwatch_runner_leader") == 0
        assert _value(before, "tickwatch_runner_active") == 0
        assert _value(before, "tickwatch_runner_ticks_total") == 0
        assert _value(before, "tickwatch_outbox_pending") == 0
        assert _value(before, "tickwatch_outbox_oldest_due_seconds") == 0
        assert _value(before, "tickwatch_deliveries_failed_total", channel="discord") is None
        assert _value(before, "tickwatch_database_up") == 1

        prices = [69_900, 70_100, 70_200]
        market = ReplayMarket(ticks("005930", prices), SYMBOLS)
        cfg = settings(discord_api_base=base, delivery_max_attempts=3)
        runner = Runner(cfg, market, notifiers={"discord": DiscordNotifier(api_base=base)})
        set_current_runner(runner)
        await runner.sync_once()
        for tick in ticks("005930", prices):
            await runner.handle_tick(tick)
        await asyncio.sleep(0.05)  # the new rows become measurably overdue

        recorded = await _scrape()
        assert _value(recorded, "tickwatch_runner_leader") == 1
        assert _value(recorded, "tickwatch_runner_ticks_total") == len(prices)
        assert _value(recorded, "tickwatch_runner_events_recorded_total") == 1
        assert _value(recorded, "tickwatch_runner_role", role="single", backend="local") == 1
        assert _value(recorded, "tickwatch_outbox_pending") == 2  # in-app + discord
        assert _value(recorded, "tickwatch_outbox_oldest_due_seconds") >= 0.05
        assert _value(recorded, "tickwatch_broker_sessions", source="replay", state="simulated")
        assert _value(recorded, "tickwatch_deliveries_failed_total", channel="discord") is None

        # Each pass: in-app is delivered, Discord fails (503) and is retried, until dead.
        seen: list[float | None] = []
        for attempt in range(1, 4):
            await runner.delivery.run_once()
            assert (await _deliveries())["discord"] == (
                "pending" if attempt < 3 else "dead",
                attempt,
            )
            after = await _scrape()
            seen.append(_value(after, "tickwatch_deliveries_failed_total", channel="discord"))
            assert _value(after, "tickwatch_outbox_pending") == (1 if attempt < 3 else 0)
            await asyncio.sleep(0.12)  # past the 0.05 s backoff
        assert seen == [1, 2, 3]
        assert (await _deliveries())["in_app"] == ("sent", 1)
        final = await _scrape()
        assert _value(final, "tickwatch_outbox_dead") == 1
        assert _value(final, "tickwatch_outbox_oldest_due_seconds") == 0
        assert _value(final, "tickwatch_deliveries_failed_last_hour", channel="discord") == 3
        assert _value(final, "tickwatch_deliveries_failed_total", channel="in_app") is None
        assert len(fake.posted) == 0 and fake.statuses().count(503) >= 3
        text = str(final)
        for secret in (user.email, TOKEN, WEBHOOK, "005930"):
            assert secret not in text
    finally:
        set_current_runner(None)
        server.stop()
        get_settings.cache_clear()


async def test_token_is_required_when_configured(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me-please")
    async with _client() as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        basic = {"Authorization": "Basic scrape-me-please"}
        assert (await client.get("/metrics", headers=basic)).status_code == 401
    samples = await _scrape({"Authorization": "Bearer scrape-me-please"})
    assert ("tickwatch_runner_ticks_total", ()) in samples
    # With a token, a remote scraper (Prometheus on another host) is fine.
    async with _client("203.0.113.9") as client:
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
    assert ok.status_code == 200


@pytest.mark.usefixtures("no_metrics_token")
async def test_without_a_token_only_direct_loopback_may_scrape():
    async with _client("203.0.113.9") as client:
        assert (await client.get("/metrics")).status_code == 403
    async with _client("::1") as client:
        assert (await client.get("/metrics")).status_code == 200
    async with _client() as client:
        # A reverse proxy on the same host connects from loopback: refused.
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"})
        assert proxied.status_code == 403
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.usefixtures("no_metrics_token")
async def test_a_worker_without_the_runner_reports_the_leaders_published_figures():
    """Several workers share one port, so a scrape lands on any of them: a worker that
    does not run the engine serves the figures the leader published on the live bus
    (real Redis), marked as such, and never claims the runner runs in it."""
    import uuid

    import redis.asyncio as aioredis

    from app.runtime import live_bus
    from app.runtime.live_bus import RedisLiveBus
    from app.services import ops_status

    await seed_symbols()
    prefix = f"test-status:{uuid.uuid4().hex}"
    bus = RedisLiveBus("redis://127.0.0.1:6379/0", prefix=prefix)
    leader = Runner(settings(), ReplayMarket(ticks("005930", [70_000, 70_100]), SYMBOLS), bus=bus)
    await leader.sync_once()
    for tick in ticks("005930", [70_000, 70_100, 70_200]):
        await leader.handle_tick(tick)
    await bus.publish_status(ops_status.leader_payload(leader))
    set_current_runner(None)
    live_bus.set_live_bus(bus)
    try:
        status = await ops_status.gather()
        assert status.runner_source == "leader"
        assert status.runner.ticks_seen == 3 and status.runner.active
        assert [s.state for s in status.sessions] == ["simulated"]
        samples = await _scrape()
        assert _value(samples, "tickwatch_runner_figures_from_leader") == 1.0
        assert _value(samples, "tickwatch_runner_ticks_total") == 3.0
        assert _value(samples, "tickwatch_runner_active") == 0.0  # not here
        assert _value(samples, "tickwatch_runner_leader") == 0.0

        await aioredis.from_url("redis://127.0.0.1:6379/0").delete(f"{prefix}:leader-status")
        status = await ops_status.gather()  # nothing fresh: no runner figures at all
        assert status.runner_source == "local" and not status.runner.active
    finally:
        live_bus.set_live_bus(None)
        await bus.close()
        await leader.market.close()
