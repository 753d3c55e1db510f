"""Alert history and the unread badge, read from the outbox tables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.alerts import AlertEvent, Delivery
from app.models.channels import NotificationChannel
from app.models.common import utcnow


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One channel's outcome for one alert, as the history shows it."""

    channel: str  # "in_app", "email" or a channel kind such as "telegram"
    label: str  # the user's name for their channel, if any
    status: str
    error: str
    in_digest: bool
    resumed: bool


DIGEST_KEY = re.compile(r"[0-9a-f]{32}")


@dataclass(slots=True)
class HistoryRow:
    event_id: int
    symbol: str
    price: int
    payload: dict[str, Any]
    fired_at: datetime
    read: bool
    deliveries: list[DeliveryView] = field(default_factory=list)


async def history(
    session: AsyncSession, user_id: int, limit: int = 100, digest: str = ""
) -> list[HistoryRow]:
    """The newest alerts with every channel's outcome. ``digest`` (the key a digest
    message links to) narrows it to the alerts that message stood for; a malformed
    key matches nothing rather than everything."""
    query = select(AlertEvent).where(AlertEvent.user_id == user_id)
    if digest:
        if not DIGEST_KEY.fullmatch(digest):
            return []
        query = query.where(
            col(AlertEvent.id).in_(
                select(Delivery.event_id).where(
                    Delivery.user_id == user_id, Delivery.digest_key == digest
                )
            )
        )
    events = (
        await session.exec(
            query.order_by(col(AlertEvent.fired_at).desc(), col(AlertEvent.id).desc()).limit(limit)
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
        labels = {
            f"{kind}:{cid}": label
            for cid, kind, label in (
                await session.exec(
                    select(
                        NotificationChannel.id, NotificationChannel.kind, NotificationChannel.label
                    ).where(NotificationChannel.user_id == user_id)
                )
            ).all()
        }
        deliveries = (
            await session.exec(
                select(Delivery)
                .where(col(Delivery.event_id).in_(list(rows)), Delivery.user_id == user_id)
                .order_by(col(Delivery.channel))
            )
        ).all()
        for d in deliveries:
            rows[d.event_id].deliveries.append(
                DeliveryView(
                    channel=d.channel.partition(":")[0],
                    label=labels.get(d.channel, ""),
                    status=d.status,
                    error=d.last_error,
                    in_digest=bool(d.digest_key),
                    resumed=d.resumed,
                )
            )
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
