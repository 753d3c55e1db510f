"""Extra e-mail addresses: verified by a mailed link, and nothing saved without the mail.

Real parts only: aiosmtpd on loopback (``smtp_server``), a closed port for an SMTP
host that does not answer, the FastAPI route through ASGI, the page's state handlers,
and the runner's outbox and delivery worker. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import col, func, select

import app.app as app_module
from app import db
from app.config import get_settings
from app.i18n import translate
from app.models.alerts import Delivery
from app.models.audit import AuditEntry
from app.models.channels import NotificationChannel
from app.models.users import User
from app.models.vault import VaultSecret
from app.runtime.outbox import user_channel_targets
from app.runtime.runner import Runner
from app.services import audit, auth, channel_links, channels
from app.services import rules as rules_service
from app.services.errors import NotFound, ValidationFailed
from app.states.channels import ChannelsState
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from notifiers.base import Message, PermanentFailure
from notifiers.email import EmailNotifier, SmtpConfig
from tests.conftest import SmtpSink, free_port
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")

BASE = "http://tickwatch.test"
LINK = re.compile(re.escape(BASE) + r"/api/channels/verify-email\?token=([0-9]+\.[A-Za-z0-9_-]+)")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings from the environment, as in production; restored and re-read after."""
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv("SMTP_HOST", "")
    get_settings.cache_clear()
    try:
        yield monkeypatch
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def _set(env: pytest.MonkeyPatch, **values: object) -> None:
    for key, value in values.items():
        env.setenv(key.upper(), str(value))
    get_settings.cache_clear()


def mailer(sink: SmtpSink) -> EmailNotifier:
    return EmailNotifier(SmtpConfig(host=sink.host, port=sink.port, timeout=5))


def closed_port_mailer() -> EmailNotifier:
    return EmailNotifier(SmtpConfig(host="127.0.0.1", port=free_port(), timeout=5))


async def _counts() -> tuple[int, int]:
    async with db.session() as s:
        rows = (await s.exec(select(func.count()).select_from(NotificationChannel))).one()
        secrets_n = (
            await s.exec(
                select(func.count())
                .select_from(VaultSecret)
                .where(VaultSecret.owner_table == "notification_channels")
            )
        ).one()
    return rows, secrets_n


def _token(sink: SmtpSink, index: int = -1) -> str:
    body = sink.messages[index].get_body(preferencelist=("plain",)).get_content()
    match = LINK.search(body)
    assert match, body
    return match.group(1)


async def _channel(channel_id: int) -> NotificationChannel:
    async with db.session() as s:
        row = await s.get(NotificationChannel, channel_id)
        assert row is not None
        return row


async def _session_for(user: User) -> str:
    async with db.session() as s:
        return await auth.create_session(s, user, timedelta(hours=1), "browser", "4.4.4.4")


async def _open(token: str, cookie: str | None = None) -> tuple[int, dict[str, list[str]], str]:
    transport = httpx.ASGITransport(app=app_module.api)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        if cookie:
            client.cookies.set(auth.SESSION_COOKIE, cookie)
        response = await client.get("/api/channels/verify-email", params={"token": token})
    location = response.headers.get("location", "")
    parts = urlsplit(location)
    return response.status_code, parse_qs(parts.query), parts.path


async def _add(user_id: int, address: str, mail: object, label: str = "") -> channels.ChannelRow:
    async with db.session() as s:
        return await channel_links.add_email(s, user_id, address, label, mailer=mail)


def _assert_texts(code: str, params: dict[str, object]) -> None:
    for lang in ("ko", "en"):
        text = translate(f"error.{code}", lang, **params)
        assert text and "{" not in text


# --- adding an address ------------------------------------------------------------


async def test_an_added_address_gets_a_link_and_opening_it_verifies_the_channel_once(
    env, smtp_server
):
    user = await make_user("owner@example.com")
    row = await _add(user.id, "  Kim.Trader+alerts@Example.COM ", mailer(smtp_server), "work")
    assert (row.kind, row.label, row.verified, row.enabled) == ("email_extra", "work", False, True)
    assert row.hint == "Ki••••@example.com"
    assert smtp_server.envelopes[0][1] == ["Kim.Trader+alerts@example.com"]
    mail = smtp_server.messages[0]
    assert mail["To"] == "Kim.Trader+alerts@example.com"
    assert mail["Subject"] == translate("channels.email.verify_subject", "ko")  # user's language
    html_part = mail.get_body(preferencelist=("html",)).get_content()
    token = _token(smtp_server)
    assert f'href="{BASE}/api/channels/verify-email?token={token}"' in html_part
    assert "24" in html_part  # the validity in hours, from CHANNEL_VERIFY_TTL_HOURS
    assert await _counts() == (1, 1)
    async with db.session() as s:
        secret = (await s.exec(select(VaultSecret))).one()
        assert "Kim.Trader" not in secret.ciphertext and "example.com" not in secret.ciphertext
        stored = await s.get(NotificationChannel, row.id)
        assert await channels.address_for_delivery(s, stored) == "Kim.Trader+alerts@example.com"
    # only the token's hash is kept
    digest = hashlib.sha256(f"email-verify\x00{token}".encode()).hexdigest()
    assert stored.verify_token_hash == digest and token not in stored.verify_token_hash

    status, query, path = await _open(token)  # a capability link: no sign-in needed
    assert (status, path, query) == (303, "/settings/channels", {"verified": ["email"]})
    verified = await _channel(row.id)
    assert verified.verified is True and verified.verify_token_hash == ""
    status, query, _ = await _open(token)  # single use
    assert query == {"error": ["verify_invalid"]}
    entries = await audit.search(audit.AuditFilter(action="channels.verified"))
    assert [e.target_id for e in entries] == [str(row.id)]


async def test_the_mail_speaks_the_users_language_and_has_text_and_html(env, smtp_server):
    user = await make_user("english@example.com")
    async with db.session() as s:
        row = await s.get(User, user.id)
        row.language = "en"
        s.add(row)
        await s.commit()
    await _add(user.id, "second@example.org", mailer(smtp_server))
    mail = smtp_server.messages[0]
    assert mail["Subject"] == "Confirm this address for Tickwatch alerts"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html_part = mail.get_body(preferencelist=("html",)).get_content()
    assert "open this link within 24 hours" in text and "second@example.org" in text
    assert '<html lang="en">' in html_part and "Confirm this address</a>" in html_part


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plainaddress",
        "user@localhost",
        "user@@example.com",
        "user@example..com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "user@-example.com",
        "user@example.c",
        "user@example.123",
        "us er@example.com",
        "user@exa mple.com",
        "victim@example.com\r\nBcc: spam@example.com",
        '"quoted"@example.com',
        "사용자@example.com",
        "x" * 65 + "@example.com",
        "user@" + "a" * 64 + ".com",
        "user@[127.0.0.1]",
    ],
)
async def test_a_malformed_address_is_refused_before_any_mail(env, smtp_server, address):
    user = await make_user("typo@example.com")
    with pytest.raises(ValidationFailed) as caught:
        await _add(user.id, address, mailer(smtp_server))
    code, params = caught.value.field_errors["address"]
    assert code == "channel_email_invalid"
    _assert_texts(code, params)
    assert await _counts() == (0, 0)
    assert smtp_server.messages == []


async def test_an_international_domain_is_accepted_in_its_ascii_form(env, smtp_server):
    user = await make_user("idn@example.com")
    row = await _add(user.id, "alerts@도메인.한국", mailer(smtp_server))
    assert row.hint.endswith("@xn--hq1bm8jm9l.xn--3e0b707e")
    assert smtp_server.envelopes[0][1] == ["alerts@xn--hq1bm8jm9l.xn--3e0b707e"]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("closed_port", "channel_email_unreachable"),
        ("refused", "channel_email_refused"),
        ("not_configured", "channel_email_unavailable"),
    ],
)
async def test_when_the_mail_cannot_be_sent_nothing_is_saved(env, smtp_server, case, code):
    user = await make_user("unlucky@example.com")
    smtp_server.reject.add("bounce@example.com")
    mail = {
        "closed_port": closed_port_mailer(),
        "refused": mailer(smtp_server),
        "not_configured": None,
    }[case]
    with pytest.raises(ValidationFailed) as caught:
        await _add(user.id, "bounce@example.com", mail)
    got, params = caught.value.field_errors["address"]
    assert got == code
    _assert_texts(got, params)
    assert await _counts() == (0, 0)
    assert smtp_server.messages == []
    sent = await audit.search(audit.AuditFilter(action="channels."))
    assert sent == []  # neither "added" nor "verification_sent"


async def test_duplicates_own_address_and_a_long_label_are_refused_without_mail(env, smtp_server):
    user = await make_user("me@example.com")
    with pytest.raises(ValidationFailed) as caught:
        await _add(user.id, "ME@Example.com", mailer(smtp_server))
    assert caught.value.field_errors["address"][0] == "channel_email_own"
    with pytest.raises(ValidationFailed) as caught:
        await _add(user.id, "other@example.com", mailer(smtp_server), "x" * 61)
    assert caught.value.field_errors["label"][0] == "channel_label_too_long"
    await _add(user.id, "other@example.com", mailer(smtp_server))
    with pytest.raises(ValidationFailed) as caught:
        await _add(user.id, "other@EXAMPLE.com", mailer(smtp_server))
    assert caught.value.field_errors["address"][0] == "channel_duplicate"
    assert len(smtp_server.messages) == 1
    assert await _counts() == (1, 1)


# --- the link ---------------------------------------------------------------------


async def test_an_expired_or_tampered_link_is_refused_and_leaves_the_channel_unverified(
    env, smtp_server
):
    user = await make_user("slow@example.com")
    row = await _add(user.id, "slow.reader@example.com", mailer(smtp_server))
    token = _token(smtp_server)
    expiry, _, rand = token.partition(".")
    # Someone moves the expiry forward: a different token, whose hash matches nothing.
    status, query, _ = await _open(f"{int(expiry) + 86400}.{rand}")
    assert query == {"error": ["verify_invalid"]}
    for junk in ("", "x" * 500, "not-a-token"):
        assert (await _open(junk))[1] == {"error": ["verify_invalid"]}
    # The day passes: a token whose expiry is behind us (the row as the mail left it).
    past = int((await _channel(row.id)).created_at.timestamp()) - 60
    old = f"{past}.{rand}"
    async with db.session() as s:
        stored = await s.get(NotificationChannel, row.id)
        stored.verify_token_hash = hashlib.sha256(f"email-verify\x00{old}".encode()).hexdigest()
        s.add(stored)
        await s.commit()
    status, query, _ = await _open(old)
    assert (status, query) == (303, {"error": ["verify_expired"]})
    assert (await _channel(row.id)).verified is False
    for lang in ("ko", "en"):
        for code in ("verify_invalid", "verify_expired", "verify_other_user"):
            assert translate(f"channels.link_error.{code}", lang)


async def test_a_link_opened_while_another_user_is_signed_in_is_refused(env, smtp_server):
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    row = await _add(alice.id, "alice.home@example.com", mailer(smtp_server))
    token = _token(smtp_server)
    status, query, _ = await _open(token, await _session_for(bob))
    assert (status, query) == (303, {"error": ["verify_other_user"]})
    assert (await _channel(row.id)).verified is False
    denied = await audit.search(audit.AuditFilter(outcome="denied", actor_id=bob.id))
    assert [(d.target_id, d.target_type) for d in denied] == [(str(row.id), "notification_channel")]
    # Bob's attempt did not use the link up: Alice, signed in, verifies with it.
    status, query, _ = await _open(token, await _session_for(alice))
    assert query == {"verified": ["email"]}
    assert (await _channel(row.id)).verified is True


# --- resending --------------------------------------------------------------------


async def test_resend_is_rate_limited_and_a_new_link_kills_the_old_one(env, smtp_server):
    user = await make_user("resend@example.com")
    row = await _add(user.id, "inbox@example.com", mailer(smtp_server))
    first = _token(smtp_server)
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as caught:
            await channel_links.resend_email_verification(
                s, user.id, row.id, mailer=mailer(smtp_server)
            )
    code, params = caught.value.field_errors["channel"]
    assert code == "channel_verify_too_soon" and 50 <= params["seconds"] <= 60
    _assert_texts(code, params)
    assert len(smtp_server.messages) == 1

    _set(env, channel_verify_resend_seconds=0)
    async with db.session() as s:
        # a mail server that is down changes nothing: the first link still works later
        with pytest.raises(ValidationFailed) as caught:
            await channel_links.resend_email_verification(
                s, user.id, row.id, mailer=closed_port_mailer()
            )
        assert caught.value.field_errors["channel"][0] == "channel_email_unreachable"
    async with db.session() as s:
        await channel_links.resend_email_verification(
            s, user.id, row.id, mailer=mailer(smtp_server)
        )
    second = _token(smtp_server)
    assert second != first and len(smtp_server.messages) == 2
    assert (await _open(first))[1] == {"error": ["verify_invalid"]}
    assert (await _open(second))[1] == {"verified": ["email"]}
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as caught:
            await channel_links.resend_email_verification(
                s, user.id, row.id, mailer=mailer(smtp_server)
            )
    assert caught.value.field_errors["channel"][0] == "channel_not_pending"


async def test_resend_for_another_users_channel_is_not_found_and_audited(env, smtp_server):
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    _set(env, channel_verify_resend_seconds=0)
    row = await _add(alice.id, "alice.work@example.com", mailer(smtp_server))
    async with db.session() as s:
        with pytest.raises(NotFound):
            await channel_links.resend_email_verification(
                s, bob.id, row.id, mailer=mailer(smtp_server), ip="6.6.6.6"
            )
    denied = await audit.search(audit.AuditFilter(outcome="denied", actor_id=bob.id))
    assert len(denied) == 1 and denied[0].ip == "6.6.6.6"
    assert len(smtp_server.messages) == 1


# --- alerts only to verified addresses ---------------------------------------------


async def test_unverified_addresses_are_never_targeted_or_sent_to(env, smtp_server):
    user = await make_user("gate@example.com")
    pending = await _add(user.id, "pending@example.com", mailer(smtp_server))
    smtp_server.messages.clear()
    async with db.session() as s:
        assert await user_channel_targets(s, user.id) == []
        outcome = await channels.test_send(
            s,
            user.id,
            pending.id,
            {"email": mailer(smtp_server)},
            Message("", "test", "test", "<p>test</p>", ""),
        )
    assert isinstance(outcome, PermanentFailure) and "not verified" in outcome.reason
    assert smtp_server.messages == []
    assert (await _channel(pending.id)).verified is False  # a test does not verify it


async def test_an_alert_reaches_a_verified_extra_address_and_not_an_unverified_one(
    env, smtp_server
):
    await seed_symbols()
    user = await make_user("alerts@example.com")
    verified = await _add(user.id, "desk@example.com", mailer(smtp_server))
    assert (await _open(_token(smtp_server)))[1] == {"verified": ["email"]}
    pending = await _add(user.id, "notyet@example.com", mailer(smtp_server))
    smtp_server.messages.clear()
    smtp_server.envelopes.clear()
    async with db.session() as s:
        assert await user_channel_targets(s, user.id) == [f"email_extra:{verified.id}"]
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
    market = ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS)
    runner = Runner(settings(app_base_url=BASE), market, notifiers={"email": mailer(smtp_server)})
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(market.drained.wait(), 15)
        for _ in range(200):
            if smtp_server.messages:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing else is on its way
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [to for _, to in smtp_server.envelopes] == [["desk@example.com"]]
    mail = smtp_server.messages[0]
    assert "005930" in mail["Subject"] + mail.get_body(preferencelist=("plain",)).get_content()
    async with db.session() as s:
        deliveries = (await s.exec(select(Delivery).order_by(col(Delivery.id)))).all()
    by_channel = {d.channel: d.status for d in deliveries}
    assert by_channel == {"in_app": "sent", f"email_extra:{verified.id}": "sent"}
    assert f"email_extra:{pending.id}" not in by_channel


# --- the page ---------------------------------------------------------------------


def _root(token: str, query: str = "", lang: str = "ko") -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "5.5.5.5",
            "token": "client-email",
            "pathname": "/settings/channels",
            "asPath": f"/settings/channels{query}",
        }
    )
    return root


async def _call(root: State, handler: str, *args: object) -> object:
    state = await root.get_state(ChannelsState)
    return await ChannelsState.event_handlers[handler].fn(state, *args)


async def test_the_page_adds_an_address_and_shows_errors_in_the_users_language(env, smtp_server):
    user = await make_user("page@example.com")
    token = await _session_for(user)
    _set(env, smtp_host="127.0.0.1", smtp_port=free_port())  # nothing listens there
    root = _root(token)
    state = await root.get_state(ChannelsState)
    await _call(root, "add_email", {"address": "page.extra@example.com", "label": ""})
    assert state.field_errors == {
        "email.address": translate("error.channel_email_unreachable", "ko")
    }
    assert state.notice == "" and await _counts() == (0, 0)

    await _call(root, "add_email", {"address": "not an address", "label": ""})
    assert state.field_errors == {"email.address": translate("error.channel_email_invalid", "ko")}

    _set(env, smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    await _call(root, "add_email", {"address": "page.extra@example.com", "label": "desk"})
    assert state.field_errors == {} and "pa••••@example.com" in state.notice
    assert [(r["kind"], r["pending_email"], r["label"]) for r in state.rows] == [
        ("email_extra", "1", "desk")
    ]
    assert "page.extra@example.com" not in str(state.dict())
    assert smtp_server.envelopes[0][1] == ["page.extra@example.com"]

    channel_id = state.rows[0]["id"]
    await _call(root, "resend_verification", channel_id)
    too_soon = re.escape(translate("error.channel_verify_too_soon", "ko", seconds=999))
    assert re.fullmatch(too_soon.replace("999", r"(5\d|60)"), state.error), state.error
    assert len(smtp_server.messages) == 1
    _set(env, channel_verify_resend_seconds=0)
    await _call(root, "resend_verification", channel_id)
    assert state.error == "" and state.notice == translate("channels.email.resent", "ko")
    assert len(smtp_server.messages) == 2
    async with db.session() as s:
        sent = (
            await s.exec(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "channels.verification_sent")
            )
        ).one()
    assert sent == 2


@pytest.mark.parametrize(
    ("query", "notice_key", "error_key"),
    [
        ("?verified=email", "channels.verified.email", ""),
        ("?error=verify_expired", "", "channels.link_error.verify_expired"),
        ("?error=verify_other_user", "", "channels.link_error.verify_other_user"),
        ("?error=<script>alert(1)</script>", "", "channels.link_error_generic"),
        ("?error=channel_too_many", "", "channels.link_error_generic"),  # has a {limit}
        ("?linked=telegram", "", ""),
        ("", "", ""),
    ],
)
async def test_the_page_shows_what_the_verify_and_link_routes_answered(
    env, query, notice_key, error_key
):
    user = await make_user("query@example.com")
    root = _root(await _session_for(user), query, lang="en")
    await _call(root, "load")
    state = await root.get_state(ChannelsState)
    if query == "?linked=telegram":
        assert state.notice == "Telegram is linked." and state.error == ""
        return
    assert state.notice == (translate(notice_key, "en") if notice_key else "")
    assert state.error == (translate(error_key, "en") if error_key else "")
    assert "<script>" not in state.error
