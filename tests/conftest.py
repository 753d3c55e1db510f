"""Shared fixtures: real databases (SQLite and PostgreSQL) and a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message as EmailMsg

import psycopg
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url

from app import db
from app.cli import migrate

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _vault_key_ring() -> Iterator[None]:
    """Every test gets an explicit throw-away key ring: none reads VAULT_* or writes data/."""
    from app.vault_keys import KeyRing, set_key_ring

    set_key_ring(KeyRing({"test": os.urandom(32)}, "test"))
    yield
    set_key_ring(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_conninfo(url: str) -> str:
    u = make_url(url)
    return (
        f"host={u.host} port={u.port or 5432} user={u.username or 'postgres'} dbname={u.database}"
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards: runs never collide."""
    name = f"tw_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[str]:
    """Migrated database (through alembic, like production) wired into ``app.db``."""
    await asyncio.to_thread(migrate, db_url)
    db.configure(db_url)
    try:
        yield db_url
    finally:
        await db.dispose()


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[EmailMsg] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(
            message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """aiosmtpd on loopback: the real SMTP protocol, in its own thread."""
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- figures a test measured, printed at the end of the run ----------------------------
_FIGURES: list[tuple[str, dict[str, object]]] = []


@pytest.fixture
def report_figures(request: pytest.FixtureRequest):
    """Tests that measure something (a burst, a crash) put their numbers in the run's
    output, not only in an assertion message that shows up on failure."""

    def report(**figures: object) -> None:
        _FIGURES.append((request.node.nodeid, figures))

    return report


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _FIGURES:
        import json

        terminalreporter.section("measured figures")
        for nodeid, figures in _FIGURES:
            terminalreporter.write_line(f"{nodeid}: {json.dumps(figures, default=str)}")
