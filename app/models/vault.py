"""Secrets at rest: non-secret broker metadata, and the encrypted values themselves.

Two tables on purpose. ``broker_credentials`` (public schema) is what pages list:
label, paper or real, the last four digits of the account. ``vault.secrets`` holds
only AES-256-GCM ciphertexts (see ``app.services.vault`` for the format), one row
per secret field, in its own PostgreSQL schema so an operator can keep it out of
reach of roles that have no business reading it (reporting, backups of "app data").
SQLite has no schemas: ``app.db`` and migration 0003 map ``vault`` away there.

A secret row names its owner by (owner_table, owner_id, field) instead of a foreign
key, so one vault serves every kind of owner (broker accounts now, channel tokens
and cached broker tokens later). The services delete secrets with their owner, in
the same transaction; ``user_id`` cascades so deleting a user leaves nothing behind.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

VAULT_SCHEMA = "vault"

BROKER_KIS = "kis"


class BrokerCredential(SQLModel, table=True):
    """A user's broker account, minus everything secret (those live in ``vault.secrets``)."""

    __tablename__ = "broker_credentials"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
        )
    )
    broker: str = Field(default=BROKER_KIS, max_length=16)
    label: str = Field(max_length=60)
    is_paper: bool = True
    product_code: str = Field(default="01", max_length=2)
    # Last four digits of the account number, kept in clear for the masked display.
    account_tail: str = Field(default="", max_length=4)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class VaultSecret(SQLModel, table=True):
    """One encrypted value. The AAD is rebuilt from this row's own columns on decrypt."""

    __tablename__ = "secrets"
    # Index names are explicit: the naming convention would put the schema in them,
    # and the same name must come out on PostgreSQL (schema) and SQLite (no schema).
    __table_args__ = (
        UniqueConstraint("owner_table", "owner_id", "field"),
        Index("ix_secrets_user_id", "user_id"),
        Index("ix_secrets_key_id", "key_id"),
        {"schema": VAULT_SCHEMA},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    owner_table: str = Field(max_length=64)
    owner_id: int
    field: str = Field(max_length=32)
    # Also inside the ciphertext envelope; a column so rotation can find old rows by index.
    key_id: str = Field(max_length=32)
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    # When a user last wrote this value, and when rotation last re-encrypted it.
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    rotated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
