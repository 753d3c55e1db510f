"""Writes a firing to the outbox: the event, its deliveries and the rule's new state, atomically.

The idempotency key is unique in the table, so recording the same firing twice
(a replay, a second runner) is a no-op rather than a second alert. The runner
writes all firings of one tick together (``record_tick``), in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.alerts import (
    CHANNEL_EMAIL,
    CHANNEL_IN_APP,
    DELIVERY_SKIPPED,
    AlertEvent,
    Delivery,
)
from app.models.channels import NotificationChannel
from app.models.common import utcnow
from app.models.rules import RULE_TRIGGERED, AlertRule
from app.models.users import User
from app.runtime.condition_text import describe, render_text
from engines.market import change_pct
from engines.rules.book import Fired
from engines.rules.conditions import ConditionRuleSpec, QuietHours
from engines.rules.evaluator import ConditionFired

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """What the runner keeps per loaded rule to build an event without a query."""

    user_id: int
    symbol: str
    name: str
    name_ko: str
    name_en: str
    revision: str = ""
    """Which edit of the rule fired (its ``updated_at`` in ms). An edit restarts the
    fire count, so the key needs it to stay unique: ``cond:<rule>:<revision>:<n>``."""


@dataclass(frozen=True, slots=True)
class PriceFiring:
    """A price rule's firing as the runner hands it over for recording."""

    fired: Fired
    meta: RuleMeta
    prev_close: int | None


@dataclass(frozen=True, slots=True)
class ConditionFiring:
    """A condition rule's firing as the runner hands it over for recording."""

    fired: ConditionFired
    meta: RuleMeta
    spec: ConditionRuleSpec


TickFiring = PriceFiring | ConditionFiring
"""One firing of a tick, whichever kind of rule; ``record_tick`` writes a list of them."""

TICK_WRITE_ATTEMPTS = 3
"""How often ``record_tick`` rewrites a tick whose batch met a concurrent duplicate."""


@dataclass(slots=True)
class _Entry:
    """Everything ``_stage`` writes for one firing, built inside the writing session."""

    rule: AlertRule
    user: User
    key: str
    payload: dict[str, Any]
    price: int
    fired_at: datetime
    fire_no: int
    finished: bool
    channels: list[str]
    quiet: QuietHours | None


def idempotency_key(fired: Fired) -> str:
    return f"price:{fired.rule_id}:{fired.fire_no}"


async def user_channel_targets(session: AsyncSession, user_id: int) -> list[str]:
    """The user's own enabled, verified, still-existing channels, one delivery each.

    They receive every alert: a channel is the user's standing choice, switched on
    and off on the channels page, while a rule's own channel list governs only the
    built-in in-app and e-mail ones.
    """
    rows = (
        await session.exec(
            select(NotificationChannel.id, NotificationChannel.kind).where(
                NotificationChannel.user_id == user_id,
                col(NotificationChannel.enabled).is_(True),
                col(NotificationChannel.verified).is_(True),
                col(NotificationChannel.gone_at).is_(None),
            )
        )
    ).all()
    return [channel_target(kind, channel_id) for channel_id, kind in rows]


def channel_target(kind: str, channel_id: int | None) -> str:
    return f"{kind}:{channel_id}"


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
    entry = await _price_entry(session, PriceFiring(fired, meta, prev_close), email_enabled)
    return None if entry is None else await _write_entry(session, entry)


async def _price_entry(
    session: AsyncSession, firing: PriceFiring, email_enabled: bool
) -> _Entry | None:
    """What a price firing writes; None when its user or rule is gone or inactive."""
    fired, meta, prev_close = firing.fired, firing.meta, firing.prev_close
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
    return _Entry(
        rule,
        user,
        key=idempotency_key(fired),
        payload=payload,
        price=fired.price,
        fired_at=fired.ts,
        fire_no=fired.fire_no,
        finished=fired.finished,
        channels=channels_for(user, email_enabled),
        quiet=None,
    )


def condition_key(fired: ConditionFired, revision: str) -> str:
    return f"cond:{fired.rule_id}:{revision}:{fired.fire_no}"


async def record_condition_firing(
    session: AsyncSession,
    fired: ConditionFired,
    meta: RuleMeta,
    spec: ConditionRuleSpec,
    email_enabled: bool,
) -> AlertEvent | None:
    """Like ``record_firing``; the text is rendered now, in the owner's language, so
    every channel and the history carry the same words and values."""
    entry = await _condition_entry(session, ConditionFiring(fired, meta, spec), email_enabled)
    return None if entry is None else await _write_entry(session, entry)


async def _condition_entry(
    session: AsyncSession, firing: ConditionFiring, email_enabled: bool
) -> _Entry | None:
    """What a condition firing writes; None when its user or rule is gone or inactive."""
    fired, meta, spec = firing.fired, firing.meta, firing.spec
    user = await session.get(User, meta.user_id)
    rule = await session.get(AlertRule, fired.rule_id)
    if user is None or rule is None or not user.is_active:
        return None
    change = round(change_pct(fired.price, fired.prev_close), 2) if fired.prev_close else None
    summaries = {lang: describe(spec, lang) for lang in ("ko", "en")}
    lang = user.language if user.language in summaries else "ko"
    text = render_text(
        template=spec.template,
        lang=lang,
        tz_name=user.timezone,
        symbol=fired.symbol,
        name=meta.name_en if lang == "en" else meta.name_ko,
        rule_name=meta.name,
        summary=summaries[lang],
        price=fired.price,
        change_pct=change,
        values=fired.values,
        fired_at=fired.ts,
    )
    payload: dict[str, Any] = {
        "kind": "condition",
        "symbol": fired.symbol,
        "name_ko": meta.name_ko,
        "name_en": meta.name_en,
        "rule_name": meta.name,
        "summary_ko": summaries["ko"],
        "summary_en": summaries["en"],
        "timeframe": spec.timeframe.value,
        "price": fired.price,
        "prev_close": fired.prev_close,
        "change_pct": change,
        "values": fired.values,
        "on_close": fired.on_close,
        "fire_no": fired.fire_no,
        "lang": lang,
        "text": text,
    }
    wanted = set(spec.channels)
    channels = [c for c in channels_for(user, email_enabled) if c in wanted or c == CHANNEL_IN_APP]
    return _Entry(
        rule,
        user,
        key=condition_key(fired, meta.revision),
        payload=payload,
        price=fired.price,
        fired_at=fired.ts,
        fire_no=fired.fire_no,
        finished=fired.finished,
        channels=channels,
        quiet=spec.quiet_hours,
    )


async def _stage(session: AsyncSession, entry: _Entry) -> AlertEvent:
    """Add one firing's event, deliveries and rule state to the session, uncommitted,
    so one firing alone and all firings of a tick share the same code."""
    rule, user, quiet, fired_at = entry.rule, entry.user, entry.quiet, entry.fired_at
    assert rule.id is not None and user.id is not None
    channels = entry.channels + await user_channel_targets(session, user.id)
    event = AlertEvent(
        idempotency_key=entry.key,
        rule_id=rule.id,
        user_id=user.id,
        symbol=rule.symbol,
        price=entry.price,
        payload=entry.payload,
        fired_at=fired_at,
    )
    session.add(event)
    await session.flush()
    assert event.id is not None
    held = quiet_until(quiet, user.timezone, fired_at) if quiet else None
    for channel in channels:
        # Due from the firing (a broker clock a little ahead must not delay it).
        due = min(fired_at, utcnow())
        delivery = Delivery(
            event_id=event.id, user_id=user.id, channel=channel, next_attempt_at=due
        )
        if held is not None and channel != CHANNEL_IN_APP:
            # The in-app history is silent; only channels that buzz a phone wait.
            if quiet is not None and quiet.action == "drop":
                delivery.status = DELIVERY_SKIPPED
                delivery.last_error = "quiet hours"
            else:
                delivery.next_attempt_at = held
        session.add(delivery)
    rule.fire_count = max(rule.fire_count, entry.fire_no)
    rule.last_fired_at = fired_at
    if entry.finished:
        rule.status = RULE_TRIGGERED
    session.add(rule)
    return event


async def _write(
    session: AsyncSession,
    rule: AlertRule,
    user: User,
    *,
    key: str,
    payload: dict[str, Any],
    price: int,
    fired_at: datetime,
    fire_no: int,
    finished: bool,
    channels: list[str],
    quiet: QuietHours | None,
) -> AlertEvent | None:
    """One firing in its own transaction (the strategy desk's signal alerts use it)."""
    entry = _Entry(
        rule,
        user,
        key=key,
        payload=payload,
        price=price,
        fired_at=fired_at,
        fire_no=fire_no,
        finished=finished,
        channels=channels,
        quiet=quiet,
    )
    return await _write_entry(session, entry)


async def _write_entry(session: AsyncSession, entry: _Entry) -> AlertEvent | None:
    """One firing in its own transaction; a duplicate key means it is recorded already."""
    try:
        event = await _stage(session, entry)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        log.info("firing %s already recorded", entry.key)
        return None
    return event


async def _entry(session: AsyncSession, firing: TickFiring, email_enabled: bool) -> _Entry | None:
    if isinstance(firing, PriceFiring):
        return await _price_entry(session, firing, email_enabled)
    return await _condition_entry(session, firing, email_enabled)


async def _prepared(
    session: AsyncSession, firing: TickFiring, email_enabled: bool
) -> _Entry | None:
    """A firing that cannot even be built (a template that will not render) is
    skipped and logged, as it was when each firing had its own transaction: one bad
    rule must not keep the other rules of the tick out of the outbox. Database
    errors are not skipped; they fail the whole tick."""
    try:
        return await _entry(session, firing, email_enabled)
    except SQLAlchemyError:
        raise
    except Exception:
        log.exception("firing of rule %s cannot be written; skipped", firing.fired.rule_id)
        return None


async def record_tick(
    session: AsyncSession,
    firings: Sequence[TickFiring],
    email_enabled: bool,
    arming: Mapping[int, bool] | None = None,
    at: datetime | None = None,
) -> list[AlertEvent | None]:
    """Record every firing of one tick (price and condition) in ONE transaction.

    A tick's outcome is then all-or-nothing: a runner that dies while recording
    leaves either the whole tick in the outbox or none of it, so a successor can
    resume after the last tick with a trace and lose or double nothing. Returns one
    item per firing, in order: the new event, or None when it was recorded already
    (same idempotency key) or its user or rule is gone.

    Duplicates are found by key before writing rather than by catching the unique
    violation per firing: that would need a savepoint per firing, and SQLite's
    driver turns the release of an outermost savepoint into a commit. Should another
    writer insert one of the keys meanwhile, the whole batch is rolled back and
    re-read (``TICK_WRITE_ATTEMPTS`` times), never committed in part.

    ``arming`` holds the rules whose armed state this tick (at ``at``) changed; it is
    stored in the same transaction, so a successor restores exactly the state that
    goes with the outbox it resumes from.
    """
    if not firings and not arming:
        return []
    for attempt in range(1, TICK_WRITE_ATTEMPTS + 1):
        entries = [await _prepared(session, f, email_enabled) for f in firings]
        keys = [e.key for e in entries if e is not None]
        present: set[str] = set()
        if keys:
            stmt = select(AlertEvent.idempotency_key).where(
                col(AlertEvent.idempotency_key).in_(keys)
            )
            present = set((await session.exec(stmt)).all())
        events: list[AlertEvent | None] = []
        try:
            for entry in entries:
                if entry is None:
                    events.append(None)
                elif entry.key in present:
                    log.info("firing %s already recorded", entry.key)
                    events.append(None)
                else:
                    events.append(await _stage(session, entry))
            if arming:
                await _store_arming(session, arming, at)
            await session.commit()
        except IntegrityError:
            await session.rollback()
            log.warning(
                "a firing of this tick was recorded concurrently (attempt %d of %d); "
                "writing the tick again",
                attempt,
                TICK_WRITE_ATTEMPTS,
            )
            continue
        return events
    raise RuntimeError(f"could not record a tick of {len(firings)} firings without a conflict")


async def _store_arming(
    session: AsyncSession, arming: Mapping[int, bool], at: datetime | None
) -> None:
    """Two UPDATEs at most, whatever the count; ``updated_at`` is left alone, since it
    marks user edits, which the runner reloads."""
    for state in (True, False):
        ids = [rid for rid, armed in arming.items() if armed is state]
        if ids:
            await session.exec(
                update(AlertRule).where(col(AlertRule.id).in_(ids)).values(armed=state, armed_at=at)
            )


def quiet_until(quiet: QuietHours, tz_name: str, at: datetime) -> datetime | None:
    """When the quiet window holding ``at`` ends (UTC), or None if ``at`` is outside it.

    Evaluated in the user's time zone, so 22:00-07:00 means their night even when the
    server runs in UTC; a window with start > end wraps midnight.
    """
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Asia/Seoul")
    local = at.astimezone(zone)
    now = local.time()
    start, end = quiet.start, quiet.end
    inside = (start <= now < end) if start < end else (now >= start or now < end)
    if not inside:
        return None
    end_day = local.date()
    if start > end and now >= start:
        end_day += timedelta(days=1)
    ends = datetime.combine(end_day, end, tzinfo=zone)
    return ends.astimezone(UTC)
