"""Delivers the outbox: claims due deliveries, sends them, records the outcome.

A claim is a compare-and-set from ``pending`` to ``sending`` with a lease in
``next_attempt_at``; a worker that dies mid-send leaves a lease that expires,
and the delivery is picked up again. No row is ever deleted, so the user's
delivery log shows every outcome, including the reason for a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.config import Settings
from app.models.alerts import (
    CHANNEL_EMAIL,
    CHANNEL_IN_APP,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    DELIVERY_SENT,
    DELIVERY_SKIPPED,
    AlertEvent,
    Delivery,
)
from app.models.channels import NotificationChannel
from app.models.common import utcnow
from app.models.users import User
from app.runtime.messages import RenderedAlert, render_alert
from app.services import channels
from notifiers.base import (
    Delivered,
    DeliveryResult,
    Message,
    Notifier,
    PermanentFailure,
    Retryable,
)

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
BATCH = 50

InAppPush = Callable[[int, dict], Awaitable[None]]
"""(user_id, alert view) -> push to that user's open pages."""


class DeliveryWorker:
    def __init__(
        self,
        settings: Settings,
        notifiers: dict[str, Notifier],
        in_app_push: InAppPush | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.notifiers = notifiers
        self.in_app_push = in_app_push
        self.wake = asyncio.Event()
        self._rng = rng or random.Random()
        # Injected so quiet hours and backoff can be tested without waiting them out.
        self.clock = clock

    def backoff(self, attempts: int) -> float:
        """Exponential with full jitter, capped at an hour."""
        ceiling = min(3600.0, self.settings.delivery_backoff_base * (2 ** (attempts - 1)))
        return ceiling / 2 + self._rng.random() * ceiling / 2

    async def run(self) -> None:
        while True:
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery pass failed; retrying")
                handled = 0
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.delivery_poll_interval)
            self.wake.clear()

    async def _claim(self) -> list[int]:
        now = self.clock()
        async with db.session() as s:
            due = (
                await s.exec(
                    select(Delivery.id)
                    .where(
                        or_(
                            col(Delivery.status) == DELIVERY_PENDING,
                            col(Delivery.status) == DELIVERY_SENDING,  # expired lease
                        ),
                        col(Delivery.next_attempt_at) <= now,
                    )
                    .order_by(col(Delivery.next_attempt_at))
                    .limit(BATCH)
                )
            ).all()
            claimed: list[int] = []
            for delivery_id in due:
                result = await s.exec(
                    update(Delivery)
                    .where(
                        col(Delivery.id) == delivery_id,
                        col(Delivery.status).in_([DELIVERY_PENDING, DELIVERY_SENDING]),
                        col(Delivery.next_attempt_at) <= now,
                    )
                    .values(
                        status=DELIVERY_SENDING,
                        attempts=Delivery.attempts + 1,
                        next_attempt_at=now + LEASE,
                    )
                )
                if result.rowcount == 1:
                    claimed.append(delivery_id)
            await s.commit()
        return claimed

    async def run_once(self) -> int:
        claimed = await self._claim()
        for delivery_id in claimed:
            await self._deliver(delivery_id)
        return len(claimed)

    async def _deliver(self, delivery_id: int) -> None:
        async with db.session() as s:
            delivery = await s.get(Delivery, delivery_id)
            if delivery is None:
                return
            event = await s.get(AlertEvent, delivery.event_id)
            user = await s.get(User, delivery.user_id)
            if event is None or user is None:
                return
            rendered = render_alert(event.payload, user.language, self.settings.app_base_url)
            if delivery.channel == CHANNEL_IN_APP:
                outcome = await self._push_in_app(user.id or 0, event, rendered.title)
            elif delivery.channel == CHANNEL_EMAIL and CHANNEL_EMAIL in self.notifiers:
                outcome = await self.notifiers[CHANNEL_EMAIL].send(
                    Message(
                        recipient=user.email,
                        subject=rendered.subject,
                        text=rendered.text,
                        html=rendered.html,
                        idempotency_key=f"{event.idempotency_key}:{delivery.channel}",
                    )
                )
            elif ":" in delivery.channel:
                outcome = await self._to_user_channel(s, delivery, event, rendered)
                if outcome is None:  # switched off or gone since the alert fired
                    delivery.status = DELIVERY_SKIPPED
                    delivery.last_error = "channel disabled"
                    s.add(delivery)
                    await s.commit()
                    return
            else:
                outcome = PermanentFailure(f"channel {delivery.channel} is not configured")
            self._apply(delivery, outcome)
            s.add(delivery)
            await s.commit()
            log.info("delivery %s (%s) -> %s", delivery.id, delivery.channel, delivery.status)

    async def _to_user_channel(
        self, s: AsyncSession, delivery: Delivery, event: AlertEvent, rendered: RenderedAlert
    ) -> DeliveryResult | None:
        """Send to one of the user's own channels; the address is decrypted only here."""
        _, _, raw_id = delivery.channel.partition(":")
        row = await s.get(NotificationChannel, int(raw_id)) if raw_id.isdigit() else None
        if row is None or row.user_id != delivery.user_id:
            return PermanentFailure("the channel was deleted")
        if not row.enabled or row.gone_at is not None:
            return None
        return await channels.send(
            s,
            row,
            self.notifiers,
            Message(
                recipient="",
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                idempotency_key=f"{event.idempotency_key}:{delivery.channel}",
            ),
        )

    async def _push_in_app(self, user_id: int, event: AlertEvent, title: str) -> Delivered:
        """In-app is delivered once it is in the DB; the push only makes it instant."""
        if self.in_app_push is not None:
            try:
                await self.in_app_push(
                    user_id,
                    {
                        "id": event.id,
                        "title": title,
                        "symbol": event.symbol,
                        "price": f"{event.price:,}",
                    },
                )
            except Exception:
                log.exception("in-app push failed; the alert stays in history")
        return Delivered()

    def _apply(self, delivery: Delivery, outcome: Delivered | Retryable | PermanentFailure) -> None:
        now = self.clock()
        if isinstance(outcome, Delivered):
            delivery.status = DELIVERY_SENT
            delivery.sent_at = now
            delivery.last_error = ""
        elif (
            isinstance(outcome, Retryable)
            and delivery.attempts < self.settings.delivery_max_attempts
        ):
            delay = max(outcome.retry_after or 0.0, self.backoff(delivery.attempts))
            delivery.status = DELIVERY_PENDING
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            delivery.last_error = outcome.reason[:500]
        else:
            delivery.status = DELIVERY_DEAD
            delivery.last_error = outcome.reason[:500]  # type: ignore[union-attr]
