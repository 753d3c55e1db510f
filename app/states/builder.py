"""The condition rule builder, and the rule list's enable/disable and duplicate buttons.

Thin, like every page state: each handler resolves the user from the session cookie,
hands the flat form to ``services.condition_rules`` (which validates it whole and
checks ownership) and translates the answer. The form is the user's own draft, so
keeping it in state is safe; nothing here ever holds another user's data or a secret.

Validation runs live on every (debounced) change, but a message is shown only under
inputs the user has touched: a fresh form full of red would teach nothing. Saving or
previewing shows every problem at once.
"""

from __future__ import annotations

import bisect
import logging
from datetime import datetime

import plotly.graph_objects as go
import reflex as rx

from app import db
from app.components.candles import bar_labels, candlestick
from app.i18n import catalog
from app.models.users import User
from app.services import condition_rules
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.services.rule_form import (
    CONDITION_TYPES,
    FIELDS_BY_TYPE,
    OPERAND_FIELDS,
    FieldErrors,
    blank_condition,
    condition_count,
)
from app.states.pages import RulesState, _error_text
from app.states.session import SessionState
from engines.market import Candle
from engines.rules.conditions import MAX_CONDITIONS
from engines.rules.evaluator import ConditionFired

log = logging.getLogger(__name__)

MAX_VALUE_LEN = 1_000  # longer than any valid input (templates stop at 500)

BASE_FIELDS: dict[str, str] = {
    "symbol": "",
    "name": "",
    "timeframe": "1d",
    "logic": "and",
    "frequency": "once_per_bar",
    "cooldown_minutes": "",
    "hysteresis_pct": "0.5",
    "expires_at": "",
    "quiet_start": "",
    "quiet_end": "",
    "quiet_action": "defer",
    "template": "",
    "channel_email": "",
}
ROW_FIELDS: frozenset[str] = frozenset(
    {"type"} | {name for names in FIELDS_BY_TYPE.values() for name in names}
)
DEFAULT_COOLDOWN = "60"

# An error reported on one input is often caused by its partner: show it as soon as
# either of them has been touched.
_PARTNERS: dict[str, tuple[str, ...]] = {
    "operands_both_constant": ("left", "right"),
    "channel_bounds_inverted": ("lower", "upper"),
    "pct_out_of_range": ("amount", "unit"),
}


# Codes of an operand that could not be read as typed (not of a combination of inputs).
_OPERAND_READ_ERRORS = frozenset(
    {
        "unknown_indicator",
        "indicator_param",
        "indicator_output",
        "timeframe_unsupported",
        "expr_malformed",
        "value_not_finite",
    }
)


def fresh_form(symbol: str = "") -> dict[str, str]:
    """A new rule: one ``price crossing <empty>`` row, daily bars, once per bar."""
    return {**BASE_FIELDS, "symbol": symbol, **blank_condition(0, "compare")}


def _row_key(key: str) -> tuple[int, str] | None:
    """``("c3.pct")`` -> ``(3, "pct")``; ``None`` for a key that is not a row input."""
    head, dot, name = key.partition(".")
    if not dot or len(head) != 2 or head[0] != "c" or not head[1].isdigit():
        return None
    index = int(head[1])
    if index >= MAX_CONDITIONS or name not in ROW_FIELDS:
        return None
    return index, name


def _allowed(key: str) -> bool:
    return key in BASE_FIELDS or _row_key(key) is not None


def _index(value: object) -> int | None:
    """A row index from the browser (strings or numbers), or ``None`` if it is not one."""
    try:
        index = int(str(value))
    except ValueError:
        return None
    return index if 0 <= index < MAX_CONDITIONS else None


def _message(session: SessionState, code: str, params: dict[str, object]) -> str:
    """The translated text of one field error; a code without a text gets a generic one."""
    if f"error.{code}" in catalog(session.ui_lang):
        try:
            return _error_text(session, code, params)
        except (KeyError, IndexError, ValueError):
            log.warning("error text %s could not be filled with %s", code, sorted(params))
    return session._t("error.invalid_input")


def _quoting_input(key: str, code: str) -> bool:
    """Whether the message should repeat what was typed: an operand that could not be
    read. The service's parameters for these carry only an English ``detail``, so the
    page names the input itself (``"RSX(14)": unknown indicator``)."""
    row = _row_key(key)
    return row is not None and row[1] in OPERAND_FIELDS and code in _OPERAND_READ_ERRORS


def _bar_of(starts: list[datetime], fired: ConditionFired) -> int:
    """The index of the bar a firing belongs to.

    A bar-close firing is stamped with the time the bar closed, which is the next bar's
    start, so it belongs to the last bar that started strictly before it.
    """
    if fired.on_close:
        return max(bisect.bisect_left(starts, fired.ts) - 1, 0)
    return max(bisect.bisect_right(starts, fired.ts) - 1, 0)


def preview_figure(candles: list[Candle], firings: list[ConditionFired], title: str) -> go.Figure:
    """Candlesticks of the stored history with one marker per firing.

    The x axis is categorical, so nights, weekends and holidays leave no gaps.
    """
    labels = bar_labels(candles)
    starts = [c.start for c in candles]
    fig = go.Figure()
    fig.add_trace(candlestick(candles, labels))
    bars = [_bar_of(starts, f) for f in firings] if candles else []
    fig.add_trace(
        go.Scatter(
            x=[labels[b] for b in bars],
            y=[candles[b].high for b in bars],
            mode="markers",
            marker={
                "symbol": "triangle-down",
                "size": 14,
                "color": "#f5a623",
                "line": {"color": "#1c2024", "width": 1},
            },
            hovertext=[f"{f.price:,}" for f in firings],
            hoverinfo="text+x",
            name=title,
            showlegend=False,
        )
    )
    fig.update_layout(
        height=360,
        autosize=True,
        margin={"l": 48, "r": 12, "t": 12, "b": 40},
        xaxis={"type": "category", "rangeslider": {"visible": False}, "nticks": 6},
        yaxis={"tickformat": ",d"},
        dragmode="pan",
    )
    return fig


class RuleBuilderState(rx.State):
    """The builder at ``/rules/new``; ``?edit=<id>`` edits a stored condition rule."""

    form: dict[str, str] = {}
    count: int = 0  # condition rows shown: c0 .. c{count-1}
    field_errors: dict[str, str] = {}
    editing_id: str = ""
    notice: str = ""
    error: str = ""
    figure: go.Figure = go.Figure()
    preview_ready: bool = False
    preview_text: str = ""
    _touched: list[str] = []
    _show_all: bool = False

    # ---- helpers (not events) ----------------------------------------------------

    async def _user(self) -> tuple[SessionState, User | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return session, None
        return session, user

    def _reset(self, form: dict[str, str], editing_id: str = "") -> None:
        self.form = form
        self.count = condition_count(form)
        self.editing_id = editing_id
        self.field_errors = {}
        self.notice = ""
        self.error = ""
        self._touched = []
        self._show_all = False
        self._clear_preview()

    def _clear_preview(self) -> None:
        self.figure = go.Figure()
        self.preview_ready = False
        self.preview_text = ""

    def _visible(self, key: str) -> bool:
        return key in BASE_FIELDS or (
            (row := _row_key(key)) is not None and row[0] < self.count and key in self.form
        )

    def _show(self, session: SessionState, errors: FieldErrors) -> None:
        """Translate ``errors``; only touched inputs' ones unless a save asked for all."""
        touched = set(self._touched)
        shown: dict[str, str] = {}
        general: list[str] = []
        for key, (code, params) in errors.items():
            if not self._show_all:
                related = {key}
                row = _row_key(key)
                if row is not None and code in _PARTNERS:
                    related |= {f"c{row[0]}.{name}" for name in _PARTNERS[code]}
                if key in {"quiet_start", "quiet_end"} and code == "quiet_hours_empty":
                    related |= {"quiet_start", "quiet_end"}
                if not related & touched:
                    continue
            text = _message(session, code, params)
            typed = self.form.get(key, "").strip()
            if typed and _quoting_input(key, code):
                text = session._t("builder.error_with_input", input=typed, message=text)
            if self._visible(key):
                shown[key] = text
            else:
                general.append(text)  # e.g. a problem of the whole spec, not one input
        if general:
            shown["form"] = " ".join(dict.fromkeys(general))
        self.field_errors = shown

    async def _revalidate(self, session: SessionState, user: User) -> None:
        try:
            async with db.session() as s:
                await condition_rules.validate(s, user, dict(self.form))
        except ValidationFailed as exc:
            self._show(session, exc.field_errors)
            return
        self.field_errors = {}

    def _touch(self, *keys: str) -> None:
        self._touched = list(dict.fromkeys([*self._touched, *keys]))

    def _set_type(self, index: int, kind: str) -> None:
        prefix = f"c{index}."
        form = {k: v for k, v in self.form.items() if not k.startswith(prefix)}
        form.update(blank_condition(index, kind))
        self.form = form
        self._touched = [k for k in self._touched if not k.startswith(prefix)]
        self._touch(prefix + "type")

    # ---- events ------------------------------------------------------------------

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        """on_load: a fresh form, a symbol from the watchlist, or a stored rule to edit."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        params = self.router.url.query_parameters
        actions = await self.get_state(RuleActionsState)
        actions.notice = ""
        actions.error = ""
        symbol = params.get("symbol", "").strip()[:20]
        self._reset(fresh_form(symbol))
        raw_id = params.get("edit", "").strip()
        if not raw_id:
            return None
        try:
            rule_id = int(raw_id)
            async with db.session() as s:
                stored = await condition_rules.edit_form(s, user, rule_id, session._ip())
        except (ServiceError, ValueError):
            self.error = _error_text(session, "not_found", {})
            return None
        form = {k: v for k, v in fresh_form().items() if _row_key(k) is None}
        form.update({k: v for k, v in stored.items() if _allowed(k)})
        self._reset(form, editing_id=str(rule_id))
        return None

    @rx.event
    async def set_field(self, key: str, value: str) -> rx.event.EventSpec | None:
        """One input changed: store it and re-validate the whole form."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        key = str(key)
        if not _allowed(key):
            return None
        value = str(value if value is not None else "")[:MAX_VALUE_LEN]
        row = _row_key(key)
        if row is not None and row[0] >= self.count:
            return None
        if row is not None and row[1] == "type":
            if value in CONDITION_TYPES:
                self._set_type(row[0], value)
                await self._revalidate(session, user)
            return None
        form = dict(self.form)
        form[key] = value
        if key == "frequency" and value == "cooldown" and not form.get("cooldown_minutes"):
            form["cooldown_minutes"] = DEFAULT_COOLDOWN
        self.form = form
        self.notice = ""
        self._touch(key)
        await self._revalidate(session, user)
        return None

    @rx.event
    async def toggle_email(self, checked: bool) -> rx.event.EventSpec | None:
        """The e-mail channel checkbox (in-app alerts are always on)."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        self.form = {**self.form, "channel_email": "on" if checked else ""}
        self._touch("channel_email")
        await self._revalidate(session, user)
        return None

    @rx.event
    async def set_type(self, index: int | str, kind: str) -> rx.event.EventSpec | None:
        """A row's condition type changed: its inputs restart from that type's defaults."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        i = _index(index)
        if i is None or i >= self.count or kind not in CONDITION_TYPES:
            return None
        self._set_type(i, kind)
        await self._revalidate(session, user)
        return None

    @rx.event
    async def add_condition(self) -> rx.event.EventSpec | None:
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        if self.count >= MAX_CONDITIONS:
            return None
        self.form = {**self.form, **blank_condition(self.count, "compare")}
        self.count += 1
        await self._revalidate(session, user)
        return None

    @rx.event
    async def remove_condition(self, index: int | str) -> rx.event.EventSpec | None:
        """Drop row ``index`` and move the rows after it up, so keys stay c0..c{n-1}."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        i = _index(index)
        if i is None or i >= self.count or self.count <= 1:
            return None

        def renumber(key: str) -> str | None:
            row = _row_key(key)
            if row is None or row[0] < i:
                return key
            if row[0] == i:
                return None
            return f"c{row[0] - 1}.{row[1]}"

        form: dict[str, str] = {}
        for key, value in self.form.items():
            new = renumber(key)
            if new is not None:
                form[new] = value
        self.form = form
        self._touched = [n for k in self._touched if (n := renumber(k)) is not None]
        self.count -= 1
        self._clear_preview()
        await self._revalidate(session, user)
        return None

    @rx.event
    async def save(self) -> rx.event.EventSpec | None:
        """Create, or update the rule being edited; every problem is shown at once."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        assert user.id is not None
        self._show_all = True
        form = dict(self.form)
        try:
            async with db.session() as s:
                if self.editing_id:
                    rule = await condition_rules.update(
                        s, user, int(self.editing_id), form, session._ip()
                    )
                else:
                    rule = await condition_rules.create(s, user, form)
        except ValidationFailed as exc:
            self._show(session, exc.field_errors)
            self.error = session._t("builder.fix_errors")
            self.notice = ""
            return None
        except (ServiceError, ValueError) as exc:
            code = exc.code if isinstance(exc, ServiceError) else NotFound().code
            self.error = _error_text(session, code, {})
            self.notice = ""
            return None
        log.info("condition rule %s saved by user %s", rule.id, user.id)
        actions = await self.get_state(RuleActionsState)
        actions.error = ""
        actions.notice = session._t("builder.updated" if self.editing_id else "builder.created")
        self._reset(fresh_form())
        return rx.redirect("/rules")

    @rx.event
    async def run_preview(self) -> rx.event.EventSpec | None:
        """Where the drafted rule would have fired over the stored candles."""
        session, user = await self._user()
        if user is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                result = await condition_rules.preview(s, user, dict(self.form))
        except ValidationFailed as exc:
            self._show_all = True
            self._show(session, exc.field_errors)
            self._clear_preview()
            self.preview_text = session._t("builder.preview_fix")
            return None
        self.field_errors = {}
        self.error = ""
        if not result.candles:
            self._clear_preview()
            self.preview_text = session._t("builder.preview_no_data")
            return None
        self.figure = preview_figure(
            result.candles, result.firings, session._t("builder.preview_marker")
        )
        self.preview_ready = True
        self.preview_text = session._t(
            "builder.preview_result", count=len(result.firings), bars=len(result.candles)
        )
        return None


class RuleActionsState(rx.State):
    """The rule list's per-row enable/disable and duplicate buttons, and their notices."""

    notice: str = ""
    error: str = ""

    async def _done(
        self, session: SessionState, key: str | None, failed: bool
    ) -> rx.event.EventSpec:
        if failed:
            self.notice = ""
            self.error = _error_text(session, "not_found", {})
        else:
            self.error = ""
            self.notice = session._t(key) if key else ""
        return RulesState.load

    @rx.event
    async def toggle(self, rule_id: str) -> rx.event.EventSpec | None:
        """Pause an active rule, or re-enable a paused, triggered or expired one.

        Which way is read from the caller's own list; an id that is not in it is asked
        to be disabled, and the service refuses it if it is someone else's.
        """
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        rules = await self.get_state(RulesState)
        current = next((r for r in rules.rows if r.get("id") == str(rule_id)), None)
        enable = current is not None and current.get("status") != "active"
        try:
            async with db.session() as s:
                await condition_rules.set_enabled(s, user.id, int(rule_id), enable, session._ip())
        except (ServiceError, ValueError) as exc:
            if isinstance(exc, ValidationFailed):  # the active-rule quota
                (code, params), *_ = exc.field_errors.values()
                self.notice, self.error = "", _error_text(session, code, params)
                return RulesState.load
            return await self._done(session, None, failed=True)
        return await self._done(
            session, "rules.enabled" if enable else "rules.disabled", failed=False
        )

    @rx.event
    async def duplicate(self, rule_id: str) -> rx.event.EventSpec | None:
        """A fresh, active copy of one of the caller's rules."""
        session = await self.get_state(SessionState)
        user = await session._user()
        if user is None or user.id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await condition_rules.duplicate(s, user.id, int(rule_id), session._ip())
        except (ServiceError, ValueError) as exc:
            if isinstance(exc, ValidationFailed):
                (code, params), *_ = exc.field_errors.values()
                self.notice, self.error = "", _error_text(session, code, params)
                return RulesState.load
            return await self._done(session, None, failed=True)
        return await self._done(session, "rules.duplicated", failed=False)
