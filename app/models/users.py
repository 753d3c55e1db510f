"""Accounts and their sign-in sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    display_name: str = Field(default="", max_length=100)
    # Null for accounts that only sign in through an identity provider (next issue).
    password_hash: str | None = Field(default=None, max_length=255)
    role: str = Field(default="user", max_length=16)
    language: str = Field(default="ko", max_length=5)
    timezone: str = Field(default="Asia/Seoul", max_length=64)
    email_alerts: bool = True
    daily_digest: bool = False
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UserSession(SQLModel, table=True):
    """A signed-in browser. Only the SHA-256 of the cookie token is kept."""

    __tablename__ = "user_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    last_used_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    user_agent: str = Field(default="", max_length=400)
    ip: str = Field(default="", max_length=64)
