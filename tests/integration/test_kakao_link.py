"""Linking KakaoTalk as a channel, end to end over loopback HTTP.

The app's FastAPI routes run in-process (httpx's ASGI transport, with a cookie jar
playing the browser); Kakao is ``tests/kakao_fake.py`` on 127.0.0.1, reached over real
HTTP by the app and by the "browser" following Kakao's redirect. Real database (SQLite
and PostgreSQL), real vault. Every refusal is checked to leave no channel and no secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.config import get_settings, reset_settings_cache
from app.i18n import LANGUAGES, translate
from app.models.audit import AuditEntry
from app.models.channels import NotificationChannel
from app.models.common import utcnow
from app.models.identities import OAuthFlow
from app.models.vault import VaultSecret
from app.runtime.notifier_setup import build_notifiers
from app.services import audit, auth, channels, kakao_link, oauth
from app.services.kakao_tokens import VaultKakaoTokenStore, decode_tokens
from app.states.channels import ChannelsState
from notifiers.base import Delivered, Message, Notifier
from notifiers.kakao import KakaoTokens
from tests.integration.helpers import make_user
from tests.kakao_fake import KakaoFake

pytestmark = pytest.mark.usefixtures("database")

BASE = "http://testserver"
CALLBACK = f"{BASE}{kakao_link.CALLBACK_PATH}"
CLIENT_ID = "9a7c0ffee1d2rest"
CLIENT_SECRET = "kakao-link-secret-51f2"
LINKED = "/settings/channels?linked=kakao"


def error_page(code: str) -> str:
    return f"/settings/channels?error={code}"


@pytest.fixture
def fake() -> Iterator[KakaoFake]:
    f = KakaoFake(CLIENT_ID, CLIENT_SECRET, redirect_uris=[CALLBACK]).start()
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def kakao_env(fake: KakaoFake, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    env = {
        "APP_BASE_URL": BASE,
        "KAKAO_CLIENT_ID": CLIENT_ID,
        "KAKAO_CLIENT_SECRET": CLIENT_SECRET,
        "KAKAO_AUTH_BASE": fake.base_url,
        "KAKAO_API_BASE": fake.base_url,
        "NOTIFY_TIMEOUT": "2",
        "SMTP_HOST": "",
        "TELEGRAM_BOT_TOKEN": "",
        "VAPID_PRIVATE_KEY": "",
        "FCM_PROJECT_ID": "",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    yield
    reset_settings_cache()


def _browser() -> httpx.AsyncClient:
    from app.app import api

    transport = httpx.ASGITransport(app=api, client=("203.0.113.9", 50000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


async def _signed_in(email: str) -> tuple[int, str]:
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "203.0.113.9")
    assert user.id is not None
    return user.id, token


@pytest.fixture
async def alice() -> AsyncIterator[tuple[int, httpx.AsyncClient]]:
    user_id, token = await _signed_in("alice@example.com")
    async with _browser() as browser:
        browser.cookies.set(auth.SESSION_COOKIE, token)
        yield user_id, browser


@pytest.fixture
async def kakao_http() -> AsyncIterator[httpx.AsyncClient]:
    """The browser's leg to kauth.kakao.com: plain HTTP to the fake."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def authorize(browser: httpx.AsyncClient, kakao_http: httpx.AsyncClient) -> str:
    """Start linking and click through Kakao; returns the callback URL Kakao sent back."""
    started = await browser.get("/api/channels/kakao/start")
    assert started.status_code == 302, started.text
    at_kakao = await kakao_http.get(started.headers["location"])
    assert at_kakao.status_code == 302, at_kakao.text
    back = at_kakao.headers["location"]
    assert back.startswith(CALLBACK + "?")
    return back


async def link(browser: httpx.AsyncClient, kakao_http: httpx.AsyncClient) -> httpx.Response:
    return await browser.get(await authorize(browser, kakao_http))


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


async def _stored_tokens(channel_id: int) -> KakaoTokens:
    async with db.session() as s:
        row = await s.get(NotificationChannel, channel_id)
        assert row is not None
        tokens = decode_tokens(await channels.address_for_delivery(s, row))
    assert tokens is not None
    return tokens


async def _close(notifiers: dict[str, Notifier]) -> None:
    for notifier in notifiers.values():
        close = getattr(notifier, "aclose", None)
        if close is not None:
            await close()


async def _failures() -> list[AuditEntry]:
    return await audit.search(audit.AuditFilter(action="channels.kakao_link_failed"))


async def test_link_stores_the_tokens_in_the_vault_and_alerts_arrive_in_kakaotalk(
    alice, kakao_http, fake
):
    user_id, browser = alice
    started = await browser.get("/api/channels/kakao/start")
    assert started.status_code == 302
    url = urlsplit(started.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{fake.base_url}/oauth/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    state = query.pop("state")
    assert query == {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "scope": "talk_message",
        "redirect_uri": CALLBACK,
    }
    async with db.session() as s:
        (flow,) = (await s.exec(select(OAuthFlow))).all()
    assert flow.provider == "kakao_talk" and flow.link_user_id == user_id
    assert flow.state_hash == oauth.hash_value(state) != state  # only its hash is kept

    done = await browser.get(
        (await kakao_http.get(started.headers["location"])).headers["location"]
    )
    assert (done.status_code, done.headers["location"]) == (302, LINKED)
    assert fake.code_exchanges == 1 and await _counts() == (1, 1)
    async with db.session() as s:
        (row,) = await channels.list_channels(s, user_id)
        assert (await s.exec(select(OAuthFlow))).all() == []  # the state is spent
    assert (row.kind, row.hint, row.verified, row.enabled) == ("kakao", "id ••••1000", True, True)
    stored = await _stored_tokens(row.id)
    assert stored.access_token in fake.every_token and stored.refresh_token in fake.every_token
    assert stored.expires_at > datetime.now(UTC) + timedelta(hours=5)
    async with db.session() as s:
        secret = (await s.exec(select(VaultSecret))).one()
    assert stored.access_token not in secret.ciphertext

    # An alert reaches the user's KakaoTalk; the Message carries the channel id, not a token.
    notifiers = build_notifiers(get_settings())
    kakao = notifiers["kakao"]
    sent: list[Message] = []
    original = kakao.send

    async def spy(message: Message):  # noqa: ANN202 - records what the notifier was handed
        sent.append(message)
        return await original(message)

    kakao.send = spy  # type: ignore[method-assign]
    message = Message("", "[틱워치] 삼성전자 72,000원 돌파", "삼성전자 돌파", "", "rule-1:kakao")
    try:
        async with db.session() as s:
            channel = await s.get(NotificationChannel, row.id)
            assert await channels.send(s, channel, notifiers, message) == Delivered()
            # Kakao's access token expires: the notifier refreshes, and the rotated tokens
            # land in the vault through VaultKakaoTokenStore.
            fake.rotate = True
            fake.expire_access_tokens()
            assert await channels.send(s, channel, notifiers, message) == Delivered()
    finally:
        await _close(notifiers)
    assert [m.recipient for m in sent] == [str(row.id), str(row.id)]
    assert [memo.user_id for memo in fake.memos] == [1000, 1000]
    assert fake.memos[0].access_token == stored.access_token
    rotated = await _stored_tokens(row.id)
    assert rotated.access_token == fake.memos[1].access_token != stored.access_token
    assert rotated.refresh_token != stored.refresh_token and fake.refreshes == 1
    assert await _counts() == (1, 1)


async def test_linking_the_same_kakao_account_again_replaces_its_tokens(alice, kakao_http, fake):
    user_id, browser = alice
    assert (await link(browser, kakao_http)).headers["location"] == LINKED
    async with db.session() as s:
        (first,) = await channels.list_channels(s, user_id)
        await channels.mark_gone(s, first.id, "Kakao authorization expired or was revoked")
    old = await _stored_tokens(first.id)

    fake.login_as = 1000  # the same Kakao account, a month later
    assert (await link(browser, kakao_http)).headers["location"] == LINKED
    async with db.session() as s:
        (again,) = await channels.list_channels(s, user_id)
    assert again.id == first.id and await _counts() == (1, 1)
    assert (again.enabled, again.gone, again.last_error) == (True, False, "")
    new = await _stored_tokens(first.id)
    assert new.access_token != old.access_token and new.refresh_token != old.refresh_token
    assert len(await audit.search(audit.AuditFilter(action="channels.relinked"))) == 1

    fake.login_as = None  # another Kakao account of the same user: a second channel
    assert (await link(browser, kakao_http)).headers["location"] == LINKED
    assert await _counts() == (2, 2)


async def _refused(response: httpx.Response, code: str, reason: str) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"] == error_page(code)
    for lang in LANGUAGES:
        assert translate(f"error.{code}", lang).strip()
    assert (await _failures())[0].detail["reason"] == reason
    assert await _counts() == (0, 0)


async def test_a_forged_state_is_refused_before_the_code_is_redeemed(alice, kakao_http, fake):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    code = parse_qs(urlsplit(back).query)["code"][0]
    forged = await browser.get(kakao_link.CALLBACK_PATH, params={"code": code, "state": "x" * 43})
    await _refused(forged, "kakao_link_state", "bad_state")
    missing = await browser.get(kakao_link.CALLBACK_PATH, params={"code": code})
    await _refused(missing, "kakao_link_state", "missing_state")
    assert fake.code_requests == 0


async def test_an_expired_state_is_refused(alice, kakao_http, fake):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    async with db.session() as s:
        (flow,) = (await s.exec(select(OAuthFlow))).all()
        flow.expires_at = utcnow() - timedelta(seconds=1)
        s.add(flow)
        await s.commit()
    await _refused(await browser.get(back), "kakao_link_state", "state_expired")
    assert fake.code_requests == 0


async def test_another_users_state_is_refused_and_spent(alice, kakao_http, fake):
    alice_id, browser = alice
    back = await authorize(browser, kakao_http)
    bob_id, bob_token = await _signed_in("bob@example.com")
    async with _browser() as bob:
        bob.cookies.set(auth.SESSION_COOKIE, bob_token)
        await _refused(await bob.get(back), "kakao_link_state", "browser_mismatch")
    (entry,) = await _failures()
    assert (entry.actor_id, entry.outcome) == (bob_id, "denied")
    # the flow is spent: Alice's own browser cannot finish it afterwards either
    await _refused(await browser.get(back), "kakao_link_state", "bad_state")
    assert fake.code_requests == 0
    async with db.session() as s:
        assert await channels.list_channels(s, alice_id) == []


async def test_a_replayed_callback_adds_nothing(alice, kakao_http, fake):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    assert (await browser.get(back)).headers["location"] == LINKED
    again = await browser.get(back)
    assert again.headers["location"] == error_page("kakao_link_state")
    assert await _counts() == (1, 1) and fake.code_requests == 1


async def test_missing_code_is_refused(alice, kakao_http):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    state = parse_qs(urlsplit(back).query)["state"][0]
    response = await browser.get(kakao_link.CALLBACK_PATH, params={"state": state})
    await _refused(response, "kakao_link_failed", "missing_code")


async def test_the_user_cancelling_at_kakao_gets_a_clear_message(alice, kakao_http, fake):
    _, browser = alice
    fake.deny = True
    back = await authorize(browser, kakao_http)
    assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]
    await _refused(await browser.get(back), "kakao_link_denied", "provider_denied")
    assert (await _failures())[0].detail["kakao_error"] == "access_denied"
    # Kakao's error redirect without a state (or with an odd error) is no 500 either
    bare = await browser.get(kakao_link.CALLBACK_PATH, params={"error": "access_denied"})
    assert bare.headers["location"] == error_page("kakao_link_denied")
    odd = await browser.get(kakao_link.CALLBACK_PATH, params={"error": "server_error"})
    assert odd.headers["location"] == error_page("kakao_link_failed")
    assert fake.code_requests == 0 and await _counts() == (0, 0)


async def test_a_wrong_client_secret_is_an_operator_problem(
    alice, kakao_http, fake, monkeypatch, caplog
):
    _, browser = alice
    monkeypatch.setenv("KAKAO_CLIENT_SECRET", "not-the-secret")
    reset_settings_cache()
    await _refused(await link(browser, kakao_http), "kakao_link_config", "token_invalid_client")
    assert fake.code_errors == ["invalid_client KOE010"]
    assert (await _failures())[0].detail["kakao_error"] == "invalid_client KOE010"
    assert "not-the-secret" not in caplog.text


async def test_a_code_redeemed_elsewhere_is_refused(alice, kakao_http, fake):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    code = parse_qs(urlsplit(back).query)["code"][0]
    stolen = await kakao_http.post(
        f"{fake.base_url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": CALLBACK,
            "code": code,
        },
    )
    assert stolen.status_code == 200
    await _refused(await browser.get(back), "kakao_link_failed", "token_refused")
    assert fake.code_errors == ["invalid_grant KOE320"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_kakao_server_errors_are_refused_and_nothing_saved(alice, kakao_http, fake, status):
    _, browser = alice
    back = await authorize(browser, kakao_http)
    fake.token_fail_status = status
    await _refused(await browser.get(back), "kakao_link_kakao_down", "token_server_error")


async def test_a_token_exchange_timeout_is_refused(alice, kakao_http, fake, monkeypatch):
    _, browser = alice
    monkeypatch.setenv("NOTIFY_TIMEOUT", "0.3")
    reset_settings_cache()
    back = await authorize(browser, kakao_http)
    fake.token_delay_s = 1.0
    await _refused(await browser.get(back), "kakao_link_kakao_down", "token_timeout")


async def test_without_the_talk_message_consent_nothing_is_linked(alice, kakao_http, fake):
    _, browser = alice
    fake.decline = {"talk_message"}
    await _refused(await link(browser, kakao_http), "kakao_link_scope", "scope_missing")
    assert fake.code_exchanges == 1  # the code was good; the consent was not


async def test_signed_out_other_sites_and_an_unconfigured_server(alice, kakao_http, monkeypatch):
    _, browser = alice
    async with _browser() as anonymous:
        for path in ("/api/channels/kakao/start", kakao_link.CALLBACK_PATH + "?code=x&state=y"):
            response = await anonymous.get(path)
            assert response.status_code == 302
            assert response.headers["location"] == "/login?next=%2Fsettings%2Fchannels"
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
        response = await browser.get("/api/channels/kakao/start", headers=headers)
        assert response.headers["location"] == error_page("kakao_link_state")
    monkeypatch.setenv("KAKAO_CLIENT_ID", "")
    reset_settings_cache()
    response = await browser.get("/api/channels/kakao/start")
    assert response.headers["location"] == error_page("kakao_link_unavailable")
    async with db.session() as s:
        assert (await s.exec(select(OAuthFlow))).all() == []
    assert await _counts() == (0, 0)


async def test_a_sign_in_state_is_not_a_link_state(alice, kakao_http, fake):
    """The two flows share a table; a state of one is never accepted by the other."""
    _, browser = alice
    back = await authorize(browser, kakao_http)
    async with db.session() as s:
        (flow,) = (await s.exec(select(OAuthFlow))).all()
        flow.provider = "kakao"  # as if it were a "sign in with Kakao" flow
        s.add(flow)
        await s.commit()
    await _refused(await browser.get(back), "kakao_link_state", "bad_state")


async def test_the_token_store_reads_and_writes_only_kakao_channels(alice, kakao_http):
    user_id, browser = alice
    await link(browser, kakao_http)
    async with db.session() as s:
        (row,) = await channels.list_channels(s, user_id)
        hook = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68
        discord = await channels.add_discord(s, user_id, hook)
    store = VaultKakaoTokenStore()
    assert (await store.load(str(row.id))) == await _stored_tokens(row.id)
    for recipient in (str(discord.id), "abc", "", "99999"):
        assert await store.load(recipient) is None
    fresh = KakaoTokens("A" * 40, "R" * 40, datetime.now(UTC) + timedelta(hours=6))
    await store.save(str(discord.id), fresh)  # not a Kakao channel: nothing is written
    async with db.session() as s:
        discord_row = await s.get(NotificationChannel, discord.id)
        assert await channels.address_for_delivery(s, discord_row) == hook
    async with db.session() as s:
        await channels.delete(s, user_id, row.id)
    await store.save(str(row.id), fresh)  # deleted mid-send: nothing comes back
    assert await _counts() == (1, 1)


async def test_tokens_and_codes_never_reach_logs_audit_browser_or_state(
    alice, kakao_http, fake, caplog
):
    caplog.set_level(logging.DEBUG)
    user_id, browser = alice
    responses = [await link(browser, kakao_http)]
    # a refused exchange whose Kakao error_description quotes the code we sent
    back = await authorize(browser, kakao_http)
    code = parse_qs(urlsplit(back).query)["code"][0]
    await kakao_http.post(
        f"{fake.base_url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": CALLBACK,
            "code": code,
        },
    )
    responses.append(await browser.get(back))
    assert [r.headers["location"] for r in responses] == [LINKED, error_page("kakao_link_failed")]
    # and a send that refreshes (rotating both tokens) through the vault-backed store
    async with db.session() as s:
        (row,) = await channels.list_channels(s, user_id)
    notifiers = build_notifiers(get_settings())
    fake.rotate = True
    fake.expire_access_tokens()
    try:
        async with db.session() as s:
            channel = await s.get(NotificationChannel, row.id)
            message = Message("", "subject", "text", "", "k")
            assert await channels.send(s, channel, notifiers, message) == Delivered()
    finally:
        await _close(notifiers)

    root = State(_reflex_internal_init=True)
    cookie = browser.cookies.get(auth.SESSION_COOKIE)
    root.router = RouterData.from_router_data(
        {"headers": {"cookie": f"tw_session={cookie}"}, "ip": "203.0.113.9", "token": "tab"}
    )
    page = await root.get_state(ChannelsState)
    await ChannelsState.event_handlers["load"].fn(page)
    assert [r["kind"] for r in page.rows] == ["kakao"]

    # The HTTP libraries' own traces include the browser's URLs, and Kakao hands the code
    # to the browser in one by design; tokens must not be in those either.
    wire = {"httpx", "httpcore"}
    app_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] not in wire)
    wire_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in wire)
    entries = await audit.search(audit.AuditFilter())
    texts = [
        app_logs,
        json.dumps([(e.action, e.target_id, e.detail) for e in entries], ensure_ascii=False),
        json.dumps(page.rows, ensure_ascii=False),
        repr(await VaultKakaoTokenStore().load(str(row.id))),
        *(f"{r.headers}{r.text}" for r in responses),
    ]
    secrets = [*fake.every_token, *fake.every_code, CLIENT_SECRET]
    assert len(fake.every_token) == 6 and len(fake.every_code) == 2
    for text in texts:
        for secret in secrets:
            assert secret not in text
    for secret in [*fake.every_token, CLIENT_SECRET]:
        assert secret not in wire_logs
    assert (
        "Kakao token refreshed for" in app_logs and "/oauth/token" in wire_logs
    )  # the logs were captured at all
