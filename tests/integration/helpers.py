"""Builders shared by the integration tests (real DB, real services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import db
from app.config import Settings
from app.models.users import User
from app.runtime.pacing import DEFAULT_INTERVALS
from app.services import auth, symbols
from brokers.paper.symbols import SYMBOLS
from engines.market import Tick

T0 = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)  # 10:00 KST on a KRX trading day


async def seed_symbols() -> None:
    async with db.session() as s:
        await symbols.sync_master(s, SYMBOLS)


async def make_user(email: str = "trader@example.com", password: str = "correct horse 1") -> User:
    async with db.session() as s:
        return await auth.create_local_user(s, email, password, display_name="Trader")


def ticks(symbol: str, prices: list[int], start: datetime = T0) -> list[Tick]:
    return [
        Tick(symbol=symbol, price=p, volume=10, ts=start + timedelta(seconds=i))
        for i, p in enumerate(prices)
    ]


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "rule_sync_interval": 0.05,
        "ui_push_interval": 0.05,
        "delivery_poll_interval": 0.05,
        "delivery_backoff_base": 0.05,
        "delivery_max_attempts": 3,
        # Pacing off: these tests count one message per alert. Pacing and digests are
        # measured by their own tests (test_delivery_burst.py), which set intervals.
        "delivery_intervals": ",".join(f"{k}=0" for k in DEFAULT_INTERVALS),
        "smtp_host": "",
        "app_base_url": "http://testserver",
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def kill_lock_holders(url: str) -> list[tuple[bool]]:
    """End every session holding an advisory lock in ``url``'s database, as the server
    ends a crashed client's: the leader-lock holder dies without releasing anything."""
    import psycopg

    from tests.conftest import _pg_conninfo

    with psycopg.connect(_pg_conninfo(url), autocommit=True) as admin:
        return admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
