"""A user's notification channels: where alerts go besides the in-app bell.

The address of a channel (a Telegram chat id, a Discord webhook URL with its
token, a web-push subscription, an FCM device token, a Kakao credential) is a
secret or close to one, so it lives encrypted in ``vault.secrets`` (owner table
``notification_channels``, field ``address``). This row keeps only what a page
may show: the kind, a label, a masked hint and the channel's state.

E-mail to the account's own address needs no row (it is verified by sign-up);
an extra e-mail address is a channel and must be verified by a link first.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

CHANNEL_TELEGRAM = "telegram"
CHANNEL_DISCORD = "discord"
CHANNEL_KAKAO = "kakao"
CHANNEL_WEBPUSH = "webpush"
CHANNEL_FCM = "fcm"
CHANNEL_EXTRA_EMAIL = "email_extra"
CHANNEL_KINDS = (
    CHANNEL_TELEGRAM,
    CHANNEL_DISCORD,
    CHANNEL_KAKAO,
    CHANNEL_WEBPUSH,
    CHANNEL_FCM,
    CHANNEL_EXTRA_EMAIL,
)

CHANNEL_OWNER_TABLE = "notification_channels"
ADDRESS_FIELD = "address"


class NotificationChannel(SQLModel, table=True):
    __tablename__ = "notification_channels"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    kind: str = Field(max_length=16)
    label: str = Field(default="", max_length=60)
    hint: str = Field(default="", max_length=40)
    """A masked tail of the address, e.g. ``chat ••••4821``: enough to tell two apart."""
    address_hash: str = Field(default="", max_length=64, index=True)
    """SHA-256 of the address, so the same address is not added twice (and a web-push
    subscription can be found by endpoint) without decrypting every row."""
    verified: bool = False
    enabled: bool = True
    verify_token_hash: str = Field(default="", max_length=64)
    last_error: str = Field(default="", max_length=300)
    gone_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
