"""The composition root: pages, HTTP routes, and the runner as a lifespan task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import reflex as rx
from fastapi import FastAPI

from app import db
from app.api import auth_routes, channel_verify, health, kakao_link, oauth_routes, push
from app.api import metrics as metrics_api
from app.api import strategies as strategies_api
from app.api.security import SecurityHeaders
from app.config import get_settings
from app.logging_setup import configure_logging
from app.pages.admin import admin_audit_page, admin_status_page, admin_users_page
from app.pages.backtest import backtest_page
from app.pages.brokers import brokers_page
from app.pages.builder import builder_page
from app.pages.channels import channels_page
from app.pages.history import history_page
from app.pages.login import login_page
from app.pages.portfolio import portfolio_page
from app.pages.rules import rules_page
from app.pages.settings import settings_page
from app.pages.strategies import strategies_page
from app.pages.symbol import symbol_page
from app.pages.watchlist import watchlist_page
from app.runtime.background import running
from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, build_lock
from app.states.admin import AdminState
from app.states.backtest import BacktestState
from app.states.brokers import BrokersState
from app.states.builder import RuleBuilderState
from app.states.channels import ChannelsState
from app.states.chart import ChartState
from app.states.live import LiveState, ReflexUiSink, alert_relay_lifespan
from app.states.live_fanout import fanout_lifespan
from app.states.pages import HistoryState, RulesState
from app.states.portfolio import PortfolioState, refresh_open_pages
from app.states.session import SessionState
from app.states.settings import SettingsState
from app.states.strategies import StrategiesState
from app.vault_keys import get_key_ring
from engines.strategies import registry as strategy_registry

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def runner_lifespan(app: rx.App) -> AsyncIterator[None]:
    """Every runner-enabled worker stands for election; only the leader runs the engine
    (streams, rules, delivery, scheduler, backtest jobs). See app/runtime/leader.py."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.json_logs)
    get_key_ring()  # a bad vault key configuration stops start-up, not a later save
    if not settings.runner_enabled:
        yield
        return
    lock = build_lock(
        settings.leader_lock,
        settings.database_url,
        settings.redis_url,
        lease=settings.leader_lease_seconds,
        name=settings.leader_lock_name,
    )
    election = LeaderElection(lock, lease=settings.leader_lease_seconds)

    async def lead() -> None:
        await run_engine(settings, ui=ReflexUiSink(app))

    try:
        async with running(**{"leader-election": election.run(lead)}):
            yield
    finally:
        await db.dispose()


@contextlib.asynccontextmanager
async def portfolio_refresh_lifespan(app: rx.App) -> AsyncIterator[None]:
    """In every worker: its own open portfolio pages are refreshed by it (the pages are
    registered in the process whose socket serves them, not in the leader's)."""

    async def loop() -> None:
        every = get_settings().portfolio_refresh_seconds
        while True:
            await asyncio.sleep(every)
            try:
                await refresh_open_pages(app)
            except Exception:
                log.exception("portfolio page refresh failed")

    async with running(**{"portfolio-refresh": loop()}):
        yield


def _load_strategy_plugins() -> None:
    """Operator-installed strategies, in every worker: pages, the API and the runner all
    list and validate them. A broken plugin is refused and logged by the registry."""
    folder = get_settings().strategy_plugins_dir.strip()
    strategy_registry.load_plugins(folder or None)


_load_strategy_plugins()

api = FastAPI(title="Tickwatch API", docs_url=None, redoc_url=None, openapi_url=None)
api.include_router(auth_routes.router)
api.include_router(oauth_routes.router)
api.include_router(health.router)
api.include_router(metrics_api.router)
api.include_router(push.router)
api.include_router(kakao_link.router)
api.include_router(channel_verify.router)
api.include_router(strategies_api.router)

app = rx.App(
    # Mount our routes first, then wrap everything (frontend too) in security headers.
    api_transformer=[api, SecurityHeaders],
    head_components=[
        rx.el.meta(name="viewport", content="width=device-width, initial-scale=1"),
        rx.el.link(rel="manifest", href="/manifest.json"),
        rx.el.meta(name="theme-color", content="#3e63dd"),
        # service worker + install prompt; an external file because the CSP runs no inline JS
        rx.el.script(src="/pwa.js", defer=True),
    ],
)
app.register_lifespan_task(runner_lifespan)
app.register_lifespan_task(fanout_lifespan)
app.register_lifespan_task(alert_relay_lifespan)
app.register_lifespan_task(portfolio_refresh_lifespan)

_private = [SessionState.guard, LiveState.connect]
app.add_page(login_page, route="/login", title="Tickwatch")
app.add_page(watchlist_page, route="/", title="Tickwatch", on_load=_private)
app.add_page(symbol_page, route="/symbol", title="Tickwatch", on_load=[*_private, ChartState.load])
app.add_page(
    portfolio_page,
    route="/portfolio",
    title="Tickwatch",
    on_load=[*_private, PortfolioState.load],
)
app.add_page(rules_page, route="/rules", title="Tickwatch", on_load=[*_private, RulesState.load])
app.add_page(
    builder_page,
    route="/rules/new",
    title="Tickwatch",
    on_load=[*_private, RuleBuilderState.load],
)
app.add_page(
    history_page, route="/alerts", title="Tickwatch", on_load=[*_private, HistoryState.load]
)
app.add_page(
    settings_page, route="/settings", title="Tickwatch", on_load=[*_private, SettingsState.load]
)
app.add_page(
    brokers_page,
    route="/settings/brokers",
    title="Tickwatch",
    on_load=[*_private, BrokersState.load],
)
app.add_page(
    channels_page,
    route="/settings/channels",
    title="Tickwatch",
    on_load=[*_private, ChannelsState.load],
)
app.add_page(
    admin_users_page,
    route="/admin/users",
    title="Tickwatch",
    on_load=[*_private, AdminState.load_users],
)
app.add_page(
    admin_audit_page,
    route="/admin/audit",
    title="Tickwatch",
    on_load=[*_private, AdminState.load_audit],
)
app.add_page(
    admin_status_page,
    route="/admin/status",
    title="Tickwatch",
    on_load=[*_private, AdminState.load_status],
)
app.add_page(
    strategies_page,
    route="/strategies",
    title="Tickwatch",
    on_load=[*_private, StrategiesState.load],
)
app.add_page(
    backtest_page,
    route="/backtest",
    title="Tickwatch",
    on_load=[*_private, BacktestState.load],
)
