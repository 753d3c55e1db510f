"""A user's own sign-in sessions: list them, revoke any of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.common import utcnow
from app.models.users import UserSession
from app.services import audit
from app.services.auth import hash_token
from app.services.errors import NotFound


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str
    ip: str
    current: bool


async def list_active(
    session: AsyncSession, user_id: int, current_token: str | None
) -> list[SessionRow]:
    now = utcnow()
    current_hash = hash_token(current_token) if current_token else ""
    rows = (
        await session.exec(
            select(UserSession)
            .where(
                UserSession.user_id == user_id,
                col(UserSession.revoked_at).is_(None),
                col(UserSession.expires_at) > now,
            )
            .order_by(col(UserSession.last_used_at).desc())
        )
    ).all()
    return [
        SessionRow(
            r.id or 0,
            r.created_at,
            r.last_used_at,
            r.expires_at,
            r.user_agent,
            r.ip,
            r.token_hash == current_hash,
        )
        for r in rows
    ]


async def revoke(session: AsyncSession, user_id: int, session_id: int, ip: str = "") -> None:
    row = await session.get(UserSession, session_id)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, "user_session", session_id, ip)
        raise NotFound()
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        await session.commit()
    await audit.record(
        audit.SESSION_REVOKED,
        actor_id=user_id,
        target_type="user_session",
        target_id=session_id,
        ip=ip,
    )
