"""The daily summary e-mail: the day's alerts, failed deliveries and the paper portfolio.

**When.** The job runs every few minutes (``INTERVAL``) and sends to each opted-in
user whose *local* time has passed ``DAILY_DIGEST_TIME`` (16:10 by default, after the
KRX close and the closing auction) and who has no finished row for that local day. A
single run at a fixed KST time would be simpler, but it would reach a user in New York
at 02:10; polling costs one query over opted-in users every few minutes, and it also
gives failed sends their retry without a second mechanism.

**Which period.** Day D covers ``[D-1 16:10, D 16:10)`` in the user's time zone, not
the calendar day: an alert that fires at 17:00 (after-hours trading) would otherwise
belong to no digest, since D's digest has gone out by then. So every alert is in
exactly one digest, and a retry of D's digest at 16:25 reports the same alerts.

**Whether.** A digest goes out only when there is something to say: at least one alert
in the period, or a paper account that holds positions or traded in the period. An
empty day is recorded as ``skipped`` (``nothing to report``) and sends nothing: a mail
saying "nothing happened" every evening teaches people to ignore the real ones.

**At most once.** ``daily_digests`` is unique on ``(user_id, day)``, so two runners
(several web workers each start the scheduler) insert one row between them. Sending is
claimed by a compare-and-set from ``pending`` to ``sending``, the same lease pattern as
``app.runtime.delivery``. The table has no lease column, so while a row is ``sending``
its ``sent_at`` holds the lease's end; once ``sent`` it is the time of sending. A row
committed as ``sent`` is never sent again; a worker that dies mid-send leaves a
``sending`` row whose lease expires, and the next run sends it again, with the same
``X-Tickwatch-Key`` header, so a mail that did leave before the crash is recognisable
as a resend.

**Failures.** A retryable one (SMTP down) puts the row back to ``pending`` with the
reason, for the next run; a permanent one (recipient refused), or running out of
``DELIVERY_MAX_ATTEMPTS``, makes it ``dead`` with the reason. Rows still unfinished a
day later are marked dead too: yesterday's summary is not worth sending tomorrow.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.config import Settings
from app.i18n import catalog, normalize_language, translate
from app.models.alerts import (
    CHANNEL_EMAIL,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    DELIVERY_SENT,
    DELIVERY_SKIPPED,
    AlertEvent,
    DailyDigest,
    Delivery,
)
from app.models.common import utcnow
from app.models.market import Symbol
from app.models.paper import PaperAccount, PaperFillRow, PaperPosition
from app.models.users import User
from app.runtime.messages import symbol_name, won
from app.runtime.scheduler import Job
from app.services import paper_accounts
from brokers.base import BrokerError, MarketData
from notifiers.base import Delivered, DeliveryResult, Message, Notifier, Retryable

log = logging.getLogger(__name__)

INTERVAL = 300.0
"""Seconds between runs: a digest goes out at most this long after the user's time."""
LEASE = timedelta(minutes=5)
"""How long a claimed send may take before another run may take it over."""
STALE_AFTER = timedelta(days=1)
NOTHING_TO_REPORT = "nothing to report"
FINISHED = (DELIVERY_SENT, DELIVERY_DEAD, DELIVERY_SKIPPED)
DEFAULT_ZONE = "Asia/Seoul"


def parse_digest_time(value: str) -> time:
    """``"HH:MM"`` (validated by ``Settings``) as a wall-clock time."""
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


def user_zone(name: str) -> ZoneInfo:
    """The user's zone; an unknown name falls back to Seoul rather than skipping them."""
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def digest_window(day: date, at: time, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``[day-1 at, day at)`` in ``zone``, as UTC instants (see the module docstring)."""
    end = datetime.combine(day, at, tzinfo=zone)
    start = datetime.combine(day - timedelta(days=1), at, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


# ---- what a digest says -----------------------------------------------------------------


@dataclass(slots=True)
class RuleSummary:
    """One rule's firings in the period."""

    symbol: str
    name: str
    rule: str
    count: int
    first_at: datetime
    first_price: int
    last_at: datetime
    last_price: int


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    at: datetime
    symbol: str
    name: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True)
class PositionLine:
    symbol: str
    name: str
    qty: int
    avg_price: float
    price: int
    pnl: int
    pnl_pct: float


@dataclass(frozen=True, slots=True)
class PortfolioPart:
    cash: int
    total: int
    total_pnl: int
    unrealized_pnl: int
    unrealized_pct: float
    realized_in_period: int
    positions: tuple[PositionLine, ...]


@dataclass(slots=True)
class DigestContent:
    day: date
    zone: ZoneInfo
    start: datetime
    end: datetime
    alert_count: int = 0
    rules: list[RuleSummary] = field(default_factory=list)
    failed: list[FailedDelivery] = field(default_factory=list)
    portfolio: PortfolioPart | None = None
    portfolio_unavailable: bool = False
    has_portfolio_news: bool = False
    """The paper account holds positions or traded in the period."""

    @property
    def worth_sending(self) -> bool:
        return self.alert_count > 0 or self.has_portfolio_news


def _rule_label(payload: dict[str, Any], lang: str) -> str:
    if payload.get("kind") == "condition":
        condition = payload.get(f"summary_{lang}") or payload.get("summary_ko", "")
    elif payload.get("op"):
        op_text = translate(f"op.{payload['op']}", lang)
        condition = f"{op_text} {won(int(payload['level']))}"
    else:
        condition = ""
    name = payload.get("rule_name") or ""
    if name and condition:
        return f"{name} · {condition}"
    return name or condition


async def gather_content(
    session: AsyncSession,
    user: User,
    day: date,
    at: time,
    market: MarketData | None,
    settings: Settings,
) -> DigestContent:
    """Everything the digest of ``user`` for ``day`` reports, read as that user."""
    assert user.id is not None
    lang = normalize_language(user.language)
    zone = user_zone(user.timezone)
    start, end = digest_window(day, at, zone)
    content = DigestContent(day=day, zone=zone, start=start, end=end)
    in_period = and_(col(AlertEvent.fired_at) >= start, col(AlertEvent.fired_at) < end)

    events = (
        await session.exec(
            select(AlertEvent)
            .where(AlertEvent.user_id == user.id, in_period)
            .order_by(col(AlertEvent.fired_at), col(AlertEvent.id))
        )
    ).all()
    groups: dict[int, RuleSummary] = {}
    for event in events:
        summary = groups.get(event.rule_id)
        if summary is None:
            groups[event.rule_id] = RuleSummary(
                symbol=event.symbol,
                name=symbol_name(event.payload, lang),
                rule=_rule_label(event.payload, lang),
                count=1,
                first_at=event.fired_at,
                first_price=event.price,
                last_at=event.fired_at,
                last_price=event.price,
            )
            continue
        summary.count += 1
        summary.last_at, summary.last_price = event.fired_at, event.price
        summary.rule = _rule_label(event.payload, lang) or summary.rule  # the latest edit
    content.alert_count = len(events)
    content.rules = list(groups.values())

    dead = (
        await session.exec(
            select(Delivery, AlertEvent)
            .join(AlertEvent, col(AlertEvent.id) == col(Delivery.event_id))
            .where(Delivery.user_id == user.id, Delivery.status == DELIVERY_DEAD, in_period)
            .order_by(col(AlertEvent.fired_at), col(Delivery.channel))
        )
    ).all()
    content.failed = [
        FailedDelivery(
            at=event.fired_at,
            symbol=event.symbol,
            name=symbol_name(event.payload, lang),
            channel=delivery.channel,
            reason=delivery.last_error or "-",
        )
        for delivery, event in dead
    ]
    await _gather_portfolio(session, content, user.id, lang, market, settings)
    return content


async def _gather_portfolio(
    session: AsyncSession,
    content: DigestContent,
    user_id: int,
    lang: str,
    market: MarketData | None,
    settings: Settings,
) -> None:
    """Only an existing paper account: the digest must not create one as a side effect."""
    account = (
        await session.exec(select(PaperAccount).where(PaperAccount.user_id == user_id))
    ).first()
    if account is None:
        return
    fills_in_period = and_(
        col(PaperFillRow.account_id) == account.id,
        col(PaperFillRow.ts) >= content.start,
        col(PaperFillRow.ts) < content.end,
    )
    fills, realized = (
        await session.exec(
            select(func.count(), func.coalesce(func.sum(PaperFillRow.realized_pnl), 0)).where(
                fills_in_period
            )
        )
    ).one()
    held = (
        await session.exec(
            select(func.count())
            .select_from(PaperPosition)
            .where(col(PaperPosition.account_id) == account.id)
        )
    ).one()
    content.has_portfolio_news = bool(fills) or bool(held)
    if not content.has_portfolio_news:
        return
    if market is None:
        content.portfolio_unavailable = True
        return
    try:
        summary = await paper_accounts.account_summary(session, user_id, market, settings)
    except BrokerError as exc:
        # The alerts still go out; the portfolio says why it is missing.
        log.warning("digest: paper valuation for user %s failed: %r", user_id, exc)
        content.portfolio_unavailable = True
        return
    balance = summary.balance
    names: dict[str, str] = {}
    if lang == "en" and balance.positions:
        codes = [p.symbol for p in balance.positions]
        rows = (
            await session.exec(
                select(Symbol.code, Symbol.name_en).where(col(Symbol.code).in_(codes))
            )
        ).all()
        names = {code: name for code, name in rows if name}
    cost = sum(p.cost for p in balance.positions)
    content.portfolio = PortfolioPart(
        cash=balance.cash,
        total=balance.total,
        total_pnl=summary.total_pnl,
        unrealized_pnl=balance.pnl,
        unrealized_pct=balance.pnl / cost * 100.0 if cost else 0.0,
        realized_in_period=int(realized),
        positions=tuple(
            PositionLine(
                symbol=p.symbol,
                name=names.get(p.symbol, p.name),
                qty=p.qty,
                avg_price=p.avg_price,
                price=p.price,
                pnl=p.pnl,
                pnl_pct=p.pnl_pct,
            )
            for p in balance.positions
        ),
    )


# ---- how it reads -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    text: str
    html: str


def _signed(value: int) -> str:
    return f"{value:+,}"


def _pct(value: float) -> str:
    return f"{value:+.2f}%"


def _clock(at: datetime, content: DigestContent) -> str:
    """Local ``HH:MM``; with the date when it fell on the day before (the evening part)."""
    local = at.astimezone(content.zone)
    return local.strftime("%H:%M" if local.date() == content.day else "%m-%d %H:%M")


def _channel_label(channel: str, lang: str) -> str:
    kind = channel.partition(":")[0]
    texts = catalog(normalize_language(lang))
    return texts.get(f"channel.{kind}") or texts.get(f"channels.kind.{kind}") or kind


def _alert_count_text(count: int, lang: str) -> str:
    if count == 0:
        return translate("daily.no_alerts_short", lang)
    if count == 1:
        return translate("daily.one_alert", lang)
    return translate("daily.n_alerts", lang, count=count)


def render_digest(content: DigestContent, lang: str, base_url: str = "") -> RenderedDigest:
    """Subject, plain text and HTML in the reader's language; every value is escaped."""
    lang = normalize_language(lang)
    day = content.day.isoformat()
    heading = translate("daily.heading", lang, day=day)
    fmt = "%Y-%m-%d %H:%M"
    period = translate(
        "daily.period",
        lang,
        start=content.start.astimezone(content.zone).strftime(fmt),
        end=content.end.astimezone(content.zone).strftime(fmt),
        tz=content.zone.key,
    )
    sections: list[tuple[str, list[str], list[str]]] = []  # title, paragraphs, list items

    if content.alert_count:
        summary = [
            translate(
                "daily.alerts.count", lang, count=content.alert_count, rules=len(content.rules)
            )
        ]
    else:
        summary = [translate("daily.alerts.none", lang)]
    lines = []
    for r in content.rules:
        params = {
            "name": r.name,
            "symbol": r.symbol,
            "rule": r.rule,
            "count": r.count,
            "first_time": _clock(r.first_at, content),
            "first_price": won(r.first_price),
            "last_time": _clock(r.last_at, content),
            "last_price": won(r.last_price),
        }
        key = "daily.alerts.line_once" if r.count == 1 else "daily.alerts.line"
        lines.append(translate(key, lang, **params))
    sections.append((translate("daily.alerts.title", lang), summary, lines))

    if content.failed:
        failed = [
            translate(
                "daily.failed.line",
                lang,
                time=_clock(f.at, content),
                name=f.name,
                symbol=f.symbol,
                channel=_channel_label(f.channel, lang),
                reason=f.reason,
            )
            for f in content.failed
        ]
        sections.append((translate("daily.failed.title", lang), [], failed))

    if content.portfolio is not None:
        p = content.portfolio
        facts = [
            translate("daily.portfolio.cash", lang, cash=won(p.cash)),
            translate("daily.portfolio.total", lang, total=won(p.total), pnl=_signed(p.total_pnl)),
            translate(
                "daily.portfolio.unrealized",
                lang,
                pnl=_signed(p.unrealized_pnl),
                pct=_pct(p.unrealized_pct),
            ),
            translate("daily.portfolio.realized_today", lang, pnl=_signed(p.realized_in_period)),
        ]
        positions = [
            translate(
                "daily.portfolio.position",
                lang,
                name=pos.name,
                symbol=pos.symbol,
                qty=f"{pos.qty:,}",
                avg=f"{round(pos.avg_price):,}",
                price=won(pos.price),
                pnl=_signed(pos.pnl),
                pct=_pct(pos.pnl_pct),
            )
            for pos in p.positions
        ]
        if not positions:
            facts.append(translate("daily.portfolio.no_positions", lang))
        sections.append((translate("daily.portfolio.title", lang), facts, positions))
    elif content.portfolio_unavailable:
        sections.append(
            (
                translate("daily.portfolio.title", lang),
                [translate("daily.portfolio.unavailable", lang)],
                [],
            )
        )

    footer = translate("daily.footer", lang, url=f"{base_url.rstrip('/')}/settings")
    text_parts = [heading, period, ""]
    html_parts = [
        '<!doctype html><html><body style="font-family:sans-serif">',
        f"<h2>{html.escape(heading)}</h2>",
        f'<p style="color:#666">{html.escape(period)}</p>',
    ]
    for title, paragraphs, items in sections:
        text_parts.append(f"== {title} ==")
        text_parts.extend(paragraphs)
        text_parts.extend(f"- {item}" for item in items)
        text_parts.append("")
        html_parts.append(f"<h3>{html.escape(title)}</h3>")
        html_parts.extend(f"<p>{html.escape(par)}</p>" for par in paragraphs)
        if items:
            html_parts.append("<ul>")
            html_parts.extend(f"<li>{html.escape(item)}</li>" for item in items)
            html_parts.append("</ul>")
    text_parts.append(footer)
    html_parts.append(f'<p style="color:#666;font-size:12px">{html.escape(footer)}</p>')
    html_parts.append("</body></html>")
    subject = translate(
        "daily.subject", lang, day=day, alerts=_alert_count_text(content.alert_count, lang)
    )
    return RenderedDigest(
        subject=subject, text="\n".join(text_parts) + "\n", html="".join(html_parts)
    )


# ---- the job ----------------------------------------------------------------------------


@dataclass(slots=True)
class DigestRun:
    """What one run did, for logs and tests."""

    sent: int = 0
    skipped: int = 0
    retrying: int = 0
    dead: int = 0
    claimed: int = 0


@dataclass(frozen=True, slots=True)
class _Due:
    user_id: int
    day: date


@dataclass(frozen=True, slots=True)
class _Claim:
    row_id: int
    attempts: int


class DailyDigestJob:
    """One run per call: the scheduler calls it every ``INTERVAL`` seconds.

    ``clock`` is injected so tests can stand at 16:15 in Seoul or New York without
    waiting for it; ``market`` values the paper portfolio (the runner's market hub).
    """

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier | None,
        market: MarketData | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.market = market
        self.clock = clock
        self.at = parse_digest_time(settings.daily_digest_time)

    async def __call__(self) -> DigestRun:
        return await self.run_once()

    async def run_once(self) -> DigestRun:
        run = DigestRun()
        if self.notifier is None:
            return run
        now = self.clock()
        await self._expire_stale(now)
        for due in await self._due(now):
            try:
                await self._digest_one(due, now, run)
            except Exception:
                # One user's failure must not cost everyone else their digest; a row
                # left "sending" is taken over when its lease ends.
                log.exception("daily digest for user %s (%s) failed", due.user_id, due.day)
        if run.claimed:
            log.info(
                "daily digests: %d sent, %d skipped, %d to retry, %d dead",
                run.sent,
                run.skipped,
                run.retrying,
                run.dead,
            )
        return run

    async def _due(self, now: datetime) -> list[_Due]:
        """Opted-in users past their digest time whose digest for today is not finished."""
        async with db.session() as s:
            users = (
                await s.exec(
                    select(User.id, User.timezone).where(
                        col(User.daily_digest).is_(True),
                        col(User.is_active).is_(True),
                        col(User.email) != "",
                    )
                )
            ).all()
            candidates: list[_Due] = []
            for user_id, tz_name in users:
                local = now.astimezone(user_zone(tz_name))
                if local.time() >= self.at:
                    candidates.append(_Due(user_id, local.date()))
            if not candidates:
                return []
            days = sorted({c.day.isoformat() for c in candidates})
            rows = (
                await s.exec(
                    select(
                        DailyDigest.user_id,
                        DailyDigest.day,
                        DailyDigest.status,
                        DailyDigest.sent_at,
                    ).where(col(DailyDigest.day).in_(days))
                )
            ).all()
        busy = {
            (user_id, day)
            for user_id, day, status, lease in rows
            if status in FINISHED
            or (status == DELIVERY_SENDING and lease is not None and lease > now)
        }
        return [c for c in candidates if (c.user_id, c.day.isoformat()) not in busy]

    async def _digest_one(self, due: _Due, now: datetime, run: DigestRun) -> None:
        claim = await self._claim(due, now)
        if claim is None:
            return  # another runner has it, or finished it a moment ago
        run.claimed += 1
        if claim.attempts > self.settings.delivery_max_attempts:
            # Only after crashes mid-send: each claim counts, and they ran out.
            await self._finish(
                claim, DELIVERY_DEAD, f"gave up after {claim.attempts - 1} attempts", now
            )
            run.dead += 1
            return
        try:
            outcome = await self._compose_and_send(due)
        except Exception as exc:
            log.exception("daily digest for user %s could not be composed", due.user_id)
            outcome = Retryable(f"{type(exc).__name__} while composing the digest")
        if outcome is None:
            await self._finish(claim, DELIVERY_SKIPPED, NOTHING_TO_REPORT, now)
            run.skipped += 1
        elif isinstance(outcome, Delivered):
            await self._finish(claim, DELIVERY_SENT, "", self.clock())
            run.sent += 1
        elif (
            isinstance(outcome, Retryable) and claim.attempts < self.settings.delivery_max_attempts
        ):
            await self._finish(claim, DELIVERY_PENDING, outcome.reason, now)
            run.retrying += 1
        else:
            await self._finish(claim, DELIVERY_DEAD, outcome.reason, now)
            run.dead += 1

    async def _claim(self, due: _Due, now: datetime) -> _Claim | None:
        """Insert today's row if missing (the unique key keeps it one), then take it."""
        day = due.day.isoformat()
        async with db.session() as s:
            # created_at from the job's clock: the stale check below compares against it
            s.add(
                DailyDigest(user_id=due.user_id, day=day, status=DELIVERY_PENDING, created_at=now)
            )
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()  # there already is one: another run's, or ours from earlier
        mine = and_(col(DailyDigest.user_id) == due.user_id, col(DailyDigest.day) == day)
        async with db.session() as s:
            result = await s.exec(
                update(DailyDigest)
                .where(
                    mine,
                    or_(
                        col(DailyDigest.status) == DELIVERY_PENDING,
                        and_(
                            col(DailyDigest.status) == DELIVERY_SENDING,
                            col(DailyDigest.sent_at) <= now,  # an expired lease
                        ),
                    ),
                )
                .values(
                    status=DELIVERY_SENDING,
                    attempts=DailyDigest.attempts + 1,
                    sent_at=now + LEASE,
                )
            )
            if result.rowcount != 1:
                await s.rollback()
                return None
            row_id, attempts = (
                await s.exec(select(DailyDigest.id, DailyDigest.attempts).where(mine))
            ).one()
            await s.commit()
        return _Claim(row_id or 0, attempts)

    async def _compose_and_send(self, due: _Due) -> DeliveryResult | None:
        """None when there is nothing to report; otherwise the notifier's outcome."""
        assert self.notifier is not None
        async with db.session() as s:
            user = await s.get(User, due.user_id)
            if user is None or not user.is_active or not user.daily_digest or not user.email:
                return None  # opted out (or left) since the run began
            content = await gather_content(s, user, due.day, self.at, self.market, self.settings)
            email, lang = user.email, user.language
        if not content.worth_sending:
            return None
        rendered = render_digest(content, lang, self.settings.app_base_url)
        return await self.notifier.send(
            Message(
                recipient=email,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                idempotency_key=f"digest:{due.user_id}:{due.day.isoformat()}",
            )
        )

    async def _finish(self, claim: _Claim, status: str, reason: str, now: datetime) -> None:
        """Record the outcome, unless another run took the row over (our lease ran out)."""
        async with db.session() as s:
            result = await s.exec(
                update(DailyDigest)
                .where(
                    col(DailyDigest.id) == claim.row_id,
                    col(DailyDigest.status) == DELIVERY_SENDING,
                    col(DailyDigest.attempts) == claim.attempts,
                )
                .values(
                    status=status,
                    last_error=reason[:500],
                    sent_at=now if status == DELIVERY_SENT else None,
                )
            )
            await s.commit()
        if result.rowcount != 1:
            log.warning("daily digest %s: lease lost before recording %s", claim.row_id, status)
        else:
            log.info("daily digest %s -> %s %s", claim.row_id, status, reason)

    async def _expire_stale(self, now: datetime) -> int:
        """Unfinished rows from an earlier day are given up: nobody retries them anymore."""
        async with db.session() as s:
            result = await s.exec(
                update(DailyDigest)
                .where(
                    col(DailyDigest.created_at) < now - STALE_AFTER,
                    or_(
                        col(DailyDigest.status) == DELIVERY_PENDING,
                        and_(
                            col(DailyDigest.status) == DELIVERY_SENDING,
                            col(DailyDigest.sent_at) <= now,
                        ),
                    ),
                )
                .values(status=DELIVERY_DEAD, last_error="not sent on its day")
            )
            await s.commit()
        return result.rowcount or 0


def digest_jobs(
    settings: Settings, notifiers: dict[str, Notifier], market: MarketData | None
) -> dict[str, tuple[Job, float]]:
    """The scheduler entry, or none when the server cannot send e-mail."""
    notifier = notifiers.get(CHANNEL_EMAIL)
    if notifier is None:
        return {}
    return {"daily-digest": (DailyDigestJob(settings, notifier, market), INTERVAL)}


__all__ = [
    "DailyDigestJob",
    "DigestContent",
    "DigestRun",
    "digest_jobs",
    "digest_window",
    "gather_content",
    "render_digest",
]
