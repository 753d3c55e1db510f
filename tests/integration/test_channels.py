"""Notification channels: validation, nothing half-saved, addresses encrypted, ownership,
and the web-push subscription route. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import func, select

import app.app as app_module
from app import db
from app.i18n import translate
from app.models.channels import NotificationChannel
from app.models.vault import VaultSecret
from app.services import audit, auth, channels
from app.services.errors import NotFound, ValidationFailed
from tests.integration.helpers import make_user

pytestmark = pytest.mark.usefixtures("database")

HOOK = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc123") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return json.dumps(
        {"endpoint": endpoint, "keys": {"p256dh": _b64(point), "auth": _b64(b"a" * 16)}}
    )


async def _counts() -> tuple[int, int]:
    async with db.session() as s:
        channels_n = (await s.exec(select(func.count()).select_from(NotificationChannel))).one()
        secrets_n = (
            await s.exec(
                select(func.count())
                .select_from(VaultSecret)
                .where(VaultSecret.owner_table == "notification_channels")
            )
        ).one()
    return channels_n, secrets_n


async def test_a_discord_webhook_is_stored_encrypted_and_listed_masked():
    user = await make_user("hooks@example.com")
    async with db.session() as s:
        row = await channels.add_discord(s, user.id, HOOK, "alerts room")
    assert (row.kind, row.label, row.hint, row.verified, row.enabled) == (
        "discord",
        "alerts room",
        "webhook ••••5678",
        True,
        True,
    )
    async with db.session() as s:
        secret = (await s.exec(select(VaultSecret))).one()
        assert "T" * 20 not in secret.ciphertext and "discord.com" not in secret.ciphertext
        listed = await channels.list_channels(s, user.id)
        assert [c.id for c in listed] == [row.id]
        assert "T" * 20 not in repr(listed)
        stored = await s.get(NotificationChannel, row.id)
        assert await channels.address_for_delivery(s, stored) == HOOK


@pytest.mark.parametrize(
    ("adder", "value", "code"),
    [
        ("add_discord", "http://discord.com/api/webhooks/1/abc", "channel_discord_url"),
        ("add_discord", "https://evil.example/api/webhooks/1/abc", "channel_discord_url"),
        ("add_discord", "https://discord.com@evil.example/api/webhooks/1/a", "channel_discord_url"),
        ("add_discord", "https://discord.com/api/webhooks/123", "channel_discord_url"),
        ("add_discord", "", "channel_discord_url"),
        ("add_telegram_chat", "", "channel_telegram_chat_id"),
        ("add_telegram_chat", "my chat", "channel_telegram_chat_id"),
        ("add_telegram_chat", "12 34", "channel_telegram_chat_id"),
        ("add_telegram_chat", "1" * 21, "channel_telegram_chat_id"),
        ("add_webpush", "not json", "channel_webpush"),
        ("add_webpush", json.dumps({"endpoint": "https://push.example/x"}), "channel_webpush"),
        ("add_webpush", subscription("http://evil.example/push"), "channel_webpush"),
    ],
)
async def test_bad_addresses_are_refused_with_a_message_and_nothing_is_saved(adder, value, code):
    user = await make_user("bad@example.com")
    with pytest.raises(ValidationFailed) as caught:
        async with db.session() as s:
            await getattr(channels, adder)(s, user.id, value, "x")
    got_code, params = caught.value.field_errors["address"]
    assert got_code == code
    for lang in ("ko", "en"):
        text = translate(f"error.{code}", lang, **params)
        assert text and "{" not in text
    assert await _counts() == (0, 0)


async def test_label_too_long_and_duplicates_are_refused():
    user = await make_user("dup@example.com")
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as caught:
            await channels.add_telegram_chat(s, user.id, "123456789", "x" * 61)
        assert caught.value.field_errors["label"][0] == "channel_label_too_long"
        await channels.add_telegram_chat(s, user.id, "-100123456789", "group")
        with pytest.raises(ValidationFailed) as caught:
            await channels.add_telegram_chat(s, user.id, "-100123456789", "again")
        assert caught.value.field_errors["address"][0] == "channel_duplicate"
    assert await _counts() == (1, 1)


async def test_the_same_browser_subscribing_twice_is_one_channel():
    user = await make_user("push@example.com")
    sub = subscription()
    async with db.session() as s:
        first = await channels.add_webpush(s, user.id, sub, "phone")
        second = await channels.add_webpush(s, user.id, sub, "phone")
    assert first.id == second.id and first.hint == "fcm.googleapis.com"
    assert await _counts() == (1, 1)
    async with db.session() as s:
        assert await channels.remove_webpush(s, user.id, "https://other/endpoint") is False
        assert await channels.remove_webpush(s, user.id, json.loads(sub)["endpoint"]) is True
    assert await _counts() == (0, 0)


async def test_another_users_channel_is_not_found_and_the_attempt_audited():
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    async with db.session() as s:
        row = await channels.add_discord(s, alice.id, HOOK)
    for call in (
        lambda s: channels.set_enabled(s, bob.id, row.id, False, ip="6.6.6.6"),
        lambda s: channels.delete(s, bob.id, row.id, ip="6.6.6.6"),
    ):
        async with db.session() as s:
            with pytest.raises(NotFound):
                await call(s)
    denied = await audit.search(audit.AuditFilter(outcome="denied", actor_id=bob.id))
    assert len(denied) == 2 and denied[0].ip == "6.6.6.6"
    async with db.session() as s:
        kept = await s.get(NotificationChannel, row.id)
        assert kept.enabled is True
        await channels.mark_gone(s, row.id, "404 Unknown Webhook")
        gone = (await channels.list_channels(s, alice.id))[0]
    assert (gone.enabled, gone.gone, gone.last_error) == (False, True, "404 Unknown Webhook")


async def test_push_subscription_route_uses_the_cookie_and_refuses_other_sites():
    alice = await make_user("route-a@example.com")
    bob = await make_user("route-b@example.com")
    async with db.session() as s:
        a_token = await auth.create_session(s, alice, timedelta(hours=1), "A", "1.1.1.1")
        b_token = await auth.create_session(s, bob, timedelta(hours=1), "B", "2.2.2.2")
    sub = json.loads(subscription())
    transport = httpx.ASGITransport(app=app_module.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.post("/api/push/subscriptions", json=sub)).status_code == 401
        client.cookies.set(auth.SESSION_COOKIE, a_token)
        foreign = await client.post(
            "/api/push/subscriptions", json=sub, headers={"origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        bad = await client.post("/api/push/subscriptions", content=b"{nope")
        assert bad.status_code == 400
        made = await client.post("/api/push/subscriptions", json={**sub, "label": "laptop"})
        assert made.status_code == 201 and made.json()["hint"] == "fcm.googleapis.com"
        client.cookies.set(auth.SESSION_COOKIE, b_token)
        stolen = await client.request(
            "DELETE", "/api/push/subscriptions", json={"endpoint": sub["endpoint"]}
        )
        assert stolen.status_code == 404
        client.cookies.set(auth.SESSION_COOKIE, a_token)
        mine = await client.request(
            "DELETE", "/api/push/subscriptions", json={"endpoint": sub["endpoint"]}
        )
        assert mine.status_code == 200 and mine.json() == {"removed": True}
    assert await _counts() == (0, 0)


async def test_a_delivered_test_message_verifies_a_telegram_chat_and_a_blocked_one_is_gone():
    from notifiers.base import Message
    from notifiers.telegram import TelegramNotifier
    from tests.telegram_fake import TOKEN, TelegramFake

    user = await make_user("tg@example.com")
    fake = TelegramFake()
    fake.blocked.add("222")
    server = fake.serve()
    notifier = TelegramNotifier(TOKEN, api_base=server.base_url)
    message = Message("", "Tickwatch test", "It works & it's <here>", "", "")
    try:
        async with db.session() as s:
            good = await channels.add_telegram_chat(s, user.id, "111", "me")
            blocked = await channels.add_telegram_chat(s, user.id, "222", "old phone")
        assert good.verified is False  # a typed chat id proves nothing yet
        async with db.session() as s:
            ok = await channels.test_send(s, user.id, good.id, {"telegram": notifier}, message)
            bad = await channels.test_send(s, user.id, blocked.id, {"telegram": notifier}, message)
            rows = {c.id: c for c in await channels.list_channels(s, user.id)}
        assert type(ok).__name__ == "Delivered" and rows[good.id].verified is True
        assert bad.gone is True and rows[blocked.id].gone and not rows[blocked.id].enabled
        assert "blocked" in rows[blocked.id].last_error
        assert [(m.chat_id, m.text) for m in fake.messages] == [
            ("111", "<b>Tickwatch test</b>\nIt works &amp; it's &lt;here&gt;")
        ]
        async with db.session() as s:
            with pytest.raises(NotFound):
                other = await make_user("intruder@example.com")
                await channels.test_send(s, other.id, good.id, {"telegram": notifier}, message)
    finally:
        await notifier.aclose()
        server.stop()
