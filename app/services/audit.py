"""Writing and reading the audit log.

``record`` commits in its own session, so an audit entry survives the rollback of
the operation it describes (a refused or failed action is exactly what must stay).
Details must never carry a secret: callers pass ids and names, not values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from app import db
from app.models.audit import OUTCOME_DENIED, OUTCOME_OK, AuditEntry

log = logging.getLogger(__name__)

# Action names, in one place so filters and tests agree on them.
SIGN_IN = "auth.sign_in"
SIGN_IN_FAILED = "auth.sign_in_failed"
SIGN_OUT = "auth.sign_out"
SESSION_REVOKED = "auth.session_revoked"
IDENTITY_LINKED = "auth.identity_linked"
ROLE_CHANGED = "admin.role_changed"
USER_DISABLED = "admin.user_disabled"
USER_ENABLED = "admin.user_enabled"
CREDENTIAL_CREATED = "vault.credential_created"
CREDENTIAL_UPDATED = "vault.credential_updated"
CREDENTIAL_DELETED = "vault.credential_deleted"
CREDENTIAL_DECRYPTED = "vault.decrypt_for_use"
KEY_ROTATION = "vault.key_rotation"
CONNECTION_TESTED = "brokers.connection_tested"
ORDER_PLACED = "orders.placed"
STRATEGY_CONFIG_SAVED = "strategy.config_saved"
STRATEGY_CONFIG_DELETED = "strategy.config_deleted"
STRATEGY_ATTACHED = "strategy.attached"
STRATEGY_DETACHED = "strategy.detached"
STRATEGY_MODE_CHANGED = "strategy.mode_changed"
STRATEGY_LIMITS_CHANGED = "strategy.limits_changed"
STRATEGY_LIVE_CONFIRMED = "strategy.live_confirmed"
STRATEGY_LIVE_REFUSED = "strategy.live_refused"
STRATEGY_KILLED = "strategy.killed"
STRATEGY_REVIVED = "strategy.revived"
STRATEGY_ORDER_SENT = "strategy.order_sent"
STRATEGY_ORDER_ACKED = "strategy.order_acked"
STRATEGY_ORDER_REFUSED = "strategy.order_refused"
STRATEGY_ORDER_REJECTED = "strategy.order_rejected"
STRATEGY_ORDER_UNKNOWN = "strategy.order_unknown"
STRATEGY_ORDER_LINKED = "strategy.order_linked"
STRATEGY_ORDER_CANCELLED = "strategy.order_cancelled"
STRATEGY_POSITION_MISMATCH = "strategy.position_mismatch"
ACCESS_DENIED = "access.denied"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: str = ""
    actor_id: int | None = None
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None


async def record(
    action: str,
    *,
    actor_id: int | None,
    target_type: str = "",
    target_id: object = "",
    outcome: str = OUTCOME_OK,
    ip: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    entry = AuditEntry(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        outcome=outcome,
        ip=ip[:64],
        detail=detail or {},
    )
    async with db.session() as s:
        s.add(entry)
        await s.commit()
    log.info(
        "audit %s actor=%s target=%s:%s outcome=%s",
        action,
        actor_id,
        target_type,
        target_id,
        outcome,
    )


async def denied(actor_id: int | None, target_type: str, target_id: object, ip: str = "") -> None:
    """A user reached for something that is not theirs."""
    await record(
        ACCESS_DENIED,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        outcome=OUTCOME_DENIED,
        ip=ip,
    )


async def search(flt: AuditFilter, limit: int = 200) -> list[AuditEntry]:
    stmt = select(AuditEntry)
    if flt.action:
        stmt = stmt.where(col(AuditEntry.action).startswith(flt.action, autoescape=True))
    if flt.actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == flt.actor_id)
    if flt.outcome:
        stmt = stmt.where(AuditEntry.outcome == flt.outcome)
    if flt.since is not None:
        stmt = stmt.where(col(AuditEntry.at) >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(col(AuditEntry.at) < flt.until)
    stmt = stmt.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
    async with db.session() as s:
        return list((await s.exec(stmt)).all())
