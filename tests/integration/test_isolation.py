"""User B tries every state event handler and every route on user A's objects.

The test enumerates the app's state classes, their event handlers and the API
routes. Each must appear in a table below, either with an attack on A's objects
or with the reason it touches only the caller's own data. A new handler or route
that is in neither table fails the test, so it cannot ship unchecked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import reflex as rx
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import select

import app.app as app_module
from app import db
from app.i18n import translate
from app.models.rules import AlertRule
from app.models.strategies import BacktestRun
from app.models.users import User, UserSession
from app.models.watchlists import WatchlistItem
from app.services import audit, auth, channels, condition_rules, credentials, paper_accounts
from app.services import rules as rules_service
from app.services import watchlist as watchlist_service
from app.states.admin import AdminState
from app.states.backtest import BacktestState
from app.states.brokers import BrokersState
from app.states.builder import RuleActionsState, RuleBuilderState
from app.states.channels import ChannelsState
from app.states.live import LiveState
from app.states.pages import HistoryState, RulesState, WatchlistState
from app.states.portfolio import PortfolioState
from app.states.settings import SettingsState
from app.states.strategies import AttachmentsState, StrategiesState
from brokers.paper.market import SimulatedMarket
from tests.integration.helpers import make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")

Objects = dict[str, Any]
Attack = Callable[[State, Objects], Awaitable[None]]


def _app_states() -> set[type[rx.State]]:
    found: set[type[rx.State]] = set()
    todo = [rx.State]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("app."):
                found.add(sub)
    return found


async def _call(root: State, cls: type[rx.State], handler: str, *args: object) -> object:
    state = await root.get_state(cls)
    return await cls.event_handlers[handler].fn(state, *args)


# --- attacks: B acts on A's object ids ------------------------------------------


async def watch_remove(root: State, a: Objects) -> None:
    await _call(root, WatchlistState, "remove", str(a["item_id"]))
    state = await root.get_state(WatchlistState)
    assert state.error  # refused, with a message


async def rules_delete(root: State, a: Objects) -> None:
    await _call(root, RulesState, "delete", str(a["rule_id"]))


async def _refused_with_not_found(root: State, cls: type[rx.State]) -> None:
    state = await root.get_state(cls)
    assert state.error == translate("error.not_found", "ko"), state.error


async def builder_load_edit(root: State, a: Objects) -> None:
    """?edit=<A's rule>: refused, and none of A's rule reaches B's form."""
    headers = root.router.headers
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": headers.cookie},
            "ip": "6.6.6.6",
            "token": "client-b",
            "pathname": "/rules/new",
            "asPath": f"/rules/new?edit={a['cond_rule_id']}",
        }
    )
    try:
        await _call(root, RuleBuilderState, "load")
    finally:
        root.router = RouterData.from_router_data(
            {"headers": {"cookie": headers.cookie}, "ip": "6.6.6.6", "token": "client-b"}
        )
    await _refused_with_not_found(root, RuleBuilderState)
    state = await root.get_state(RuleBuilderState)
    assert state.editing_id == "" and state.form["symbol"] == ""
    assert "RSI(14)" not in str(state.form) and "A's RSI" not in str(state.form)


async def builder_save_over(root: State, a: Objects) -> None:
    """A forged editing_id (setvar can set any var) must not overwrite A's rule."""
    state = await root.get_state(RuleBuilderState)
    state.editing_id = str(a["cond_rule_id"])
    state.form = {**COND_FORM, "name": "B was here", "c0.right": "99"}
    state.count = 1
    await _call(root, RuleBuilderState, "save")
    await _refused_with_not_found(root, RuleBuilderState)
    state.editing_id = ""


async def rule_toggle(root: State, a: Objects) -> None:
    await _call(root, RuleActionsState, "toggle", str(a["cond_rule_id"]))
    await _refused_with_not_found(root, RuleActionsState)


async def rule_duplicate(root: State, a: Objects) -> None:
    await _call(root, RuleActionsState, "duplicate", str(a["cond_rule_id"]))
    await _refused_with_not_found(root, RuleActionsState)


async def sessions_revoke(root: State, a: Objects) -> None:
    await _call(root, SettingsState, "revoke", str(a["session_id"]))
    assert (await root.get_state(SettingsState)).error


async def brokers_delete(root: State, a: Objects) -> None:
    await _call(root, BrokersState, "delete", str(a["credential_id"]))
    assert (await root.get_state(BrokersState)).error


async def brokers_test_connection(root: State, a: Objects) -> None:
    await _call(root, BrokersState, "test_connection", str(a["credential_id"]))
    assert (await root.get_state(BrokersState)).error


async def portfolio_cancel(root: State, a: Objects) -> None:
    await _call(root, PortfolioState, "cancel", str(a["paper_order_id"]))
    assert (await root.get_state(PortfolioState)).error


async def portfolio_choose_source(root: State, a: Objects) -> None:
    await _call(root, PortfolioState, "choose_source", f"kis:{a['credential_id']}")
    state = await root.get_state(PortfolioState)
    assert state.error and state.source == "paper"


async def channels_toggle(root: State, a: Objects) -> None:
    await _call(root, ChannelsState, "toggle", str(a["channel_id"]))
    assert (await root.get_state(ChannelsState)).error


async def channels_test_send(root: State, a: Objects) -> None:
    await _call(root, ChannelsState, "test_send", str(a["channel_id"]))
    assert (await root.get_state(ChannelsState)).error


async def channels_delete(root: State, a: Objects) -> None:
    await _call(root, ChannelsState, "delete", str(a["channel_id"]))
    assert (await root.get_state(ChannelsState)).error


async def channels_resend_verification(root: State, a: Objects) -> None:
    await _call(root, ChannelsState, "resend_verification", str(a["channel_id"]))
    assert (await root.get_state(ChannelsState)).error


async def admin_set_role(root: State, a: Objects) -> None:
    await _call(root, AdminState, "set_role", str(a["user_id"]), "user")


async def admin_set_active(root: State, a: Objects) -> None:
    await _call(root, AdminState, "set_active", str(a["user_id"]), False)


async def admin_load_users(root: State, a: Objects) -> None:
    await _call(root, AdminState, "load_users")
    assert (await root.get_state(AdminState)).users == []


async def admin_load_audit(root: State, a: Objects) -> None:
    await _call(root, AdminState, "load_audit")
    assert (await root.get_state(AdminState)).entries == []


async def admin_load_status(root: State, a: Objects) -> None:
    await _call(root, AdminState, "load_status")
    assert (await root.get_state(AdminState)).status == {}


# --- the strategy pages: A's config, attachment and backtest run, made per attack ------


async def _a_strategy_page_objects(a: Objects) -> dict[str, int]:
    """A's config with a paper attachment and a queued backtest run, for one attack."""
    from app.services import strategies as strategy_service

    async with db.session() as s:
        config = await strategy_service.create_config(
            s,
            a["user_id"],
            label="A's pages",
            strategy="ma_cross",
            params={"fast": 5, "slow": 20},
            timeframe="1d",
        )
        att = await strategy_service.attach(
            s, a["user_id"], config.id, symbol="005930", mode="paper"
        )
        run = BacktestRun(
            user_id=a["user_id"],
            config_id=config.id,
            strategy="ma_cross",
            params='{"fast": 5, "slow": 20}',
            symbols=["005930"],
            start_date=date(2025, 1, 2),
            end_date=date(2025, 6, 30),
            options={"cash": 10_000_000},
        )
        s.add(run)
        await s.commit()
        await s.refresh(run)
    assert run.id is not None
    return {"config": config.id, "attachment": att.id, "run": run.id}


async def _a_strategy_page_objects_untouched(a: Objects, ids: dict[str, int]) -> None:
    """A's objects exactly as made, and nothing of B's created; then removed again."""
    from app.services import strategies as strategy_service

    async with db.session() as s:
        [view] = await strategy_service.list_configs(s, a["user_id"])
        assert (view.id, view.label, view.params["slow"]) == (ids["config"], "A's pages", 20)
        assert [(x.id, x.mode, x.killed, x.live_confirmed) for x in view.attachments] == [
            (ids["attachment"], "paper", False, False)
        ]
        runs = (await s.exec(select(BacktestRun))).all()
        assert [(r.id, r.status, r.user_id) for r in runs] == [(ids["run"], "queued", a["user_id"])]
        await s.delete(runs[0])
        await s.commit()
        await strategy_service.delete_config(s, a["user_id"], ids["config"])
        assert await strategy_service.list_configs(s, a["user_id"]) == []


def _strategy_page_attack(
    cls: type[rx.State],
    handler: str,
    *args: str,
    forge: dict[str, object] | None = None,
    query: str = "",
) -> Attack:
    """B runs ``handler`` with A's ids: ``args`` and the values in ``forge`` (vars B set
    with setvar) and ``query`` may name ``{config}``, ``{attachment}`` or ``{run}``."""

    def fill(value: object, ids: dict[str, int]) -> object:
        if isinstance(value, str):
            return value.format(**ids)
        if isinstance(value, dict):
            return {k: fill(v, ids) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, ids) for v in value]
        return value

    async def attack(root: State, a: Objects) -> None:
        ids = await _a_strategy_page_objects(a)
        state = await root.get_state(cls)
        headers = root.router.headers
        if query:
            root.router = RouterData.from_router_data(
                {
                    "headers": {"cookie": headers.cookie},
                    "ip": "6.6.6.6",
                    "token": "client-b",
                    "pathname": query.split("?")[0],
                    "asPath": query.format(**ids),
                }
            )
        for var, value in (forge or {}).items():
            setattr(state, var, fill(value, ids))
        try:
            await _call(root, cls, handler, *(fill(arg, ids) for arg in args))
        finally:
            root.router = RouterData.from_router_data(
                {"headers": {"cookie": headers.cookie}, "ip": "6.6.6.6", "token": "client-b"}
            )
        await _refused_with_not_found(root, cls)
        state.error = ""
        await _a_strategy_page_objects_untouched(a, ids)

    return attack


_FORGED_EDITOR = {
    "editor_open": True,
    "editing_id": "{config}",
    "editor_strategy": "ma_cross",
    "form": {"label": "B was here", "timeframe": "1d"},
    "params": {"kind": "sma", "fast": "10", "slow": "30", "fraction": "1"},
}


STRATEGY_PAGE_ATTACKS: dict[tuple[str, str], Attack] = {
    ("StrategiesState", "load"): _strategy_page_attack(
        StrategiesState, "load", query="/strategies?edit={config}"
    ),
    ("StrategiesState", "edit_config"): _strategy_page_attack(
        StrategiesState, "edit_config", "{config}"
    ),
    ("StrategiesState", "save"): _strategy_page_attack(
        StrategiesState, "save", forge=_FORGED_EDITOR
    ),
    ("StrategiesState", "delete_config"): _strategy_page_attack(
        StrategiesState, "delete_config", "{config}"
    ),
    ("AttachmentsState", "attach"): _strategy_page_attack(
        AttachmentsState,
        "attach",
        {"config_id": "{config}", "symbol": "000660", "mode": "paper"},  # type: ignore[arg-type]
    ),
    ("AttachmentsState", "set_mode"): _strategy_page_attack(
        AttachmentsState, "set_mode", "{attachment}", "alert"
    ),
    ("AttachmentsState", "detach"): _strategy_page_attack(
        AttachmentsState, "detach", "{attachment}"
    ),
    ("AttachmentsState", "kill"): _strategy_page_attack(AttachmentsState, "kill", "{attachment}"),
    ("AttachmentsState", "revive"): _strategy_page_attack(
        AttachmentsState, "revive", "{attachment}"
    ),
    ("AttachmentsState", "show_orders"): _strategy_page_attack(
        AttachmentsState, "show_orders", "{attachment}"
    ),
    ("AttachmentsState", "open_live"): _strategy_page_attack(
        AttachmentsState, "open_live", "{attachment}"
    ),
    ("AttachmentsState", "confirm_live"): _strategy_page_attack(
        AttachmentsState,
        "confirm_live",
        {  # type: ignore[arg-type]
            "max_order_value": "1000000",
            "max_position_qty": "10",
            "max_orders_per_day": "3",
            "broker_account_id": "1",
            "confirmation": "I accept the risk of live trading",
        },
        forge={"live_for": "{attachment}"},
    ),
    ("BacktestState", "load"): _strategy_page_attack(
        BacktestState, "load", query="/backtest?config={config}"
    ),
    ("BacktestState", "run_backtest"): _strategy_page_attack(
        BacktestState, "run_backtest", forge={"config_id": "{config}"}
    ),
    ("BacktestState", "run_optimization"): _strategy_page_attack(
        BacktestState, "run_optimization", forge={"config_id": "{config}"}
    ),
    ("BacktestState", "run_walk_forward"): _strategy_page_attack(
        BacktestState, "run_walk_forward", forge={"config_id": "{config}"}
    ),
    ("BacktestState", "run_parity"): _strategy_page_attack(
        BacktestState,
        "run_parity",
        forge={"config_id": "1", "form": {"attachment": "{attachment}", "days": "30"}},
    ),
    ("BacktestState", "cancel"): _strategy_page_attack(BacktestState, "cancel", "{run}"),
    ("BacktestState", "show_run"): _strategy_page_attack(BacktestState, "show_run", "{run}"),
    ("BacktestState", "choose_symbol"): _strategy_page_attack(
        BacktestState,
        "choose_symbol",
        "005930",
        forge={"result_run": "{run}", "result_symbols": ["005930"]},
    ),
}


ATTACKS: dict[tuple[str, str], Attack] = {
    ("WatchlistState", "remove"): watch_remove,
    ("RulesState", "delete"): rules_delete,
    ("RuleBuilderState", "load"): builder_load_edit,
    ("RuleBuilderState", "save"): builder_save_over,
    ("RuleActionsState", "toggle"): rule_toggle,
    ("RuleActionsState", "duplicate"): rule_duplicate,
    ("SettingsState", "revoke"): sessions_revoke,
    ("BrokersState", "delete"): brokers_delete,
    ("BrokersState", "test_connection"): brokers_test_connection,
    ("PortfolioState", "cancel"): portfolio_cancel,
    ("PortfolioState", "choose_source"): portfolio_choose_source,
    ("ChannelsState", "toggle"): channels_toggle,
    ("ChannelsState", "delete"): channels_delete,
    ("ChannelsState", "test_send"): channels_test_send,
    ("ChannelsState", "resend_verification"): channels_resend_verification,
    ("AdminState", "set_role"): admin_set_role,
    ("AdminState", "set_active"): admin_set_active,
    ("AdminState", "load_users"): admin_load_users,
    ("AdminState", "load_audit"): admin_load_audit,
    ("AdminState", "load_status"): admin_load_status,
    **STRATEGY_PAGE_ATTACKS,
}

# --- handlers that take no object id: they act on the caller's own data ----------
OWN_DATA_ONLY: dict[tuple[str, str], str] = {
    ("SessionState", "guard"): "resolves the caller from the cookie",
    ("SessionState", "toggle_language"): "updates the caller's own language",
    ("WatchlistState", "set_query"): "symbol search: public master data",
    ("WatchlistState", "add"): "adds to the caller's own list (user from cookie)",
    ("WatchlistState", "pick"): "adds to the caller's own list (user from cookie)",
    ("WatchlistState", "submit"): "adds to the caller's own list (user from cookie)",
    ("RulesState", "load"): "lists the caller's rules (checked below)",
    ("RulesState", "create"): "creates a rule for the caller",
    ("RuleBuilderState", "set_field"): "edits the caller's own draft; validates as the caller",
    ("RuleBuilderState", "toggle_email"): "edits the caller's own draft",
    ("RuleBuilderState", "set_type"): "edits the caller's own draft",
    ("RuleBuilderState", "add_condition"): "edits the caller's own draft",
    ("RuleBuilderState", "remove_condition"): "edits the caller's own draft",
    ("RuleBuilderState", "run_preview"): "replays the caller's draft on shared market data",
    ("HistoryState", "load"): "lists the caller's alerts (checked below)",
    ("HistoryState", "mark_all_read"): "marks the caller's own alerts",
    ("SettingsState", "load"): "lists the caller's sessions (checked below)",
    ("SettingsState", "set_daily_digest"): "sets the caller's own digest flag "
    "(test_daily_digest.py: another user's flag is untouched)",
    ("LiveState", "connect"): "links to the caller's own token (checked below)",
    ("LiveState", "dismiss_toast"): "edits the caller's own linked state",
    ("SymbolLiveState", "follow"): "signed-in only; registers the caller's own tab for a "
    "symbol's public price (no user data)",
    ("AdminState", "filter_audit"): "stores filter text; load_audit re-checks the role",
    ("BrokersState", "load"): "lists the caller's accounts (checked below)",
    ("BrokersState", "create"): "creates an account for the caller",
    ("PortfolioState", "load"): "the caller's paper account and own broker accounts "
    "(checked below)",
    ("PortfolioState", "refresh"): "re-reads the source the caller chose (checked on choice)",
    ("PortfolioState", "leave"): "forgets only this browser tab's open page",
    ("PortfolioState", "set_order_field"): "edits the caller's own order form",
    ("PortfolioState", "place"): "places on the caller's own paper account",
    ("ChannelsState", "load"): "lists the caller's channels (checked below)",
    ("ChannelsState", "add"): "adds a channel for the caller",
    ("ChannelsState", "add_email"): "adds an address for the caller, mailed before it is saved",
    ("ChannelsState", "start_link"): "a linking code for the caller (replaces only the "
    "caller's own pending code)",
    ("ChannelsState", "check_link"): "looks the code up among the caller's own pending links "
    "only; A's code is refused for B (test_telegram_link.py)",
    ("ChannelsState", "cancel_link"): "clears this tab's own linking code",
    ("ChartState", "load"): "public market data plus the caller's own alert levels "
    "(test_chart.py: another user's levels are never drawn)",
    ("ChartState", "set_timeframe"): "re-renders for the caller resolved from the cookie",
    ("ChartState", "toggle_overlay"): "re-renders for the caller resolved from the cookie",
    ("ChartState", "follow"): "re-resolves the caller from the cookie on every update",
    ("ChartState", "leave"): "drops only this browser tab's own chart interest",
    ("StrategiesState", "new_config"): "opens this tab's editor on a registry strategy",
    ("StrategiesState", "close_editor"): "closes this tab's own editor",
    ("StrategiesState", "set_field"): "edits the caller's own draft; checks params (pure)",
    ("AttachmentsState", "kill_all"): "kills only the caller's own attachments "
    "(test_strategy_pages_state.py: another user's keeps running)",
    ("AttachmentsState", "close_live"): "closes this tab's own dialog",
    ("BacktestState", "set_tab"): "switches this tab's own view",
    ("BacktestState", "set_field"): "edits this tab's own form",
    ("BacktestState", "watch"): "polls through _poll, which re-resolves the caller and reads "
    "the run with get_run (test_strategy_pages_state.py: another user's run is refused)",
}
# Reflex's own handler: sets a var of the calling client only. Identity is never read
# from state vars (always from the cookie), so whatever a client sets proves nothing.
FRAMEWORK = {"setvar"}

# --- routes ---------------------------------------------------------------------
PUBLIC_ROUTES = {
    ("/auth/login", "POST"): "sign-in form",
    ("/auth/logout", "POST"): "revokes only the session in the request's own cookie",
    ("/api/health", "GET"): "no user data",
    ("/metrics", "GET"): "counts and states with bounded labels, no user data; bearer token "
    "or direct loopback only (test_metrics.py)",
    ("/auth/providers", "GET"): "which sign-in methods are on: no user data",
    ("/auth/login/{provider_id}", "GET"): "starts a flow bound to this browser's cookie",
    ("/auth/link/{provider_id}", "GET"): "links to the caller resolved from the cookie; "
    "stealing another user's identity is refused in test_oauth.py",
    ("/auth/callback/{provider_id}", "GET"): "completes only the flow bound to this browser "
    "(single-use, login-CSRF refused: test_oauth.py)",
    ("/auth/callback/{provider_id}", "POST"): "Apple form_post: re-enters the GET callback",
    ("/api/push/vapid-public-key", "GET"): "the server's public VAPID key: no user data",
    ("/api/push/subscriptions", "POST"): "adds a subscription for the caller from the cookie; "
    "cross-site refused (test_channels.py)",
    ("/api/push/fcm-tokens", "POST"): "registers a device for the caller from the cookie; "
    "cross-site refused (test_fcm_registration.py)",
    ("/api/channels/kakao/start", "GET"): "starts a Kakao link for the caller from the cookie; "
    "cross-site refused (test_kakao_link.py)",
    ("/api/channels/kakao/callback", "GET"): "finishes only a flow the caller started in this "
    "session: another user's state is refused and spent (test_kakao_link.py)",
    ("/api/strategies/catalogue", "GET"): "the registry's strategies and fields: no user data",
    ("/api/strategies", "POST"): "creates a config for the caller from the cookie; "
    "cross-site refused (test_strategy_api.py)",
    ("/api/strategies/validate", "POST"): "checks params only: reads and writes nothing",
}


def _api_routes() -> set[tuple[str, str]]:
    """Every (path, method), descending into included routers (FastAPI wraps them)."""
    out: set[tuple[str, str]] = set()
    todo = list(app_module.api.routes)
    while todo:
        route = todo.pop()
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and not hasattr(route, "methods"):
            todo.extend(inner.routes)
            continue
        for method in getattr(route, "methods", None) or ():
            if method not in {"HEAD", "OPTIONS"}:
                out.add((route.path, method))
    return out


def test_every_handler_and_route_is_covered():
    handlers = {
        (cls.__name__, name)
        for cls in _app_states()
        for name in cls.event_handlers
        if name not in FRAMEWORK
    }
    missing = handlers - set(ATTACKS) - set(OWN_DATA_ONLY)
    assert not missing, f"handlers without an isolation check: {sorted(missing)}"
    stale = (set(ATTACKS) | set(OWN_DATA_ONLY)) - handlers
    assert not stale, f"checks for handlers that no longer exist: {sorted(stale)}"
    routes = _api_routes()
    assert len(routes) >= 8, routes  # the walk found the routes, so this is not vacuous
    unchecked = routes - set(PUBLIC_ROUTES) - set(ROUTE_ATTACKS)
    assert not unchecked, f"routes without an isolation check: {sorted(unchecked)}"


COND_FORM = {
    "symbol": "005930",
    "name": "A's RSI",
    "timeframe": "1d",
    "logic": "and",
    "frequency": "once_per_bar",
    "hysteresis_pct": "0.5",
    "c0.type": "compare",
    "c0.left": "RSI(14)",
    "c0.op": "less",
    "c0.right": "30",
}


async def _setup() -> tuple[Objects, User, str]:
    await seed_symbols()
    a = await make_user("alice@example.com")
    b = await make_user("bob@example.com")
    async with db.session() as s:
        a_row = await s.get(User, a.id)
        a_row.role = "admin"  # B must not be able to touch even the admin
        s.add(a_row)
        await s.commit()
        await watchlist_service.add(s, a.id, "005930")
        rule = await rules_service.create_price_rule(
            s, a.id, symbol_query="005930", op="above", level="70000"
        )
        cond_rule = await condition_rules.create(s, a, COND_FORM)
        a_token = await auth.create_session(s, a, timedelta(hours=1), "A-browser", "1.1.1.1")
        b_token = await auth.create_session(s, b, timedelta(hours=1), "B-browser", "2.2.2.2")
        item = (await s.exec(select(WatchlistItem))).one()
        a_session = (await s.exec(select(UserSession).where(UserSession.user_id == a.id))).one()
        account = await credentials.create_kis_account(
            s,
            a.id,
            label="A main",
            app_key="PS" + "k" * 34,
            app_secret="s" * 180,
            account_no="12345678",
            product_code="01",
            hts_id="alicehts",
            is_paper=True,
        )
        channel = await channels.add_discord(
            s, a.id, "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68
        )
        ack = await paper_accounts.place_order(
            s, a.id, SimulatedMarket(seed=1), symbol="005930", side="buy", qty=1, price=50_000
        )
    objects = {
        "user_id": a.id,
        "item_id": item.id,
        "rule_id": rule.id,
        "cond_rule_id": cond_rule.id,
        "cond_spec": dict(cond_rule.spec),
        "session_id": a_session.id,
        "credential_id": account.id,
        "a_token": a_token,
        "paper_order_id": ack.order_id,
        "channel_id": channel.id,
    }
    return objects, b, b_token


def _root_for(token: str) -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {"headers": {"cookie": f"tw_session={token}"}, "ip": "6.6.6.6", "token": "client-b"}
    )
    return root


async def _a_is_untouched(objects: Objects) -> None:
    async with db.session() as s:
        a = await s.get(User, objects["user_id"])
        assert a.role == "admin" and a.is_active
        assert await s.get(WatchlistItem, objects["item_id"]) is not None
        assert (await s.get(AlertRule, objects["rule_id"])).status == "active"
        cond = await s.get(AlertRule, objects["cond_rule_id"])
        assert (cond.status, cond.name, cond.spec) == ("active", "A's RSI", objects["cond_spec"])
        rules = (await s.exec(select(AlertRule))).all()
        assert {r.user_id for r in rules} == {a.id} and len(rules) == 2  # nothing duplicated
        assert (await auth.resolve_session(s, objects["a_token"])).id == a.id
        assert [r.id for r in await credentials.list_accounts(s, a.id)] == [
            objects["credential_id"]
        ]
        assert [(c.id, c.enabled) for c in await channels.list_channels(s, a.id)] == [
            (objects["channel_id"], True)
        ]
        orders = await paper_accounts.list_orders(s, a.id)
        assert [(o.order_id, o.state.value) for o in orders] == [
            (objects["paper_order_id"], "open")
        ]


async def test_user_b_is_refused_on_every_handler_and_each_refusal_is_audited():
    objects, b, b_token = await _setup()
    root = _root_for(b_token)
    for (cls_name, handler), attack in sorted(ATTACKS.items()):
        before = len(await audit.search(audit.AuditFilter(outcome="denied", actor_id=b.id)))
        await attack(root, objects)
        after = await audit.search(audit.AuditFilter(outcome="denied", actor_id=b.id))
        assert len(after) == before + 1, f"{cls_name}.{handler}: refusal not audited"
        assert after[0].ip == "6.6.6.6"
    await _a_is_untouched(objects)

    # handlers without ids show B only B's own data
    await _call(root, RulesState, "load")
    assert (await root.get_state(RulesState)).rows == []
    await _call(root, RuleBuilderState, "load")
    builder = await root.get_state(RuleBuilderState)
    assert builder.editing_id == "" and builder.form["symbol"] == ""
    await _call(root, HistoryState, "load")
    assert (await root.get_state(HistoryState)).rows == []
    await _call(root, SettingsState, "load")
    agents = [r["agent"] for r in (await root.get_state(SettingsState)).sessions]
    assert agents == ["B-browser"]
    await _call(root, BrokersState, "load")
    assert (await root.get_state(BrokersState)).rows == []
    await _call(root, ChannelsState, "load")
    assert (await root.get_state(ChannelsState)).rows == []
    await _call(root, PortfolioState, "load")
    portfolio = await root.get_state(PortfolioState)
    assert [s["key"] for s in portfolio.sources] == ["paper"] and portfolio.orders == []
    live = await root.get_state(LiveState)
    await live._refresh(b.id)
    assert live.watch_rows == []


async def test_a_forged_or_missing_cookie_gets_nothing():
    objects, _, _ = await _setup()
    for token in ("", "forged-token", objects["a_token"] + "x"):
        root = _root_for(token)
        result = await _call(root, WatchlistState, "remove", str(objects["item_id"]))
        assert result is not None  # a redirect to /login
        await _call(root, RulesState, "load")
        assert (await root.get_state(RulesState)).rows == []
        for cls, handler in (
            (RuleActionsState, "toggle"),
            (RuleActionsState, "duplicate"),
            (RuleBuilderState, "load"),
        ):
            args = () if handler == "load" else (str(objects["cond_rule_id"]),)
            assert await _call(root, cls, handler, *args) is not None  # a redirect to /login
    await _a_is_untouched(objects)


async def logout_with_b_cookie(client: httpx.AsyncClient, objects: Objects, b_token: str) -> None:
    client.cookies.set("tw_session", b_token)
    await client.post("/auth/logout")
    client.cookies.clear()


async def push_unsubscribe_other(client: httpx.AsyncClient, objects: Objects, b_token: str) -> None:
    """B removes "A's" endpoint: only B's own subscriptions are searched."""
    client.cookies.set("tw_session", b_token)
    response = await client.request(
        "DELETE", "/api/push/subscriptions", json={"endpoint": "https://fcm.googleapis.com/x"}
    )
    client.cookies.clear()
    assert response.status_code == 404


async def fcm_unregister_other(client: httpx.AsyncClient, objects: Objects, b_token: str) -> None:
    """B sends A's device token: only B's own devices are searched, A's stays."""
    a_device = "aDevice:APA91b" + "A" * 140
    async with db.session() as s:
        row = await channels.add_fcm(s, objects["user_id"], a_device)
    client.cookies.set("tw_session", b_token)
    response = await client.request("DELETE", "/api/push/fcm-tokens", json={"token": a_device})
    client.cookies.clear()
    assert response.status_code == 404
    async with db.session() as s:
        kept = [c.id for c in await channels.list_channels(s, objects["user_id"])]
        assert row.id in kept
        await channels.delete(s, objects["user_id"], row.id)  # A's objects as they were


async def verify_email_as_other(client: httpx.AsyncClient, objects: Objects, b_token: str) -> None:
    """B, signed in, opens the verification link of A's address: refused, A's stays unverified."""
    import time

    from app.services import channel_links

    token = f"{int(time.time()) + 3600}.isolation-check"
    async with db.session() as s:
        row = await channels._add(
            s,
            objects["user_id"],
            "email_extra",
            "alice.extra@example.com",
            "",
            "al••••@example.com",
            verified=False,
            ip="",
            verify_token_hash=channel_links._token_digest(token),
        )
    client.cookies.set("tw_session", b_token)
    response = await client.get("/api/channels/verify-email", params={"token": token})
    client.cookies.clear()
    assert response.status_code == 303
    assert response.headers["location"] == "/settings/channels?error=verify_other_user"
    async with db.session() as s:
        mine = {c.id: c.verified for c in await channels.list_channels(s, objects["user_id"])}
        assert mine[row.id] is False
        await channels.delete(s, objects["user_id"], row.id)  # A's objects as they were


async def _a_strategy(objects: Objects) -> tuple[int, int]:
    """A's strategy config with one attachment, made for one attack and removed after it."""
    from app.services import strategies as strategy_service

    async with db.session() as s:
        config = await strategy_service.create_config(
            s,
            objects["user_id"],
            label="A's cross",
            strategy="ma_cross",
            params={"fast": 5, "slow": 20},
            timeframe="1d",
        )
        att = await strategy_service.attach(s, objects["user_id"], config.id, symbol="005930")
    return config.id, att.id


def _strategy_route_attack(
    method: str, path: str, body: dict | None
) -> Callable[..., Awaitable[None]]:
    """B calls ``path`` (``{config}``/``{attachment}`` filled with A's ids): 404, A unchanged."""

    async def attack(client: httpx.AsyncClient, objects: Objects, b_token: str) -> None:
        from app.services import strategies as strategy_service

        config_id, att_id = await _a_strategy(objects)
        client.cookies.set("tw_session", b_token)
        try:
            url = path.format(config=config_id, attachment=att_id)
            response = await client.request(method, url, json=body)
        finally:
            client.cookies.clear()
        if method == "GET":
            assert response.status_code == 200 and response.json() == {"strategies": []}
        else:
            assert response.status_code == 404, (method, url, response.text)
        async with db.session() as s:
            [view] = await strategy_service.list_configs(s, objects["user_id"])
            assert (view.id, view.label, view.params["slow"]) == (config_id, "A's cross", 20)
            assert [(a.symbol, a.killed) for a in view.attachments] == [("005930", False)]
            await strategy_service.delete_config(s, objects["user_id"], config_id)

    return attack


ROUTE_ATTACKS: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
    ("/api/strategies", "GET"): _strategy_route_attack("GET", "/api/strategies", None),
    ("/api/strategies/{config_id}", "PATCH"): _strategy_route_attack(
        "PATCH", "/api/strategies/{config}", {"label": "B was here"}
    ),
    ("/api/strategies/{config_id}", "DELETE"): _strategy_route_attack(
        "DELETE", "/api/strategies/{config}", None
    ),
    ("/api/strategies/{config_id}/attachments", "POST"): _strategy_route_attack(
        "POST", "/api/strategies/{config}/attachments", {"symbol": "000660"}
    ),
    ("/api/strategies/attachments/{attachment_id}/kill", "POST"): _strategy_route_attack(
        "POST", "/api/strategies/attachments/{attachment}/kill", None
    ),
    ("/api/channels/verify-email", "GET"): verify_email_as_other,
    ("/api/push/subscriptions", "DELETE"): push_unsubscribe_other,
    ("/api/push/fcm-tokens", "DELETE"): fcm_unregister_other,
}


async def test_routes_do_not_reach_other_users():
    objects, _, b_token = await _setup()
    transport = httpx.ASGITransport(app=app_module.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for attack in ROUTE_ATTACKS.values():  # while B's session is still valid
            await attack(client, objects, b_token)
        await logout_with_b_cookie(client, objects, b_token)
        health = (await client.get("/api/health")).json()
        assert "alice@example.com" not in str(health)
    await _a_is_untouched(objects)
    async with db.session() as s:
        assert await auth.resolve_session(s, b_token) is None  # B's own logout worked
