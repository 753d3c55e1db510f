"""The outbox: one event per firing, one delivery row per channel.

Both are written in the same transaction as the rule's fire count, and the
event's idempotency key is unique, so a firing is recorded once even if two
runners or a replay try to record it again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

DELIVERY_PENDING = "pending"
DELIVERY_SENDING = "sending"
DELIVERY_SENT = "sent"
DELIVERY_DEAD = "dead"
DELIVERY_SKIPPED = "skipped"  # raised in quiet hours whose action is "drop"

CHANNEL_IN_APP = "in_app"
CHANNEL_EMAIL = "email"


class AlertEvent(SQLModel, table=True):
    __tablename__ = "alert_events"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(sa_column=Column(String(80), unique=True, nullable=False))
    rule_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    symbol: str = Field(max_length=12)
    price: int
    # What the message is made of; it is rendered in the reader's language.
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    fired_at: datetime = Field(sa_type=UTCDateTime, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    read_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("event_id", "channel", name="uq_delivery_event_channel"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("alert_events.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    channel: str = Field(max_length=32)
    status: str = Field(default=DELIVERY_PENDING, max_length=12, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    last_error: str = Field(default="", max_length=500)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    digest_key: str = Field(default="", max_length=64, index=True)
    """Set when this alert went out inside a digest message (a burst coalesced under
    the channel's rate limit): every delivery of one digest shares the key."""
    resumed: bool = False
    """The worker died while this delivery was in flight and it was sent again: the
    one case where the channel may have shown the alert twice."""


class DailyDigest(SQLModel, table=True):
    """One row per user and local day: the daily summary e-mail, sent at most once."""

    __tablename__ = "daily_digests"
    __table_args__ = (UniqueConstraint("user_id", "day", name="uq_daily_digest_user_day"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    day: str = Field(max_length=10)  # YYYY-MM-DD in the user's time zone
    status: str = Field(default=DELIVERY_PENDING, max_length=12)
    attempts: int = 0
    last_error: str = Field(default="", max_length=500)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
