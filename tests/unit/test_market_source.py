"""Which market the shared stream uses, from the operator's settings."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.runtime.hub import MarketHub
from app.runtime.market_source import ServiceKeyError, build_market, service_keys
from brokers.kis.market import KisMarketData
from brokers.paper.market import SimulatedMarket


def test_the_demo_runs_on_the_simulated_market():
    assert isinstance(build_market(Settings(market_data_source="simulated")), SimulatedMarket)


def test_kis_without_a_service_key_falls_back_and_says_so(caplog):
    market = build_market(Settings(market_data_source="kis", kis_service_app_key=""))
    assert isinstance(market, SimulatedMarket)
    assert "no KIS_SERVICE_APP_KEY" in caplog.text


def test_kis_service_keys_become_hub_sessions_of_the_configured_size():
    cfg = Settings(
        market_data_source="kis",
        kis_service_app_key="key-a, key-b",
        kis_service_app_secret="secret-a,secret-b",
        kis_ws_max_subscriptions=40,
    )
    hub = build_market(cfg)
    assert isinstance(hub, MarketHub)
    assert (hub.capacity, hub.max_sessions) == (40, 2)
    first = hub.upstreams[0].source
    assert isinstance(first, KisMarketData) and first.rest.paper is False
    assert "secret-a" not in repr(first.rest.tokens) and "secret-a" not in str(hub.status())


@pytest.mark.parametrize(
    ("keys", "secrets", "message"),
    [("a,b", "x", "2 keys but"), ("a,a", "x,y", "appear once")],
)
def test_inconsistent_service_keys_stop_start_up(keys: str, secrets: str, message: str):
    cfg = Settings(
        market_data_source="kis", kis_service_app_key=keys, kis_service_app_secret=secrets
    )
    with pytest.raises(ServiceKeyError, match=message):
        service_keys(cfg)
