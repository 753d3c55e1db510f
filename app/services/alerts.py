"""Alert history and the unread badge, read from the outbox tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.alerts import AlertEvent, Delivery
from app.models.common import utcnow


@dataclass(slots=True)
class HistoryRow:
    event_id: int
    symbol: str
    price: int
    payload: dict[str, Any]
    fired_at: datetime
    read: bool
    deliveries: list[tuple[str, str, str]] = field(default_factory=list)  # channel, status, error


async def history(session: AsyncSession, user_id: int, limit: int = 100) -> list[HistoryRow]:
    events = (
        await session.exec(
            select(AlertEvent)
            .where(AlertEvent.user_id == user_id)
            .order_by(col(AlertEvent.fired_at).desc(), col(AlertEvent.id).desc())
            .limit(limit)
        )
    ).all()
    rows = {
        e.id: HistoryRow(
            event_id=e.id or 0,
            symbol=e.symbol,
            price=e.price,
            payload=e.payload,
            fired_at=e.fired_at,
            read=e.read_at is not None,
        )
        for e in events
    }
    if rows:
        deliveries = (
            await session.exec(
                select(Delivery)
                .where(col(Delivery.event_id).in_(list(rows)), Delivery.user_id == user_id)
                .order_by(col(Delivery.channel))
            )
        ).all()
        for d in deliveries:
            rows[d.event_id].deliveries.append((d.channel, d.status, d.last_error))
    return list(rows.values())


async def unread_count(session: AsyncSession, user_id: int) -> int:
    stmt = (
        select(func.count())
        .select_from(AlertEvent)
        .where(AlertEvent.user_id == user_id, col(AlertEvent.read_at).is_(None))
    )
    return int((await session.exec(stmt)).one())


async def mark_all_read(session: AsyncSession, user_id: int) -> int:
    result = await session.exec(
        update(AlertEvent)
        .where(col(AlertEvent.user_id) == user_id, col(AlertEvent.read_at).is_(None))
        .values(read_at=utcnow())
    )
    await session.commit()
    return result.rowcount or 0
