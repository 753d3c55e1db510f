"""Alert rules. The condition is a validated spec from ``engines.rules`` kept as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

RULE_ACTIVE = "active"
RULE_TRIGGERED = "triggered"  # a one-shot rule that has fired
RULE_DELETED = "deleted"  # kept so history rows keep their rule
RULE_DISABLED = "disabled"  # paused by its owner; the runner unloads it
RULE_EXPIRED = "expired"  # passed its expiry date without (further) firing


class AlertRule(SQLModel, table=True):
    __tablename__ = "alert_rules"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    symbol: str = Field(
        sa_column=Column(String(12), ForeignKey("symbols.code"), index=True, nullable=False)
    )
    name: str = Field(default="", max_length=100)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default=RULE_ACTIVE, max_length=16, index=True)
    # Written by the runner only; a user edit bumps ``updated_at`` instead, which
    # is how the runner notices edits without rereading every rule.
    fire_count: int = 0
    last_fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A repeating price rule's armed state as the runner last stored it, with the time
    # of the tick that changed it, so a runner taking over resumes where the old one
    # was (None: derive it from ``fire_count``, as for a new or edited rule).
    armed: bool | None = None
    armed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
