"""All tables, imported here so alembic and ``SQLModel.metadata`` see every one."""

import app.models.channels  # noqa: F401
import app.models.identities  # noqa: F401
import app.models.paper  # noqa: F401
import app.models.strategies  # noqa: F401
import app.models.vault  # noqa: F401
from app.models.alerts import AlertEvent, Delivery
from app.models.audit import AuditEntry
from app.models.candles import StoredCandle
from app.models.market import Symbol
from app.models.rules import AlertRule
from app.models.users import User, UserSession
from app.models.watchlists import Watchlist, WatchlistItem

__all__ = [
    "AlertEvent",
    "AlertRule",
    "AuditEntry",
    "Delivery",
    "StoredCandle",
    "Symbol",
    "User",
    "UserSession",
    "Watchlist",
    "WatchlistItem",
]
