"""The daily summary e-mail, end to end on SQLite and PostgreSQL with a real SMTP server.

Alerts are written to the outbox tables as the runner writes them, the paper account
trades through the real paper broker, and the digest goes out over SMTP to aiosmtpd.
The clock is injected: Seoul's 16:10 is 07:10 UTC, New York's (EST) 21:10 UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message as EmailMsg
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.config import Settings, reset_settings_cache
from app.models.alerts import AlertEvent, DailyDigest, Delivery
from app.models.users import User
from app.runtime.daily_digest import LEASE, DailyDigestJob, _Due, digest_jobs
from app.runtime.scheduler import build_scheduler
from app.services import auth, paper_accounts, preferences
from app.services import rules as rules_service
from app.states.settings import SettingsState
from engines.market import Tick
from notifiers.email import EmailNotifier, SmtpConfig
from tests.conftest import SmtpSink, free_port
from tests.integration.helpers import make_user, seed_symbols, settings
from tests.integration.test_paper_accounts import FixedMarket

pytestmark = pytest.mark.usefixtures("database")

SAMSUNG, HYNIX = "005930", "000660"
SEOUL_AFTER = datetime(2026, 3, 5, 7, 15, tzinfo=UTC)  # 16:15 KST on 2026-03-05
NY_BEFORE = datetime(2026, 3, 5, 21, 5, tzinfo=UTC)  # 16:05 EST
NY_AFTER = datetime(2026, 3, 5, 21, 15, tzinfo=UTC)  # 16:15 EST
SENDER = "digest@tickwatch.test"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _job(
    port: int, clock: Clock, market: FixedMarket | None = None, **overrides: object
) -> DailyDigestJob:
    cfg = settings(smtp_host="127.0.0.1", smtp_port=port, **overrides)
    notifier = EmailNotifier(SmtpConfig(host="127.0.0.1", port=port, sender=SENDER, timeout=5))
    return DailyDigestJob(cfg, notifier, market or FixedMarket(), clock=clock)


async def _user(
    email: str, *, lang: str = "ko", tz: str = "Asia/Seoul", opted_in: bool = True
) -> int:
    user = await make_user(email)
    async with db.session() as s:
        row = await s.get(User, user.id)
        assert row is not None
        row.language, row.timezone, row.daily_digest = lang, tz, opted_in
        s.add(row)
        await s.commit()
    assert user.id is not None
    return user.id


async def _rule(user_id: int, symbol: str, op: str, level: int, name: str = "") -> int:
    async with db.session() as s:
        rule = await rules_service.create_price_rule(
            s, user_id, symbol_query=symbol, op=op, level=level, name=name
        )
    assert rule.id is not None
    return rule.id


NAMES = {SAMSUNG: ("삼성전자", "Samsung Electronics"), HYNIX: ("SK하이닉스", "SK hynix")}


async def _fire(
    user_id: int,
    rule_id: int,
    symbol: str,
    op: str,
    level: int,
    price: int,
    at: datetime,
    deliveries: tuple[tuple[str, str, str], ...] = (("in_app", "sent", ""),),
    rule_name: str = "",
) -> int:
    """One firing as the outbox records it: the event and a delivery row per channel."""
    payload: dict[str, Any] = {
        "symbol": symbol,
        "name_ko": NAMES[symbol][0],
        "name_en": NAMES[symbol][1],
        "rule_name": rule_name,
        "op": op,
        "level": level,
        "price": price,
        "prev_price": price,
        "prev_close": None,
        "change_pct": None,
        "fire_no": 1,
    }
    async with db.session() as s:
        event = AlertEvent(
            idempotency_key=f"price:{rule_id}:{at.timestamp()}",
            rule_id=rule_id,
            user_id=user_id,
            symbol=symbol,
            price=price,
            payload=payload,
            fired_at=at,
        )
        s.add(event)
        await s.flush()
        assert event.id is not None
        for channel, status, error in deliveries:
            s.add(
                Delivery(
                    event_id=event.id,
                    user_id=user_id,
                    channel=channel,
                    status=status,
                    last_error=error,
                    attempts=1,
                )
            )
        await s.commit()
        return event.id


def kst(day: int, hour: int, minute: int) -> datetime:
    """A March 2026 KST wall time as UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC) - timedelta(hours=9)


async def _seoul_day(user_id: int) -> None:
    """Four alerts in the 2026-03-05 period, two just outside it, one dead e-mail."""
    samsung = await _rule(user_id, SAMSUNG, "above", 70_000)
    hynix = await _rule(user_id, HYNIX, "below", 200_000)
    await _fire(user_id, samsung, SAMSUNG, "above", 70_000, 69_900, kst(4, 16, 5))  # before
    await _fire(user_id, hynix, HYNIX, "below", 200_000, 199_500, kst(4, 18, 0))  # after-hours
    await _fire(user_id, samsung, SAMSUNG, "above", 70_000, 70_100, kst(5, 9, 30))
    await _fire(
        user_id,
        samsung,
        SAMSUNG,
        "above",
        70_000,
        70_500,
        kst(5, 11, 0),
        deliveries=(
            ("in_app", "sent", ""),
            ("email", "dead", "recipient refused: <mailbox full>"),
            ("discord:7", "dead", "the channel was deleted"),
        ),
    )
    await _fire(user_id, samsung, SAMSUNG, "above", 70_000, 71_200, kst(5, 14, 50))
    await _fire(user_id, samsung, SAMSUNG, "above", 70_000, 72_500, kst(5, 16, 12))  # next day's


async def _paper_trades(user_id: int, market: FixedMarket) -> None:
    """Buy 10 @ 70,000 and sell 4 @ 72,000 at 10:00 KST; the price then moves to 74,000.

    buy: 700,000 + fee 105. sell: 288,000 - fee 43 - tax 576, basis 280,000, so
    realized 7,381. cash = 10,000,000 - 700,105 + 288,000 - 619 = 9,587,276.
    6 left at 70,000: worth 444,000 at 74,000, P&L +24,000 (+5.71%).
    """
    at = kst(5, 10, 0)
    async with db.session() as s:
        broker = await paper_accounts.open_broker(s, user_id, market)
    for side, qty, price, i in (("buy", 10, 70_000, 0), ("sell", 4, 72_000, 1)):
        async with db.session() as s:
            await paper_accounts.place_order(
                s, user_id, market, symbol=SAMSUNG, side=side, qty=qty, price=price
            )
        await broker.reload()
        await broker.on_tick(Tick(SAMSUNG, price, 10, at + timedelta(seconds=i)))
    market.prices[SAMSUNG] = 74_000


async def _row(user_id: int) -> DailyDigest | None:
    async with db.session() as s:
        rows = (await s.exec(select(DailyDigest).where(DailyDigest.user_id == user_id))).all()
    assert len(rows) <= 1
    return rows[0] if rows else None


def _parts(mail: EmailMsg) -> tuple[str, str]:
    text = mail.get_body(("plain",))
    page = mail.get_body(("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()  # type: ignore[attr-defined]


# ---- the mail -------------------------------------------------------------------------


async def test_a_korean_digest_over_smtp_summarises_alerts_failures_and_portfolio(
    smtp_server: SmtpSink,
):
    await seed_symbols()
    uid = await _user("kim@example.com")
    await _seoul_day(uid)
    market = FixedMarket()
    await _paper_trades(uid, market)

    run = await _job(smtp_server.port, Clock(SEOUL_AFTER), market).run_once()

    assert (run.sent, run.dead, run.retrying) == (1, 0, 0)
    assert smtp_server.envelopes == [(SENDER, ["kim@example.com"])]
    (mail,) = smtp_server.messages
    assert mail["Subject"] == "[틱워치] 2026-03-05 일일 요약: 알림 4건"
    text, page = _parts(mail)
    expected = [
        "2026-03-05 틱워치 하루 정리",
        "2026-03-04 16:10부터 2026-03-05 16:10까지의 내용입니다 (Asia/Seoul 기준).",
        "알림이 4건 울렸습니다 (규칙 2개).",
        "SK하이닉스(000660) · 가격 이하 200,000: 1회, 03-04 18:00 199,500원",
        "삼성전자(005930) · 가격 이상 70,000: 3회, 처음 09:30 70,100원, 마지막 14:50 71,200원",
        "11:00 삼성전자(005930) → 디스코드: the channel was deleted",
        "예수금: 9,587,276원",
        "총 평가금액: 10,031,276원 (시작 이후 +31,276원)",
        "평가손익: +24,000원 (+5.71%)",
        "이 기간 실현손익: +7,381원",
        "삼성전자(005930) 6주 · 평균단가 70,000원 · 현재가 74,000원 · 손익 +24,000원 (+5.71%)",
        "http://testserver/settings",
    ]
    for line in expected:
        assert line in text, line
        assert line in page, line
    failed = "11:00 삼성전자(005930) → 이메일: recipient refused: "
    assert failed + "<mailbox full>" in text
    assert failed + "&lt;mailbox full&gt;" in page and "<mailbox" not in page  # escaped
    assert text.index("SK하이닉스(000660)") < text.index("삼성전자(005930) · ")  # by first firing
    assert "<h2>" in page and "<li>" in page and "== 알림 ==" in text
    for outside in ("69,900", "72,500"):  # before the period, and the next day's
        assert outside not in text and outside not in page
    row = await _row(uid)
    assert row is not None
    assert (row.day, row.status, row.attempts, row.last_error) == ("2026-03-05", "sent", 1, "")
    assert row.sent_at == SEOUL_AFTER


# ---- exactly once ---------------------------------------------------------------------


async def test_running_twice_the_same_day_sends_one_mail(smtp_server: SmtpSink):
    await seed_symbols()
    uid = await _user("once@example.com")
    await _seoul_day(uid)
    clock = Clock(SEOUL_AFTER)
    job = _job(smtp_server.port, clock)
    assert (await job.run_once()).sent == 1
    clock.now += timedelta(minutes=5)
    second = await job.run_once()
    clock.now += timedelta(hours=7)  # 23:20 KST, still the same local day
    third = await job.run_once()
    assert (second.claimed, third.claimed) == (0, 0)
    assert len(smtp_server.messages) == 1
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts) == ("sent", 1)


class _Racing(DailyDigestJob):
    """Both runners decide a user is due before either writes: the real race window."""

    def __init__(self, barrier: asyncio.Barrier, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = barrier

    async def _due(self, now: datetime) -> list[_Due]:
        due = await super()._due(now)
        await self.barrier.wait()
        return due


async def test_two_runners_at_once_send_one_mail(smtp_server: SmtpSink):
    await seed_symbols()
    uids = [await _user(f"race{i}@example.com") for i in range(3)]
    for uid in uids:
        await _seoul_day(uid)
    barrier = asyncio.Barrier(2)
    jobs = []
    for _ in range(2):
        base = _job(smtp_server.port, Clock(SEOUL_AFTER))
        jobs.append(_Racing(barrier, base.settings, base.notifier, base.market, clock=base.clock))
    runs = await asyncio.gather(*(j.run_once() for j in jobs))
    assert sum(r.sent for r in runs) == 3
    assert sorted(rcpt for _, (rcpt,) in smtp_server.envelopes) == [
        "race0@example.com",
        "race1@example.com",
        "race2@example.com",
    ]
    async with db.session() as s:
        assert (await s.exec(select(func.count()).select_from(DailyDigest))).one() == 3
    for uid in uids:
        row = await _row(uid)
        assert row is not None and (row.status, row.attempts) == ("sent", 1)


async def test_only_opted_in_active_users_get_one(smtp_server: SmtpSink):
    await seed_symbols()
    wants = await _user("wants@example.com")
    declined = await _user("declined@example.com", opted_in=False)
    disabled = await _user("disabled@example.com")
    async with db.session() as s:
        row = await s.get(User, disabled)
        assert row is not None
        row.is_active = False
        s.add(row)
        await s.commit()
    for uid in (wants, declined, disabled):
        await _seoul_day(uid)
    await _job(smtp_server.port, Clock(SEOUL_AFTER)).run_once()
    assert [rcpt for _, rcpt in smtp_server.envelopes] == [["wants@example.com"]]
    assert await _row(declined) is None and await _row(disabled) is None


async def test_each_user_gets_theirs_at_their_own_local_time(smtp_server: SmtpSink):
    await seed_symbols()
    seoul = await _user("seoul@example.com")
    ny = await _user("ny@example.com", lang="en", tz="America/New_York")
    await _seoul_day(seoul)
    rule = await _rule(ny, HYNIX, "below", 200_000, name="Dip buy")
    ny_morning = datetime(2026, 3, 5, 14, 30, tzinfo=UTC)  # 09:30 EST
    await _fire(ny, rule, HYNIX, "below", 200_000, 198_000, ny_morning, rule_name="Dip buy")
    clock = Clock(SEOUL_AFTER - timedelta(minutes=10))  # 16:05 KST: nobody yet
    job = _job(smtp_server.port, clock)
    assert (await job.run_once()).claimed == 0

    clock.now = SEOUL_AFTER  # 16:15 in Seoul, 02:15 in New York
    await job.run_once()
    assert [rcpt for _, rcpt in smtp_server.envelopes] == [["seoul@example.com"]]

    clock.now = NY_BEFORE
    assert (await job.run_once()).claimed == 0

    clock.now = NY_AFTER  # 16:15 in New York, 06:15 the next morning in Seoul
    await job.run_once()
    assert [rcpt for _, rcpt in smtp_server.envelopes] == [
        ["seoul@example.com"],
        ["ny@example.com"],
    ]
    mail = smtp_server.messages[1]
    assert mail["Subject"] == "[Tickwatch] Daily summary for 2026-03-05: 1 alert"
    text, page = _parts(mail)
    line = "SK hynix (000660) · Dip buy · Price at or below 200,000: once, at 09:30, 198,000 KRW"
    assert line in text and line in page
    assert "(America/New_York)" in text
    row = await _row(ny)
    assert row is not None and (row.day, row.status) == ("2026-03-05", "sent")


async def test_a_day_with_nothing_to_report_sends_nothing(smtp_server: SmtpSink):
    await seed_symbols()
    quiet = await _user("quiet@example.com")
    async with db.session() as s:
        await paper_accounts.get_account(s, quiet)  # cash only, no trades, no positions
    clock = Clock(SEOUL_AFTER)
    job = _job(smtp_server.port, clock)
    assert (await job.run_once()).skipped == 1
    clock.now += timedelta(minutes=5)
    assert (await job.run_once()).claimed == 0
    assert smtp_server.messages == []
    row = await _row(quiet)
    assert row is not None and (row.status, row.last_error) == ("skipped", "nothing to report")


async def test_a_portfolio_alone_is_worth_a_digest(smtp_server: SmtpSink):
    await seed_symbols()
    uid = await _user("holder@example.com", lang="en")
    market = FixedMarket()
    await _paper_trades(uid, market)
    await _job(smtp_server.port, Clock(SEOUL_AFTER), market).run_once()
    (mail,) = smtp_server.messages
    assert mail["Subject"] == "[Tickwatch] Daily summary for 2026-03-05: no alerts"
    text, _ = _parts(mail)
    assert "No alerts fired in this period." in text
    assert (
        "Samsung Electronics (005930): 6 shares, average 70,000 KRW, now 74,000 KRW, "
        "P&L +24,000 KRW (+5.71%)"
    ) in text
    assert "Realized P&L in this period: +7,381 KRW" in text


# ---- failures -------------------------------------------------------------------------


async def test_smtp_down_leaves_it_pending_and_the_next_run_sends_it():
    await seed_symbols()
    uid = await _user("retry@example.com")
    await _seoul_day(uid)
    port = free_port()  # nothing listens here yet
    clock = Clock(SEOUL_AFTER)
    job = _job(port, clock)
    assert (await job.run_once()).retrying == 1
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts) == ("pending", 1)
    assert str(port) in row.last_error and row.sent_at is None

    sink = SmtpSink("127.0.0.1", port)
    controller = Controller(sink, hostname=sink.host, port=port)
    controller.start()
    try:
        clock.now += timedelta(minutes=5)
        assert (await job.run_once()).sent == 1
    finally:
        controller.stop()
    assert len(sink.messages) == 1
    assert sink.messages[0]["Subject"] == "[틱워치] 2026-03-05 일일 요약: 알림 4건"
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts, row.last_error) == ("sent", 2, "")


async def test_too_many_failed_attempts_make_it_dead():
    await seed_symbols()
    uid = await _user("gone@example.com")
    await _seoul_day(uid)
    clock = Clock(SEOUL_AFTER)
    job = _job(free_port(), clock, delivery_max_attempts=2)
    await job.run_once()
    clock.now += timedelta(minutes=5)
    assert (await job.run_once()).dead == 1
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts) == ("dead", 2) and row.last_error
    clock.now += timedelta(minutes=5)
    assert (await job.run_once()).claimed == 0


async def test_a_refused_recipient_is_dead_with_the_reason(smtp_server: SmtpSink):
    await seed_symbols()
    uid = await _user("nobody@example.com")
    await _seoul_day(uid)
    smtp_server.reject.add("nobody@example.com")
    clock = Clock(SEOUL_AFTER)
    job = _job(smtp_server.port, clock)
    assert (await job.run_once()).dead == 1
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts) == ("dead", 1)
    assert "recipient refused" in row.last_error and "550" in row.last_error
    clock.now += timedelta(minutes=5)
    assert (await job.run_once()).claimed == 0
    assert smtp_server.messages == []


async def test_a_digest_still_pending_the_next_day_is_given_up():
    await seed_symbols()
    uid = await _user("late@example.com")
    await _seoul_day(uid)
    clock = Clock(SEOUL_AFTER)
    job = _job(free_port(), clock)
    await job.run_once()
    clock.now += timedelta(days=1, minutes=1)  # 16:16 the next day: a new period
    await job.run_once()
    async with db.session() as s:
        rows = (await s.exec(select(DailyDigest).where(DailyDigest.user_id == uid))).all()
    by_day = {r.day: (r.status, r.last_error) for r in rows}
    assert by_day["2026-03-05"] == ("dead", "not sent on its day")
    # the 16:12 alert of the 5th belongs to the 6th's period, which is tried on its own
    assert by_day["2026-03-06"][0] == "pending"


class _StallingSink(SmtpSink):
    """Accepts the first message's data, then hangs: the sender dies waiting for the reply."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.stall = True
        self.stalled = threading.Event()
        self.stalled_keys: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.stall:
            self.stall = False
            mail = message_from_bytes(envelope.content, policy=policy.default)
            self.stalled_keys.append(str(mail["X-Tickwatch-Key"]))
            self.stalled.set()
            await asyncio.sleep(3)
            return "451 too late"
        return await super().handle_DATA(server, session, envelope)


async def test_a_crash_mid_send_is_resent_after_the_lease_and_only_then():
    await seed_symbols()
    uid = await _user("crash@example.com")
    await _seoul_day(uid)
    sink = _StallingSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        clock = Clock(SEOUL_AFTER)
        job = _job(sink.port, clock)
        first = asyncio.create_task(job.run_once())
        assert await asyncio.to_thread(sink.stalled.wait, 10)
        first.cancel()  # the worker dies between the SMTP send and recording it
        with contextlib.suppress(asyncio.CancelledError):
            await first
        row = await _row(uid)
        assert row is not None and (row.status, row.attempts) == ("sending", 1)

        clock.now += timedelta(minutes=4)  # the lease still holds: nobody sends
        assert (await job.run_once()).claimed == 0
        clock.now = SEOUL_AFTER + LEASE + timedelta(minutes=1)
        other_runner = _job(sink.port, clock)
        assert (await other_runner.run_once()).sent == 1
        clock.now += timedelta(minutes=5)
        assert (await job.run_once()).claimed == 0
    finally:
        controller.stop()
    (mail,) = sink.messages
    # a resend is recognisable as one: the same key as the mail that may have left
    assert mail["X-Tickwatch-Key"] == sink.stalled_keys[0] == f"digest:{uid}:2026-03-05"
    row = await _row(uid)
    assert row is not None and (row.status, row.attempts) == ("sent", 2)


def test_the_job_is_scheduled_only_when_the_server_can_send_email():
    cfg = Settings(smtp_host="")  # type: ignore[call-arg]
    assert digest_jobs(cfg, {}, None) == {}
    notifier = EmailNotifier(SmtpConfig(host="127.0.0.1"))
    ((name, (job, every)),) = digest_jobs(cfg, {"email": notifier}, None).items()
    assert name == "daily-digest" and isinstance(job, DailyDigestJob) and 0 < every <= 600
    scheduler = build_scheduler(
        {"portfolio-refresh": (job, 60.0), **digest_jobs(cfg, {"email": notifier}, None)}
    )
    assert scheduler.get_job("daily-digest") is not None


# ---- the settings switch --------------------------------------------------------------


async def _root(user_id: int, email: str) -> State:
    async with db.session() as s:
        user = await s.get(User, user_id)
        assert user is not None
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "5.5.5.5")
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": "ko"},
            "ip": "5.5.5.5",
            "token": f"client-{email}",
            "pathname": "/settings",
            "asPath": "/settings",
        }
    )
    return root


async def _call(state: SettingsState, handler: str, *args: object) -> object:
    return await SettingsState.event_handlers[handler].fn(state, *args)


@pytest.fixture
def smtp_env(monkeypatch: pytest.MonkeyPatch):
    def use(host: str) -> None:
        monkeypatch.setenv("SMTP_HOST", host)
        reset_settings_cache()

    yield use
    monkeypatch.delenv("SMTP_HOST", raising=False)
    reset_settings_cache()


async def _flags() -> dict[str, bool]:
    async with db.session() as s:
        return {u.email: u.daily_digest for u in (await s.exec(select(User))).all()}


async def test_the_switch_sets_only_the_callers_flag(smtp_env):
    await seed_symbols()
    alice = await _user("alice@example.com", opted_in=False)
    bob = await _user("bob@example.com", opted_in=False)
    async with db.session() as s:
        await preferences.set_daily_digest(s, alice, True)
    smtp_env("127.0.0.1")
    state = await (await _root(bob, "bob")).get_state(SettingsState)
    await _call(state, "load")
    assert (state.digest_available, state.daily_digest, state.digest_time) == (True, False, "16:10")

    await _call(state, "set_daily_digest", True)
    assert state.daily_digest and state.digest_notice == "일일 요약 메일을 켰습니다."
    assert await _flags() == {"alice@example.com": True, "bob@example.com": True}
    await _call(state, "set_daily_digest", False)
    assert not state.daily_digest and state.digest_notice == "일일 요약 메일을 껐습니다."
    assert await _flags() == {"alice@example.com": True, "bob@example.com": False}


async def test_without_smtp_the_switch_is_disabled_and_refuses(smtp_env):
    await seed_symbols()
    bob = await _user("bob@example.com", opted_in=False)
    smtp_env("")
    state = await (await _root(bob, "bob")).get_state(SettingsState)
    await _call(state, "load")
    assert state.digest_available is False
    await _call(state, "set_daily_digest", True)
    assert "SMTP" in state.error and not state.daily_digest
    assert await _flags() == {"bob@example.com": False}
