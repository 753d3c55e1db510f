"""Operational status: one snapshot for /api/health, /metrics and the admin status page.

All three show the same numbers so an operator never has to reconcile two views.
Database figures (outbox, delivery failures, strategy attachments, backtest queue)
are read at call time and are the same from every worker. Runner figures (ticks,
broker sessions) are the plain counters of the runner; a worker that does not run
it reports the figures the leader publishes on the live bus every few seconds
(``runner_source = "leader"``), so a scrape or a status page served by any of
several workers behind one port shows the same runner. Leadership is always this
process's own. Nothing here touches the tick path.

No user ids, e-mails, symbol codes or error texts leave this module: it reports
counts and states only, because /api/health is public.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, literal, text
from sqlmodel import col, select

from app import db
from app.models.alerts import (
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    DELIVERY_SENDING,
    Delivery,
)
from app.models.channels import CHANNEL_KINDS
from app.models.common import utcnow
from app.models.strategies import (
    RUN_QUEUED,
    RUN_RUNNING,
    STATE_ERROR,
    STATE_RECONCILING,
    STATE_RUNNING,
    BacktestRun,
    StrategyAttachment,
)
from app.runtime.leader import current_leadership
from app.runtime.live_bus import get_live_bus
from app.runtime.runner import Runner, current_runner
from brokers.kis.market import KisMarketData

ROLE_LEADER = "leader"
ROLE_SINGLE = "single"
ROLE_STANDBY = "standby"
ROLE_OFF = "off"
"""No election runs here (``RUNNER_ENABLED=0``, or the runner is stopping)."""

ROLES = (ROLE_LEADER, ROLE_SINGLE, ROLE_STANDBY, ROLE_OFF)

SESSION_SIMULATED = "simulated"
SESSION_CONNECTED = "connected"
SESSION_CONNECTING = "connecting"
SESSION_IDLE = "idle"
SESSION_STATES = (SESSION_SIMULATED, SESSION_CONNECTED, SESSION_CONNECTING, SESSION_IDLE)

ATTACHMENT_STATES = (STATE_RUNNING, STATE_ERROR, STATE_RECONCILING)
BACKTEST_STATES = (RUN_QUEUED, RUN_RUNNING)
FAILURE_WINDOW = timedelta(hours=1)
OTHER_CHANNEL = "other"


@dataclass(frozen=True, slots=True)
class Leadership:
    role: str
    backend: str
    since: datetime | None
    fencing_token: int | None

    @property
    def is_leader(self) -> bool:
        return self.role in (ROLE_LEADER, ROLE_SINGLE)


@dataclass(frozen=True, slots=True)
class BrokerSession:
    source: str
    state: str
    subscriptions: int
    capacity: int | None


@dataclass(frozen=True, slots=True)
class RunnerFigures:
    active: bool
    ticks_seen: int = 0
    events_recorded: int = 0
    candles_stored: int = 0
    subscribed: int = 0
    rules: int = 0
    symbols_waiting: int = 0
    reconnects: int = 0
    strategy_signals: int = 0
    strategy_orders: int = 0
    strategy_failures: int = 0
    paper_accounts_open: int = 0
    upstream_fill: str = ""
    """How full each upstream session is, "40/40 · 20/40" (∞: the simulated market)."""


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    pending: int
    """Undelivered: pending plus in flight."""
    dead: int
    oldest_due_seconds: float
    """How long the oldest due, undelivered delivery has waited; 0 when none is due."""


@dataclass(frozen=True, slots=True)
class ChannelFailures:
    total: int
    """Failed send attempts ever recorded on this channel kind."""
    last_hour: int
    """Failed attempts of deliveries whose alert was raised in the last hour."""


@dataclass(frozen=True, slots=True)
class OpsStatus:
    database: bool
    leadership: Leadership
    runner: RunnerFigures
    sessions: list[BrokerSession] = field(default_factory=list)
    outbox: OutboxFigures | None = None
    failures: dict[str, ChannelFailures] = field(default_factory=dict)
    attachments: dict[str, int] = field(default_factory=dict)
    backtests: dict[str, int] = field(default_factory=dict)
    runner_source: str = "local"
    """Where ``runner`` and ``sessions`` come from: ``local`` (the runner in this
    process, or none: ``active`` says which) or ``leader`` (this worker does not run
    the engine; the leader's figures as it published them on the live bus)."""

    def health_body(self) -> dict[str, object]:
        """The public /api/health document: counts and states only."""
        outbox = self.outbox
        return {
            "status": "ok" if self.database else "degraded",
            "database": self.database,
            "leadership": {
                "role": self.leadership.role,
                "backend": self.leadership.backend,
                "since": self.leadership.since.isoformat() if self.leadership.since else None,
                "fencing_token": self.leadership.fencing_token,
            },
            "runner": {
                "active": self.runner.active,
                "subscribed": self.runner.subscribed,
                "rules": self.runner.rules,
                "ticks_seen": self.runner.ticks_seen,
                "events_recorded": self.runner.events_recorded,
                "symbols_waiting": self.runner.symbols_waiting,
            },
            "broker_sessions": [
                {
                    "source": s.source,
                    "state": s.state,
                    "subscriptions": s.subscriptions,
                    "capacity": s.capacity,
                }
                for s in self.sessions
            ],
            "outbox": None
            if outbox is None
            else {
                "pending": outbox.pending,
                "dead": outbox.dead,
                "oldest_due_seconds": round(outbox.oldest_due_seconds, 3),
            },
            "delivery_failures": {
                kind: {"last_hour": f.last_hour, "total": f.total}
                for kind, f in sorted(self.failures.items())
            },
            "strategy_attachments": dict(self.attachments),
            "backtests": dict(self.backtests),
        }


def leadership(runner: Runner | None) -> Leadership:
    held = current_leadership()
    if held.role == ROLE_OFF and runner is not None:
        # A runner started outside an election (a script, a test) is the only one.
        return Leadership(ROLE_SINGLE, "local", None, None)
    return Leadership(held.role, held.backend, held.since, held.fencing_token)


def broker_sessions(runner: Runner) -> list[BrokerSession]:
    """One entry per upstream session; a simulated market has no connection to lose."""
    out: list[BrokerSession] = []
    for up in runner.hub.upstreams:
        source = up.source
        if isinstance(source, KisMarketData):
            st = source.stream.status()
            for lane in st["sessions"]:  # type: ignore[attr-defined]
                subs = int(lane["subscriptions"])
                state = (
                    SESSION_CONNECTED
                    if lane["connected"]
                    else SESSION_CONNECTING
                    if subs
                    else SESSION_IDLE
                )
                out.append(BrokerSession("kis", state, subs, lane["capacity"]))
        else:
            out.append(
                BrokerSession(
                    str(getattr(source, "name", "unknown")),
                    SESSION_SIMULATED,
                    len(up.symbols),
                    up.capacity,
                )
            )
    return out


def _reconnects(runner: Runner) -> int:
    return sum(
        int(up.source.stream.reconnects)
        for up in runner.hub.upstreams
        if isinstance(up.source, KisMarketData)
    )


def runner_figures(runner: Runner | None) -> RunnerFigures:
    if runner is None:
        return RunnerFigures(active=False)
    desk = runner.strategies
    return RunnerFigures(
        active=True,
        ticks_seen=runner.ticks_seen,
        events_recorded=runner.events_recorded,
        candles_stored=runner.candles_stored,
        subscribed=len(runner.subscribed),
        rules=len(runner.book) + len(runner.conditions),
        symbols_waiting=len(runner.hub.pending),
        reconnects=_reconnects(runner),
        strategy_signals=desk.signals,
        strategy_orders=desk.orders,
        strategy_failures=desk.failures,
        paper_accounts_open=len(runner.paper.brokers),
        upstream_fill=_fill_text(runner),
    )


def _fill_text(runner: Runner) -> str:
    parts = []
    for sess in runner.hub.status()["sessions"]:  # type: ignore[union-attr]
        cap = "∞" if sess["capacity"] is None else str(sess["capacity"])
        parts.append(f"{sess['symbols']}/{cap}")
    return " · ".join(parts)


def leader_payload(runner: Runner) -> dict[str, object]:
    """What the leader publishes for the workers that do not run the engine."""
    return {
        "runner": asdict(runner_figures(runner)),
        "sessions": [asdict(s) for s in broker_sessions(runner)],
    }


async def _borrowed() -> tuple[RunnerFigures, list[BrokerSession]] | None:
    """The leader's figures from the bus; None if none are fresh or it is unreachable."""
    try:
        payload = await get_live_bus().leader_status()
        if not payload:
            return None
        figures = RunnerFigures(**payload["runner"])  # type: ignore[arg-type]
        sessions = [BrokerSession(**s) for s in payload["sessions"]]  # type: ignore[union-attr]
    except Exception:
        return None
    return figures, sessions


def _channel_kind() -> object:
    """``telegram:12`` -> ``telegram``: a bounded label, never a row id."""
    channel = col(Delivery.channel)
    whens = [(channel == k, literal(k)) for k in ("in_app", "email")]
    whens += [(channel.like(f"{k}:%"), literal(k)) for k in CHANNEL_KINDS]
    return case(*whens, else_=literal(OTHER_CHANNEL))


def _failed_attempts() -> object:
    """Attempts that did not deliver. A pending row with attempts has failed each one
    (pacing postpones without counting); a dead row failed its last one too; any other
    row's last attempt succeeded, is in flight, or found the channel switched off.
    Never decreases for a row, so the sum is a counter."""
    attempts = col(Delivery.attempts)
    return case(
        (col(Delivery.status).in_([DELIVERY_PENDING, DELIVERY_DEAD]), attempts),
        (attempts > 0, attempts - 1),
        else_=0,
    )


async def _database_figures(
    now: datetime,
) -> tuple[OutboxFigures, dict[str, ChannelFailures], dict[str, int], dict[str, int]]:
    async with db.session() as s:
        rows = (
            await s.exec(
                select(col(Delivery.status), func.count(), func.min(col(Delivery.next_attempt_at)))
                .where(
                    col(Delivery.status).in_([DELIVERY_PENDING, DELIVERY_SENDING, DELIVERY_DEAD])
                )
                .group_by(col(Delivery.status))
            )
        ).all()
        kind, failed = _channel_kind(), _failed_attempts()
        recent = case((col(Delivery.created_at) >= now - FAILURE_WINDOW, failed), else_=0)
        failure_rows = (
            await s.exec(
                select(kind, func.sum(failed), func.sum(recent))  # type: ignore[call-overload]
                .where(col(Delivery.attempts) > 0)
                .group_by(kind)
            )
        ).all()
        attachment_rows = (
            await s.exec(
                select(col(StrategyAttachment.state), func.count())
                .where(col(StrategyAttachment.enabled).is_(True))
                .group_by(col(StrategyAttachment.state))
            )
        ).all()
        backtest_rows = (
            await s.exec(
                select(col(BacktestRun.status), func.count())
                .where(col(BacktestRun.status).in_(BACKTEST_STATES))
                .group_by(col(BacktestRun.status))
            )
        ).all()
    counts = {status: int(n) for status, n, _ in rows}
    due = [when for status, _, when in rows if status != DELIVERY_DEAD and when is not None]
    oldest = min(due) if due else None
    outbox = OutboxFigures(
        pending=counts.get(DELIVERY_PENDING, 0) + counts.get(DELIVERY_SENDING, 0),
        dead=counts.get(DELIVERY_DEAD, 0),
        oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    )
    failures = {
        str(k): ChannelFailures(int(total or 0), int(last or 0))
        for k, total, last in failure_rows
        if int(total or 0) > 0
    }
    attachments = {state: 0 for state in ATTACHMENT_STATES}
    attachments.update({str(st): int(n) for st, n in attachment_rows if st in attachments})
    backtests = {state: 0 for state in BACKTEST_STATES}
    backtests.update({str(st): int(n) for st, n in backtest_rows})
    return outbox, failures, attachments, backtests


async def database_ok() -> bool:
    try:
        async with db.session() as s:
            await s.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception:
        return False
    return True


async def gather(
    runner: Runner | None = None,
    *,
    now: datetime | None = None,
    use_current_runner: bool = True,
) -> OpsStatus:
    """The snapshot. A database that does not answer degrades the status instead of
    failing it: the runner's own figures are still worth showing."""
    if runner is None and use_current_runner:
        runner = current_runner()
    lead = leadership(runner)
    figures = runner_figures(runner)
    sessions = broker_sessions(runner) if runner is not None else []
    source = "local"
    if runner is None and use_current_runner and (borrowed := await _borrowed()) is not None:
        figures, sessions = borrowed
        source = "leader"
    if not await database_ok():
        return OpsStatus(False, lead, figures, sessions, runner_source=source)
    outbox, failures, attachments, backtests = await _database_figures(now or utcnow())
    return OpsStatus(
        True, lead, figures, sessions, outbox, failures, attachments, backtests, source
    )
