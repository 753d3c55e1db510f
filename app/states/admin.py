"""Admin pages. The role is checked by the admin service on every call, not here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import reflex as rx

from app import db
from app.models.strategies import (
    RUN_QUEUED,
    RUN_RUNNING,
    STATE_ERROR,
    STATE_RECONCILING,
    STATE_RUNNING,
)
from app.models.users import User
from app.services import admin as admin_service
from app.services import audit, ops_status
from app.services.errors import PermissionDenied, ServiceError, ValidationFailed
from app.states.session import SessionState

KST = ZoneInfo("Asia/Seoul")


def _ops_view(ops: ops_status.OpsStatus, t: Callable[[str], str]) -> dict[str, str]:
    """The operational snapshot /api/health and /metrics also show, as page text."""
    lead = ops.leadership

    def word(prefix: str, value: str, known: tuple[str, ...]) -> str:
        return t(f"{prefix}.{value}") if value in known else value

    role = word("ops.role", lead.role, ops_status.ROLES)
    sessions = " · ".join(
        f"{s.source} {word('ops.session', s.state, ops_status.SESSION_STATES)}"
        + (f" {s.subscriptions}/{s.capacity}" if s.capacity is not None else "")
        for s in ops.sessions
    )
    outbox = ops.outbox
    return {
        "leadership": f"{role} ({lead.backend})",
        "fencing_token": "—" if lead.fencing_token is None else str(lead.fencing_token),
        "broker_sessions": sessions or "—",
        "events_recorded": str(ops.runner.events_recorded),
        "outbox_lag": "—" if outbox is None else f"{outbox.oldest_due_seconds:.1f}s",
        "attachments_running": str(ops.attachments.get(STATE_RUNNING, 0)),
        "attachments_error": str(ops.attachments.get(STATE_ERROR, 0)),
        "attachments_reconciling": str(ops.attachments.get(STATE_RECONCILING, 0)),
        "backtests_queued": str(ops.backtests.get(RUN_QUEUED, 0)),
        "backtests_running": str(ops.backtests.get(RUN_RUNNING, 0)),
    }


class AdminState(rx.State):
    users: list[dict[str, str]] = []
    entries: list[dict[str, str]] = []
    status: dict[str, str] = {}
    failures: list[dict[str, str]] = []
    error: str = ""
    filter_action: str = ""
    filter_outcome: str = ""
    filter_actor: str = ""
    filter_days: str = "7"

    async def _admin(self) -> tuple[SessionState, User | None]:
        session = await self.get_state(SessionState)
        return session, await session._user()

    def _fail(self, session: SessionState, exc: ServiceError) -> rx.event.EventSpec | None:
        if isinstance(exc, PermissionDenied):
            return rx.redirect("/")
        if isinstance(exc, ValidationFailed):
            code = next(iter(exc.field_errors.values()))[0]
            self.error = session._t(f"error.{code}")
        else:
            self.error = session._t(f"error.{exc.code}")
        return None

    @rx.event
    async def load_users(self) -> rx.event.EventSpec | None:
        session, user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                rows = await admin_service.list_users(s, user, ip=session._ip())
        except ServiceError as exc:
            return self._fail(session, exc)
        self.users = [
            {
                "id": str(r.id),
                "email": r.email,
                "name": r.display_name,
                "role": r.role,
                "active": "1" if r.is_active else "",
                "created": r.created_at.astimezone(KST).strftime("%Y-%m-%d"),
                "self": "1" if r.id == user.id else "",
            }
            for r in rows
        ]
        return None

    @rx.event
    async def set_role(self, user_id: str, role: str) -> rx.event.EventSpec | None:
        session, user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await admin_service.set_role(s, user, int(user_id), role, session._ip())
        except ServiceError as exc:
            return self._fail(session, exc)
        self.error = ""
        return AdminState.load_users

    @rx.event
    async def set_active(self, user_id: str, active: bool) -> rx.event.EventSpec | None:
        session, user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await admin_service.set_active(s, user, int(user_id), active, session._ip())
        except ServiceError as exc:
            return self._fail(session, exc)
        self.error = ""
        return AdminState.load_users

    @rx.event
    async def filter_audit(self, form: dict) -> rx.event.EventSpec | None:
        self.filter_action = str(form.get("action", "")).strip()[:64]
        self.filter_outcome = str(form.get("outcome", ""))
        self.filter_actor = str(form.get("actor", "")).strip()
        self.filter_days = str(form.get("days", "7"))
        return AdminState.load_audit

    @rx.event
    async def load_audit(self) -> rx.event.EventSpec | None:
        session, user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        actor_id = int(self.filter_actor) if self.filter_actor.isdigit() else None
        days = int(self.filter_days) if self.filter_days.isdigit() else 7
        outcome = self.filter_outcome if self.filter_outcome in {"ok", "denied", "failed"} else ""
        flt = audit.AuditFilter(
            action=self.filter_action,
            actor_id=actor_id,
            outcome=outcome,
            since=datetime.now(KST) - timedelta(days=max(1, min(days, 365))),
        )
        try:
            rows = await admin_service.audit_log(user, flt, ip=session._ip())
        except ServiceError as exc:
            return self._fail(session, exc)
        self.entries = [
            {
                "at": e.at.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S"),
                "actor": str(e.actor_id or "—"),
                "action": e.action,
                "target": f"{e.target_type}:{e.target_id}" if e.target_type else "",
                "outcome": e.outcome,
                "ip": e.ip,
            }
            for e in rows
        ]
        return None

    @rx.event
    async def load_status(self) -> rx.event.EventSpec | None:
        session, user = await self._admin()
        if user is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                st = await admin_service.system_status(s, user, ip=session._ip())
        except ServiceError as exc:
            return self._fail(session, exc)
        ops = await ops_status.gather()
        run = ops.runner
        self.status = {
            "users": str(st.users),
            "active_sessions": str(st.active_sessions),
            "active_rules": str(st.active_rules),
            "events_today": str(st.events_today),
            "deliveries_pending": str(st.deliveries_pending),
            "deliveries_dead": str(st.deliveries_dead),
            # The runner's figures whichever worker serves this page (ops_status).
            "runner": "on" if run.active else "off",
            "subscribed": str(run.subscribed),
            "ticks_seen": str(run.ticks_seen),
            "upstream_sessions": run.upstream_fill or "0",
            "symbols_waiting": str(run.symbols_waiting),
            "paper_accounts_open": str(run.paper_accounts_open),
            **_ops_view(ops, session._t),
        }
        self.failures = [
            {"channel": kind, "last_hour": str(f.last_hour), "total": str(f.total)}
            for kind, f in sorted(ops.failures.items())
        ]
        return None
