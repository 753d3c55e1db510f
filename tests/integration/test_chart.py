"""The symbol page: series merging, overlays, alert levels (own rules only), the state.

On SQLite and PostgreSQL, with the page state driven as the browser would.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from reflex.istate.data import RouterData
from reflex.state import State

from app import db
from app.services import candles as candle_store
from app.services import chart as chart_service
from app.services import condition_rules
from app.services import rules as rules_service
from app.states.chart import ChartState, build_figure
from engines.market import Candle, Timeframe
from tests.integration.helpers import T0, make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")


def _daily(symbol: str, closes: list[int]) -> list[Candle]:
    first = Timeframe.D1.bucket(T0)[0]
    return [
        Candle(symbol, Timeframe.D1, first + timedelta(days=i), c, c + 100, c - 100, c, 1000 + i)
        for i, c in enumerate(closes)
    ]


def test_merge_prefers_the_newest_source_and_keeps_order():
    stored = _daily("005930", [100, 200, 300])
    newer = Candle("005930", Timeframe.D1, stored[2].start, 300, 400, 250, 350, 9)
    forming = Candle("005930", Timeframe.D1, T0 + timedelta(days=3), 350, 360, 340, 355, 5)
    merged = chart_service.merge_series(stored, [newer], forming, limit=3)
    assert [c.close for c in merged] == [200, 350, 355]
    assert merged[1] is newer


def test_overlays_match_pandas_rolling_values():
    closes = [70_000 + (i * 37 % 900) - 450 for i in range(80)]
    candles = _daily("005930", closes)
    ma20 = chart_service.overlay(candles, "ma20")["value"]
    expected = pd.Series(closes, dtype=float).rolling(20).mean()
    assert ma20[:19] == [None] * 19
    assert all(abs(a - b) < 1e-6 for a, b in zip(ma20[19:], expected[19:], strict=True))
    bb = chart_service.overlay(candles, "bb")
    std = pd.Series(closes, dtype=float).rolling(20).std(ddof=0)
    assert abs(bb["upper"][-1] - (expected.iloc[-1] + 2 * std.iloc[-1])) < 1e-6
    with pytest.raises(ValueError):
        chart_service.overlay(candles, "ichimoku")


async def _token(user) -> str:
    from app.services import auth

    async with db.session() as s:
        return await auth.create_session(s, user, timedelta(hours=1), "browser", "4.4.4.4")


def _root(token: str, code: str, lang: str = "ko") -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "4.4.4.4",
            "token": "client-chart",
            "pathname": "/symbol",
            "asPath": f"/symbol?code={code}",
        }
    )
    return root


async def test_alert_levels_are_the_users_own_active_rules_only():
    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, alice.id, symbol_query="005930", op="cross_up", level="72000"
        )
        await rules_service.create_price_rule(
            s, bob.id, symbol_query="005930", op="cross_up", level="65000"
        )
        await condition_rules.create(
            s,
            alice,
            {
                "symbol": "005930",
                "name": "band",
                "timeframe": "1d",
                "logic": "and",
                "frequency": "once_per_bar",
                "hysteresis_pct": "0",
                "template": "",
                "c0.type": "channel",
                "c0.value": "price",
                "c0.op": "exiting",
                "c0.lower": "68,000",
                "c0.upper": "74,000",
            },
        )
    async with db.session() as s:
        levels = await chart_service.alert_levels(s, alice.id, "005930")
        assert sorted(lv.price for lv in levels) == [68000.0, 72000.0, 74000.0]
        assert await chart_service.alert_levels(s, bob.id, "005930") != []
        assert [lv.price for lv in await chart_service.alert_levels(s, bob.id, "005930")] == [
            65000.0
        ]


async def test_chart_state_loads_candles_switches_timeframe_and_rejects_unknown_codes():
    await seed_symbols()
    user = await make_user("chart@example.com")
    async with db.session() as s:
        await candle_store.store(s, _daily("005930", [70_000 + 100 * i for i in range(30)]))
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="75000"
        )
    root = _root(await _token(user), "005930")
    state = await root.get_state(ChartState)
    result = await ChartState.event_handlers["load"].fn(state)
    assert result is not None  # the live-follow task is started
    assert state.not_found is False and state.code == "005930" and state.name_ko == "삼성전자"
    assert state.bars == 30 and state.levels == 1
    candle = state.figure.data[0]
    assert list(candle.close)[-1] == 72_900
    assert state.price == "72,900"  # no runner: the last close

    await ChartState.event_handlers["toggle_overlay"].fn(state, "bb")
    assert [tr.name for tr in state.figure.data if tr.type == "scatter"] == [
        "MA20",
        "BB upper",
        "BB mid",
        "BB lower",
    ]
    await ChartState.event_handlers["set_timeframe"].fn(state, "5m")
    assert state.timeframe == "5m" and state.bars == 0
    await ChartState.event_handlers["set_timeframe"].fn(state, "7m")  # not offered
    assert state.timeframe == "5m"

    missing = await _root(await _token(user), "999999").get_state(ChartState)
    await ChartState.event_handlers["load"].fn(missing)
    assert missing.not_found is True and missing.bars == 0


async def test_chart_state_without_a_session_redirects_to_login():
    await seed_symbols()
    state = await _root("forged-token", "005930").get_state(ChartState)
    result = await ChartState.event_handlers["load"].fn(state)
    assert "login" in str(result)
    assert state.code == ""


def test_figure_draws_levels_and_volume():
    candles = _daily("005930", [70_000, 71_000, 70_500])
    fig = build_figure(candles, ["ma20"], [chart_service.ChartLevel(72_000.0, 1, "x")])
    assert [tr.type for tr in fig.data] == ["candlestick", "scatter", "bar"]
    assert list(fig.data[2].y) == [1000, 1001, 1002]
    assert [shape.y0 for shape in fig.layout.shapes] == [72_000.0]


async def test_a_live_update_on_a_quiet_symbol_costs_no_query(monkeypatch):
    await seed_symbols()
    user = await make_user("quiet@example.com")
    async with db.session() as s:
        await candle_store.store(s, _daily("005930", [70_000 + 100 * i for i in range(5)]))
    state = await _root(await _token(user), "005930").get_state(ChartState)
    await ChartState.event_handlers["load"].fn(state)
    assert state.bars == 5

    async def no_query(*args, **kwargs):
        raise AssertionError("the database was queried although nothing moved")

    monkeypatch.setattr(chart_service, "series", no_query)
    assert await state._render(user.id, live=True) is False
    # a user action re-reads regardless (here: the patched query proves it is called)
    with pytest.raises(AssertionError, match="nothing moved"):
        await state._render(user.id)
