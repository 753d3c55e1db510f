"""The strategies page (/strategies): catalogue, the config editor, attachments and orders.

Thin, like every page state: each handler resolves the user from the session
cookie, hands the input to ``services.strategies`` (which validates it and
checks ownership, auditing a refusal) and translates the answer. Only the user's
own configs, attachments and orders ever reach a var, as display strings; the
broker account picker shows labels and masked numbers, never a secret.

The editor validates live: every change runs the registry's params model through
``check_params`` (pure, no database) and puts the translated message beside the
field, and the save button stays disabled while anything is wrong. Saving
validates again on the server, so a forged form gets the same messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import reflex as rx

from app import db
from app.i18n import catalog
from app.services import backtests, credentials
from app.services import sessions as sessions_service
from app.services import strategies as strategies_service
from app.services.errors import NotFound, ServiceError, ValidationFailed
from app.states.session import SessionState

log = logging.getLogger(__name__)

TIMEFRAMES = ("1d", "60m", "30m", "15m", "5m", "1m")
LABEL_MAX = 60
MAX_VALUE_LEN = 40
EDITABLE_MODES = ("alert", "paper")


def _num(value: object) -> str:
    """A bound or step as the browser's number input wants it (no exponent, no ``.0``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def strategy_text(key: str | None, lang: str, strategy: str = "", fallback: str = "") -> str:
    """The text of a strategy's i18n key: the app's catalog, else the plugin's own
    ``texts`` (a plugin brings its keys; the catalogs cannot know them), else ``fallback``."""
    if not key:
        return fallback
    texts = catalog(lang)
    if key in texts:
        return texts[key]
    if strategy:
        from engines.strategies import registry

        try:
            own = getattr(registry.get_strategy(strategy), "texts", None) or {}
        except registry.UnknownStrategy:
            own = {}
        found = (own.get(lang) or {}).get(key)
        if isinstance(found, str) and found:
            return found
    return fallback


def field_rows(
    info: Any, lang: str
) -> tuple[list[dict[str, str]], dict[str, list[dict[str, str]]]]:
    """The registry's ``ParamField`` list as the form's rows and choices, as display strings."""
    rows: list[dict[str, str]] = []
    choices: dict[str, list[dict[str, str]]] = {}
    for f in info.fields:
        low, high = _num(f.low), _num(f.high)
        numeric = f.kind in ("int", "float")
        rows.append(
            {
                "name": f.name,
                "kind": str(f.kind),
                "low": low,
                "high": high,
                "step": _num(f.step) or ("1" if f.kind == "int" else "any"),
                "range": f"{low} – {high}" if low and high and numeric else "",
                "label": strategy_text(f.label_key, lang, info.name, fallback=f.name),
                "help": strategy_text(getattr(f, "help_key", ""), lang, info.name),
            }
        )
        if f.kind == "choice":
            keys = list(getattr(f, "choice_keys", ()) or ())
            choices[f.name] = [
                {
                    "value": str(c),
                    "label": strategy_text(
                        keys[i] if i < len(keys) else "", lang, info.name, fallback=str(c)
                    ),
                }
                for i, c in enumerate(f.choices or ())
            ]
    return rows, choices


def default_values(info: Any) -> dict[str, str]:
    return {f.name: _num(f.default) for f in info.fields}


def param_message(session: SessionState, code: str, params: Mapping[str, object]) -> str:
    """A params error in the page's language: the registry's codes are ``strategy_<code>``."""
    texts = catalog(session.ui_lang)
    for key in (f"error.{code}", f"error.strategy_{code}"):
        if key in texts:
            try:
                return texts[key].format(**params) if params else texts[key]
            except (KeyError, IndexError, ValueError):
                log.warning("error text %s could not be filled with %s", key, sorted(params))
                break
    return texts["error.invalid_input"]


def _title(info: Any, lang: str) -> str:
    return strategy_text(info.title_key, lang, info.name, fallback=info.name)


def _catalogue() -> dict[str, Any]:
    from engines.strategies import registry

    return {info.name: info for info in registry.catalogue()}


def _params_text(info: Any | None, params: Mapping[str, object]) -> str:
    """``fast 20 · slow 60``: the config list's one-line summary, in field order."""
    names = [f.name for f in info.fields] if info is not None else list(params)
    return " · ".join(f"{n} {_num(params[n])}" for n in names if n in params)


class StrategiesState(rx.State):
    """Catalogue, the user's configs with their attachments, and the editor."""

    catalogue: list[dict[str, str]] = []
    configs: list[dict[str, str]] = []
    attachments: list[dict[str, str]] = []
    notice: str = ""
    error: str = ""
    # ---- the editor ----
    editor_open: bool = False
    editing_id: str = ""
    editor_strategy: str = ""
    editor_title: str = ""
    form: dict[str, str] = {}
    params: dict[str, str] = {}
    fields: list[dict[str, str]] = []
    choices: dict[str, list[dict[str, str]]] = {}
    field_errors: dict[str, str] = {}
    invalid: bool = False

    async def _caller(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    # ---- lists ----

    async def _reload(self, session: SessionState, user_id: int) -> None:
        infos = _catalogue()
        lang = session.ui_lang
        self.catalogue = [
            {
                "name": name,
                "title": _title(info, lang),
                "description": strategy_text(info.description_key, lang, name),
            }
            for name, info in infos.items()
        ]
        async with db.session() as s:
            configs = await strategies_service.list_configs(s, user_id)
        rows: list[dict[str, str]] = []
        atts: list[dict[str, str]] = []
        for c in configs:
            info = infos.get(c.strategy)
            rows.append(
                {
                    "id": str(c.id),
                    "label": c.label,
                    "strategy": c.strategy,
                    "title": _title(info, lang) if info else c.strategy,
                    "timeframe": c.timeframe,
                    "params": _params_text(info, c.params),
                    "count": str(len(c.attachments)),
                }
            )
            atts.extend(attachment_row(session, c.id, a) for a in c.attachments)
        self.configs = rows
        self.attachments = atts

    @rx.event
    async def load(self) -> rx.event.EventSpec | None:
        """on_load: the lists; ``?new=<name>``, ``?edit=<id>`` or ``?use_run=<id>&row=<n>``
        (an optimisation result's params) open the editor."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        self._close()
        await self._reload(session, user_id)
        query = self.router.url.query_parameters
        if query.get("new"):
            self._open_new(session, str(query["new"])[:64])
        elif query.get("edit"):
            await self._open_edit(session, user_id, str(query["edit"]))
        elif query.get("use_run"):
            await self._open_from_run(
                session, user_id, str(query["use_run"]), str(query.get("row", "0"))
            )
        return None

    # ---- the editor ----

    def _close(self) -> None:
        self.editor_open = False
        self.editing_id = self.editor_strategy = self.editor_title = ""
        self.form, self.params, self.fields, self.choices = {}, {}, [], {}
        self.field_errors = {}
        self.invalid = False

    def _open(
        self,
        session: SessionState,
        info: Any,
        *,
        editing_id: str,
        label: str,
        timeframe: str,
        params: Mapping[str, object],
    ) -> None:
        self.fields, self.choices = field_rows(info, session.ui_lang)
        values = default_values(info)
        values.update({k: _num(v) for k, v in params.items() if k in values})
        self.params = values
        self.form = {"label": label, "timeframe": timeframe}
        self.editor_strategy = info.name
        self.editor_title = _title(info, session.ui_lang)
        self.editing_id = editing_id
        self.editor_open = True
        self.field_errors = {}
        self._validate(session, show_label=bool(editing_id))

    def _open_new(self, session: SessionState, name: str) -> None:
        info = _catalogue().get(name)
        if info is None:
            self.error = session._t("sp.unknown_strategy")
            return
        self._open(session, info, editing_id="", label="", timeframe="1d", params={})

    async def _open_edit(
        self,
        session: SessionState,
        user_id: int,
        raw_id: str,
        params: Mapping[str, object] | None = None,
    ) -> None:
        try:
            async with db.session() as s:
                config = await strategies_service.get_config(
                    s, user_id, int(raw_id), ip=session._ip()
                )
        except (NotFound, ValueError):
            self.error = session._t("error.not_found")
            return
        info = _catalogue().get(config.strategy)
        if info is None:
            self.error = session._t("sp.unknown_strategy")
            return
        self._open(
            session,
            info,
            editing_id=str(config.id),
            label=config.label,
            timeframe=config.timeframe,
            params=params if params is not None else config.params,
        )

    async def _open_from_run(
        self, session: SessionState, user_id: int, raw_run: str, raw_row: str
    ) -> None:
        """The editor of the run's config, filled with one optimisation row's params
        (not saved: the user looks, then saves)."""
        try:
            async with db.session() as s:
                run = await backtests.get_run(s, user_id, int(raw_run), ip=session._ip())
            rows = run.output.get("rows") or []
            picked = rows[int(raw_row)]["params"]
        except (NotFound, ValueError, IndexError, KeyError, TypeError):
            self.error = session._t("error.not_found")
            return
        if run.config_id is None:
            self.error = session._t("error.not_found")
            return
        await self._open_edit(session, user_id, str(run.config_id), params=picked)
        if self.editor_open:
            self.notice = session._t("sp.params_from_run")

    def _validate(self, session: SessionState, *, show_label: bool = True) -> None:
        errors: dict[str, str] = {}
        label = self.form.get("label", "").strip()
        if not label:
            if show_label:
                errors["label"] = param_message(session, "strategy_label_required", {})
        elif len(label) > LABEL_MAX:
            errors["label"] = param_message(
                session, "strategy_label_too_long", {"limit": LABEL_MAX}
            )
        if self.form.get("timeframe", "") not in TIMEFRAMES:
            errors["timeframe"] = session._t("error.bad_choice")
        problems = strategies_service.check_params(self.editor_strategy, dict(self.params))
        for name, (code, params) in problems.items():
            errors[name] = param_message(session, code, params)
        self.field_errors = errors
        self.invalid = bool(errors) or not label

    @rx.event
    async def new_config(self, name: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        self._open_new(session, str(name)[:64])
        return _to_editor(self.editor_open)

    @rx.event
    async def edit_config(self, config_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        self.notice = self.error = ""
        await self._open_edit(session, user_id, str(config_id))
        return _to_editor(self.editor_open)

    @rx.event
    def close_editor(self) -> None:
        self._close()

    @rx.event
    async def set_field(self, key: str, value: str) -> rx.event.EventSpec | None:
        """``label``, ``timeframe`` or a parameter's name: store, then re-validate all."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if not self.editor_open:
            return None
        key = str(key)
        value = str(value if value is not None else "")
        if key in ("label", "timeframe"):
            self.form = {**self.form, key: value[: LABEL_MAX + 20]}
        elif key in self.params:
            self.params = {**self.params, key: value[:MAX_VALUE_LEN]}
        else:
            return None
        self.notice = ""
        self._validate(session)
        return None

    @rx.event
    async def save(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if not self.editor_open:
            return None
        self._validate(session)
        if self.invalid:
            return None
        label = self.form.get("label", "").strip()
        timeframe = self.form.get("timeframe", "1d")
        try:
            async with db.session() as s:
                if self.editing_id:
                    await strategies_service.update_config(
                        s,
                        user_id,
                        int(self.editing_id),
                        label=label,
                        params=dict(self.params),
                        timeframe=timeframe,
                        ip=session._ip(),
                    )
                else:
                    await strategies_service.create_config(
                        s,
                        user_id,
                        label=label,
                        strategy=self.editor_strategy,
                        params=dict(self.params),
                        timeframe=timeframe,
                        ip=session._ip(),
                    )
        except ValidationFailed as exc:
            self.field_errors = {
                k: param_message(session, code, params)
                for k, (code, params) in exc.field_errors.items()
            }
            self.invalid = True
            return None
        except (NotFound, ValueError):
            self.error = session._t("error.not_found")
            return None
        self.notice = session._t("sp.saved_edit" if self.editing_id else "sp.saved_new")
        self.error = ""
        self._close()
        await self._reload(session, user_id)
        return None

    @rx.event
    async def delete_config(self, config_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                await strategies_service.delete_config(s, user_id, int(config_id), ip=session._ip())
        except (ServiceError, ValueError):
            self.error = session._t("error.not_found")
            self.notice = ""
            return None
        if self.editing_id == str(config_id):
            self._close()
        self.error = ""
        self.notice = session._t("sp.deleted")
        await self._reload(session, user_id)
        return None


def _to_editor(opened: bool) -> rx.event.EventSpec | None:
    """On a phone the editor opens below the whole catalogue: bring it into view."""
    return rx.scroll_to("sp-editor") if opened else None


def attachment_row(session: SessionState, config_id: int, a: Any) -> dict[str, str]:
    killed = getattr(a, "killed_at", None) is not None
    live_ready = getattr(a, "live_confirmed_at", None) is not None
    state = str(getattr(a, "state", "") or "")
    state_key = f"strategy_exec.state.{state}"
    limits = [
        getattr(a, "max_order_value", None),
        getattr(a, "max_position_qty", None),
        getattr(a, "max_orders_per_day", None),
    ]
    return {
        "id": str(a.id),
        "config_id": str(config_id),
        "symbol": a.symbol,
        "mode": a.mode,
        "mode_text": session._t(f"strategy_exec.mode.{a.mode}"),
        "state": state,
        "state_text": session._t(state_key) if state_key in catalog("en") else state,
        "killed": "1" if killed else "",
        "live": "1" if a.mode == "live" and live_ready else "",
        "error": str(getattr(a, "last_error", "") or ""),
        "limits": session._t(
            "sp.limits_text",
            value=f"{limits[0]:,}" if limits[0] else "-",
            qty=f"{limits[1]:,}" if limits[1] else "-",
            per_day=str(limits[2]) if limits[2] else "-",
        ),
    }


def _first_error(session: SessionState, exc: ValidationFailed) -> str:
    (code, params), *_ = exc.field_errors.values()
    return param_message(session, code, params)


class AttachmentsState(rx.State):
    """Attach a config to symbols, switch modes, the kill switches, orders, going live.

    Going live is a dialog: pick one of the user's broker accounts, set the three
    limits, and type the confirmation phrase. The service checks all of it again
    (and audits it); the dialog only collects it.
    """

    notice: str = ""
    error: str = ""
    field_errors: dict[str, str] = {}  # "<config id>.<field>" of the attach forms
    orders_for: str = ""
    orders: list[dict[str, str]] = []
    live_for: str = ""
    live_symbol: str = ""
    accounts: list[dict[str, str]] = []
    live_errors: dict[str, str] = {}
    phrase: str = ""

    async def _caller(self) -> tuple[SessionState, int | None]:
        session = await self.get_state(SessionState)
        user = await session._user()
        return session, None if user is None else user.id

    async def _refresh(self, session: SessionState, user_id: int) -> None:
        page = await self.get_state(StrategiesState)
        page.notice = page.error = ""
        await page._reload(session, user_id)

    def _done(self, session: SessionState, key: str) -> None:
        self.error = ""
        self.notice = session._t(key)

    def _refused(self, session: SessionState, exc: Exception) -> None:
        self.notice = ""
        if isinstance(exc, ValidationFailed):
            self.error = _first_error(session, exc)
        else:
            self.error = session._t("error.not_found")

    @rx.event
    async def attach(self, form: dict) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        config_id = str(form.get("config_id", ""))
        mode = str(form.get("mode", "alert"))
        self.field_errors = {}
        try:
            async with db.session() as s:
                await strategies_service.attach(
                    s,
                    user_id,
                    int(config_id),
                    symbol=str(form.get("symbol", ""))[:40],
                    mode=mode,
                    ip=session._ip(),
                )
        except ValidationFailed as exc:
            self.notice = ""
            self.error = ""
            self.field_errors = {
                f"{config_id}.{k}": param_message(session, code, params)
                for k, (code, params) in exc.field_errors.items()
            }
            return None
        except (ServiceError, ValueError) as exc:
            self._refused(session, exc)
            return None
        self._done(session, "sp.attached")
        await self._refresh(session, user_id)
        return None

    async def _act(
        self, attachment_id: str, call: str, notice: str, **kwargs: object
    ) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        try:
            async with db.session() as s:
                fn = getattr(strategies_service, call)
                await fn(s, user_id, int(attachment_id), **kwargs, ip=session._ip())
        except (ServiceError, ValueError) as exc:
            self._refused(session, exc)
            return None
        self._done(session, notice)
        await self._refresh(session, user_id)
        return None

    @rx.event
    async def set_mode(self, attachment_id: str, mode: str) -> rx.event.EventSpec | None:
        """Alert or paper at once; live opens the confirmation dialog instead."""
        if mode == "live":
            session, user_id = await self._caller()
            if user_id is None:
                return rx.redirect("/login")
            await self._open_live(session, user_id, str(attachment_id))
            return None
        if mode not in EDITABLE_MODES:
            return None
        return await self._act(attachment_id, "set_mode", "sp.mode_changed", mode=mode)

    @rx.event
    async def detach(self, attachment_id: str) -> rx.event.EventSpec | None:
        return await self._act(attachment_id, "detach", "sp.detached")

    @rx.event
    async def kill(self, attachment_id: str) -> rx.event.EventSpec | None:
        return await self._act(attachment_id, "kill", "sp.killed")

    @rx.event
    async def revive(self, attachment_id: str) -> rx.event.EventSpec | None:
        return await self._act(attachment_id, "revive", "sp.revived")

    @rx.event
    async def kill_all(self) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        async with db.session() as s:
            count = await strategies_service.kill_all(s, user_id, ip=session._ip())
        self.error = ""
        self.notice = session._t("sp.killed_all", count=count)
        await self._refresh(session, user_id)
        return None

    @rx.event
    async def show_orders(self, attachment_id: str) -> rx.event.EventSpec | None:
        """Toggle the orders table under one of the caller's attachments."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if self.orders_for == str(attachment_id):
            self.orders_for, self.orders = "", []
            return None
        try:
            async with db.session() as s:
                orders = await strategies_service.list_orders(
                    s, user_id, attachment_id=str(attachment_id), limit=100, ip=session._ip()
                )
        except ServiceError as exc:
            self._refused(session, exc)
            return None
        self.orders_for = str(attachment_id)
        self.orders = [order_row(session, o) for o in orders]
        return None

    # ---- going live ----

    @rx.event
    async def open_live(self, attachment_id: str) -> rx.event.EventSpec | None:
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        await self._open_live(session, user_id, attachment_id)
        return None

    async def _open_live(self, session: SessionState, user_id: int, attachment_id: str) -> None:
        try:
            async with db.session() as s:
                att = await strategies_service.get_attachment(
                    s, user_id, str(attachment_id), ip=session._ip()
                )
                accounts = await credentials.list_accounts(s, user_id)
        except ServiceError as exc:
            self._refused(session, exc)
            return
        paper = session._t("sp.account_paper")
        self.accounts = [
            {
                "id": str(a.id),
                "label": f"{a.label} ({a.masked_account}{', ' + paper if a.is_paper else ''})",
            }
            for a in accounts
        ]
        self.live_for = str(att.id)
        self.live_symbol = att.symbol
        self.live_errors = {}
        self.phrase = session._t("strategy.live.confirm_phrase")
        self.error = self.notice = ""

    def _reset_live(self) -> None:
        self.live_for = self.live_symbol = ""
        self.live_errors = {}

    @rx.event
    def close_live(self) -> None:
        self._reset_live()

    @rx.event
    async def confirm_live(self, form: dict) -> rx.event.EventSpec | None:
        """Limits first (they are required for live), then the confirmation itself."""
        session, user_id = await self._caller()
        if user_id is None:
            return rx.redirect("/login")
        if not self.live_for:
            return None
        attachment_id = self.live_for
        session_id = await _session_id(session, user_id)
        account = str(form.get("broker_account_id", ""))
        try:
            async with db.session() as s:
                await strategies_service.set_limits(
                    s,
                    user_id,
                    attachment_id,
                    max_order_value=str(form.get("max_order_value", "")),
                    max_position_qty=str(form.get("max_position_qty", "")),
                    max_orders_per_day=str(form.get("max_orders_per_day", "")),
                    ip=session._ip(),
                )
                await strategies_service.go_live(
                    s,
                    user_id,
                    attachment_id,
                    broker_account_id=account,
                    confirmation=str(form.get("confirmation", ""))[:200],
                    session_id=session_id,
                    ip=session._ip(),
                )
        except ValidationFailed as exc:
            self.live_errors = {
                k: param_message(session, code, params)
                for k, (code, params) in exc.field_errors.items()
            }
            return None
        except (ServiceError, ValueError) as exc:
            self._reset_live()
            self._refused(session, exc)
            return None
        self._reset_live()
        self._done(session, "sp.live_on")
        await self._refresh(session, user_id)
        return None


async def _session_id(session: SessionState, user_id: int) -> str:
    """The id of the sign-in session confirming (stored with the confirmation, so the
    audit trail says which browser it was); never the token itself."""
    async with db.session() as s:
        rows = await sessions_service.list_active(s, user_id, session._session_token())
    return next((str(r.id) for r in rows if r.current), "")


def order_row(session: SessionState, o: Any) -> dict[str, str]:
    from zoneinfo import ZoneInfo

    created = getattr(o, "created_at", None)
    state = str(getattr(o, "state", "") or "")
    reason = str(getattr(o, "reason", "") or "")
    reason_key = f"strategy_exec.order_reason.{reason}" if reason else ""
    price = int(getattr(o, "price", 0) or 0)
    return {
        "id": str(o.id),
        "time": created.astimezone(ZoneInfo("Asia/Seoul")).strftime("%m-%d %H:%M")
        if created
        else "",
        "side": session._t(f"portfolio.side.{o.side}") if o.side in ("buy", "sell") else o.side,
        "symbol": o.symbol,
        "qty": f"{int(o.qty):,}",
        "price": f"{price:,}" if price else session._t("portfolio.type.market"),
        "state": session._t(f"strategy_exec.order_state.{state}")
        if f"strategy_exec.order_state.{state}" in catalog("en")
        else state,
        "reason": session._t(reason_key)
        if reason_key in catalog("en") and "{" not in catalog("en")[reason_key]
        else reason,
        "mode": session._t(f"strategy_exec.mode.{o.mode}")
        if f"strategy_exec.mode.{o.mode}" in catalog("en")
        else o.mode,
    }
