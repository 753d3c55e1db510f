"""Watchlists. A user has one default list now; the table allows several later."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow


class Watchlist(SQLModel, table=True):
    __tablename__ = "watchlists"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    name: str = Field(default="", max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class WatchlistItem(SQLModel, table=True):
    __tablename__ = "watchlist_items"
    __table_args__ = (UniqueConstraint("watchlist_id", "symbol", name="uq_watchlist_symbol"),)

    id: int | None = Field(default=None, primary_key=True)
    watchlist_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("watchlists.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    symbol: str = Field(
        sa_column=Column(String(12), ForeignKey("symbols.code"), index=True, nullable=False)
    )
    position: int = 0
    added_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
