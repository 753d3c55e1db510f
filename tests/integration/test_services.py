"""Services on a real database: bad input is refused whole, and users only see their own rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import func, select

from app import db
from app.models.rules import AlertRule
from app.models.watchlists import WatchlistItem
from app.services import auth, symbols, watchlist
from app.services import rules as rules_service
from app.services.errors import NotFound, ValidationFailed
from tests.integration.helpers import make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")


async def _count(model: type) -> int:
    async with db.session() as s:
        return int((await s.exec(select(func.count()).select_from(model))).one())


async def test_symbol_search_and_resolve():
    await seed_symbols()
    async with db.session() as s:
        assert (await symbols.resolve(s, "005930")).name_ko == "삼성전자"
        assert (await symbols.resolve(s, "삼성전자")).code == "005930"
        assert (await symbols.resolve(s, "samsung electronics")).code == "005930"
        assert (await symbols.resolve(s, "SK하이닉스 (000660)")).code == "000660"
        found = await symbols.search(s, "삼성")
        assert found and all("삼성" in f.name_ko for f in found)
        assert found[0].name_ko.startswith("삼성")
        assert await symbols.search(s, "   ") == []
        # LIKE wildcards in user input are literal, not patterns
        assert await symbols.search(s, "%") == []
        assert await symbols.search(s, "_") == []
        for bad, code in [
            ("", "symbol_required"),
            ("999999", "unknown_symbol"),
            ("없는종목이름", "unknown_symbol"),
            ("삼성", "ambiguous_symbol"),
        ]:
            with pytest.raises(ValidationFailed) as err:
                await symbols.resolve(s, bad)
            assert err.value.field_errors["symbol"][0] == code, bad


async def test_watchlist_add_remove_and_bad_input():
    await seed_symbols()
    user = await make_user()
    other = await make_user("other@example.com")
    async with db.session() as s:
        await watchlist.add(s, user.id, "005930")
        for bad, code in [
            ("005930", "duplicate_watch"),
            ("삼성전자", "duplicate_watch"),
            ("123456", "unknown_symbol"),
            ("nonsense-name", "unknown_symbol"),
            ("", "symbol_required"),
        ]:
            with pytest.raises(ValidationFailed) as err:
                await watchlist.add(s, user.id, bad)
            assert err.value.code == code, bad
    assert await _count(WatchlistItem) == 1
    async with db.session() as s:
        rows = await watchlist.list_rows(s, user.id)
        assert [r.code for r in rows] == ["005930"]
        assert await watchlist.list_rows(s, other.id) == []
        # another user's item id is "not found", and stays in place
        with pytest.raises(NotFound):
            await watchlist.remove(s, other.id, rows[0].item_id)
    assert await _count(WatchlistItem) == 1
    async with db.session() as s:
        assert await watchlist.remove(s, user.id, rows[0].item_id) == "005930"
        with pytest.raises(NotFound):
            await watchlist.remove(s, user.id, rows[0].item_id)
    assert await _count(WatchlistItem) == 0


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"level": "-5"}, {"level": "level_not_positive"}),
        ({"level": "0"}, {"level": "level_not_positive"}),
        ({"level": "abc"}, {"level": "level_not_number"}),
        ({"level": "70000.5"}, {"level": "level_not_integer"}),
        ({"level": ""}, {"level": "level_required"}),
        ({"level": "1e12"}, {"level": "level_not_number"}),
        ({"symbol_query": "777777"}, {"symbol": "unknown_symbol"}),
        ({"op": "sideways"}, {"op": "bad_op"}),
        ({"repeat": "always"}, {"repeat": "bad_repeat"}),
        ({"name": "x" * 101}, {"name": "name_too_long"}),
        (
            {"symbol_query": "", "level": "-1", "op": "x"},
            {"symbol": "symbol_required", "level": "level_not_positive", "op": "bad_op"},
        ),
    ],
)
async def test_rule_bad_input_is_refused_and_nothing_saved(fields, errors):
    await seed_symbols()
    user = await make_user()
    args = {"symbol_query": "005930", "op": "cross_up", "level": "70,000", "repeat": "once"}
    args.update(fields)
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as err:
            await rules_service.create_price_rule(s, user.id, **args)
    assert {f: c for f, (c, _) in err.value.field_errors.items()} == errors
    assert await _count(AlertRule) == 0


async def test_rule_create_list_delete_and_ownership():
    await seed_symbols()
    user = await make_user()
    other = await make_user("other@example.com")
    async with db.session() as s:
        rule = await rules_service.create_price_rule(
            s, user.id, symbol_query="삼성전자", op="cross_up", level="70,000", name="돌파"
        )
    assert rule.spec["level"] == 70000 and rule.symbol == "005930"
    async with db.session() as s:
        rows = await rules_service.list_rows(s, user.id)
        assert [(r.code, r.op, r.level, r.rule_name) for r in rows] == [
            ("005930", "cross_up", 70000, "돌파")
        ]
        assert await rules_service.list_rows(s, other.id) == []
        with pytest.raises(NotFound):
            await rules_service.delete_rule(s, other.id, rule.id)
        before = (await s.get(AlertRule, rule.id)).updated_at
    async with db.session() as s:
        await rules_service.delete_rule(s, user.id, rule.id)
        assert await rules_service.list_rows(s, user.id) == []
        after = await s.get(AlertRule, rule.id)
        assert after.status == "deleted" and after.updated_at > before
        with pytest.raises(NotFound):
            await rules_service.delete_rule(s, user.id, rule.id)


async def test_sessions_store_only_the_hash_and_expire():
    user = await make_user(password="s3cret-pass!")
    throttle = auth.LoginThrottle(max_failures=3, window_seconds=60)
    async with db.session() as s:
        found = await auth.authenticate(
            s, " Trader@Example.com ", "s3cret-pass!", throttle, "1.2.3.4"
        )
        assert found.id == user.id
        token = await auth.create_session(s, found, timedelta(hours=1), "pytest", "1.2.3.4")
        assert (await auth.resolve_session(s, token)).id == user.id
        assert await auth.resolve_session(s, token + "x") is None
        assert await auth.resolve_session(s, "") is None
        from app.models.users import UserSession

        row = (await s.exec(select(UserSession))).one()
        assert row.token_hash == auth.hash_token(token) and token not in row.token_hash
        # expiry
        assert (
            await auth.resolve_session(s, token, now=row.expires_at + timedelta(seconds=1)) is None
        )
        await auth.revoke_session(s, token)
        assert await auth.resolve_session(s, token) is None


async def test_wrong_password_and_rate_limit():
    await make_user(password="right-password")
    clock = [0.0]
    throttle = auth.LoginThrottle(max_failures=3, window_seconds=60, clock=lambda: clock[0])
    async with db.session() as s:
        for _ in range(3):
            with pytest.raises(auth.AuthFailed):
                await auth.authenticate(s, "trader@example.com", "wrong", throttle, "9.9.9.9")
        with pytest.raises(auth.AuthFailed):
            await auth.authenticate(s, "nobody@example.com", "whatever", throttle, "8.8.8.8")
        # the right password is refused too while the account is locked out
        with pytest.raises(auth.RateLimited):
            await auth.authenticate(s, "trader@example.com", "right-password", throttle, "7.7.7.7")
        clock[0] = 61.0
        assert await auth.authenticate(
            s, "trader@example.com", "right-password", throttle, "7.7.7.7"
        )
