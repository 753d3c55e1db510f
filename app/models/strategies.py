"""Strategies: users' configs, where they run, the orders they place, their models, backtests.

* ``strategy_configs`` is a registry strategy name plus validated params (JSON text);
  the label is unique per user so the UI can name a config without its id.
* ``strategy_attachments`` runs one config on one symbol in a mode: ``alert``,
  ``paper`` or ``live``. Live needs all of: a confirmation (``live_confirmed_at``),
  a broker account, and the three limits. ``killed_at`` is the kill switch: while
  it is set nothing is placed. The runner checks these on every order, whatever
  ``mode`` says, so a row edited by hand cannot trade live.
* ``strategy_orders.client_order_id`` is unique: it is derived from the attachment
  and the signal's key, so inserting the row *is* the claim that this signal places
  an order, and a retry or a restart finds the row instead of placing again. Rows
  live on when the attachment goes (``attachment_id`` SET NULL): an order history
  must outlast the config that made it. Money is ``BIGINT`` won.
* ``strategy_models`` keeps trained ML models, versioned by content hash.
* ``backtest_runs`` are jobs (backtest, optimisation, walk-forward, parity) with a
  snapshot of the strategy and params, so a result still says what was tested after
  its config changed or was deleted.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

MODE_ALERT = "alert"
MODE_PAPER = "paper"
MODE_LIVE = "live"
MODES = (MODE_ALERT, MODE_PAPER, MODE_LIVE)

STATE_RUNNING = "running"
STATE_RECONCILING = "reconciling"
STATE_STOPPED = "stopped"
STATE_ERROR = "error"

ORDER_PENDING = "pending"  # claimed (row inserted), not yet handed to the broker
ORDER_SENT = "sent"  # handed to the broker; the answer has not been recorded
ORDER_ACKED = "acked"  # the broker accepted it; broker_order_id is set
ORDER_REJECTED = "rejected"  # refused by our limits or by the broker; never placed
ORDER_UNKNOWN = "unknown"  # the send failed in a way that leaves the outcome open
UNRESOLVED_ORDER_STATES = (ORDER_PENDING, ORDER_SENT, ORDER_UNKNOWN)

RUN_BACKTEST = "backtest"
RUN_OPTIMIZE = "optimize"
RUN_WALK_FORWARD = "walk_forward"
RUN_PARITY = "parity"
RUN_QUEUED = "queued"
RUN_RUNNING = "running"
RUN_DONE = "done"
RUN_FAILED = "failed"
RUN_CANCELLED = "cancelled"


def _user_fk() -> Column:
    return Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)


class StrategyConfig(SQLModel, table=True):
    __tablename__ = "strategy_configs"
    __table_args__ = (UniqueConstraint("user_id", "label"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=_user_fk())
    label: str = Field(max_length=60)
    strategy: str = Field(max_length=64)
    params: str = Field(sa_column=Column(Text, nullable=False))
    timeframe: str = Field(max_length=4)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class StrategyAttachment(SQLModel, table=True):
    __tablename__ = "strategy_attachments"
    __table_args__ = (UniqueConstraint("config_id", "symbol"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=_user_fk())
    config_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("strategy_configs.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
        )
    )
    symbol: str = Field(sa_column=Column(String(12), ForeignKey("symbols.code"), nullable=False))
    mode: str = Field(default=MODE_ALERT, max_length=8)
    enabled: bool = True
    broker_account_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("broker_credentials.id", ondelete="SET NULL"), nullable=True
        ),
    )
    live_confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    live_confirmed_by_session: str | None = Field(default=None, max_length=64)
    max_order_value: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    max_position_qty: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    max_orders_per_day: int | None = Field(default=None)
    killed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    state: str = Field(default=STATE_RUNNING, max_length=12)
    last_error: str = Field(default="", max_length=500)
    position_qty: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """Shares of ``symbol`` the broker reported at the last reconciliation: the baseline
    the next one compares against, so a position that moved without us is noticed."""
    position_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    alert_rule_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True),
    )
    """The hidden ``alert_rules`` row this attachment's alerts are filed under (status
    ``deleted``, so no rule list shows it): the outbox, history and digests key alerts
    by rule, and a strategy alert goes through them unchanged."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class StrategyOrder(SQLModel, table=True):
    __tablename__ = "strategy_orders"
    __table_args__ = (
        Index("ix_strategy_orders_attachment_id_created_at", "attachment_id", "created_at"),
        Index("ix_strategy_orders_state", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=_user_fk())
    attachment_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("strategy_attachments.id", ondelete="SET NULL"), nullable=True
        ),
    )
    client_order_id: str = Field(sa_column=Column(String(32), unique=True, nullable=False))
    signal_key: str = Field(max_length=200)
    symbol: str = Field(sa_column=Column(String(12), ForeignKey("symbols.code"), nullable=False))
    side: str = Field(max_length=4)
    qty: int = Field(sa_column=Column(BigInteger, nullable=False))
    order_type: str = Field(max_length=8)
    price: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """The limit price; 0 for a market order (KIS wants 0 there too)."""
    ref_price: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """The price the order was sized and limit-checked at (the signal bar's close)."""
    mode: str = Field(max_length=8)
    state: str = Field(default=ORDER_PENDING, max_length=12)
    broker_order_id: str | None = Field(default=None, max_length=32)
    broker_branch: str = Field(default="", max_length=16)
    reason: str = Field(default="", max_length=64)
    """Why it was refused (an ``error.strategy_order_<reason>`` i18n suffix), or ''."""
    error: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StrategyModel(SQLModel, table=True):
    __tablename__ = "strategy_models"
    __table_args__ = (
        UniqueConstraint("config_id", "symbol", "version"),
        Index("ix_strategy_models_config_id_symbol_active", "config_id", "symbol", "active"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=_user_fk())
    config_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("strategy_configs.id", ondelete="CASCADE"), nullable=False
        )
    )
    symbol: str = Field(sa_column=Column(String(12), ForeignKey("symbols.code"), nullable=False))
    version: str = Field(max_length=64)
    trained_through: datetime = Field(sa_type=UTCDateTime)
    n_samples: int = 0
    horizon: int = 0
    """Bars ahead the model predicts: a model is only installed into a strategy that
    asks the same question."""
    feature_names: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    active: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BacktestRun(SQLModel, table=True):
    __tablename__ = "backtest_runs"
    __table_args__ = (Index("ix_backtest_runs_user_id_status", "user_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=_user_fk())
    config_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("strategy_configs.id", ondelete="SET NULL"), nullable=True
        ),
    )
    strategy: str = Field(max_length=64)
    params: str = Field(sa_column=Column(Text, nullable=False))
    timeframe: str = Field(default="1d", max_length=4)
    symbols: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    start_date: date = Field(sa_column=Column(Date, nullable=False))
    end_date: date = Field(sa_column=Column(Date, nullable=False))
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """What else the run was asked for: cash, costs, optimiser method and metric, ..."""
    kind: str = Field(default=RUN_BACKTEST, max_length=16)
    status: str = Field(default=RUN_QUEUED, max_length=12)
    progress: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    error: str = Field(default="", max_length=64)
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
