"""Database engines and sessions.

The app talks to the database through SQLAlchemy's async engine so that no
handler blocks the event loop (``rx.session()`` would). Alembic and the CLI use
the sync form of the same URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import get_settings

_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None
_configured_url: str | None = None


def sync_url(url: str) -> str:
    """The URL alembic and sync tools use (sqlite / postgresql+psycopg)."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"):
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg"):
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def async_url(url: str) -> str:
    u = make_url(sync_url(url))
    if u.drivername == "sqlite":
        return u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """SQLite will not create the folder of its file; ``data/`` may be new."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)


def engine_execution_options(url: str) -> dict[str, object]:
    """SQLite has no schemas: the vault's ``vault.secrets`` lives in the main database there."""
    if is_sqlite(url):
        return {"schema_translate_map": {"vault": None}}
    return {}


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL lets the runner write while pages read; foreign keys are off by default."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()


def configure(url: str | None = None) -> AsyncEngine:
    """(Re)build the process-wide engine. Tests call it with their own database."""
    global _engine, _sessionmaker, _configured_url
    url = url or get_settings().database_url
    ensure_sqlite_dir(url)
    engine = create_async_engine(
        async_url(url), pool_pre_ping=True, execution_options=engine_execution_options(url)
    )
    if is_sqlite(url):
        _tune_sqlite(engine)
    _engine = engine
    _sessionmaker = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    _configured_url = url
    return engine


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database is unreachable (a restart, a failover, a cut
    network), not that the statement was wrong: such a write is worth retrying as is,
    where a wrong one would fail the same way forever."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def get_engine() -> AsyncEngine:
    if _engine is None:
        configure(_configured_url)
    assert _engine is not None
    return _engine


async def dispose() -> None:
    global _engine, _sessionmaker
    if _engine is not None:
        await _engine.dispose()
    _engine = None
    _sessionmaker = None


@asynccontextmanager
async def session() -> AsyncIterator[AsyncSession]:
    """A unit of work: commit is explicit, and anything not committed rolls back."""
    if _sessionmaker is None:
        configure(_configured_url)  # after dispose(): same database, fresh pool
    assert _sessionmaker is not None
    async with _sessionmaker() as s:
        yield s
