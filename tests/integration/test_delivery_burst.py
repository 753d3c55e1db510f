"""A burst of 10,000 alerts for one Telegram chat, against a fake that enforces
Telegram's own per-chat limit (one message a second) and answers 429 beyond it.

The worker paces the chat, so the fake never has to refuse anything, and what
queues up meanwhile goes out as digests. Nothing is dropped in silence: every
delivery row ends ``sent``, every digest names how many alerts it stands for, and
the counts in the messages add up to exactly 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from app import db
from app.models.alerts import AlertEvent, Delivery
from app.models.channels import NotificationChannel
from app.models.common import utcnow
from app.runtime.delivery import DeliveryWorker
from app.services import channels
from app.services import rules as rules_service
from notifiers.telegram import TelegramNotifier
from tests.integration.helpers import make_user, seed_symbols, settings
from tests.telegram_fake import TOKEN, TelegramFake, max_in_window

pytestmark = pytest.mark.usefixtures("database")

ALERTS = 10_000
BATCH = 250
RULES = 8
TRICKLE = 3  # the first batches hold one alert each
DIGEST_COUNT = re.compile(r"알림 ([\d,]+)건 \(요약\)")
DIGEST_LINK = re.compile(r"/history\?digest=([0-9a-f]{32})")


async def _enqueue(user_id: int, channel: str, rule_ids: list[int], period: float) -> None:
    """``ALERTS`` events: a few alone, slower than the chat's limit (each should go
    out as itself), then the rest in batches over ``period`` seconds, as a market move
    that trips a user's rules again and again would write them."""
    sizes = [1] * TRICKLE
    rest = ALERTS - TRICKLE
    sizes += [BATCH] * (rest // BATCH) + ([rest % BATCH] if rest % BATCH else [])
    n = 0
    for b, size in enumerate(sizes):
        now = utcnow()
        async with db.session() as s:
            events = []
            for _ in range(size):
                price = 70_000 + n % 500
                events.append(
                    AlertEvent(
                        idempotency_key=f"burst:{n}",
                        rule_id=rule_ids[n % RULES],
                        user_id=user_id,
                        symbol="005930",
                        price=price,
                        payload={
                            "symbol": "005930",
                            "name_ko": "삼성전자",
                            "name_en": "Samsung Electronics",
                            "rule_name": "",
                            "op": "above",
                            "level": 70_000,
                            "price": price,
                        },
                        fired_at=now,
                    )
                )
                n += 1
            s.add_all(events)
            await s.flush()
            s.add_all(
                Delivery(event_id=e.id or 0, user_id=user_id, channel=channel) for e in events
            )
            await s.commit()
        await asyncio.sleep(1.5 if b < TRICKLE else period * BATCH / rest)
    assert n == ALERTS


async def test_10000_alerts_for_one_chat_respect_its_limit_and_all_arrive(report_figures):
    await seed_symbols()
    user = await make_user("burst@example.com")
    fake = TelegramFake(per_chat_limit=1, per_chat_window=1.0)
    server = fake.serve()
    notifier = TelegramNotifier(TOKEN, api_base=server.base_url)
    try:
        async with db.session() as s:
            row = await channels.add_telegram_chat(s, user.id, "424242", "phone")
            ch = await s.get(NotificationChannel, row.id)
            ch.verified = True
            s.add(ch)
            await s.commit()
            rule_ids = []
            for n in range(RULES):
                rule = await rules_service.create_price_rule(
                    s, user.id, symbol_query="005930", op="above", level=str(60_000 + n * 100)
                )
                rule_ids.append(rule.id)
        target = f"telegram:{row.id}"
        cfg = settings(delivery_intervals="telegram=1", delivery_digest_max=1000)
        worker = DeliveryWorker(cfg, {"telegram": notifier})
        started = time.monotonic()
        task = asyncio.create_task(worker.run())
        try:
            await _enqueue(user.id, target, rule_ids, period=5.0)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                async with db.session() as s:
                    open_ = (
                        await s.exec(
                            select(func.count())
                            .select_from(Delivery)
                            .where(col(Delivery.status).in_(["pending", "sending"]))
                        )
                    ).one()
                if open_ == 0:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        async with db.session() as s:
            rows = (await s.exec(select(Delivery))).all()
        statuses = {d.status for d in rows}
        assert len(rows) == ALERTS and statuses == {"sent"}, statuses

        # The chat's limit held at the server: no 429 at all, at most 1 in any second.
        sends = fake.send_arrivals("424242")
        assert fake.rejected_429 == 0
        assert max_in_window(sends, 1.0) == 1
        assert len(fake.messages) == len(sends)

        # Every alert is accounted for by exactly one message.
        by_digest: dict[str, int] = {}
        for d in rows:
            if d.digest_key:
                by_digest[d.digest_key] = by_digest.get(d.digest_key, 0) + 1
        singles = digests = covered = 0
        seen_keys: list[str] = []
        for m in fake.messages:
            count = DIGEST_COUNT.search(m.visible)
            if count is None:
                singles += 1
                covered += 1
                continue
            digests += 1
            n = int(count.group(1).replace(",", ""))
            key = DIGEST_LINK.search(m.visible)
            assert key is not None, m.visible
            seen_keys.append(key.group(1))
            assert by_digest[key.group(1)] == n  # the message's count is the rows' count
            covered += n
        assert covered == ALERTS
        assert len(seen_keys) == len(set(seen_keys)) == len(by_digest)
        assert singles == sum(1 for d in rows if not d.digest_key)
        assert digests >= 2 and singles >= 1
        # Pacing is what bounds the message count: about one a second while it lasted.
        assert len(fake.messages) <= elapsed + 2
        report_figures(
            alerts=ALERTS,
            messages=len(fake.messages),
            single_alerts=singles,
            digests=digests,
            alerts_in_digests=covered - singles,
            largest_digest=max(by_digest.values()),
            max_per_1s_window=max_in_window(sends, 1.0),
            rejected_429=fake.rejected_429,
            seconds=round(elapsed, 1),
        )
    finally:
        await notifier.aclose()
        server.stop()


async def test_a_429_from_telegram_holds_the_chat_and_the_backlog_becomes_one_digest():
    """The server, not our pacing, says stop (another bot shares the limit): the worker
    waits its retry_after for that chat, and the alerts that queued meanwhile arrive
    as one digest instead of a storm of retries."""
    await seed_symbols()
    user = await make_user("held@example.com")
    fake = TelegramFake(force_429=1, retry_after=2)
    server = fake.serve()
    notifier = TelegramNotifier(TOKEN, api_base=server.base_url, max_wait=0.1)
    try:
        async with db.session() as s:
            row = await channels.add_telegram_chat(s, user.id, "515151", "")
            ch = await s.get(NotificationChannel, row.id)
            ch.verified = True
            s.add(ch)
            await s.commit()
            rule = await rules_service.create_price_rule(
                s, user.id, symbol_query="005930", op="above", level="70000"
            )
            now = utcnow()
            for i in range(30):
                event = AlertEvent(
                    idempotency_key=f"held:{i}",
                    rule_id=rule.id,
                    user_id=user.id,
                    symbol="005930",
                    price=70_000 + i,
                    payload={"symbol": "005930", "op": "above", "level": 70_000, "price": 70_000},
                    fired_at=now + timedelta(milliseconds=i),
                )
                s.add(event)
                await s.flush()
                s.add(
                    Delivery(
                        event_id=event.id,
                        user_id=user.id,
                        channel=f"telegram:{row.id}",
                        next_attempt_at=now + timedelta(seconds=0 if i == 0 else 1),
                    )
                )
            await s.commit()
        worker = DeliveryWorker(settings(delivery_intervals="telegram=0.2"), {"telegram": notifier})
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(100):
                async with db.session() as s:
                    sent = (await s.exec(select(Delivery).where(Delivery.status == "sent"))).all()
                if len(sent) == 30:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert len(sent) == 30
        arrivals = fake.send_arrivals("515151")
        statuses = [a.status for a in fake.arrivals if a.method == "sendMessage"]
        assert statuses == [429, 200], statuses  # the 429, then one digest of all 30
        assert arrivals[1] - arrivals[0] >= 2.0  # retry_after was honoured
        assert "알림 30건" in fake.messages[0].visible
        assert {d.digest_key for d in sent} != {""} and len({d.digest_key for d in sent}) == 1
    finally:
        await notifier.aclose()
        server.stop()
