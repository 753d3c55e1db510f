"""A native app registers its FCM token: the route, its refusals, and a device FCM
no longer knows switched off. Real FastAPI app (httpx ASGI transport), real database
(SQLite and PostgreSQL), real vault, and tests/fcm_fake.py on loopback for delivery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import func, select

from app import db
from app.config import get_settings, reset_settings_cache
from app.i18n import LANGUAGES, translate
from app.models.channels import NotificationChannel
from app.models.vault import VaultSecret
from app.runtime.notifier_setup import build_notifiers
from app.services import auth, channels
from notifiers.base import Delivered, Message, PermanentFailure
from tests.fcm_fake import FcmFake
from tests.integration.helpers import make_user

pytestmark = pytest.mark.usefixtures("database")

BASE = "http://testserver"
PROJECT = "tickwatch-app"
EMAIL = "push@tickwatch-app.iam.gserviceaccount.com"
DEVICE = "dQw4w9WgXcQ:APA91b" + "Hk_2-x" * 24  # the shape of a real token, ~160 chars
ROUTE = "/api/push/fcm-tokens"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(rsa_key: rsa.RSAPrivateKey) -> Iterator[FcmFake]:
    f = FcmFake(PROJECT, {EMAIL: rsa_key.public_key()}).start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def fcm_env(
    fake: FcmFake, rsa_key: rsa.RSAPrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = tmp_path / "service-account.json"
    account.write_text(
        json.dumps({"type": "service_account", "client_email": EMAIL, "private_key": pem})
    )
    env = {
        "APP_BASE_URL": BASE,
        "FCM_PROJECT_ID": PROJECT,
        "FCM_SERVICE_ACCOUNT_FILE": str(account),
        "FCM_API_BASE": fake.base_url,
        "FCM_TOKEN_URL": fake.token_url,
        "SMTP_HOST": "",
        "KAKAO_CLIENT_ID": "",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    yield
    reset_settings_cache()


async def _session(email: str) -> tuple[int, str]:
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "app", "203.0.113.5")
    assert user.id is not None
    return user.id, token


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    from app.app import api

    transport = httpx.ASGITransport(app=api, client=("203.0.113.5", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def _counts() -> tuple[int, int]:
    async with db.session() as s:
        rows = (await s.exec(select(func.count()).select_from(NotificationChannel))).one()
        secrets = (
            await s.exec(
                select(func.count())
                .select_from(VaultSecret)
                .where(VaultSecret.owner_table == "notification_channels")
            )
        ).one()
    return rows, secrets


async def test_a_device_registers_once_stored_encrypted_and_unregisters(client):
    user_id, token = await _session("phone@example.com")
    client.cookies.set(auth.SESSION_COOKIE, token)
    made = await client.post(ROUTE, json={"token": DEVICE, "label": "Galaxy S24"})
    assert made.status_code == 201, made.text
    assert made.json()["hint"] == f"device ••••{DEVICE[-4:]}"
    again = await client.post(ROUTE, json={"token": DEVICE, "label": "other name"})
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    assert await _counts() == (1, 1)
    async with db.session() as s:
        (row,) = await channels.list_channels(s, user_id)
        assert (row.kind, row.label, row.verified, row.enabled) == ("fcm", "Galaxy S24", True, True)
        stored = await s.get(NotificationChannel, row.id)
        assert await channels.address_for_delivery(s, stored) == DEVICE
        secret = (await s.exec(select(VaultSecret))).one()
        assert DEVICE not in secret.ciphertext
    long_label = await client.post(ROUTE, json={"token": DEVICE[:-1] + "Z", "label": "x" * 90})
    assert long_label.status_code == 201 and await _counts() == (2, 2)

    gone = await client.request("DELETE", ROUTE, json={"token": DEVICE})
    assert (gone.status_code, gone.json()) == (200, {"removed": True})
    again = await client.request("DELETE", ROUTE, json={"token": DEVICE})
    assert (again.status_code, again.json()) == (404, {"removed": False})
    assert await _counts() == (1, 1)


@pytest.mark.parametrize(
    "body",
    [
        {"token": ""},
        {"token": "too-short"},
        {"token": "a" * 1025},
        {"token": DEVICE[:40] + " " + DEVICE[41:]},
        {"token": DEVICE[:40] + "/" + DEVICE[41:]},
        {"token": DEVICE[:40] + "é" + DEVICE[41:]},
        {"token": "<script>alert(1)</script>" + "a" * 20},
        {"token": 12345678901234567890123},
        {"token": None},
        {"label": "no token"},
    ],
)
async def test_malformed_tokens_are_refused_with_a_message_and_nothing_saved(client, body):
    _, token = await _session("bad@example.com")
    client.cookies.set(auth.SESSION_COOKIE, token)
    response = await client.post(ROUTE, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "channel_fcm_token"
    assert "20 to 1024 characters" in response.json()["reason"]
    for lang in LANGUAGES:
        assert translate("error.channel_fcm_token", lang).strip()
    assert await _counts() == (0, 0)


async def test_signed_out_cross_site_oversized_and_broken_bodies_are_refused(client):
    assert (await client.post(ROUTE, json={"token": DEVICE})).status_code == 401
    assert (await client.request("DELETE", ROUTE, json={"token": DEVICE})).status_code == 401
    _, token = await _session("route@example.com")
    client.cookies.set(auth.SESSION_COOKIE, token)
    evil = {"origin": "https://evil.example"}
    assert (await client.post(ROUTE, json={"token": DEVICE}, headers=evil)).status_code == 403
    response = await client.request("DELETE", ROUTE, json={"token": DEVICE}, headers=evil)
    assert response.status_code == 403
    huge = await client.post(ROUTE, json={"token": DEVICE, "label": "x" * 5000})
    assert (huge.status_code, huge.json()["error"]) == (413, "body_too_large")
    for raw in (b"{nope", b"[1, 2]", b'"token"'):
        response = await client.post(ROUTE, content=raw)
        assert (response.status_code, response.json()["error"]) == (400, "bad_json")
    assert (await client.request("DELETE", ROUTE, json={})).status_code == 400
    assert await _counts() == (0, 0)


async def test_without_fcm_settings_registering_is_404(client, monkeypatch):
    user_id, token = await _session("nofcm@example.com")
    async with db.session() as s:
        await channels.add_fcm(s, user_id, DEVICE)
    monkeypatch.setenv("FCM_PROJECT_ID", "")
    reset_settings_cache()
    client.cookies.set(auth.SESSION_COOKIE, token)
    response = await client.post(ROUTE, json={"token": DEVICE[:-1] + "Q"})
    assert response.status_code == 404
    assert response.json() == {"error": "fcm_not_configured", "reason": "FCM not configured"}
    for lang in LANGUAGES:
        assert translate("error.fcm_not_configured", lang).strip()
    assert await _counts() == (1, 1)
    # an app being uninstalled may still remove its own device
    removed = await client.request("DELETE", ROUTE, json={"token": DEVICE})
    assert removed.status_code == 200 and await _counts() == (0, 0)


async def test_another_users_device_token_is_not_deleted(client):
    alice_id, alice_token = await _session("alice@example.com")
    _, bob_token = await _session("bob@example.com")
    client.cookies.set(auth.SESSION_COOKIE, alice_token)
    assert (await client.post(ROUTE, json={"token": DEVICE})).status_code == 201
    client.cookies.set(auth.SESSION_COOKIE, bob_token)
    stolen = await client.request("DELETE", ROUTE, json={"token": DEVICE})
    assert (stolen.status_code, stolen.json()) == (404, {"removed": False})
    async with db.session() as s:
        (row,) = await channels.list_channels(s, alice_id)
    assert (row.kind, row.enabled) == ("fcm", True) and await _counts() == (1, 1)


async def test_a_device_fcm_calls_unregistered_is_switched_off(client, fake):
    user_id, token = await _session("gone@example.com")
    client.cookies.set(auth.SESSION_COOKIE, token)
    channel_id = (await client.post(ROUTE, json={"token": DEVICE})).json()["id"]
    notifiers = build_notifiers(get_settings())
    message = Message("", "[틱워치] SK하이닉스 5% 상승", "SK하이닉스 5% 상승", "", "rule-9:fcm")
    try:
        async with db.session() as s:
            row = await s.get(NotificationChannel, channel_id)
            assert isinstance(await channels.send(s, row, notifiers, message), Delivered)
            assert [m["message"]["token"] for m in fake.sent] == [DEVICE]
            fake.unregistered.add(DEVICE)  # the app was uninstalled
            outcome = await channels.send(s, row, notifiers, message)
    finally:
        for notifier in notifiers.values():
            close = getattr(notifier, "aclose", None)
            if close is not None:
                await close()
    assert isinstance(outcome, PermanentFailure) and outcome.gone
    async with db.session() as s:
        (listed,) = await channels.list_channels(s, user_id)
    assert (listed.enabled, listed.gone) == (False, True)
    assert "UNREGISTERED" in listed.last_error and DEVICE not in listed.last_error
    assert len(fake.sent) == 1
