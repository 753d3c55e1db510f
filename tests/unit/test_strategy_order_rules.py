"""The executor's pure rules: client order ids, the live gates, order terms, the phrase."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.models.strategies import StrategyAttachment
from app.services.strategies import _normalise_phrase, live_phrases
from app.services.strategy_orders import _order_terms, client_order_id, refusal
from brokers.base import OrderSide, OrderType
from engines.market import is_on_tick
from engines.strategies.base import Action, OrderKind, Signal

COID = re.compile(r"TW[A-Z2-7]{22}")


@given(st.integers(min_value=1, max_value=2**31), st.text(min_size=1, max_size=300))
def test_client_order_ids_are_stable_short_and_broker_safe(attachment_id, key):
    coid = client_order_id(attachment_id, key)
    assert COID.fullmatch(coid)
    assert client_order_id(attachment_id, key) == coid
    assert client_order_id(attachment_id + 1, key) != coid
    assert client_order_id(attachment_id, key + "x") != coid


def _att(**kw: object) -> StrategyAttachment:
    base: dict[str, object] = {
        "user_id": 1,
        "config_id": 1,
        "symbol": "005930",
        "mode": "live",
        "broker_account_id": 3,
        "live_confirmed_at": datetime(2026, 3, 5, tzinfo=UTC),
        "max_order_value": 1_000_000,
        "max_position_qty": 10,
        "max_orders_per_day": 5,
    }
    base.update(kw)
    return StrategyAttachment(**base)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"enabled": False}, "disabled"),
        ({"killed_at": datetime(2026, 3, 5, tzinfo=UTC)}, "killed"),
        ({"live_confirmed_at": None}, "live_not_confirmed"),
        ({"broker_account_id": None}, "live_no_account"),
        ({"max_orders_per_day": None}, "live_no_limits"),
        ({"max_position_qty": None}, "live_no_limits"),
        ({"mode": "alert"}, "alert_mode"),
        ({"mode": "LIVE"}, "bad_mode"),
        ({"mode": "paper", "live_confirmed_at": None, "max_order_value": None}, None),
        ({"state": "reconciling"}, "reconciling"),
        ({"state": "error"}, None),  # an order in flight when its strategy failed still goes
    ],
)
def test_gates(changes, reason):
    assert refusal(_att(**changes)) == reason


@given(st.floats(min_value=1, max_value=3_000_000, allow_nan=False))
def test_limit_prices_land_on_the_tick_grid_on_the_traders_side(limit):
    buy = _order_terms(Signal(Action.BUY, order_kind=OrderKind.LIMIT, limit_price=limit), 1000)
    sell = _order_terms(Signal(Action.SELL, order_kind=OrderKind.LIMIT, limit_price=limit), 1000)
    assert buy.order_type is OrderType.LIMIT and buy.side is OrderSide.BUY
    assert is_on_tick(buy.price) and is_on_tick(sell.price)
    assert buy.price <= max(limit, 1) and sell.price >= limit


def test_market_orders_carry_no_price_but_keep_the_reference():
    terms = _order_terms(Signal(Action.SELL), 71_349.6)
    assert (terms.order_type, terms.price, terms.ref_price) == (OrderType.MARKET, 0, 71_350)


def test_the_live_phrase_is_accepted_in_either_language_loosely_typed():
    phrases = live_phrases()
    assert set(phrases) == {"ko", "en"} and phrases["ko"] != phrases["en"]
    accepted = {_normalise_phrase(p) for p in phrases.values()}
    assert _normalise_phrase("  " + phrases["en"].upper().replace(" ", "   ")) in accepted
    assert _normalise_phrase(phrases["ko"] + " ") in accepted
    assert _normalise_phrase(phrases["en"][:-1]) not in accepted
