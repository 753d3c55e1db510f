"""Telegram: linking a chat by a one-time code, and chats on the user's own bot.

Against the loopback fake of the Bot API over real HTTP (``tests.telegram_fake``): the
code is found in ``getUpdates``, a bot token is checked with ``getMe`` and alerts go
out with ``sendMessage``. The page's state handlers run as the browser would call
them, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.config import get_settings
from app.i18n import translate
from app.models.channels import NotificationChannel
from app.models.users import User
from app.models.vault import VaultSecret
from app.runtime.outbox import user_channel_targets
from app.services import auth, channel_links, channels
from app.services.errors import ValidationFailed
from app.states.channels import ChannelsState
from notifiers.base import Delivered, Message
from notifiers.telegram import TelegramNotifier
from tests.conftest import free_port
from tests.integration.helpers import make_user
from tests.loopback import LoopbackServer
from tests.telegram_fake import TOKEN, TelegramFake

pytestmark = pytest.mark.usefixtures("database")

OWN_TOKEN = "987654321:AAEownBotTokenForLoopbackTests_0123"
OWN_SECRET = OWN_TOKEN.split(":", 1)[1]
CODE = re.compile(r"[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{8}")


@pytest.fixture
def operator_bot() -> Iterator[tuple[TelegramFake, LoopbackServer]]:
    fake = TelegramFake(per_chat_limit=10)
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, operator_bot: tuple[TelegramFake, LoopbackServer]
) -> Iterator[pytest.MonkeyPatch]:
    """The operator's bot is the fake; settings come from the environment, as in production."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_BOT_USERNAME", "")  # found with getMe
    monkeypatch.setenv("TELEGRAM_API_BASE", operator_bot[1].base_url)
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


async def _signed_in(email: str, lang: str = "ko") -> tuple[User, State]:
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "7.7.7.7")
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "7.7.7.7",
            "token": f"client-{email}",
            "pathname": "/settings/channels",
            "asPath": "/settings/channels",
        }
    )
    return user, root


async def _call(root: State, handler: str, *args: object) -> ChannelsState:
    state = await root.get_state(ChannelsState)
    await ChannelsState.event_handlers[handler].fn(state, *args)
    return state


def _assert_texts(code: str) -> None:
    for lang in ("ko", "en"):
        assert translate(f"error.{code}", lang)


# --- linking by code --------------------------------------------------------------


async def test_a_code_sent_to_the_bot_links_that_chat_verified(env, operator_bot):
    fake, _ = operator_bot
    user, root = await _signed_in("linker@example.com")
    state = await _call(root, "start_link")
    code = state.link_code
    assert CODE.fullmatch(code), code
    assert state.link_url == f"https://t.me/tickwatch_test_bot?start={code}"
    assert "@tickwatch_test_bot" in state.link_send_text and "10" in state.link_expires_text
    assert await _counts() == (1, 0)  # the pending code: no address, no secret
    async with db.session() as s:
        pending = (await s.exec(select(NotificationChannel))).one()
        assert code not in pending.verify_token_hash and len(pending.verify_token_hash) == 64
        assert (pending.verified, pending.enabled) == (False, False)
        assert await channels.list_channels(s, user.id) == []  # not a channel yet
        assert await user_channel_targets(s, user.id) == []

    await _call(root, "check_link")  # the user has not pressed Start yet
    assert state.link_status == translate("channels.telegram.waiting", "ko")
    assert state.link_code == code and state.field_errors == {}

    fake.push_start(55501234, "OTHERCODE")  # somebody else's /start: not ours
    fake.push_start(55501234, code, text="hello")
    await _call(root, "check_link")
    assert state.link_status == translate("channels.telegram.waiting", "ko")

    fake.push_start(55501234, code)
    await _call(root, "check_link")
    assert state.notice == translate("channels.telegram.linked", "ko")
    assert state.link_code == "" and state.link_url == ""
    assert [(r["kind"], r["hint"], r["state"]) for r in state.rows] == [
        ("telegram", "chat ••••1234", translate("channels.state.on", "ko"))
    ]
    assert await _counts() == (1, 1)
    async with db.session() as s:
        row = (await s.exec(select(NotificationChannel))).one()
        assert row.verify_token_hash == "" and row.verified and row.enabled
        assert await channels.address_for_delivery(s, row) == "55501234"
        assert await user_channel_targets(s, user.id) == [f"telegram:{row.id}"]
        # the code is single use
        with pytest.raises(ValidationFailed) as caught:
            await channel_links.check_telegram_link(s, user.id, code)
    assert caught.value.field_errors["telegram"][0] == "channel_telegram_link_unknown"


async def test_a_code_is_never_accepted_for_another_user(env, operator_bot):
    fake, _ = operator_bot
    alice, a_root = await _signed_in("alice@example.com")
    bob, b_root = await _signed_in("bob@example.com")
    a_code = (await _call(a_root, "start_link")).link_code
    fake.push_start(777000111, a_code)
    # Bob learns Alice's code and forges it into his page (setvar can set any var).
    b_state = await b_root.get_state(ChannelsState)
    b_state.link_code = a_code
    await _call(b_root, "check_link")
    assert b_state.field_errors == {
        "link.telegram": translate("error.channel_telegram_link_unknown", "ko")
    }
    async with db.session() as s:
        with pytest.raises(ValidationFailed):
            await channel_links.check_telegram_link(s, bob.id, a_code)
        assert await channels.list_channels(s, bob.id) == []
    a_state = await _call(a_root, "check_link")
    assert a_state.notice == translate("channels.telegram.linked", "ko")
    async with db.session() as s:
        assert [c.hint for c in await channels.list_channels(s, alice.id)] == ["chat ••••0111"]


async def test_a_wrong_or_malformed_code_is_refused(env, operator_bot):
    user, root = await _signed_in("wrong@example.com", lang="en")
    state = await _call(root, "start_link")
    for bad in ("", "short", "ABCDEFG0", "abc def1", "x" * 100):
        state.link_code = bad
        await _call(root, "check_link")
        assert state.field_errors == {
            "link.telegram": translate("error.channel_telegram_link_unknown", "en")
        }, bad
        assert state.link_code == ""  # back to the "Link Telegram" button
    _assert_texts("channel_telegram_link_unknown")
    assert operator_bot[0].arrivals[-1].method == "getMe"  # getUpdates was never asked


async def test_an_expired_code_is_refused_and_forgotten(env, operator_bot):
    fake, _ = operator_bot
    _set(env, telegram_link_ttl_minutes=1)
    user, root = await _signed_in("late@example.com")
    state = await _call(root, "start_link")
    code = state.link_code
    fake.push_start(31337, code)
    async with db.session() as s:  # two minutes pass
        pending = (await s.exec(select(NotificationChannel))).one()
        pending.created_at = pending.created_at - timedelta(minutes=2)
        s.add(pending)
        await s.commit()
    await _call(root, "check_link")
    assert state.field_errors == {
        "link.telegram": translate("error.channel_telegram_link_expired", "ko")
    }
    assert state.link_code == "" and await _counts() == (0, 0)
    _assert_texts("channel_telegram_link_expired")


async def test_a_new_code_replaces_the_old_one(env, operator_bot):
    fake, _ = operator_bot
    user, root = await _signed_in("again@example.com")
    first = (await _call(root, "start_link")).link_code
    second = (await _call(root, "start_link")).link_code
    assert first != second and await _counts() == (1, 0)
    fake.push_start(4242, first)
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as caught:
            await channel_links.check_telegram_link(s, user.id, first)
    assert caught.value.field_errors["telegram"][0] == "channel_telegram_link_unknown"


async def test_linking_a_chat_typed_in_earlier_verifies_it_without_a_duplicate(env, operator_bot):
    fake, _ = operator_bot
    user, root = await _signed_in("typed@example.com")
    async with db.session() as s:
        typed = await channels.add_telegram_chat(s, user.id, "123456", "phone")
    assert typed.verified is False
    code = (await _call(root, "start_link")).link_code
    fake.push_start(123456, code)
    state = await _call(root, "check_link")
    assert state.notice == translate("channels.telegram.linked", "ko")
    assert await _counts() == (1, 1)
    async with db.session() as s:
        (row,) = await channels.list_channels(s, user.id)
    assert (row.id, row.label, row.verified) == (typed.id, "phone", True)


async def test_telegram_unreachable_or_not_configured_gives_a_clear_error(env, operator_bot):
    user, root = await _signed_in("down@example.com", lang="en")
    state = await _call(root, "start_link")
    code = state.link_code
    _set(env, telegram_api_base=f"http://127.0.0.1:{free_port()}")
    await _call(root, "check_link")
    assert state.field_errors == {
        "link.telegram": translate("error.channel_telegram_unreachable", "en")
    }
    assert state.link_code == code  # the code still works once Telegram answers again
    assert await _counts() == (1, 0)

    _set(env, telegram_bot_token="")
    await _call(root, "start_link")
    assert state.field_errors == {
        "link.telegram": translate("error.channel_telegram_unavailable", "en")
    }
    assert state.link_code == ""
    _assert_texts("channel_telegram_unavailable")
    _assert_texts("channel_telegram_unreachable")


# --- a chat on the user's own bot -------------------------------------------------


@pytest.fixture
def own_bot() -> Iterator[tuple[TelegramFake, LoopbackServer]]:
    """The user's bot: this fake knows only OWN_TOKEN."""
    assert len(OWN_SECRET) == 35
    fake = TelegramFake(token=OWN_TOKEN, bot_username="my_own_alerts_bot", per_chat_limit=10)
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


async def test_a_chat_on_the_users_own_bot_is_checked_stored_and_sent_through_that_bot(
    env, own_bot, operator_bot, caplog
):
    caplog.set_level(logging.DEBUG)
    fake, server = own_bot
    _set(env, telegram_api_base=server.base_url)
    user, root = await _signed_in("selfhost@example.com")
    state = await _call(
        root,
        "add",
        {"kind": "telegram", "address": "-1001234567", "bot_token": OWN_TOKEN, "label": "mine"},
    )
    assert state.field_errors == {} and state.notice == translate("channels.added_unverified", "ko")
    assert [(r["label"], r["hint"]) for r in state.rows] == [
        ("mine", "chat ••••4567 @my_own_alerts_bot")
    ]
    assert [a.method for a in fake.arrivals] == ["getMe"]
    async with db.session() as s:
        row = (await s.exec(select(NotificationChannel))).one()
        secret = (await s.exec(select(VaultSecret))).one()
        assert OWN_SECRET not in secret.ciphertext
        assert json.loads(await channels.address_for_delivery(s, row)) == {
            "bot_token": OWN_TOKEN,
            "chat_id": "-1001234567",
        }
    # The page's test message goes through the user's bot (the fake knows no other
    # token), and that verifies the chat.
    await _call(root, "test_send", str(row.id))
    assert state.notice == translate("channels.test.sent", "ko"), state.error
    assert [(m.chat_id, m.visible.splitlines()[0]) for m in fake.messages] == [
        ("-1001234567", translate("channels.test.subject", "ko"))
    ]
    # The operator's bot is still used for chats linked to it: each goes its own way.
    operator_fake, operator_server = operator_bot
    async with db.session() as s:
        plain = await channels.add_telegram_chat(s, user.id, "5550001")
        operator = TelegramNotifier(TOKEN, api_base=operator_server.base_url)
        try:
            for channel_id in (row.id, plain.id):
                stored = await s.get(NotificationChannel, channel_id)
                outcome = await channels.send(
                    s,
                    stored,
                    {"telegram": operator},
                    Message("", "Alert", f"to {channel_id}", "", f"k{channel_id}"),
                )
                assert isinstance(outcome, Delivered), outcome
        finally:
            await operator.aclose()
    assert [m.chat_id for m in fake.messages] == ["-1001234567", "-1001234567"]
    assert [m.chat_id for m in operator_fake.messages] == ["5550001"]
    # The token reached neither the page's state nor any log line.
    assert OWN_SECRET not in json.dumps(state.dict(), default=str)
    assert all(OWN_SECRET not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("123:abc", "channel_telegram_bot_token"),
        ("no colon at all", "channel_telegram_bot_token"),
        ("987654321:" + "A" * 34, "channel_telegram_bot_token"),
        ("987654321:" + "A" * 36, "channel_telegram_bot_token"),
        ("987654321:" + "A" * 34 + "!", "channel_telegram_bot_token"),
        ("987654321:" + "A" * 35, "channel_telegram_bot_rejected"),
    ],
)
async def test_a_bad_bot_token_is_refused_and_nothing_is_saved(env, own_bot, token, code):
    fake, server = own_bot
    if code == "channel_telegram_bot_token":
        # A malformed token is refused before any request: with the API on a closed port,
        # a request would have come back "unreachable" instead.
        _set(env, telegram_api_base=f"http://127.0.0.1:{free_port()}")
    else:
        _set(env, telegram_api_base=server.base_url)  # the fake answers 401 to this token
    user, root = await _signed_in("badtoken@example.com", lang="en")
    state = await _call(
        root, "add", {"kind": "telegram", "address": "4242", "bot_token": token, "label": ""}
    )
    assert state.field_errors == {"telegram.bot_token": translate(f"error.{code}", "en")}
    assert await _counts() == (0, 0)
    assert token not in json.dumps(state.dict(), default=str)
    _assert_texts(code)
    if code == "channel_telegram_bot_rejected":
        assert state.field_errors["telegram.bot_token"].startswith(
            "Telegram rejected this bot token"
        )


async def test_an_unreachable_telegram_api_saves_no_own_bot_chat(env):
    _set(env, telegram_api_base=f"http://127.0.0.1:{free_port()}")
    user, root = await _signed_in("offline@example.com")
    state = await _call(
        root, "add", {"kind": "telegram", "address": "4242", "bot_token": OWN_TOKEN, "label": ""}
    )
    assert state.field_errors == {
        "telegram.bot_token": translate("error.channel_telegram_unreachable", "ko")
    }
    assert await _counts() == (0, 0)


async def test_a_bad_chat_id_with_a_bot_token_is_refused_before_telegram_is_asked(env, own_bot):
    fake, server = own_bot
    _set(env, telegram_api_base=server.base_url)
    user, root = await _signed_in("badchat@example.com")
    state = await _call(
        root, "add", {"kind": "telegram", "address": "my chat", "bot_token": OWN_TOKEN}
    )
    assert state.field_errors == {
        "telegram.address": translate("error.channel_telegram_chat_id", "ko")
    }
    assert fake.arrivals == [] and await _counts() == (0, 0)
