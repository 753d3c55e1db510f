"""The alert history names each of the user's own channels, says which alerts went
out inside a digest or were resent after a crash, and a digest's link shows exactly
the alerts that digest stood for (and only to their owner)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State

from app import db
from app.models.alerts import AlertEvent, Delivery
from app.models.common import utcnow
from app.runtime.delivery import digest_key_for
from app.services import alerts, auth, channels
from app.services import rules as rules_service
from app.states.pages import HistoryState
from tests.integration.helpers import make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")

HOOK = "http://127.0.0.1:9/api/webhooks/111111111111111111/" + "T" * 68


async def _seed(monkeypatch) -> tuple[int, int, str, str]:
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9")
    from app.config import get_settings

    get_settings.cache_clear()
    await seed_symbols()
    user = await make_user("hist@example.com")
    other = await make_user("other-hist@example.com")
    async with db.session() as s:
        room = await channels.add_discord(s, user.id, HOOK, "trading room")
        rule = await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="above", level="70000"
        )
        events = []
        for i in range(4):
            e = AlertEvent(
                idempotency_key=f"h:{i}",
                rule_id=rule.id,
                user_id=user.id,
                symbol="005930",
                price=70_000 + i,
                payload={"symbol": "005930", "op": "above", "level": 70_000, "price": 70_000 + i},
                fired_at=utcnow() + timedelta(seconds=i),
            )
            s.add(e)
            await s.flush()
            events.append(e)
        digest = digest_key_for([10, 11])
        target = f"discord:{room.id}"
        s.add(Delivery(event_id=events[0].id, user_id=user.id, channel=target, status="sent"))
        for e in events[1:3]:
            s.add(
                Delivery(
                    event_id=e.id, user_id=user.id, channel=target, status="sent", digest_key=digest
                )
            )
        s.add(
            Delivery(
                event_id=events[3].id,
                user_id=user.id,
                channel=target,
                status="dead",
                last_error="Discord 404: Unknown Webhook",
                resumed=True,
            )
        )
        s.add(Delivery(event_id=events[3].id, user_id=user.id, channel="in_app", status="sent"))
        await s.commit()
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "7.7.7.7")
        other_token = await auth.create_session(s, other, timedelta(hours=1), "b", "8.8.8.8")
    get_settings.cache_clear()
    return user.id, other.id, digest, f"{token}|{other_token}"


async def _load(token: str, query: str = "", lang: str = "en") -> HistoryState:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "pathname": "/history",
            "asPath": f"/history{query}",
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "7.7.7.7",
            "token": "client-hist",
        }
    )
    history = await root.get_state(HistoryState)
    await HistoryState.event_handlers["load"].fn(history)
    return history


async def test_history_names_own_channels_digests_and_resends(monkeypatch):
    _, _, digest, tokens = await _seed(monkeypatch)
    token, _ = tokens.split("|")
    history = await _load(token)
    by_price = {r["price"]: r["deliveries"] for r in history.rows}
    assert len(by_price) == 4 and not history.digest_filter
    assert by_price["70,000"] == "Discord (trading room): sent"
    assert by_price["70,001"] == "Discord (trading room): sent · in a digest"
    last = by_price["70,003"]
    assert "Discord (trading room): failed" in last and "Unknown Webhook" in last
    assert "may have arrived twice" in last and "In-app: sent" in last
    ko = await _load(token, lang="ko")
    assert "요약 메시지로 전송" in {r["price"]: r["deliveries"] for r in ko.rows}["70,002"]


async def test_a_digest_link_shows_only_its_alerts_and_only_to_the_owner(monkeypatch):
    user_id, other_id, digest, tokens = await _seed(monkeypatch)
    token, other_token = tokens.split("|")
    history = await _load(token, f"?digest={digest}")
    assert history.digest_filter
    assert sorted(r["price"] for r in history.rows) == ["70,001", "70,002"]
    # Someone else's digest key, a malformed one: nothing, not everything.
    assert (await _load(other_token, f"?digest={digest}")).rows == []
    assert (await _load(token, "?digest=' OR 1=1 --")).rows == []
    async with db.session() as s:
        assert await alerts.history(s, user_id, digest="z" * 32) == []
        assert len(await alerts.history(s, other_id)) == 0
