"""Notification channels: add, list, enable, disable, delete; addresses stay in the vault.

Every address is validated before anything is written, and the channel row and
its encrypted address are written in one transaction, so a refused or failed
add leaves nothing behind. Pages get ``ChannelRow``s with a masked hint only; the
delivery worker is the one caller of ``address_for_delivery``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import get_settings
from app.models.channels import (
    ADDRESS_FIELD,
    CHANNEL_DISCORD,
    CHANNEL_EXTRA_EMAIL,
    CHANNEL_FCM,
    CHANNEL_KAKAO,
    CHANNEL_OWNER_TABLE,
    CHANNEL_TELEGRAM,
    CHANNEL_WEBPUSH,
    NotificationChannel,
)
from app.models.common import utcnow
from app.services import audit, vault
from app.services.errors import NotFound, ValidationFailed
from notifiers.base import Delivered, DeliveryResult, Message, Notifier, PermanentFailure
from notifiers.discord import validate_webhook_url
from notifiers.telegram import TelegramNotifier
from notifiers.webpush import validate_subscription

TARGET_TYPE = "notification_channel"
MAX_LABEL = 60
MAX_CHANNELS = 20
MASK = "••••"
# Kinds sent by another kind's notifier: an extra address goes out like the account's.
NOTIFIER_FOR = {CHANNEL_EXTRA_EMAIL: "email"}

CHANNEL_ADDED = "channels.added"
CHANNEL_DELETED = "channels.deleted"
CHANNEL_RELINKED = "channels.relinked"


@dataclass(frozen=True, slots=True)
class ChannelRow:
    id: int
    kind: str
    label: str
    hint: str
    verified: bool
    enabled: bool
    last_error: str
    gone: bool
    created_at: datetime


def _row(ch: NotificationChannel) -> ChannelRow:
    assert ch.id is not None
    return ChannelRow(
        ch.id,
        ch.kind,
        ch.label,
        ch.hint,
        ch.verified,
        ch.enabled,
        ch.last_error,
        ch.gone_at is not None,
        ch.created_at,
    )


def _hash(kind: str, address: str) -> str:
    return hashlib.sha256(f"{kind}\x00{address}".encode()).hexdigest()


def _label(label: str) -> str:
    text = " ".join((label or "").split())
    if len(text) > MAX_LABEL:
        raise ValidationFailed.single("label", "channel_label_too_long", limit=MAX_LABEL)
    return text


async def list_channels(session: AsyncSession, user_id: int) -> list[ChannelRow]:
    rows = (
        await session.exec(
            select(NotificationChannel)
            .where(NotificationChannel.user_id == user_id)
            # A Telegram link still waiting for its code has no address: not a channel yet.
            .where(~_pending_link())
            .order_by(col(NotificationChannel.id))
        )
    ).all()
    return [_row(r) for r in rows]


async def _add(
    session: AsyncSession,
    user_id: int,
    kind: str,
    address: str,
    label: str,
    hint: str,
    *,
    verified: bool,
    ip: str,
    key: str | None = None,
    verify_token_hash: str = "",
) -> ChannelRow:
    """``key``: what identifies the channel when its address changes (Kakao's tokens
    rotate; the Kakao account stays); by default the address itself."""
    digest = _hash(kind, address if key is None else key)
    existing = (
        await session.exec(
            select(NotificationChannel).where(
                NotificationChannel.user_id == user_id,
                NotificationChannel.address_hash == digest,
            )
        )
    ).first()
    if existing is not None:
        raise ValidationFailed.single("address", "channel_duplicate")
    count = (
        await session.exec(
            select(func.count())
            .select_from(NotificationChannel)
            .where(NotificationChannel.user_id == user_id)
        )
    ).one()
    if count >= MAX_CHANNELS:
        raise ValidationFailed.single("address", "channel_too_many", limit=MAX_CHANNELS)
    row = NotificationChannel(
        user_id=user_id,
        kind=kind,
        label=label,
        hint=hint,
        address_hash=digest,
        verified=verified,
        verify_token_hash=verify_token_hash,
    )
    try:
        session.add(row)
        await session.flush()  # the row id is part of the secret's associated data
        assert row.id is not None
        await vault.put(session, CHANNEL_OWNER_TABLE, row.id, user_id, {ADDRESS_FIELD: address})
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        CHANNEL_ADDED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=row.id,
        ip=ip,
        detail={"kind": kind},
    )
    return _row(row)


async def add_discord(
    session: AsyncSession, user_id: int, webhook_url: str, label: str = "", ip: str = ""
) -> ChannelRow:
    """A Discord webhook, checked against Discord's URL form (no other host, ever)."""
    label = _label(label)
    try:
        url = validate_webhook_url((webhook_url or "").strip(), get_settings().discord_api_base)
    except ValueError as exc:
        raise ValidationFailed.single("address", "channel_discord_url", reason=str(exc)) from None
    webhook_id = url.rstrip("/").split("/")[-2]
    return await _add(
        session,
        user_id,
        CHANNEL_DISCORD,
        url,
        label,
        f"webhook {MASK}{webhook_id[-4:]}",
        verified=True,
        ip=ip,
    )


async def add_telegram_chat(
    session: AsyncSession, user_id: int, chat_id: str, label: str = "", ip: str = ""
) -> ChannelRow:
    """A chat id typed by the user; it stays unverified until a test message arrives."""
    label = _label(label)
    text = (chat_id or "").strip()
    body = text[1:] if text.startswith("-") else text
    if not body.isdigit() or not 1 <= len(body) <= 20:
        raise ValidationFailed.single("address", "channel_telegram_chat_id")
    return await _add(
        session,
        user_id,
        CHANNEL_TELEGRAM,
        text,
        label,
        f"chat {MASK}{text[-4:]}",
        verified=False,
        ip=ip,
    )


async def add_webpush(
    session: AsyncSession, user_id: int, subscription_json: str, label: str = "", ip: str = ""
) -> ChannelRow:
    """A browser's push subscription. Keyed by its endpoint: the same browser
    subscribing again replaces nothing and adds nothing."""
    label = _label(label)
    try:
        sub = validate_subscription(subscription_json, allow_loopback=_loopback_allowed())
    except ValueError as exc:
        raise ValidationFailed.single("address", "channel_webpush", reason=str(exc)) from None
    endpoint = sub["endpoint"]
    address = json.dumps(sub, separators=(",", ":"), sort_keys=True)
    host = endpoint.split("/")[2] if "//" in endpoint else endpoint
    try:
        return await _add(
            session, user_id, CHANNEL_WEBPUSH, address, label, host[:40], verified=True, ip=ip
        )
    except ValidationFailed as exc:
        if "address" in exc.field_errors and exc.field_errors["address"][0] == "channel_duplicate":
            existing = await _by_hash(session, user_id, _hash(CHANNEL_WEBPUSH, address))
            if existing is not None:
                return _row(existing)
        raise


FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{20,1024}")


async def add_fcm(
    session: AsyncSession, user_id: int, token: str, label: str = "", ip: str = ""
) -> ChannelRow:
    """A native app's FCM registration token (~160 characters of base64url and ':').
    The same device registering again gets its existing channel back."""
    label = _label(label)
    token = (token or "").strip()
    if not FCM_TOKEN.fullmatch(token):
        raise ValidationFailed.single(
            "address",
            "channel_fcm_token",
            reason="expected 20 to 1024 characters of A-Z, a-z, 0-9, '_', '-' or ':'",
        )
    existing = await _by_hash(session, user_id, _hash(CHANNEL_FCM, token))
    if existing is not None:
        return _row(existing)
    return await _add(
        session,
        user_id,
        CHANNEL_FCM,
        token,
        label,
        f"device {MASK}{token[-4:]}",
        verified=True,
        ip=ip,
    )


async def remove_fcm(session: AsyncSession, user_id: int, token: str, ip: str = "") -> bool:
    """Unregister a device by its token. False if the caller has no such device."""
    row = await _by_hash(session, user_id, _hash(CHANNEL_FCM, (token or "").strip()))
    if row is None or row.id is None:
        return False
    await delete(session, user_id, row.id, ip)
    return True


async def add_kakao(
    session: AsyncSession, user_id: int, kakao_user_id: str, tokens: str, ip: str = ""
) -> ChannelRow:
    """A linked Kakao account; ``tokens`` is the vault value (``kakao_tokens.encode_tokens``).
    Keyed by the Kakao user id, so linking the same account again replaces its tokens
    (and switches the channel back on) instead of adding a duplicate."""
    if not kakao_user_id.isdigit():
        raise ValidationFailed.single("address", "kakao_link_failed")
    key = f"kakao-user:{kakao_user_id}"
    existing = await _by_hash(session, user_id, _hash(CHANNEL_KAKAO, key))
    if existing is None:
        return await _add(
            session,
            user_id,
            CHANNEL_KAKAO,
            tokens,
            "",
            f"id {MASK}{kakao_user_id[-4:]}",
            verified=True,
            ip=ip,
            key=key,
        )
    assert existing.id is not None
    try:
        await vault.put(session, CHANNEL_OWNER_TABLE, existing.id, user_id, {ADDRESS_FIELD: tokens})
        existing.enabled, existing.verified, existing.gone_at = True, True, None
        existing.last_error, existing.updated_at = "", utcnow()
        session.add(existing)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        CHANNEL_RELINKED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=existing.id,
        ip=ip,
        detail={"kind": CHANNEL_KAKAO},
    )
    return _row(existing)


def _loopback_allowed() -> bool:
    """Push services are https; a loopback endpoint is accepted only when the app
    itself runs on loopback (tests, a developer's machine)."""
    base = get_settings().app_base_url
    return base.startswith(("http://localhost", "http://127.0.0.1"))


async def _by_hash(session: AsyncSession, user_id: int, digest: str) -> NotificationChannel | None:
    return (
        await session.exec(
            select(NotificationChannel).where(
                NotificationChannel.user_id == user_id,
                NotificationChannel.address_hash == digest,
            )
        )
    ).first()


async def _owned(
    session: AsyncSession, user_id: int, channel_id: int, ip: str = ""
) -> NotificationChannel:
    row = await session.get(NotificationChannel, channel_id)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, TARGET_TYPE, channel_id, ip)
        raise NotFound()
    return row


async def set_enabled(
    session: AsyncSession, user_id: int, channel_id: int, enabled: bool, ip: str = ""
) -> ChannelRow:
    row = await _owned(session, user_id, channel_id, ip)
    row.enabled = bool(enabled)
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    return _row(row)


async def delete(session: AsyncSession, user_id: int, channel_id: int, ip: str = "") -> None:
    row = await _owned(session, user_id, channel_id, ip)
    try:
        await vault.delete_owner(session, CHANNEL_OWNER_TABLE, channel_id)
        await session.delete(row)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        CHANNEL_DELETED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=channel_id,
        ip=ip,
        detail={"kind": row.kind},
    )


async def remove_webpush(session: AsyncSession, user_id: int, endpoint: str, ip: str = "") -> bool:
    """Unsubscribe by endpoint (what the browser knows). False if it was not ours."""
    for row in (
        await session.exec(
            select(NotificationChannel).where(
                NotificationChannel.user_id == user_id,
                NotificationChannel.kind == CHANNEL_WEBPUSH,
            )
        )
    ).all():
        assert row.id is not None
        address = await address_for_delivery(session, row)
        if json.loads(address).get("endpoint") == endpoint:
            await delete(session, user_id, row.id, ip)
            return True
    return False


def _pending_link() -> ColumnElement[bool]:
    """Rows ``channel_links.start_telegram_link`` keeps for a code: no address yet."""
    return and_(
        col(NotificationChannel.kind) == CHANNEL_TELEGRAM,
        col(NotificationChannel.address_hash) == "",
    )


def telegram_address(address: str) -> tuple[str, str]:
    """(chat id, bot token) of a Telegram address. A chat on the operator's bot is stored
    as the bare chat id (token ""); one on the user's own bot as JSON with its token."""
    if not address.startswith("{"):
        return address, ""
    data = json.loads(address)
    return str(data.get("chat_id", "")), str(data.get("bot_token", ""))


async def address_for_delivery(session: AsyncSession, row: NotificationChannel) -> str:
    """The decrypted address, for the moment of sending only."""
    assert row.id is not None
    values = await vault.read(session, CHANNEL_OWNER_TABLE, row.id, row.user_id, (ADDRESS_FIELD,))
    return values[ADDRESS_FIELD]


async def mark_gone(session: AsyncSession, channel_id: int, reason: str) -> None:
    """The service says the address no longer exists: stop sending to it, keep the
    row (and its reason) so the user sees why alerts stopped arriving there."""
    row = await session.get(NotificationChannel, channel_id)
    if row is None:
        return
    row.enabled = False
    row.gone_at = utcnow()
    row.last_error = reason[:300]
    row.updated_at = row.gone_at
    session.add(row)
    await session.commit()


async def send(
    session: AsyncSession,
    row: NotificationChannel,
    notifiers: Mapping[str, Notifier],
    message: Message,
) -> DeliveryResult:
    """Send ``message`` to ``row``'s address: the one place an address is decrypted
    for sending. An address the service says is gone switches the channel off."""
    if row.kind == CHANNEL_EXTRA_EMAIL and not row.verified:
        # Only the link in the verification mail proves the address is the user's.
        return PermanentFailure("this e-mail address is not verified yet")
    notifier = notifiers.get(NOTIFIER_FOR.get(row.kind, row.kind))
    if notifier is None and row.kind != CHANNEL_TELEGRAM:  # a chat may bring its own bot
        return PermanentFailure(f"{row.kind} is not configured on this server")
    # Kakao's tokens rotate while a send runs: its notifier loads (and saves) them through
    # VaultKakaoTokenStore, keyed by the channel id, so they never travel in a Message.
    if row.kind == CHANNEL_KAKAO:
        address = str(row.id)
    else:
        address = await address_for_delivery(session, row)
    own_bot: TelegramNotifier | None = None
    if row.kind == CHANNEL_TELEGRAM:
        address, bot_token = telegram_address(address)
        if bot_token:  # the user's own bot, built for this send; the operator's is untouched
            settings = get_settings()
            own_bot = TelegramNotifier(
                bot_token, api_base=settings.telegram_api_base, timeout=settings.notify_timeout
            )
        notifier = own_bot or notifier
    if notifier is None:
        return PermanentFailure(f"{row.kind} is not configured on this server")
    try:
        outcome = await notifier.send(
            Message(
                recipient=address,
                subject=message.subject,
                text=message.text,
                html=message.html,
                idempotency_key=message.idempotency_key,
            )
        )
    finally:
        if own_bot is not None:
            await own_bot.aclose()
    if isinstance(outcome, PermanentFailure) and outcome.gone and row.id is not None:
        await mark_gone(session, row.id, outcome.reason)
    return outcome


async def test_send(
    session: AsyncSession,
    user_id: int,
    channel_id: int,
    notifiers: Mapping[str, Notifier],
    message: Message,
    ip: str = "",
) -> DeliveryResult:
    """Send ``message`` to one of the caller's channels now. A delivered test is what
    verifies a channel (a Telegram chat id typed by hand proves nothing until our bot
    reached it); a failure is kept on the row so the page can say what went wrong."""
    row = await _owned(session, user_id, channel_id, ip)
    key = f"test:{channel_id}:{utcnow().timestamp():.0f}"
    outcome = await send(
        session,
        row,
        notifiers,
        Message("", message.subject, message.text, message.html, key),
    )
    await session.refresh(row)
    if isinstance(outcome, Delivered):
        row.verified, row.last_error = True, ""
    else:
        row.last_error = outcome.reason[:300]
    row.updated_at = utcnow()
    session.add(row)
    await session.commit()
    return outcome
