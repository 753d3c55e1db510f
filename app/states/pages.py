"""Page states. Thin: resolve the user, call a service, translate its answer."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import reflex as rx

from app import db
from app.i18n import catalog
from app.runtime.condition_text import describe, number
from app.runtime.messages import render_alert, symbol_name, won
from app.services import alerts as alerts_service
from app.services import rules as rules_service
from app.services import symbols as symbols_service
from app.services import watchlist as watchlist_service
from app.services.alerts import DeliveryView
from app.services.errors import ServiceError, ValidationFailed
from app.states.live import LiveState
from app.states.session import SessionState

KST = ZoneInfo("Asia/Seoul")


def _error_text(session: SessionState, code: str, params: dict[str, object]) -> str:
    """Symbol names travel in both languages; show the one the page speaks."""
    params = dict(params)
    name_en = params.pop("name_en", None)
    if name_en and session.ui_lang == "en":
        params["name"] = name_en
    return session._t(f"error.{code}", **params)


class WatchlistState(rx.State):
    query: str = ""
    suggestions: list[dict[str, str]] = []
    error: str = ""
    notice: str = ""

    @rx.event
    async def set_query(self, value: str) -> None:
        self.query = value
        self.error = ""
        async with db.session() as s:
            found = await symbols_service.search(s, value, limit=8)
        self.suggestions = [
            {"code": f.code, "name_ko": f.name_ko, "name_en": f.name_en, "market": f.market}
            for f in found
        ]

    @rx.event
    async def pick(self, code: str) -> rx.event.EventSpec | None:
        self.query = code
        return await self.add()

    @rx.event
    async def submit(self, form: dict) -> rx.event.EventSpec | None:
        self.query = str(form.get("symbol", self.query))
        return await self.add()

    @rx.event
    async def add(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                sym = await watchlist_service.add(s, user.id, self.query)
        except ServiceError as exc:
            self.error = _error_text(session, exc.code, exc.params)
            self.notice = ""
            return None
        self.error = ""
        self.notice = session._t(
            "watchlist.added", name=sym.name_en if session.ui_lang == "en" else sym.name_ko
        )
        self.query = ""
        self.suggestions = []
        live = await self.get_state(LiveState)
        await live._refresh(user.id)
        return None

    @rx.event
    async def remove(self, item_id: str) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                code = await watchlist_service.remove(s, user.id, int(item_id), session._ip())
        except (ServiceError, ValueError) as exc:
            code_ = exc.code if isinstance(exc, ServiceError) else "not_found"
            self.error = _error_text(session, code_, {})
            return None
        self.error = ""
        self.notice = session._t("watchlist.removed", name=code)
        live = await self.get_state(LiveState)
        await live._refresh(user.id)
        return None


class RulesState(rx.State):
    rows: list[dict[str, str]] = []
    field_errors: dict[str, str] = {}
    notice: str = ""
    form_key: int = 0  # bumped to reset the form after a successful create

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            rows = await rules_service.list_rows(s, user.id)
        lang = session.ui_lang
        texts = catalog(lang)

        def condition(r: rules_service.RuleRow) -> tuple[str, str, str]:
            """(condition, level, repeat) texts: a price rule's parts, or a condition
            rule's one-line summary and its frequency."""
            if r.kind != "condition":
                return (
                    session._t(f"op.{r.op}"),
                    won(r.level),
                    session._t(f"rules.repeat.{r.repeat}"),
                )
            try:
                summary = describe(r.spec, lang)
            except (KeyError, ValueError, TypeError):
                summary = ""  # a spec this version cannot read still lists, and can be deleted
            freq = texts.get(f"builder.freq.{r.spec.get('frequency', '')}", "")
            return summary, "", freq

        out: list[dict[str, str]] = []
        for r in rows:
            cond_text, level, repeat = condition(r)
            out.append(
                {
                    "id": str(r.id),
                    "kind": "condition" if r.kind == "condition" else "price",
                    "code": r.code,
                    "name": r.name_en if lang == "en" else r.name_ko,
                    "rule_name": r.rule_name,
                    "condition": cond_text,
                    "level": level,
                    "repeat": repeat,
                    "status": r.status,
                    "status_text": texts.get(f"rules.status.{r.status}", r.status),
                    "fired": session._t("rules.fired_times", count=r.fire_count)
                    if r.fire_count
                    else "",
                }
            )
        self.rows = out
        return None

    @rx.event
    async def create(self, form: dict) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await rules_service.create_price_rule(
                    s,
                    user.id,
                    symbol_query=str(form.get("symbol", "")),
                    op=str(form.get("op", "")),
                    level=str(form.get("level", "")),
                    repeat=str(form.get("repeat", "once") or "once"),
                    name=str(form.get("name", "")),
                )
        except ValidationFailed as exc:
            self.field_errors = {
                field: _error_text(session, code, params)
                for field, (code, params) in exc.field_errors.items()
            }
            self.notice = ""
            return None
        self.field_errors = {}
        self.notice = session._t("rules.created")
        self.form_key += 1
        return RulesState.load

    @rx.event
    async def delete(self, rule_id: str) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await rules_service.delete_rule(s, user.id, int(rule_id), session._ip())
        except (ServiceError, ValueError):
            self.notice = _error_text(session, "not_found", {})
            return RulesState.load
        self.notice = session._t("rules.deleted")
        return RulesState.load


def _values_text(session: SessionState, payload: dict) -> str:
    """What a condition alert saw when it fired: each indicator's value, and whether
    it was judged on a bar close, so the user can check the alert against a chart."""
    values = payload.get("values") or {}
    parts = [f"{label} = {number(value)}" for label, value in values.items()]
    if payload.get("on_close"):
        parts.append(session._t("history.on_close"))
    return " · ".join(parts)


def _delivery_text(session: SessionState, d: DeliveryView) -> str:
    key = f"channels.kind.{d.channel}"
    name = session._t(key if key in catalog("en") else f"channel.{d.channel}")
    if d.label:
        name = f"{name} ({d.label})"
    status_key = f"delivery.{d.status}"
    text = f"{name}: {session._t(status_key) if status_key in catalog('en') else d.status}"
    if d.in_digest and d.status == "sent":
        text += f" · {session._t('history.in_digest')}"
    if d.resumed:
        text += f" · {session._t('delivery.resumed')}"
    if d.error and d.status != "sent":
        text += f" ({d.error})"
    return text


class HistoryState(rx.State):
    rows: list[dict[str, str]] = []
    digest_filter: bool = False  # showing only the alerts of one digest message
    loaded_unread: int = 0  # compared with the live badge to offer a refresh

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        digest = self.router.url.query_parameters.get("digest", "")
        async with db.session() as s:
            rows = await alerts_service.history(s, user.id, digest=str(digest))
        self.digest_filter = bool(digest)
        lang = session.ui_lang
        out = []
        for r in rows:
            rendered = render_alert(r.payload, lang)
            out.append(
                {
                    "id": str(r.event_id),
                    "time": r.fired_at.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S KST"),
                    "title": rendered.title,
                    "body": rendered.body,
                    "symbol": r.symbol,
                    "name": symbol_name(r.payload, lang),
                    "price": won(r.price),
                    "read": "1" if r.read else "",
                    "values": _values_text(session, r.payload),
                    "deliveries": " · ".join(_delivery_text(session, d) for d in r.deliveries),
                }
            )
        self.rows = out
        self.loaded_unread = sum(1 for r in rows if not r.read)
        return None

    @rx.event
    async def mark_all_read(self) -> rx.event.EventSpec | None:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            await alerts_service.mark_all_read(s, user.id)
        live = await self.get_state(LiveState)
        live.unread = 0
        return HistoryState.load


class LoginState(rx.State):
    """The sign-in form posts natively to /auth/login; this only shows its answer."""

    @rx.var
    def error_key(self) -> str:
        """Only codes that have a text: the query string is the visitor's to edit."""
        code = self.router.url.query_parameters.get("error", "")
        key = f"login.error.{code}"
        return key if code and key in catalog("en") else ""

    @rx.var
    def signed_out(self) -> bool:
        return self.router.url.query_parameters.get("signed_out", "") == "1"
