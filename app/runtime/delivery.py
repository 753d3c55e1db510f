"""Delivers the outbox: claims due deliveries, sends them, records the outcome.

A claim is a compare-and-set from ``pending`` to ``sending`` with a lease in
``next_attempt_at``; a worker that dies mid-send leaves a lease that expires,
and the delivery is picked up again. No row is ever deleted, so the user's
delivery log shows every outcome, including the reason for a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, update
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
from app.runtime.messages import DigestItem, RenderedAlert, render_alert, render_digest
from app.runtime.pacing import ChannelKey, ChannelPacer, parse_intervals
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
SCAN_KEYS = 200  # channels looked at per pass


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Pending and due, or claimed by a worker whose lease has run out."""
    return (
        col(Delivery.status).in_([DELIVERY_PENDING, DELIVERY_SENDING]),
        col(Delivery.next_attempt_at) <= now,
    )


def _hold(outcome: DeliveryResult | None) -> float:
    return (outcome.retry_after or 0.0) if isinstance(outcome, Retryable) else 0.0


def digest_key_for(ids: list[int]) -> str:
    """Stable for one set of rows, so a resumed digest keeps its key."""
    return hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()[:32]


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
        pacer: ChannelPacer | None = None,
    ) -> None:
        self.settings = settings
        self.notifiers = notifiers
        self.in_app_push = in_app_push
        self.wake = asyncio.Event()
        self._rng = rng or random.Random()
        # Injected so quiet hours and backoff can be tested without waiting them out.
        self.clock = clock
        self.pacer = pacer or ChannelPacer(parse_intervals(settings.delivery_intervals))
        self._gate = asyncio.Semaphore(max(1, settings.delivery_concurrency))
        self._next_due: float | None = None
        self.digests_sent = 0
        self.alerts_in_digests = 0
        self._stranded: set[int] = set()

    def backoff(self, attempts: int) -> float:
        """Exponential with full jitter, capped at an hour."""
        ceiling = min(3600.0, self.settings.delivery_backoff_base * (2 ** (attempts - 1)))
        return ceiling / 2 + self._rng.random() * ceiling / 2

    async def run(self) -> None:
        """Each channel is worked by its own task, so a slow or paced channel (a chat
        limited to one message a second) never holds up the others; a channel whose
        task is still busy is left out of the next scan."""
        await self.recover()
        active: dict[ChannelKey, asyncio.Task[int]] = {}

        def finished(key: ChannelKey, task: asyncio.Task[int]) -> None:
            active.pop(key, None)
            self.wake.set()  # it may have left more behind, or freed a slot

        try:
            while True:
                try:
                    if self._stranded:
                        await self._release_stranded()
                    ready, now = await self._scan(skip=set(active))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivery scan failed; retrying")
                    ready, now = [], self.clock()
                for key in ready:
                    task = asyncio.create_task(self._gated(key, now), name=f"deliver-{key[1]}")
                    active[key] = task
                    task.add_done_callback(lambda t, key=key: finished(key, t))
                timeout = self.settings.delivery_poll_interval
                if self._next_due is not None:  # a paced channel frees up sooner
                    timeout = max(0.01, min(timeout, self._next_due))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
                self.wake.clear()
        finally:
            for task in list(active.values()):
                task.cancel()
            if active:
                await asyncio.gather(*active.values(), return_exceptions=True)

    async def run_once(self) -> int:
        """One pass, waited to its end: every channel with due deliveries is either
        sent to now (all its due alerts, as one digest if there are several) or, while
        its pacing interval runs, told to wait; returns how many were handled."""
        ready, now = await self._scan(skip=set())
        counts = await asyncio.gather(*(self._gated(key, now) for key in ready))
        return sum(counts)

    async def _scan(self, skip: set[ChannelKey]) -> tuple[list[ChannelKey], datetime]:
        now = self.clock()
        self._next_due = None
        async with db.session() as s:
            keys = (
                await s.exec(
                    select(Delivery.user_id, Delivery.channel)
                    .where(*_due(now))
                    .group_by(col(Delivery.user_id), col(Delivery.channel))
                    .order_by(func.min(col(Delivery.next_attempt_at)))
                    .limit(SCAN_KEYS)
                )
            ).all()
        ready: list[ChannelKey] = []
        for user_id, channel in keys:
            key: ChannelKey = (user_id, channel)
            if key in skip:
                continue
            wait = self.pacer.wait(key)
            if wait > 0:
                await self._postpone(key, now, wait)
                self._next_due = wait if self._next_due is None else min(self._next_due, wait)
            else:
                ready.append(key)
        return ready, now

    async def _postpone(self, key: ChannelKey, now: datetime, wait: float) -> None:
        """Not an attempt: the rows simply become due when the channel is free, so the
        scan does not pick them up again and again meanwhile."""
        async with db.session() as s:
            await s.exec(
                update(Delivery)
                .where(
                    col(Delivery.user_id) == key[0],
                    col(Delivery.channel) == key[1],
                    *_due(now),
                )
                .values(next_attempt_at=now + timedelta(seconds=wait))
            )
            await s.commit()

    async def _gated(self, key: ChannelKey, now: datetime) -> int:
        async with self._gate:
            try:
                return await self._deliver_key(key, now)
            except asyncio.CancelledError:
                raise
            except Exception:  # one channel's failure must not stop the others
                log.exception("delivering to %s failed; its claimed rows are retried", key[1])
                return 0

    async def _claim(self, key: ChannelKey, now: datetime, limit: int) -> list[tuple[int, int]]:
        """Compare-and-set up to ``limit`` due rows of one channel to ``sending`` with a
        lease; returns (id, attempts). A row whose lease had expired was in flight when
        a worker died: it is flagged ``resumed``, since it may have arrived already."""
        async with db.session() as s:
            picked = (
                select(Delivery.id)
                .where(
                    col(Delivery.user_id) == key[0],
                    col(Delivery.channel) == key[1],
                    *_due(now),
                )
                .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
                .limit(limit)
            )
            result = await s.exec(
                update(Delivery)
                .where(col(Delivery.id).in_(picked.scalar_subquery()), *_due(now))
                .values(
                    status=DELIVERY_SENDING,
                    attempts=Delivery.attempts + 1,
                    next_attempt_at=now + LEASE,
                    resumed=or_(col(Delivery.resumed), col(Delivery.status) == DELIVERY_SENDING),
                )
                .returning(col(Delivery.id), col(Delivery.attempts))
            )
            claimed = sorted((int(i), int(a)) for i, a in result.all())
            if len(claimed) > 1 and key[1] != CHANNEL_IN_APP:
                ids = [i for i, _ in claimed]
                await s.exec(
                    update(Delivery)
                    .where(col(Delivery.id).in_(ids))
                    .values(digest_key=digest_key_for(ids))
                )
            await s.commit()
        return claimed

    async def _deliver_key(self, key: ChannelKey, now: datetime) -> int:
        """A paced channel gets everything due in one go (a digest if several); an
        unpaced one (in-app, or a kind set to 0) gets its alerts one by one, each
        claimed just before it is sent so a crash leaves at most one in doubt."""
        in_app = key[1] == CHANNEL_IN_APP
        if not in_app and self.pacer.interval(key[1]) > 0:
            claimed = await self._claim(key, now, self.settings.delivery_digest_max)
            if not claimed:
                return 0
            with self._strand_on_error(claimed):
                if len(claimed) == 1:
                    outcome = await self._deliver(claimed[0][0])
                else:
                    outcome = await self._deliver_digest(key, claimed)
            self.pacer.sent(key, _hold(outcome))
            return len(claimed)
        handled = 0
        while handled < BATCH:
            claimed = await self._claim(key, now, 1)
            if not claimed:
                break
            with self._strand_on_error(claimed):
                outcome = await self._deliver(claimed[0][0])
            handled += 1
            if isinstance(outcome, Retryable):  # the service pushed back: stop for now
                self.pacer.sent(key, _hold(outcome))
                break
        return handled

    @contextlib.contextmanager
    def _strand_on_error(self, claimed: list[tuple[int, int]]) -> Iterator[None]:
        """A send that failed with an exception (the database went away between the
        claim and the outcome) leaves its rows ``sending`` under a five-minute lease;
        they are handed back as soon as the database answers again (``_release``)."""
        try:
            yield
        except asyncio.CancelledError:
            raise  # a stopping runner: the successor's ``recover`` takes them
        except Exception:
            self._stranded.update(i for i, _ in claimed)
            raise

    async def _release_stranded(self) -> None:
        """Due again now, if still ``sending``: only rows this worker claimed and whose
        send it knows failed, so no claim in flight elsewhere is touched."""
        ids = sorted(self._stranded)
        async with db.session() as s:
            result = await s.exec(
                update(Delivery)
                .where(col(Delivery.id).in_(ids), col(Delivery.status) == DELIVERY_SENDING)
                .values(next_attempt_at=self.clock())
            )
            await s.commit()
        self._stranded.difference_update(ids)
        log.warning("released %d deliveries whose send failed mid-way", result.rowcount or 0)

    async def recover(self) -> int:
        """Deliveries left ``sending`` by a worker that died become due at once rather
        than after their lease. Safe because one runner delivers (the leader); the
        claim then flags them ``resumed``."""
        now = self.clock()
        async with db.session() as s:
            result = await s.exec(
                update(Delivery)
                .where(col(Delivery.status) == DELIVERY_SENDING)
                .values(next_attempt_at=now)
            )
            await s.commit()
        if result.rowcount:
            log.warning("%d deliveries were in flight when a worker stopped", result.rowcount)
        return int(result.rowcount or 0)

    async def _deliver(self, delivery_id: int) -> DeliveryResult | None:
        async with db.session() as s:
            delivery = await s.get(Delivery, delivery_id)
            if delivery is None:
                return None
            event = await s.get(AlertEvent, delivery.event_id)
            user = await s.get(User, delivery.user_id)
            if event is None or user is None:
                return None
            rendered = render_alert(event.payload, user.language, self.settings.app_base_url)
            if delivery.channel == CHANNEL_IN_APP:
                outcome: DeliveryResult | None = await self._push_in_app(
                    user.id or 0, event, rendered.title
                )
            else:
                outcome = await self._send(
                    s, delivery, user, rendered, f"{event.idempotency_key}:{delivery.channel}"
                )
            if outcome is None:  # switched off or gone since the alert fired
                delivery.status = DELIVERY_SKIPPED
                delivery.last_error = "channel disabled"
                s.add(delivery)
                await s.commit()
                return None
            self._apply(delivery, outcome)
            s.add(delivery)
            await s.commit()
            log.info("delivery %s (%s) -> %s", delivery.id, delivery.channel, delivery.status)
            return outcome

    async def _deliver_digest(
        self, key: ChannelKey, claimed: list[tuple[int, int]]
    ) -> DeliveryResult | None:
        """Several due alerts for one channel go out as one message; each row keeps its
        own outcome, and they all share the digest key the message links to."""
        ids = [i for i, _ in claimed]
        async with db.session() as s:
            user = await s.get(User, key[0])
            rows = (
                await s.exec(
                    select(Delivery, AlertEvent)
                    .join(AlertEvent, col(AlertEvent.id) == col(Delivery.event_id))
                    .where(col(Delivery.id).in_(ids))
                )
            ).all()
            if user is None or not rows:
                return None
            digest = rows[0][0].digest_key
            rendered = render_digest(
                [DigestItem(e.rule_id, e.payload, e.fired_at) for _, e in rows],
                user.language,
                self.settings.app_base_url,
                digest,
                user.timezone,
            )
            outcome = await self._send(s, rows[0][0], user, rendered, f"digest:{digest}")
            for delivery, _ in rows:
                if outcome is None:
                    delivery.status, delivery.last_error = DELIVERY_SKIPPED, "channel disabled"
                else:
                    self._apply(delivery, outcome)
                s.add(delivery)
            await s.commit()
        if isinstance(outcome, Delivered):
            self.digests_sent += 1
            self.alerts_in_digests += len(rows)
        log.info("digest of %d deliveries (%s) -> %s", len(rows), key[1], type(outcome).__name__)
        return outcome

    async def _send(
        self,
        s: AsyncSession,
        delivery: Delivery,
        user: User,
        rendered: RenderedAlert,
        idempotency_key: str,
    ) -> DeliveryResult | None:
        if delivery.channel == CHANNEL_EMAIL and CHANNEL_EMAIL in self.notifiers:
            return await self.notifiers[CHANNEL_EMAIL].send(
                Message(
                    recipient=user.email,
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    idempotency_key=idempotency_key,
                )
            )
        if ":" in delivery.channel:
            return await self._to_user_channel(s, delivery, rendered, idempotency_key)
        return PermanentFailure(f"channel {delivery.channel} is not configured")

    async def _to_user_channel(
        self, s: AsyncSession, delivery: Delivery, rendered: RenderedAlert, idempotency_key: str
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
                idempotency_key=idempotency_key,
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
