"""The paper trading account: one per user, with its positions, orders and fills.

The arithmetic lives in ``brokers.paper.account`` (pure) and the matching in
``brokers.paper.broker``; these tables only persist their state, through
``app.services.paper_accounts.SqlPaperStore``. Money is ``BIGINT`` won: an
order's value (qty × price) passes 2^31 won (about 2.1 billion) easily.

* ``paper_accounts.revision`` counts every change. A placement is only stored
  if the revision is the one the broker checked the order against, so two
  workers cannot both spend the same cash (see ``PaperStore``).
* ``paper_orders.client_order_id`` is NULL for orders without one, so the
  unique ``(account_id, client_order_id)`` constraint makes strategy orders
  idempotent while leaving manual orders unconstrained (NULLs never collide,
  on SQLite and PostgreSQL alike).
* ``paper_fills.realized_pnl`` is NULL on buys and set on sells, so a sell's
  P&L is recorded once, at the moment it happened, and never re-derived from
  an average price that later buys would change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow


class PaperAccount(SQLModel, table=True):
    """A user's simulated cash account. ``cash`` is the deposit, reservations included."""

    __tablename__ = "paper_accounts"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), unique=True, nullable=False
        )
    )
    initial_cash: int = Field(sa_column=Column(BigInteger, nullable=False))
    cash: int = Field(sa_column=Column(BigInteger, nullable=False))
    revision: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reset_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PaperPosition(SQLModel, table=True):
    """Shares held: ``cost`` is the book cost excluding fees, so avg price = cost / qty."""

    __tablename__ = "paper_positions"
    __table_args__ = (CheckConstraint("qty > 0 AND cost >= 0", name="qty_cost"),)

    account_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("paper_accounts.id", ondelete="CASCADE"),
            primary_key=True,
            nullable=False,
        )
    )
    symbol: str = Field(
        sa_column=Column(String(12), ForeignKey("symbols.code"), primary_key=True, nullable=False)
    )
    qty: int = Field(sa_column=Column(BigInteger, nullable=False))
    cost: int = Field(sa_column=Column(BigInteger, nullable=False))


class PaperOrderRow(SQLModel, table=True):
    """One order, open or finished. Refused orders are never stored."""

    __tablename__ = "paper_orders"
    __table_args__ = (
        UniqueConstraint("account_id", "client_order_id"),
        CheckConstraint("qty > 0 AND price >= 0 AND reserved_cash >= 0", name="amounts"),
        Index("ix_paper_orders_account_id_state", "account_id", "state"),
        Index("ix_paper_orders_account_id_created_at", "account_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("paper_accounts.id", ondelete="CASCADE"), nullable=False
        )
    )
    client_order_id: str | None = Field(default=None, max_length=64)
    symbol: str = Field(sa_column=Column(String(12), ForeignKey("symbols.code"), nullable=False))
    side: str = Field(max_length=8)
    order_type: str = Field(max_length=8)
    qty: int = Field(sa_column=Column(BigInteger, nullable=False))
    price: int = Field(sa_column=Column(BigInteger, nullable=False))
    reserved_cash: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(max_length=12)
    resting: bool = False
    filled_qty: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    avg_fill_price: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    reason: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PaperFillRow(SQLModel, table=True):
    """One execution, with its fees and (sells only) realized P&L."""

    __tablename__ = "paper_fills"
    __table_args__ = (Index("ix_paper_fills_account_id_ts", "account_id", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("paper_accounts.id", ondelete="CASCADE"), nullable=False
        )
    )
    order_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("paper_orders.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    symbol: str = Field(sa_column=Column(String(12), ForeignKey("symbols.code"), nullable=False))
    side: str = Field(max_length=8)
    qty: int = Field(sa_column=Column(BigInteger, nullable=False))
    price: int = Field(sa_column=Column(BigInteger, nullable=False))
    commission: int = Field(sa_column=Column(BigInteger, nullable=False))
    tax: int = Field(sa_column=Column(BigInteger, nullable=False))
    realized_pnl: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ts: datetime = Field(sa_type=UTCDateTime)
