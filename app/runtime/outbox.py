"""Writes a firing to the outbox: the event, its deliveries and the rule's new state, atomically.

The idempotency key is unique in the table, so recording the same firing twice
(a replay, a second runner) is a no-op rather than a second alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.alerts import CHANNEL_EMAIL, CHANNEL_IN_APP, AlertEvent, Delivery
from app.models.rules import RULE_TRIGGERED, AlertRule
from app.models.users import User
from engines.market import change_pct
from engines.rules.book import Fired

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """What the runner keeps per loaded rule to build an event without a query."""

    user_id: int
    symbol: str
    name: str
    name_ko: str
    name_en: str


def idempotency_key(fired: Fired) -> str:
    return f"price:{fired.rule_id}:{fired.fire_no}"


def channels_for(user: User, email_enabled: bool) -> list[str]:
    out = [CHANNEL_IN_APP]
    if email_enabled and user.email_alerts and user.email:
        out.append(CHANNEL_EMAIL)
    return out


async def record_firing(
    session: AsyncSession,
    fired: Fired,
    meta: RuleMeta,
    prev_close: int | None,
    email_enabled: bool,
) -> AlertEvent | None:
    """Returns the new event, or None when this firing was already recorded."""
    user = await session.get(User, meta.user_id)
    rule = await session.get(AlertRule, fired.rule_id)
    if user is None or rule is None or not user.is_active:
        return None
    payload: dict[str, Any] = {
        "symbol": fired.symbol,
        "name_ko": meta.name_ko,
        "name_en": meta.name_en,
        "rule_name": meta.name,
        "op": fired.op.value,
        "level": fired.level,
        "price": fired.price,
        "prev_price": fired.prev_price,
        "prev_close": prev_close,
        "change_pct": round(change_pct(fired.price, prev_close), 2) if prev_close else None,
        "fire_no": fired.fire_no,
    }
    event = AlertEvent(
        idempotency_key=idempotency_key(fired),
        rule_id=fired.rule_id,
        user_id=meta.user_id,
        symbol=fired.symbol,
        price=fired.price,
        payload=payload,
        fired_at=fired.ts,
    )
    session.add(event)
    try:
        await session.flush()
        assert event.id is not None
        for channel in channels_for(user, email_enabled):
            session.add(Delivery(event_id=event.id, user_id=meta.user_id, channel=channel))
        rule.fire_count = max(rule.fire_count, fired.fire_no)
        rule.last_fired_at = fired.ts
        if fired.finished:
            rule.status = RULE_TRIGGERED
        session.add(rule)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        log.info("firing %s already recorded", idempotency_key(fired))
        return None
    return event
