"""All tables, imported here so alembic and ``SQLModel.metadata`` see every one."""

from app.models.alerts import AlertEvent, Delivery
from app.models.market import Symbol
from app.models.rules import AlertRule
from app.models.users import User, UserSession
from app.models.watchlists import Watchlist, WatchlistItem

__all__ = [
    "AlertEvent",
    "AlertRule",
    "Delivery",
    "Symbol",
    "User",
    "UserSession",
    "Watchlist",
    "WatchlistItem",
]
