"""Administration: users, roles, the audit log and system status.

Every function takes the acting user and checks the role here, in the service,
so a page that forgets a check, or a crafted event, still cannot reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.alerts import DELIVERY_DEAD, DELIVERY_PENDING, AlertEvent, Delivery
from app.models.audit import AuditEntry
from app.models.common import utcnow
from app.models.rules import RULE_ACTIVE, AlertRule
from app.models.users import User, UserSession
from app.services import audit
from app.services.errors import NotFound, PermissionDenied, ValidationFailed

ROLES = ("user", "admin")


async def require_admin(actor: User, what: str, ip: str = "") -> None:
    """Refuses, and audits the refusal, unless ``actor`` is an active admin."""
    if actor.role != "admin" or not actor.is_active:
        await audit.denied(actor.id, "admin", what, ip)
        raise PermissionDenied()


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    email: str
    display_name: str
    role: str
    is_active: bool
    created_at: datetime


async def list_users(
    session: AsyncSession, actor: User, query: str = "", ip: str = ""
) -> list[UserRow]:
    await require_admin(actor, "users", ip)
    stmt = select(User).order_by(col(User.id))
    if query.strip():
        stmt = stmt.where(col(User.email).contains(query.strip().lower(), autoescape=True))
    return [
        UserRow(u.id or 0, u.email, u.display_name, u.role, u.is_active, u.created_at)
        for u in (await session.exec(stmt.limit(500))).all()
    ]


async def _other_active_admins(session: AsyncSession, user_id: int) -> int:
    stmt = (
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.is_active, User.id != user_id)
    )
    return int((await session.exec(stmt)).one())


async def set_role(
    session: AsyncSession, actor: User, user_id: int, role: str, ip: str = ""
) -> None:
    await require_admin(actor, "set_role", ip)
    if role not in ROLES:
        raise ValidationFailed.single("role", "bad_role")
    target = await session.get(User, user_id)
    if target is None:
        raise NotFound()
    if target.role == role:
        return
    if target.role == "admin" and await _other_active_admins(session, user_id) == 0:
        raise ValidationFailed.single("role", "last_admin")
    before = target.role
    target.role = role
    session.add(target)
    await session.commit()
    await audit.record(
        audit.ROLE_CHANGED,
        actor_id=actor.id,
        target_type="user",
        target_id=user_id,
        ip=ip,
        detail={"from": before, "to": role},
    )


async def set_active(
    session: AsyncSession, actor: User, user_id: int, active: bool, ip: str = ""
) -> None:
    """Disabling also revokes every session, so the user is out at their next event."""
    await require_admin(actor, "set_active", ip)
    target = await session.get(User, user_id)
    if target is None:
        raise NotFound()
    if target.id == actor.id and not active:
        raise ValidationFailed.single("user", "cannot_disable_self")
    if not active and target.role == "admin" and await _other_active_admins(session, user_id) == 0:
        raise ValidationFailed.single("user", "last_admin")
    if target.is_active == active:
        return
    target.is_active = active
    session.add(target)
    if not active:
        await session.exec(
            update(UserSession)
            .where(col(UserSession.user_id) == user_id, col(UserSession.revoked_at).is_(None))
            .values(revoked_at=utcnow())
        )
    await session.commit()
    await audit.record(
        audit.USER_ENABLED if active else audit.USER_DISABLED,
        actor_id=actor.id,
        target_type="user",
        target_id=user_id,
        ip=ip,
    )


async def audit_log(
    actor: User, flt: audit.AuditFilter, limit: int = 200, ip: str = ""
) -> list[AuditEntry]:
    await require_admin(actor, "audit_log", ip)
    return await audit.search(flt, limit=limit)


@dataclass(frozen=True, slots=True)
class SystemStatus:
    users: int
    active_sessions: int
    active_rules: int
    events_today: int
    deliveries_pending: int
    deliveries_dead: int


async def system_status(session: AsyncSession, actor: User, ip: str = "") -> SystemStatus:
    await require_admin(actor, "status", ip)
    now = utcnow()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)

    async def count(stmt: object) -> int:
        return int((await session.exec(stmt)).one())  # type: ignore[call-overload]

    return SystemStatus(
        users=await count(select(func.count()).select_from(User)),
        active_sessions=await count(
            select(func.count())
            .select_from(UserSession)
            .where(col(UserSession.revoked_at).is_(None), col(UserSession.expires_at) > now)
        ),
        active_rules=await count(
            select(func.count()).select_from(AlertRule).where(AlertRule.status == RULE_ACTIVE)
        ),
        events_today=await count(
            select(func.count())
            .select_from(AlertEvent)
            .where(col(AlertEvent.created_at) >= day_start)
        ),
        deliveries_pending=await count(
            select(func.count()).select_from(Delivery).where(Delivery.status == DELIVERY_PENDING)
        ),
        deliveries_dead=await count(
            select(func.count()).select_from(Delivery).where(Delivery.status == DELIVERY_DEAD)
        ),
    )
