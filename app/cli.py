"""Operator commands: ``python -m app.cli migrate|seed-demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from alembic.config import Config

from alembic import command
from app import db
from app.config import PROJECT_ROOT, get_settings
from app.logging_setup import configure_logging
from app.services import auth, symbols, watchlist
from brokers.paper.market import SimulatedMarket

log = logging.getLogger("app.cli")
DEMO_WATCHLIST = ("000660", "035420", "035720")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", db.sync_url(url or get_settings().database_url))
    return cfg


def migrate(url: str | None = None) -> None:
    command.upgrade(alembic_config(url), "heads")


def _demo_password_file() -> Path:
    return PROJECT_ROOT / "data" / "demo-password.txt"


def demo_password() -> str:
    """DEMO_PASSWORD if set; else one generated once and kept (mode 600) under data/."""
    configured = get_settings().demo_password
    if configured:
        return configured
    path = _demo_password_file()
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


async def seed_demo() -> tuple[str, str]:
    settings = get_settings()
    market = SimulatedMarket(seed=settings.market_seed)
    password = demo_password()
    async with db.session() as s:
        added = await symbols.sync_master(s, await market.list_symbols())
        log.info("symbol master: %d new", added)
        user = await auth.get_user_by_email(s, settings.demo_email)
        if user is None:
            user = await auth.create_local_user(
                s, settings.demo_email, password, display_name="Demo", language="ko"
            )
            for code in DEMO_WATCHLIST:
                await watchlist.add(s, user.id or 0, code)
            log.info("demo user created")
        elif user.password_hash is None or not auth.verify_password(user.password_hash, password):
            user.password_hash = auth.hash_password(password)
            s.add(user)
            await s.commit()
    await db.dispose()
    return settings.demo_email, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply all alembic migrations")
    sub.add_parser("seed-demo", help="symbol master, demo user and watchlist")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    if args.cmd == "migrate":
        migrate()
        log.info("database is at the latest migration")
    elif args.cmd == "seed-demo":
        email, password = asyncio.run(seed_demo())
        # Shown on the terminal on purpose (the README points here), never logged.
        sys.stdout.write(f"\n  Demo sign-in: {email}\n  Password:     {password}\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
