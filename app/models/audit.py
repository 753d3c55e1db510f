"""The audit log: append-only. Rows are inserted, never updated or deleted by the app.

On PostgreSQL a trigger (migration 0002) makes UPDATE and DELETE fail, so even a
bug or a compromised web worker cannot rewrite history through the app's role.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from app.models.common import UTCDateTime, utcnow

OUTCOME_OK = "ok"
OUTCOME_DENIED = "denied"
OUTCOME_FAILED = "failed"


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # No foreign keys: the log must outlive the users and rows it mentions.
    actor_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=64, index=True)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    outcome: str = Field(default=OUTCOME_OK, max_length=16, index=True)
    ip: str = Field(default="", max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
