"""The strategy use cases on a real database: validation, ownership, live, kill switch."""

from __future__ import annotations

import pytest
from sqlmodel import select

from app import db
from app.i18n import translate
from app.models.audit import AuditEntry
from app.models.strategies import StrategyAttachment, StrategyConfig, StrategyOrder
from app.services import audit
from app.services import strategies as service
from app.services.errors import NotFound, ValidationFailed
from tests.integration.helpers import make_user, seed_symbols
from tests.integration.test_strategy_kit import (
    HYNIX,
    PHRASE_EN,
    PHRASE_KO,
    SAMSUNG,
    attachment,
    kis_account,
)

pytestmark = pytest.mark.usefixtures("database")


async def _user(email: str = "svc@example.com") -> int:
    await seed_symbols()
    return (await make_user(email)).id


async def _config(user_id: int, label: str = "golden", **params: object) -> service.ConfigView:
    async with db.session() as s:
        return await service.create_config(
            s,
            user_id,
            label=label,
            strategy="ma_cross",
            params=params or {"fast": "5", "slow": "20"},
            timeframe="1d",
        )


async def _rows() -> tuple[list[StrategyConfig], list[StrategyAttachment]]:
    async with db.session() as s:
        return (
            list((await s.exec(select(StrategyConfig))).all()),
            list((await s.exec(select(StrategyAttachment))).all()),
        )


async def test_create_validates_params_and_stores_them_normalised():
    uid = await _user()
    view = await _config(uid)
    assert view.strategy == "ma_cross" and view.timeframe == "1d"
    assert view.params["fast"] == 5 and view.params["slow"] == 20  # strings parsed, typed
    assert view.params["kind"] == "sma"  # defaults filled in
    async with db.session() as s:
        assert [c.label for c in await service.list_configs(s, uid)] == ["golden"]


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"params": {"fast": "50", "slow": "20"}}, "slow", "strategy_fast_not_shorter"),
        ({"params": {"fast": "abc"}}, "fast", "strategy_not_number"),
        ({"params": {"fast": 5, "slow": 20, "speed": 3}}, "speed", "strategy_unknown_param"),
        ({"params": ["fast", 5]}, "params", "strategy_params_not_object"),
        ({"strategy": "nope"}, "strategy", "strategy_unknown"),
        ({"timeframe": "7m"}, "timeframe", "strategy_bad_timeframe"),
        ({"label": "  "}, "label", "strategy_label_required"),
        ({"label": "x" * 61}, "label", "strategy_label_too_long"),
    ],
)
async def test_bad_input_is_refused_with_the_field_and_nothing_is_saved(fields, field, code):
    uid = await _user()
    args = {
        "label": "a",
        "strategy": "ma_cross",
        "params": {"fast": 5, "slow": 20},
        "timeframe": "1d",
        **fields,
    }
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as caught:
            await service.create_config(s, uid, **args)
    assert caught.value.field_errors[field][0] == code, caught.value.field_errors
    # every code has a message in both languages
    for lang in ("ko", "en"):
        params = caught.value.field_errors[field][1]
        assert translate(f"error.{code}", lang, **params)
    assert await _rows() == ([], [])


async def test_check_params_is_pure_and_matches_what_saving_refuses():
    assert service.check_params("ma_cross", {"fast": 10, "slow": 30}) == {}
    errors = service.check_params("ma_cross", {"fast": 30, "slow": 10})
    assert errors == {"slow": ("strategy_fast_not_shorter", {"fast": 30, "slow": 10})}
    message = translate("error.strategy_fast_not_shorter", "en", fast=30, slow=10)
    assert "30" in message and "10" in message


async def test_labels_are_unique_per_user_only():
    alice, bob = await _user("a@example.com"), (await make_user("b@example.com")).id
    await _config(alice)
    with pytest.raises(ValidationFailed) as caught:
        await _config(alice)
    assert caught.value.field_errors["label"][0] == "strategy_label_taken"
    await _config(bob)  # Bob may use the same name


async def test_attach_modes_and_live_only_through_go_live():
    uid = await _user()
    config = await _config(uid)
    async with db.session() as s:
        att = await service.attach(s, uid, config.id, symbol="삼성전자", mode="alert")
        assert (att.symbol, att.mode, att.state) == (SAMSUNG, "alert", "running")
        with pytest.raises(ValidationFailed) as live:
            await service.attach(s, uid, config.id, symbol=HYNIX, mode="live")
        assert live.value.field_errors["mode"][0] == "strategy_live_needs_confirmation"
        with pytest.raises(ValidationFailed) as twice:
            await service.attach(s, uid, config.id, symbol=SAMSUNG)
        assert twice.value.field_errors["symbol"][0] == "strategy_already_attached"
        with pytest.raises(ValidationFailed) as unknown:
            await service.attach(s, uid, config.id, symbol="없는종목")
        assert unknown.value.field_errors["symbol"][0] == "unknown_symbol"
        with pytest.raises(ValidationFailed) as mode:
            await service.set_mode(s, uid, att.id, "live")
        assert mode.value.field_errors["mode"][0] == "strategy_live_needs_confirmation"
        paper = await service.set_mode(s, uid, att.id, "paper")
        assert (paper.mode, paper.state) == ("paper", "reconciling")


@pytest.mark.parametrize(
    ("limits", "field", "code"),
    [
        ({"max_order_value": "abc"}, "max_order_value", "strategy_limit_not_number"),
        ({"max_position_qty": "0"}, "max_position_qty", "strategy_limit_not_positive"),
        ({"max_orders_per_day": "100000"}, "max_orders_per_day", "strategy_limit_too_large"),
        ({"max_order_value": True}, "max_order_value", "strategy_limit_not_number"),
    ],
)
async def test_limits_are_validated(limits, field, code):
    uid = await _user()
    config = await _config(uid)
    async with db.session() as s:
        att = await service.attach(s, uid, config.id, symbol=SAMSUNG)
        good = {"max_order_value": "1,000,000", "max_position_qty": 10, "max_orders_per_day": ""}
        view = await service.set_limits(s, uid, att.id, **good)
        assert (view.max_order_value, view.max_position_qty, view.max_orders_per_day) == (
            1_000_000,
            10,
            None,
        )
        with pytest.raises(ValidationFailed) as caught:
            await service.set_limits(s, uid, att.id, **{**good, **limits})
        assert caught.value.field_errors[field][0] == code
    row = await attachment(att.id)
    assert (row.max_order_value, row.max_position_qty) == (1_000_000, 10)  # unchanged


async def _live_ready(uid: int) -> tuple[int, int]:
    config = await _config(uid)
    credential = await kis_account(uid)
    async with db.session() as s:
        att = await service.attach(s, uid, config.id, symbol=SAMSUNG, mode="paper")
        await service.set_limits(
            s, uid, att.id, max_order_value=1_000_000, max_position_qty=20, max_orders_per_day=5
        )
    return att.id, credential


async def test_go_live_refuses_a_wrong_phrase_missing_limits_and_someone_elses_account():
    uid = await _user()
    att_id, credential = await _live_ready(uid)
    other = (await make_user("other@example.com")).id
    others_account = await kis_account(other)
    before = await attachment(att_id)

    async def refused(**kw: object) -> dict:
        args = {"broker_account_id": credential, "confirmation": PHRASE_EN, **kw}
        async with db.session() as s:
            with pytest.raises(ValidationFailed) as caught:
                await service.go_live(s, uid, att_id, **args)
        assert await attachment(att_id) == before  # nothing changed
        return caught.value.field_errors

    assert set(await refused(confirmation="yes")) == {"confirmation"}
    assert set(await refused(confirmation="")) == {"confirmation"}
    assert (await refused(broker_account_id=others_account))["broker_account_id"][0] == (
        "strategy_live_account"
    )
    assert set(await refused(broker_account_id="9999")) == {"broker_account_id"}
    async with db.session() as s:
        await service.set_limits(
            s, uid, att_id, max_order_value=None, max_position_qty=20, max_orders_per_day=5
        )
    before = await attachment(att_id)
    assert (await refused())["max_order_value"][0] == "strategy_limit_required_live"
    denied = await audit.search(audit.AuditFilter(action="strategy.live_refused"))
    assert len(denied) == 5
    # the other user's account was reached for: that is audited as a denial too
    async with db.session() as s:
        rows = (await s.exec(select(AuditEntry).where(AuditEntry.outcome == "denied"))).all()
    assert any(r.target_id == str(others_account) for r in rows)


@pytest.mark.parametrize("phrase", [PHRASE_EN, PHRASE_KO, "  i ACCEPT the risk of LIVE trading "])
async def test_go_live_with_everything_then_revive_needs_confirming_again(phrase):
    uid = await _user()
    att_id, credential = await _live_ready(uid)
    async with db.session() as s:
        live = await service.go_live(
            s, uid, att_id, broker_account_id=str(credential), confirmation=phrase, session_id="42"
        )
    assert (live.mode, live.live_confirmed, live.state) == ("live", True, "reconciling")
    row = await attachment(att_id)
    assert row.live_confirmed_by_session == "42" and row.broker_account_id == credential
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as clear:
            await service.set_limits(
                s, uid, att_id, max_order_value="", max_position_qty=20, max_orders_per_day=5
            )
        assert clear.value.field_errors["max_order_value"][0] == "strategy_limit_required_live"
        killed = await service.kill(s, uid, att_id)
        assert killed.killed and killed.live_confirmed  # kill stops; it does not unconfirm
        with pytest.raises(ValidationFailed) as again:
            await service.go_live(s, uid, att_id, broker_account_id=credential, confirmation=phrase)
        assert set(again.value.field_errors) == {"attachment"}
        revived = await service.revive(s, uid, att_id)
    assert not revived.killed and revived.mode == "live" and revived.needs_confirmation
    actions = [e.action for e in await audit.search(audit.AuditFilter(action="strategy."))]
    assert {"strategy.live_confirmed", "strategy.killed", "strategy.revived"} <= set(actions)


async def test_editing_params_of_a_live_strategy_takes_the_confirmation_away():
    uid = await _user()
    att_id, credential = await _live_ready(uid)
    async with db.session() as s:
        await service.go_live(s, uid, att_id, broker_account_id=credential, confirmation=PHRASE_KO)
        config_id = (await attachment(att_id)).config_id
        await service.update_config(
            s, uid, config_id, label="renamed", params={"fast": 5, "slow": 20}, timeframe="1d"
        )
        assert (await attachment(att_id)).live_confirmed_at is not None  # a rename only
        await service.update_config(
            s, uid, config_id, label="renamed", params={"fast": 5, "slow": 30}, timeframe="1d"
        )
    row = await attachment(att_id)
    assert row.live_confirmed_at is None and row.mode == "live"


async def test_kill_all_and_another_users_ids_are_not_found_and_audited():
    alice = await _user("alice@example.com")
    bob = (await make_user("bob@example.com")).id
    config = await _config(alice)
    async with db.session() as s:
        a1 = await service.attach(s, alice, config.id, symbol=SAMSUNG)
        await service.attach(s, alice, config.id, symbol=HYNIX, mode="paper")
        for call in (
            lambda: service.get_config(s, bob, config.id, ip="6.6.6.6"),
            lambda: service.update_config(
                s, bob, config.id, label="x", params={}, timeframe="1d", ip="6.6.6.6"
            ),
            lambda: service.delete_config(s, bob, config.id, ip="6.6.6.6"),
            lambda: service.attach(s, bob, config.id, symbol=HYNIX, ip="6.6.6.6"),
            lambda: service.detach(s, bob, a1.id, ip="6.6.6.6"),
            lambda: service.set_mode(s, bob, a1.id, "paper", ip="6.6.6.6"),
            lambda: service.set_limits(
                s,
                bob,
                a1.id,
                max_order_value=1,
                max_position_qty=1,
                max_orders_per_day=1,
                ip="6.6.6.6",
            ),
            lambda: service.go_live(
                s, bob, a1.id, broker_account_id=1, confirmation=PHRASE_EN, ip="6.6.6.6"
            ),
            lambda: service.kill(s, bob, a1.id, ip="6.6.6.6"),
            lambda: service.revive(s, bob, a1.id, ip="6.6.6.6"),
            lambda: service.list_orders(s, bob, attachment_id=a1.id, ip="6.6.6.6"),
            lambda: service.get_config(s, bob, "not-a-number", ip="6.6.6.6"),
        ):
            with pytest.raises(NotFound):
                await call()
        denied = await audit.search(audit.AuditFilter(outcome="denied", actor_id=bob))
        assert len(denied) == 12 and {d.ip for d in denied} == {"6.6.6.6"}
        assert await service.kill_all(s, bob) == 0
        assert await service.list_configs(s, bob) == []
        assert await service.kill_all(s, alice) == 2
        assert await service.kill_all(s, alice) == 0
    configs, atts = await _rows()
    assert [c.label for c in configs] == ["golden"]
    assert all(a.killed_at is not None for a in atts) and len(atts) == 2


async def test_delete_waits_for_unresolved_orders_and_keeps_the_order_history():
    uid = await _user()
    config = await _config(uid)
    async with db.session() as s:
        att = await service.attach(s, uid, config.id, symbol=SAMSUNG, mode="paper")
        order = StrategyOrder(
            user_id=uid,
            attachment_id=att.id,
            client_order_id="TWTESTUNRESOLVED",
            signal_key="k",
            symbol=SAMSUNG,
            side="buy",
            qty=1,
            order_type="market",
            mode="paper",
            state="sent",
        )
        s.add(order)
        await s.commit()
        with pytest.raises(ValidationFailed) as caught:
            await service.delete_config(s, uid, config.id)
        assert caught.value.field_errors["config"][0] == "strategy_orders_unresolved"
        with pytest.raises(ValidationFailed):
            await service.detach(s, uid, att.id)
        with pytest.raises(ValidationFailed) as mode:
            await service.set_mode(s, uid, att.id, "alert")
        assert mode.value.field_errors["mode"][0] == "strategy_orders_unresolved"
        order.state = "acked"
        s.add(order)
        await s.commit()
        await service.delete_config(s, uid, config.id)
        kept = await service.list_orders(s, uid)
    assert [(o.client_order_id, o.attachment_id) for o in kept] == [("TWTESTUNRESOLVED", None)]
    assert await _rows() == ([], [])
