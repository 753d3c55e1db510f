"""Which market data the shared stream uses: the simulated market, or KIS with service keys.

The operator configures ``MARKET_DATA_SOURCE=kis`` and one or more service app
keys (``KIS_SERVICE_APP_KEY`` / ``KIS_SERVICE_APP_SECRET``, comma-separated in
the same order). Each key is one websocket session of ``KIS_WS_MAX_SUBSCRIPTIONS``
symbols, and the hub spreads symbols over them. Without a key the app falls back
to the simulated market and says so in the log, so a half-configured install
still starts. Users' own keys are never used here: they only place that user's
orders.
"""

from __future__ import annotations

import logging
from datetime import datetime

from app.config import Settings
from app.runtime.hub import MarketHub
from app.services.broker_tokens import ServiceTokenStore
from brokers.base import MarketData, SymbolInfo
from brokers.kis.market import KisMarketData
from brokers.kis.rest import KisRest
from brokers.kis.stream import KisStream
from brokers.paper.market import SimulatedMarket
from brokers.paper.symbols import SYMBOLS
from engines.market import KST, Candle

log = logging.getLogger(__name__)


class ServiceKeyError(ValueError):
    """The service keys are configured inconsistently (a start-up error, not a fallback)."""


def service_keys(settings: Settings) -> list[tuple[str, str]]:
    keys = [k.strip() for k in settings.kis_service_app_key.split(",") if k.strip()]
    secrets = [s.strip() for s in settings.kis_service_app_secret.split(",") if s.strip()]
    if len(keys) != len(secrets):
        raise ServiceKeyError(
            f"KIS_SERVICE_APP_KEY lists {len(keys)} keys but KIS_SERVICE_APP_SECRET "
            f"lists {len(secrets)} secrets"
        )
    if len(set(keys)) != len(keys):
        raise ServiceKeyError("each KIS service app key may appear once (one session per key)")
    return list(zip(keys, secrets, strict=True))


def master_symbols() -> list[SymbolInfo]:
    return [s.info for s in SYMBOLS]


def kis_session(settings: Settings, app_key: str, app_secret: str) -> KisMarketData:
    paper = settings.kis_service_paper
    base = settings.kis_paper_base_url if paper else settings.kis_real_base_url
    rest = KisRest(
        app_key=app_key,
        app_secret=app_secret,
        paper=paper,
        base_url=base,
        token_store=ServiceTokenStore(app_key),
        rate_per_s=settings.kis_paper_rate_per_s if paper else settings.kis_real_rate_per_s,
        timeout=settings.kis_timeout,
    )

    async def fetch_minutes(symbol: str, start: datetime, end: datetime) -> list[Candle]:
        """Gap repair: the 1m bars of [start, end) from KIS's minute-chart endpoints."""
        day = start.astimezone(KST).date()
        until = end.astimezone(KST).strftime("%H%M%S")
        return [c for c in await rest.minute_candles(symbol, day, until) if start <= c.start < end]

    stream = KisStream(
        [(app_key, app_secret)],
        ws_url=settings.kis_paper_ws_url if paper else settings.kis_real_ws_url,
        rest_base_url=base,
        fetch_minutes=fetch_minutes,
        paper=paper,
        max_subscriptions=settings.kis_ws_max_subscriptions,
    )
    return KisMarketData(rest, stream, master_symbols())


def build_market(settings: Settings) -> MarketData:
    if settings.market_data_source == "kis":
        keys = service_keys(settings)
        if keys:
            log.info("market data: KIS with %d service key(s)", len(keys))
            return MarketHub(
                lambda i: kis_session(settings, *keys[i]),
                capacity=settings.kis_ws_max_subscriptions,
                max_sessions=len(keys),
            )
        log.warning("MARKET_DATA_SOURCE=kis but no KIS_SERVICE_APP_KEY: using the simulated market")
    return SimulatedMarket(
        seed=settings.market_seed,
        always_open=settings.market_always_open,
        tick_interval=settings.market_tick_interval,
    )
