"""A Kakao channel's OAuth tokens, kept in the vault as the channel's address.

Kakao "send to me" acts as the user, with their own access and refresh tokens, and
Kakao rotates both: the access token every few hours, the refresh token when it
nears its end. So unlike the other channels, the address changes while the channel
lives. ``KakaoMemoNotifier`` therefore never gets the tokens in a ``Message``: its
recipient is the channel id, and this store decrypts the tokens at the moment of use
and re-encrypts the rotated ones it is handed (same owner table, row, user and field
as every channel address: ``notification_channels`` / ``address``).

Anything wrong with the stored value (missing, tampered, not a Kakao channel) reads
as "not connected": the notifier then reports that the user must reconnect Kakao,
which is the one thing that mends it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from app import db
from app.models.channels import (
    ADDRESS_FIELD,
    CHANNEL_KAKAO,
    CHANNEL_OWNER_TABLE,
    NotificationChannel,
)
from app.services import vault
from app.vault_keys import KeyRing, VaultError
from notifiers.kakao import KakaoTokens

log = logging.getLogger(__name__)

__all__ = ["VaultKakaoTokenStore", "decode_tokens", "encode_tokens"]


def encode_tokens(tokens: KakaoTokens) -> str:
    """The vault value: ``{"access_token", "refresh_token", "expires_at"}`` (ISO 8601)."""
    return json.dumps(
        {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at.isoformat(),
        },
        separators=(",", ":"),
    )


def decode_tokens(value: str) -> KakaoTokens | None:
    """The tokens, or None for a value that is not what ``encode_tokens`` wrote."""
    try:
        data = json.loads(value)
        expires_at = datetime.fromisoformat(str(data["expires_at"]))
        access, refresh = data["access_token"], data["refresh_token"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(access, str) or not isinstance(refresh, str) or not access or not refresh:
        return None
    if expires_at.tzinfo is None:  # the notifier compares with an aware clock
        return None
    return KakaoTokens(access, refresh, expires_at)


def _channel_id(recipient: str) -> int | None:
    return int(recipient) if recipient.isdigit() else None


class VaultKakaoTokenStore:
    """``notifiers.kakao.KakaoTokenStore`` over the vault; ``recipient`` is the channel id.

    Each call opens its own session: the notifier loads and saves in the middle of a
    send, outside whatever transaction the caller holds.
    """

    def __init__(self, *, ring: KeyRing | None = None) -> None:
        self._ring = ring

    def __repr__(self) -> str:
        return "VaultKakaoTokenStore()"

    async def load(self, recipient: str) -> KakaoTokens | None:
        channel_id = _channel_id(recipient)
        if channel_id is None:
            return None
        async with db.session() as s:
            row = await s.get(NotificationChannel, channel_id)
            if row is None or row.kind != CHANNEL_KAKAO:
                return None
            try:
                values = await vault.read(
                    s,
                    CHANNEL_OWNER_TABLE,
                    channel_id,
                    row.user_id,
                    (ADDRESS_FIELD,),
                    ring=self._ring,
                )
            except VaultError as exc:
                log.warning("Kakao tokens of channel %d do not decrypt (%s)", channel_id, exc.code)
                return None
        tokens = decode_tokens(values[ADDRESS_FIELD])
        if tokens is None:
            log.warning("Kakao tokens of channel %d are unreadable", channel_id)
        return tokens

    async def save(self, recipient: str, tokens: KakaoTokens) -> None:
        channel_id = _channel_id(recipient)
        async with db.session() as s:
            row = None if channel_id is None else await s.get(NotificationChannel, channel_id)
            if row is None or row.kind != CHANNEL_KAKAO:
                # Deleted while a send was in flight: the tokens go nowhere.
                log.warning("Kakao tokens not saved: channel %s is gone", recipient[:20])
                return
            assert row.id is not None
            await vault.put(
                s,
                CHANNEL_OWNER_TABLE,
                row.id,
                row.user_id,
                {ADDRESS_FIELD: encode_tokens(tokens)},
                ring=self._ring,
            )
            await s.commit()
