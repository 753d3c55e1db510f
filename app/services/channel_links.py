"""Channels that must prove their address first: extra e-mail addresses and Telegram chats.

Why these are not plain ``channels.add_*`` calls:

* **An extra e-mail address** could be anyone's, so it receives nothing until its owner
  opens the link we mail to it. The mail and the channel are one unit: the mail goes
  out first (after every check that needs no mail), and only a mail the SMTP server
  accepted leads to the row and its vault secret. A mail that cannot be sent leaves
  nothing behind, and no DB transaction is held open while SMTP talks.
  The link's token is ``<expiry unix time>.<random>``; only its SHA-256 is stored (in
  ``verify_token_hash``), so the expiry needs no column and cannot be edited: a changed
  expiry is a different token whose hash matches nothing. A token works once.
* **Telegram linking by code**: the page shows a short random code and the deep link
  ``t.me/<bot>?start=<code>``; the user presses Start, and "Check" finds the chat that
  sent ``/start <code>`` in the bot's updates. Until then the code's hash is kept in an
  unverified, disabled ``telegram`` row with no address (``address_hash == ""``), which
  ``channels.list_channels`` and the outbox skip; the row's ``created_at`` dates the code.
  So no table is needed, and a code is looked up only among the caller's own rows: it
  is never accepted for another user.
* **A user's own bot** (self-hosters often bring one): its token is checked with
  ``getMe`` before anything is saved, and stored with the chat id as the channel's vault
  address; ``channels.send`` then sends through that bot. The token goes from the form
  to this module to the vault, and never into state, a log line or a page.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from app.config import get_settings
from app.i18n import normalize_language, translate
from app.models.audit import AuditEntry
from app.models.channels import (
    ADDRESS_FIELD,
    CHANNEL_EXTRA_EMAIL,
    CHANNEL_OWNER_TABLE,
    CHANNEL_TELEGRAM,
    NotificationChannel,
)
from app.models.common import utcnow
from app.models.users import User
from app.services import audit, vault
from app.services.channels import (
    MASK,
    MAX_CHANNELS,
    TARGET_TYPE,
    ChannelRow,
    _add,
    _by_hash,
    _hash,
    _label,
    _owned,
    _row,
    address_for_delivery,
)
from app.services.errors import ServiceError, ValidationFailed
from notifiers.base import Delivered, Message, Notifier, PermanentFailure
from notifiers.telegram import InvalidBotToken, TelegramError, TelegramNotifier

log = logging.getLogger(__name__)

VERIFY_PATH = "/api/channels/verify-email"
VERIFICATION_SENT = "channels.verification_sent"
CHANNEL_VERIFIED = "channels.verified"
TELEGRAM_LINKED = "channels.telegram_linked"

# No 0/O, 1/I/L: a code read off a phone screen and typed is still right.
LINK_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LINK_CODE_LENGTH = 8
_LINK_CODE = re.compile(f"[{LINK_ALPHABET}]{{{LINK_CODE_LENGTH}}}")
# What @BotFather issues: the bot's numeric id, a colon, 35 characters.
_BOT_TOKEN = re.compile(r"\d{5,20}:[A-Za-z0-9_-]{35}")
_MAX_TOKEN = 128

# RFC 5321/5322 dot-atom local part; LDH domain labels (IDN domains go through IDNA).
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")


class LinkRefused(ServiceError):
    """A verification link that is not honoured. ``code`` names the page's message
    (``channels.link_error.<code>``): the route redirects with ``?error=<code>``."""


@dataclass(frozen=True, slots=True)
class TelegramLink:
    code: str
    bot_username: str
    deep_link: str
    expires_at: datetime


# --- e-mail ---------------------------------------------------------------------------


def normalize_email(text: str) -> str:
    """``local@domain`` with the domain lower-cased and in ASCII, or ``ValueError``.

    Deliberately strict (no quoted local parts, no IP-literal domains, no bare hosts):
    an address we accept must be one a mail server will take, and nothing in it may
    break a header (no whitespace or control characters at all).
    """
    value = (text or "").strip()
    if not value or len(value) > 254:
        raise ValueError("length")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("whitespace or control character")
    local, at, domain = value.rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL.fullmatch(local):
        raise ValueError("local part")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("domain") from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or len(ascii_domain) > 253
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        or not _TLD.fullmatch(labels[-1])
    ):
        raise ValueError("domain")
    return f"{local}@{ascii_domain}"


def _email_hint(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local[:2]}{MASK}@{domain}"[:40]


def _token_digest(token: str) -> str:
    return hashlib.sha256(f"email-verify\x00{token}".encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    """A fresh link token (expiry inside it) and the hash that is stored."""
    hours = get_settings().channel_verify_ttl_hours
    expires = int((utcnow() + timedelta(hours=hours)).timestamp())
    token = f"{expires}.{secrets.token_urlsafe(32)}"
    return token, _token_digest(token)


def _token_expiry(token: str) -> int | None:
    head, _, _ = token.partition(".")
    return int(head) if head.isdigit() and len(head) <= 12 else None


def verification_message(address: str, token: str, lang: str) -> tuple[str, str, str]:
    """(subject, text, html) of the mail, in the user's language."""
    settings = get_settings()
    link = f"{settings.app_base_url.rstrip('/')}{VERIFY_PATH}?{urlencode({'token': token})}"
    lang = normalize_language(lang)
    subject = translate("channels.email.verify_subject", lang)
    intro = translate("channels.email.verify_intro", lang, address=address)
    action = translate(
        "channels.email.verify_action", lang, hours=settings.channel_verify_ttl_hours
    )
    button = translate("channels.email.verify_button", lang)
    ignore = translate("channels.email.verify_ignore", lang)
    text = f"{intro}\n\n{action}\n{link}\n\n{ignore}\n"
    esc = html.escape
    body = (
        f'<!doctype html><html lang="{lang}"><body style="font-family:sans-serif">'
        f"<p>{esc(intro)}</p><p>{esc(action)}</p>"
        f'<p><a href="{esc(link)}" style="display:inline-block;padding:10px 16px;'
        f'background:#3e63dd;color:#fff;border-radius:6px;text-decoration:none">'
        f"{esc(button)}</a></p>"
        f'<p style="font-size:12px;color:#666;word-break:break-all">{esc(link)}</p>'
        f"<p>{esc(ignore)}</p></body></html>"
    )
    return subject, text, body


async def _send_verification(
    mailer: Notifier | None, address: str, token: str, lang: str, field: str
) -> None:
    """Mail the link now, or raise: the caller saves nothing unless this returns."""
    if mailer is None:
        raise ValidationFailed.single(field, "channel_email_unavailable")
    subject, text, body = verification_message(address, token, lang)
    outcome = await mailer.send(
        Message(address, subject, text, body, f"verify-email.{secrets.token_hex(8)}")
    )
    if isinstance(outcome, Delivered):
        return
    log.info("verification mail to %s not sent: %s", _email_hint(address), outcome.reason)
    if isinstance(outcome, PermanentFailure):
        if outcome.reason.startswith("recipient refused"):
            raise ValidationFailed.single(field, "channel_email_refused")
        raise ValidationFailed.single(field, "channel_email_send_failed", reason=outcome.reason)
    raise ValidationFailed.single(field, "channel_email_unreachable")


async def _check_room(session: AsyncSession, user_id: int, kind: str, address: str) -> None:
    """The checks ``channels._add`` repeats, done before a mail goes out for nothing."""
    if await _by_hash(session, user_id, _hash(kind, address)) is not None:
        raise ValidationFailed.single("address", "channel_duplicate")
    if await _channel_count(session, user_id) >= MAX_CHANNELS:
        raise ValidationFailed.single("address", "channel_too_many", limit=MAX_CHANNELS)


async def _channel_count(session: AsyncSession, user_id: int) -> int:
    return (
        await session.exec(
            select(func.count())
            .select_from(NotificationChannel)
            .where(NotificationChannel.user_id == user_id)
        )
    ).one()


async def _user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise ValidationFailed.single("address", "not_found")
    return user


async def add_email(
    session: AsyncSession,
    user_id: int,
    address: str,
    label: str = "",
    *,
    mailer: Notifier | None,
    ip: str = "",
) -> ChannelRow:
    """An extra address, unverified, and its verification mail: both or neither."""
    label = _label(label)
    try:
        address = normalize_email(address)
    except ValueError:
        raise ValidationFailed.single("address", "channel_email_invalid") from None
    user = await _user(session, user_id)
    if address.lower() == (user.email or "").strip().lower():
        raise ValidationFailed.single("address", "channel_email_own")
    await _check_room(session, user_id, CHANNEL_EXTRA_EMAIL, address)
    token, digest = _new_token()
    await _send_verification(mailer, address, token, user.language, "address")
    row = await _add(
        session,
        user_id,
        CHANNEL_EXTRA_EMAIL,
        address,
        label,
        _email_hint(address),
        verified=False,
        ip=ip,
        verify_token_hash=digest,
    )
    await _record_sent(user_id, row.id, ip)
    return row


async def _record_sent(user_id: int, channel_id: int, ip: str) -> None:
    """The audit entry is also the resend limiter's clock (works across workers)."""
    await audit.record(
        VERIFICATION_SENT,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=channel_id,
        ip=ip,
        detail={"kind": CHANNEL_EXTRA_EMAIL},
    )


async def _resend_wait(session: AsyncSession, channel_id: int) -> int:
    """Seconds until another verification mail may go to this channel (0: now)."""
    gap = get_settings().channel_verify_resend_seconds
    last = (
        await session.exec(
            select(func.max(AuditEntry.at)).where(
                AuditEntry.action == VERIFICATION_SENT,
                AuditEntry.target_type == TARGET_TYPE,
                AuditEntry.target_id == str(channel_id),
            )
        )
    ).one()
    if last is None:
        return 0
    if last.tzinfo is None:  # SQLite returns the aggregate without its zone
        last = last.replace(tzinfo=UTC)
    left = (last + timedelta(seconds=gap) - utcnow()).total_seconds()
    return max(0, int(left + 0.999))


async def resend_email_verification(
    session: AsyncSession,
    user_id: int,
    channel_id: int,
    *,
    mailer: Notifier | None,
    ip: str = "",
) -> ChannelRow:
    """A new link for one of the caller's unverified addresses; the old link dies."""
    row = await _owned(session, user_id, channel_id, ip)
    if row.kind != CHANNEL_EXTRA_EMAIL or row.verified:
        raise ValidationFailed.single("channel", "channel_not_pending")
    assert row.id is not None
    wait = await _resend_wait(session, row.id)
    if wait > 0:
        raise ValidationFailed.single("channel", "channel_verify_too_soon", seconds=wait)
    user = await _user(session, user_id)
    address = await address_for_delivery(session, row)
    token, digest = _new_token()
    await _send_verification(mailer, address, token, user.language, "channel")
    row.verify_token_hash = digest
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    await _record_sent(user_id, row.id, ip)
    return _row(row)


async def verify_email(
    session: AsyncSession, token: str, *, viewer_id: int | None, ip: str = ""
) -> int:
    """Honour a verification link; returns the channel id or raises ``LinkRefused``.

    The link is a capability (it works without signing in, e.g. on the phone where the
    mail was read), but a browser signed in as someone else is refused: that is a
    mix-up or an attempt to attach an address to the wrong account.
    """
    token = (token or "").strip()
    if not token or len(token) > _MAX_TOKEN:
        raise LinkRefused("verify_invalid")
    digest = _token_digest(token)
    row = (
        await session.exec(
            select(NotificationChannel).where(
                NotificationChannel.kind == CHANNEL_EXTRA_EMAIL,
                NotificationChannel.verify_token_hash == digest,
            )
        )
    ).first()
    if row is None:
        raise LinkRefused("verify_invalid")
    assert row.id is not None
    if viewer_id is not None and viewer_id != row.user_id:
        await audit.denied(viewer_id, TARGET_TYPE, row.id, ip)
        raise LinkRefused("verify_other_user")
    expires = _token_expiry(token)
    if expires is None or expires < utcnow().timestamp():
        raise LinkRefused("verify_expired")
    # Conditional on the hash still being there: two clicks at once verify once.
    result = await session.exec(
        update(NotificationChannel)
        .where(
            col(NotificationChannel.id) == row.id,
            col(NotificationChannel.verify_token_hash) == digest,
        )
        .values(verified=True, verify_token_hash="", last_error="", updated_at=utcnow())
    )
    await session.commit()
    if result.rowcount != 1:
        raise LinkRefused("verify_invalid")
    await audit.record(
        CHANNEL_VERIFIED,
        actor_id=row.user_id,
        target_type=TARGET_TYPE,
        target_id=row.id,
        ip=ip,
        detail={"kind": CHANNEL_EXTRA_EMAIL},
    )
    return row.id


# --- Telegram -----------------------------------------------------------------------


def _operator_bot() -> TelegramNotifier | None:
    settings = get_settings()
    if not settings.telegram_bot_token:
        return None
    return TelegramNotifier(
        settings.telegram_bot_token,
        api_base=settings.telegram_api_base,
        timeout=settings.notify_timeout,
    )


def _link_digest(code: str) -> str:
    return hashlib.sha256(f"telegram-link\x00{code}".encode()).hexdigest()


def _chat_id(text: str) -> str:
    """The rule ``channels.add_telegram_chat`` applies to a typed chat id."""
    chat = (text or "").strip()
    body = chat[1:] if chat.startswith("-") else chat
    if not body.isdigit() or not 1 <= len(body) <= 20:
        raise ValidationFailed.single("address", "channel_telegram_chat_id")
    return chat


def _pending_links(user_id: int) -> SelectOfScalar[NotificationChannel]:
    return select(NotificationChannel).where(
        NotificationChannel.user_id == user_id,
        NotificationChannel.kind == CHANNEL_TELEGRAM,
        NotificationChannel.address_hash == "",
    )


async def start_telegram_link(session: AsyncSession, user_id: int) -> TelegramLink:
    """A new code for the caller (any earlier one of theirs stops working)."""
    settings = get_settings()
    bot = _operator_bot()
    if bot is None:
        raise ValidationFailed.single("telegram", "channel_telegram_unavailable")
    try:
        username = settings.telegram_bot_username.lstrip("@") or await bot.verify_token()
    except TelegramError as exc:
        log.error("the operator's Telegram bot is not usable: %s", exc)
        raise ValidationFailed.single("telegram", "channel_telegram_unavailable") from None
    finally:
        await bot.aclose()
    try:
        for old in (await session.exec(_pending_links(user_id))).all():
            await session.delete(old)
        await session.flush()
        if await _channel_count(session, user_id) >= MAX_CHANNELS:
            raise ValidationFailed.single("telegram", "channel_too_many", limit=MAX_CHANNELS)
        code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_CODE_LENGTH))
        row = NotificationChannel(
            user_id=user_id,
            kind=CHANNEL_TELEGRAM,
            address_hash="",
            verified=False,
            enabled=False,
            verify_token_hash=_link_digest(code),
        )
        session.add(row)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    expires = row.created_at + timedelta(minutes=settings.telegram_link_ttl_minutes)
    return TelegramLink(code, username, f"https://t.me/{username}?start={code}", expires)


async def check_telegram_link(
    session: AsyncSession, user_id: int, code: str, ip: str = ""
) -> ChannelRow | None:
    """The caller's chat, linked and verified, once it sent ``/start <code>`` to the
    bot; None while it has not. Only the caller's own pending code is looked at."""
    code = (code or "").strip().upper()
    if not _LINK_CODE.fullmatch(code):
        raise ValidationFailed.single("telegram", "channel_telegram_link_unknown")
    pending = (
        await session.exec(
            _pending_links(user_id).where(
                NotificationChannel.verify_token_hash == _link_digest(code)
            )
        )
    ).first()
    if pending is None:
        raise ValidationFailed.single("telegram", "channel_telegram_link_unknown")
    ttl = timedelta(minutes=get_settings().telegram_link_ttl_minutes)
    if pending.created_at + ttl < utcnow():
        await session.delete(pending)
        await session.commit()
        raise ValidationFailed.single("telegram", "channel_telegram_link_expired")
    bot = _operator_bot()
    if bot is None:
        raise ValidationFailed.single("telegram", "channel_telegram_unavailable")
    try:
        chat = await bot.updates_with_code(code)
    except InvalidBotToken as exc:
        log.error("the operator's Telegram bot token is refused: %s", exc)
        raise ValidationFailed.single("telegram", "channel_telegram_unavailable") from None
    except TelegramError as exc:
        log.info("telegram getUpdates failed: %s", exc)
        raise ValidationFailed.single("telegram", "channel_telegram_unreachable") from None
    finally:
        await bot.aclose()
    if chat is None:
        return None
    digest = _hash(CHANNEL_TELEGRAM, chat)
    existing = await _by_hash(session, user_id, digest)
    try:
        if existing is not None:
            # The chat was typed in by hand before: the code proves it is the user's.
            existing.verified, existing.enabled, existing.last_error = True, True, ""
            existing.gone_at = None
            existing.updated_at = utcnow()
            session.add(existing)
            await session.delete(pending)
            linked = existing
        else:
            assert pending.id is not None
            pending.address_hash = digest
            pending.hint = f"chat {MASK}{chat[-4:]}"
            pending.verified = pending.enabled = True
            pending.verify_token_hash = ""
            pending.updated_at = utcnow()
            session.add(pending)
            await vault.put(
                session, CHANNEL_OWNER_TABLE, pending.id, user_id, {ADDRESS_FIELD: chat}
            )
            linked = pending
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    assert linked.id is not None
    await audit.record(
        TELEGRAM_LINKED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=linked.id,
        ip=ip,
        detail={"kind": CHANNEL_TELEGRAM},
    )
    return _row(linked)


async def add_telegram_own_bot(
    session: AsyncSession,
    user_id: int,
    chat_id: str,
    bot_token: str,
    label: str = "",
    ip: str = "",
) -> ChannelRow:
    """A chat reached through the user's own bot. The token must be one Telegram knows
    (``getMe``) before anything is saved; the chat stays unverified until a test
    message reaches it, like a chat typed in for the operator's bot."""
    label = _label(label)
    chat = _chat_id(chat_id)
    token = (bot_token or "").strip()
    if not _BOT_TOKEN.fullmatch(token):
        raise ValidationFailed.single("bot_token", "channel_telegram_bot_token")
    settings = get_settings()
    bot = TelegramNotifier(
        token, api_base=settings.telegram_api_base, timeout=settings.notify_timeout
    )
    try:
        username = await bot.verify_token()
    except InvalidBotToken:
        raise ValidationFailed.single("bot_token", "channel_telegram_bot_rejected") from None
    except TelegramError as exc:
        log.info("telegram getMe for a user's bot failed: %s", exc)
        raise ValidationFailed.single("bot_token", "channel_telegram_unreachable") from None
    finally:
        await bot.aclose()
    address = json.dumps(
        {"chat_id": chat, "bot_token": token}, separators=(",", ":"), sort_keys=True
    )
    return await _add(
        session,
        user_id,
        CHANNEL_TELEGRAM,
        address,
        label,
        f"chat {MASK}{chat[-4:]} @{username}"[:40],
        verified=False,
        ip=ip,
    )
