"""Migrations are the only way the schema changes: they must build exactly the models' schema."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect
from sqlmodel import SQLModel

import app.models  # noqa: F401
from alembic import command
from app.cli import alembic_config, migrate
from app.db import is_sqlite, sync_url


def _models_as_seen_by(url: str) -> MetaData:
    """SQLite has no schemas: the vault's tables sit in the main database there."""
    if not is_sqlite(url):
        return SQLModel.metadata
    flat = MetaData(naming_convention=SQLModel.metadata.naming_convention)
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(flat, schema=None)
    return flat


def _diff(url: str) -> list:
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        # include_schemas: on PostgreSQL the secrets table lives in schema "vault"
        opts = {"compare_type": True, "include_schemas": not is_sqlite(url)}
        ctx = MigrationContext.configure(conn, opts=opts)
        diff = compare_metadata(ctx, _models_as_seen_by(url))
    engine.dispose()
    return diff


async def test_upgrade_matches_models_and_downgrade_is_clean(db_url: str):
    await asyncio.to_thread(migrate, db_url)
    assert _diff(db_url) == []
    engine = create_engine(sync_url(db_url))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    expected = {
        "users",
        "user_sessions",
        "symbols",
        "watchlists",
        "watchlist_items",
        "alert_rules",
        "alert_events",
        "deliveries",
    }
    assert expected <= tables
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "base")
    engine = create_engine(sync_url(db_url))
    left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert left == set()
    # and back up again: migrations are repeatable
    await asyncio.to_thread(migrate, db_url)
    assert _diff(db_url) == []


def test_history_has_one_head():
    """Parallel work must end in a merge revision: `upgrade head` needs a single head."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads
