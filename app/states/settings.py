"""Settings: the user's own active sessions, linked sign-ins and the daily summary e-mail."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import reflex as rx

from app import db
from app.config import get_settings
from app.services import oauth, preferences
from app.services import sessions as sessions_service
from app.services.errors import ServiceError
from app.services.oauth_providers import enabled_providers
from app.states.session import SessionState

KST = ZoneInfo("Asia/Seoul")


def _when(value: object) -> str:
    return value.astimezone(KST).strftime("%Y-%m-%d %H:%M")  # type: ignore[attr-defined]


class SettingsState(rx.State):
    sessions: list[dict[str, str]] = []
    identities: list[dict[str, str]] = []
    linkable: list[str] = []
    error: str = ""
    daily_digest: bool = False
    # False when the server has no SMTP: the switch is shown disabled, with the reason.
    digest_available: bool = False
    digest_time: str = ""
    digest_notice: str = ""

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            rows = await sessions_service.list_active(s, user.id, session._session_token())
        self.sessions = [
            {
                "id": str(r.id),
                "created": _when(r.created_at),
                "last_used": _when(r.last_used_at),
                "agent": r.user_agent[:120],
                "ip": r.ip,
                "current": "1" if r.current else "",
            }
            for r in rows
        ]
        linked = await oauth.list_identities(user.id)
        self.identities = [
            {"provider": i.provider, "email": i.email or "", "since": _when(i.created_at)}
            for i in linked
        ]
        have = {i.provider for i in linked}
        self.linkable = [p.id for p in enabled_providers(get_settings()) if p.id not in have]
        self.daily_digest = bool(user.daily_digest)
        self.digest_available = get_settings().email_enabled
        self.digest_time = get_settings().daily_digest_time
        self.digest_notice = ""
        return None

    @rx.event
    async def set_daily_digest(self, enabled: bool) -> rx.event.EventSpec | None:
        """The switch: changes only the caller's own flag (the user comes from the cookie)."""
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        self.digest_available = get_settings().email_enabled
        if enabled and not self.digest_available:
            self.error = session._t("daily.setting.unavailable")
            return None
        async with db.session() as s:
            self.daily_digest = await preferences.set_daily_digest(s, user.id, bool(enabled))
        self.error = ""
        self.digest_notice = session._t(
            "daily.setting.on" if self.daily_digest else "daily.setting.off"
        )
        return None

    @rx.event
    async def revoke(self, session_id: str) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await sessions_service.revoke(s, user.id, int(session_id), session._ip())
        except (ServiceError, ValueError):
            self.error = session._t("error.not_found")
            return SettingsState.load
        self.error = ""
        if await session._user() is None:  # revoked the session of this very browser
            return rx.redirect("/login")
        return SettingsState.load
