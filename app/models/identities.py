"""Identities at external providers (Google, Kakao, Naver, Apple) and sign-in flows in flight.

``UserIdentity`` links a provider's stable subject to one of our users. The pair
(provider, subject) is unique, so one provider account belongs to at most one user.

``OAuthFlow`` is the server-side state of one authorization request, from the
redirect to the provider until its callback. The callback deletes the row it uses,
so each flow completes at most once. Only hashes of the ``state`` value and of the
browser-binding cookie are kept; the PKCE verifier and the nonce must be kept as
they are, for the ten minutes or so the row lives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow


class UserIdentity(SQLModel, table=True):
    __tablename__ = "user_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    provider: str = Field(max_length=16)
    # Providers' subjects are opaque strings; Google's are up to 255 characters.
    subject: str = Field(max_length=255)
    email: str = Field(default="", max_length=320)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OAuthFlow(SQLModel, table=True):
    __tablename__ = "oauth_flows"

    id: int | None = Field(default=None, primary_key=True)
    state_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    browser_hash: str = Field(max_length=64)
    provider: str = Field(max_length=16)
    nonce: str = Field(default="", max_length=128)
    code_verifier: str = Field(default="", max_length=128)
    next_path: str = Field(default="/", max_length=2000)
    # Set when a signed-in user links a new identity to their account.
    link_user_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
