"""The strategy pages' states driven directly, on a real database, as the browser would.

The editor validates the params as the user types and puts the translated message
(Korean and English) beside the field; save stays off while anything is wrong and
the server refuses a forged form all the same. Attachments, modes, the kill switch
and the go-live dialog go through the real services. The backtest page queues real
runs, which a real job runner computes in its worker processes; the page then
shows the metrics, the charts, the trades and the optimisation table.
"""

from __future__ import annotations

import inspect
import math
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.i18n import translate
from app.models.strategies import BacktestRun, StrategyAttachment, StrategyConfig
from app.models.users import User
from app.runtime.backtest_jobs import BacktestJobs
from app.services import auth, candles
from app.services import strategies as strategies_service
from app.states.backtest import BacktestState
from app.states.strategies import AttachmentsState, StrategiesState
from engines.market import KST, Candle, Timeframe
from tests.integration.helpers import make_user, seed_symbols

pytestmark = [pytest.mark.usefixtures("database"), pytest.mark.timeout(240)]

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _bars(symbol: str, n: int, first: date, phase: float = 0.0) -> list[Candle]:
    out: list[Candle] = []
    day, i = first, 0
    while len(out) < n:
        if day.weekday() < 5:
            start = datetime(day.year, day.month, day.day, 9, tzinfo=KST).astimezone(UTC)
            wave = 9_000 * math.sin(i / 7 + phase) + 2_000 * math.sin(i / 2.1)
            p = int(60_000 + wave) // 100 * 100
            out.append(Candle(symbol, Timeframe.D1, start, p, p + 400, p - 400, p + 100, 500))
            i += 1
        day += timedelta(days=1)
    return out


async def _signed_in(email: str = "pages@example.com") -> tuple[User, str]:
    await seed_symbols()
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "4.4.4.4")
    return user, token


def _root(token: str, path: str = "/strategies", lang: str = "en") -> State:
    root = State(_reflex_internal_init=True)
    _route(root, token, path, lang)
    return root


def _route(root: State, token: str, path: str, lang: str = "en") -> None:
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "4.4.4.4",
            "token": "client-pages",
            "pathname": path.split("?")[0],
            "asPath": path,
        }
    )


async def _call(root: State, cls: type, handler: str, *args: object) -> object:
    state = await root.get_state(cls)
    result = cls.event_handlers[handler].fn(state, *args)
    return await result if inspect.isawaitable(result) else result


async def _count(model: type) -> int:
    async with db.session() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


async def _new_ma_cross(root: State, label: str = "Golden cross") -> StrategiesState:
    await _call(root, StrategiesState, "load")
    await _call(root, StrategiesState, "new_config", "ma_cross")
    page = await root.get_state(StrategiesState)
    await _call(root, StrategiesState, "set_field", "label", label)
    await _call(root, StrategiesState, "set_field", "fast", "5")
    await _call(root, StrategiesState, "set_field", "slow", "20")
    return page


# ---- the catalogue and the editor ---------------------------------------------------------


@pytest.mark.parametrize("lang", ["ko", "en"])
async def test_editor_validates_live_and_save_stays_off_until_the_params_are_good(lang):
    _, token = await _signed_in()
    root = _root(token, lang=lang)
    assert await _call(root, StrategiesState, "load") is None
    page = await root.get_state(StrategiesState)
    names = [c["name"] for c in page.catalogue]
    assert "ma_cross" in names and len(names) >= 6
    ma = next(c for c in page.catalogue if c["name"] == "ma_cross")
    assert ma["title"] == translate("strategy.ma_cross.title", lang)
    assert ma["description"] == translate("strategy.ma_cross.description", lang)

    await _call(root, StrategiesState, "new_config", "ma_cross")
    assert page.editor_open and page.editing_id == ""
    fields = {f["name"]: f for f in page.fields}
    assert fields["fast"]["kind"] == "int" and fields["fast"]["low"] == "5"
    assert fields["fast"]["label"] == translate("strategy.param.fast", lang)
    assert [c["value"] for c in page.choices["kind"]] == ["sma", "ema"]
    assert page.params["fast"] == "20" and page.params["slow"] == "60"  # defaults filled
    assert page.field_errors == {}  # nothing typed yet, nothing red
    assert page.invalid  # but no name yet, so save is off

    await _call(root, StrategiesState, "set_field", "label", "Samsung cross")
    assert not page.invalid and page.field_errors == {}

    # a fast average not shorter than the slow one: the message beside the field
    await _call(root, StrategiesState, "set_field", "fast", "60")
    assert page.invalid
    [(field, message)] = page.field_errors.items()
    assert field in ("fast", "slow")
    assert message == translate("error.strategy_fast_not_shorter", lang, fast=60, slow=60)
    assert bool(HANGUL.search(message)) == (lang == "ko")
    await _call(root, StrategiesState, "save")  # the disabled button, clicked anyway
    assert await _count(StrategyConfig) == 0

    # a value out of range, and text in a number field
    await _call(root, StrategiesState, "set_field", "fast", "2")
    assert page.field_errors["fast"] == translate("error.strategy_too_low", lang, min=5)
    await _call(root, StrategiesState, "set_field", "slow", "abc")
    assert page.field_errors["slow"] == translate("error.strategy_not_number", lang)

    await _call(root, StrategiesState, "set_field", "fast", "10")
    await _call(root, StrategiesState, "set_field", "slow", "30")
    await _call(root, StrategiesState, "set_field", "kind", "ema")
    assert page.field_errors == {} and not page.invalid
    await _call(root, StrategiesState, "save")
    assert not page.editor_open
    assert page.notice == translate("sp.saved_new", lang)
    [cfg] = page.configs
    assert cfg["label"] == "Samsung cross" and cfg["strategy"] == "ma_cross"
    assert "fast 10" in cfg["params"] and "slow 30" in cfg["params"]
    async with db.session() as s:
        [view] = await strategies_service.list_configs(s, (await _user_id(token)))
    assert view.params["kind"] == "ema" and (view.params["fast"], view.params["slow"]) == (10, 30)


async def _user_id(token: str) -> int:
    async with db.session() as s:
        user = await auth.resolve_session(s, token)
    assert user is not None and user.id is not None
    return user.id


async def test_the_server_validates_a_forged_form_again_and_edits_round_trip():
    user, token = await _signed_in()
    root = _root(token)
    page = await _new_ma_cross(root)
    # setvar can put anything into the state: the service still refuses it
    page.params = {**page.params, "fast": "90", "slow": "20"}
    page.invalid = False
    await _call(root, StrategiesState, "save")
    assert await _count(StrategyConfig) == 0
    assert page.invalid and page.editor_open
    assert translate("error.strategy_fast_not_shorter", "en", fast=90, slow=20) in (
        page.field_errors.values()
    )

    page.params = {**page.params, "fast": "5", "slow": "20"}
    await _call(root, StrategiesState, "save")
    [cfg] = page.configs
    await _call(root, StrategiesState, "edit_config", cfg["id"])
    assert page.editing_id == cfg["id"] and page.params["slow"] == "20"
    assert page.form["label"] == "Golden cross"
    await _call(root, StrategiesState, "set_field", "slow", "40")
    await _call(root, StrategiesState, "save")
    assert page.notice == translate("sp.saved_edit", "en")
    async with db.session() as s:
        [view] = await strategies_service.list_configs(s, user.id)
    assert view.params["slow"] == 40 and await _count(StrategyConfig) == 1

    # ?edit=<id> opens it too; a made-up or foreign id is "not found"
    _route(root, token, f"/strategies?edit={cfg['id']}")
    await _call(root, StrategiesState, "load")
    assert page.editor_open and page.editing_id == cfg["id"]
    _route(root, token, "/strategies?edit=99999")
    await _call(root, StrategiesState, "load")
    assert not page.editor_open and page.error == translate("error.not_found", "en")
    await _call(root, StrategiesState, "new_config", "no_such_strategy")
    assert not page.editor_open and page.error == translate("sp.unknown_strategy", "en")

    await _call(root, StrategiesState, "delete_config", cfg["id"])
    assert page.configs == [] and await _count(StrategyConfig) == 0


async def test_someone_elses_config_is_not_found_and_stays_as_it_was():
    owner, _ = await _signed_in("owner@example.com")
    async with db.session() as s:
        theirs = await strategies_service.create_config(
            s, owner.id, label="Theirs", strategy="ma_cross", params={}, timeframe="1d"
        )
    _, token = await _signed_in("intruder@example.com")
    root = _root(token)
    await _call(root, StrategiesState, "load")
    page = await root.get_state(StrategiesState)
    assert page.configs == []
    for handler in ("edit_config", "delete_config"):
        await _call(root, StrategiesState, handler, str(theirs.id))
        assert page.error == translate("error.not_found", "en"), handler
        assert not page.editor_open
    form = {"config_id": str(theirs.id), "symbol": "005930", "mode": "paper"}
    await _call(root, AttachmentsState, "attach", form)
    atts = await root.get_state(AttachmentsState)
    assert atts.error == translate("error.not_found", "en")
    async with db.session() as s:
        [view] = await strategies_service.list_configs(s, owner.id)
        assert (view.label, view.attachments) == ("Theirs", [])
        await strategies_service.attach(s, owner.id, theirs.id, symbol="005930", mode="paper")

    # "stop all" stops the caller's own strategies, and only those
    await _call(root, AttachmentsState, "kill_all")
    assert atts.notice == translate("sp.killed_all", "en", count=0)
    async with db.session() as s:
        [view] = await strategies_service.list_configs(s, owner.id)
    assert [a.killed for a in view.attachments] == [False]

    # a forged "watching" of the owner's run shows nothing of it
    async with db.session() as s:
        s.add(
            BacktestRun(
                user_id=owner.id,
                config_id=theirs.id,
                strategy="ma_cross",
                params="{}",
                symbols=["005930"],
                start_date=date(2025, 1, 2),
                end_date=date(2025, 3, 2),
                status="done",
                progress=1.0,
                result='{"metrics": {"total_return": 0.5}, "trades": []}',
            )
        )
        await s.commit()
        run_id = (await s.exec(select(BacktestRun.id))).one()
    backtest = await root.get_state(BacktestState)
    backtest.watching = str(run_id)
    assert await backtest._poll() is False
    assert backtest.watching == "" and backtest.metrics == [] and backtest.result_run == ""


# ---- attachments, modes, the kill switch, going live ---------------------------------------


async def test_attach_switch_modes_kill_and_the_live_dialog():
    user, token = await _signed_in()
    root = _root(token)
    page = await _new_ma_cross(root)
    await _call(root, StrategiesState, "save")
    cid = page.configs[0]["id"]
    atts = await root.get_state(AttachmentsState)

    await _call(
        root, AttachmentsState, "attach", {"config_id": cid, "symbol": "NOPE", "mode": "alert"}
    )
    assert atts.field_errors[f"{cid}.symbol"] == translate(
        "error.unknown_symbol", "en", query="NOPE"
    )
    await _call(
        root, AttachmentsState, "attach", {"config_id": cid, "symbol": "005930", "mode": "paper"}
    )
    assert atts.notice == translate("sp.attached", "en") and atts.field_errors == {}
    [att] = page.attachments
    assert (att["symbol"], att["mode"], att["config_id"]) == ("005930", "paper", cid)
    assert att["mode_text"] == translate("strategy_exec.mode.paper", "en")

    await _call(root, AttachmentsState, "set_mode", att["id"], "alert")
    assert page.attachments[0]["mode"] == "alert"
    await _call(root, AttachmentsState, "set_mode", att["id"], "margin")  # not a mode
    assert page.attachments[0]["mode"] == "alert"

    await _call(root, AttachmentsState, "kill", att["id"])
    assert page.attachments[0]["killed"] == "1"
    assert atts.notice == translate("sp.killed", "en")
    await _call(root, AttachmentsState, "revive", att["id"])
    assert page.attachments[0]["killed"] == ""
    await _call(root, AttachmentsState, "kill_all")
    assert atts.notice == translate("sp.killed_all", "en", count=1)
    assert page.attachments[0]["killed"] == "1"
    await _call(root, AttachmentsState, "revive", att["id"])

    await _call(root, AttachmentsState, "show_orders", att["id"])
    assert atts.orders_for == att["id"] and atts.orders == []
    await _call(root, AttachmentsState, "show_orders", att["id"])  # toggles off
    assert atts.orders_for == ""

    # choosing "live" opens the dialog; a wrong phrase and no account change nothing
    await _call(root, AttachmentsState, "set_mode", att["id"], "live")
    assert atts.live_for == att["id"] and atts.live_symbol == "005930"
    assert atts.accounts == []
    assert atts.phrase == translate("strategy.live.confirm_phrase", "en")
    await _call(
        root,
        AttachmentsState,
        "confirm_live",
        {
            "max_order_value": "1,000,000",
            "max_position_qty": "10",
            "max_orders_per_day": "3",
            "confirmation": "yes please",
        },
    )
    assert atts.live_errors["confirmation"] == translate("error.strategy_live_phrase", "en")
    assert atts.live_errors["broker_account_id"] == translate("error.strategy_live_account", "en")
    assert atts.live_for == att["id"]  # the dialog stays open with the messages
    async with db.session() as s:
        row = await s.get(StrategyAttachment, int(att["id"]))
    assert row is not None and (row.mode, row.live_confirmed_at) == ("alert", None)
    await _call(root, AttachmentsState, "close_live")
    assert atts.live_for == ""

    await _call(root, AttachmentsState, "detach", att["id"])
    assert page.attachments == [] and await _count(StrategyAttachment) == 0


# ---- the backtest page -------------------------------------------------------------------


async def _config_with_history(user: User) -> int:
    async with db.session() as s:
        await candles.store(s, _bars("005930", 420, date(2024, 1, 2)))
        await candles.store(s, _bars("000660", 420, date(2024, 1, 2), phase=2.5))
        cfg = await strategies_service.create_config(
            s,
            user.id,
            label="Cross",
            strategy="ma_cross",
            # half the equity per buy, so two symbols can both be held (one cash account)
            params={"fast": 5, "slow": 20, "fraction": 0.5},
            timeframe="1d",
        )
        await strategies_service.attach(s, user.id, cfg.id, symbol="005930", mode="paper")
    return cfg.id


@pytest.mark.parametrize("lang", ["ko", "en"])
async def test_backtest_form_errors_are_translated_and_queue_nothing(lang):
    user, token = await _signed_in()
    config_id = await _config_with_history(user)
    root = _root(token, f"/backtest?config={config_id}", lang)
    assert await _call(root, BacktestState, "load") is None
    page = await root.get_state(BacktestState)
    assert not page.not_found and page.config_label == "Cross"
    assert page.form["symbols"] == "005930"  # the attached symbol
    assert page.form["commission_pct"] == "0.015" and page.form["tax_pct"] == "0.2"

    await _call(root, BacktestState, "set_field", "start", "2025-03-01")
    await _call(root, BacktestState, "set_field", "end", "2025-01-01")
    await _call(root, BacktestState, "set_field", "symbols", "005930, NOPE")
    await _call(root, BacktestState, "set_field", "cash", "-5")
    assert await _call(root, BacktestState, "run_backtest") is None
    assert page.field_errors["end"] == translate("error.backtest_dates_reversed", lang)
    assert page.field_errors["symbols"] == translate("error.unknown_symbol", lang, query="NOPE")
    assert page.field_errors["cash"] == translate(
        "error.backtest_out_of_range", lang, min="100,000", max="100,000,000,000"
    )
    assert page.watching == "" and await _count(BacktestRun) == 0

    await _call(root, BacktestState, "set_field", "end", "2025-03-31")
    assert "end" not in page.field_errors  # typing clears that field's message
    await _call(root, BacktestState, "set_field", "unknown_key", "x")
    assert "unknown_key" not in page.form


async def test_a_backtest_and_an_optimisation_from_the_page_to_the_results(report_figures):
    user, token = await _signed_in()
    config_id = await _config_with_history(user)
    root = _root(token, f"/backtest?config={config_id}")
    await _call(root, BacktestState, "load")
    page = await root.get_state(BacktestState)
    for key, value in {
        "symbols": "005930, 000660",
        "start": "2024-01-01",
        "end": "2025-12-31",
        "max_runs": "5",
    }.items():
        await _call(root, BacktestState, "set_field", key, value)
    assert await _call(root, BacktestState, "run_backtest") is not None  # starts the watch
    assert page.watching != "" and page.progress == 0
    assert page.status_text == translate("bt.status.queued", "en")
    assert page.runs[0]["status"] == "queued"

    jobs = BacktestJobs()
    try:
        await jobs.wait_idle()
        assert await page._poll() is False  # finished: nothing more to wait for
        assert page.watching == "" and page.progress == 100 and page.tab == "backtest"
        labels = {m["key"]: m for m in page.metrics}
        assert labels["total_return"]["label"] == translate("bt.metric.total_return", "en")
        assert re.fullmatch(r"[+-]\d+\.\d\d%", labels["total_return"]["value"])
        assert int(labels["trades"]["value"]) > 0
        assert page.trades and {t["symbol"] for t in page.trades} == {"005930", "000660"}
        assert page.result_symbols == ["005930", "000660"] and page.price_symbol == "005930"
        equity = page.equity_fig.data[0]
        assert len(equity.x) > 100
        candle_trace, buys, sells = page.price_fig.data
        assert len(candle_trace.x) > 300 and len(buys.x) > 0
        await _call(root, BacktestState, "choose_symbol", "000660")
        assert page.price_symbol == "000660"
        await _call(root, BacktestState, "choose_symbol", "999999")  # not in the run
        assert page.price_symbol == "000660"

        await _call(root, BacktestState, "set_tab", "optimize")
        await _call(root, BacktestState, "run_optimization")
        assert page.watch_kind == "optimize"
        await jobs.wait_idle()
        assert await page._poll() is False
    finally:
        await jobs.close()
    assert page.tab == "optimize" and 1 <= len(page.opt_rows) <= 5
    best = page.opt_rows[0]
    assert best["rank"] == "1" and "fast" in best["params"]
    assert best["href"] == f"/strategies?use_run={page.opt_run}&row=0"
    report_figures(opt_rows=len(page.opt_rows), trades=len(page.trades))

    # "use these params" fills the editor with that row (and saves nothing)
    _route(root, token, best["href"])
    await _call(root, StrategiesState, "load")
    editor = await root.get_state(StrategiesState)
    assert editor.editor_open and editor.editing_id == str(config_id)
    assert f"fast {editor.params['fast']}" in best["params"]
    assert editor.notice == translate("sp.params_from_run", "en")

    # a reload shows the newest finished run of each kind again
    _route(root, token, f"/backtest?config={config_id}")
    await _call(root, BacktestState, "load")
    assert page.result_run and page.opt_run and page.metrics and page.opt_rows
    assert [r["kind"] for r in page.runs] == ["optimize", "backtest"]


async def test_cancel_show_and_foreign_ids_on_the_backtest_page():
    owner, _ = await _signed_in("owner@example.com")
    owner_cfg = await _config_with_history(owner)
    user, token = await _signed_in("me@example.com")
    async with db.session() as s:
        mine = await strategies_service.create_config(
            s, user.id, label="Mine", strategy="ma_cross", params={}, timeframe="1d"
        )
    root = _root(token, f"/backtest?config={owner_cfg}")
    await _call(root, BacktestState, "load")
    page = await root.get_state(BacktestState)
    assert page.not_found and page.error == translate("error.not_found", "en")

    _route(root, token, f"/backtest?config={mine.id}")
    await _call(root, BacktestState, "load")
    assert not page.not_found
    await _call(root, BacktestState, "set_field", "start", "2024-01-01")
    await _call(root, BacktestState, "run_backtest")
    run_id = page.watching
    assert run_id
    await _call(root, BacktestState, "cancel", run_id)
    assert page.notice == translate("bt.cancelled", "en") and page.watching == ""
    assert page.runs[0]["status"] == "cancelled"

    # the owner's run: neither shown nor cancelled
    async with db.session() as s:
        from app.services import backtests

        theirs = await backtests.start_backtest(
            s,
            owner.id,
            owner_cfg,
            {
                "symbols": "005930",
                "start": "2024-01-01",
                "end": "2025-12-31",
                "cash": "10000000",
                "commission_pct": "0.015",
                "tax_pct": "0.2",
                "slippage_ticks": "0",
            },
        )
    for handler in ("show_run", "cancel"):
        page.error = ""
        await _call(root, BacktestState, handler, str(theirs))
        assert page.error == translate("error.not_found", "en"), handler
    async with db.session() as s:
        row = await s.get(BacktestRun, theirs)
    assert row is not None and row.status == "queued"
    # parity needs one of the caller's own attachments
    await _call(root, BacktestState, "set_field", "attachment", "")
    await _call(root, BacktestState, "run_parity")
    assert page.field_errors["attachment"] == translate("error.backtest_attachment_required", "en")


async def test_signed_out_visitors_are_sent_to_login():
    await seed_symbols()
    root = _root("forged", "/backtest?config=1")
    for cls, handler, args in [
        (StrategiesState, "load", ()),
        (StrategiesState, "new_config", ("ma_cross",)),
        (StrategiesState, "save", ()),
        (AttachmentsState, "attach", ({"config_id": "1", "symbol": "005930"},)),
        (AttachmentsState, "kill_all", ()),
        (BacktestState, "load", ()),
        (BacktestState, "run_backtest", ()),
        (BacktestState, "cancel", ("1",)),
    ]:
        assert await _call(root, cls, handler, *args) is not None, handler
    assert await _count(StrategyConfig) == 0 and await _count(BacktestRun) == 0


async def test_walk_forward_and_parity_from_the_page():
    user, token = await _signed_in()
    async with db.session() as s:
        first = (datetime.now(UTC) - timedelta(days=600)).astimezone(KST).date()
        bars = [b for b in _bars("005930", 420, first) if b.start < datetime.now(UTC)]
        await candles.store(s, bars)
        cfg = await strategies_service.create_config(
            s,
            user.id,
            label="WF",
            strategy="ma_cross",
            params={"fast": 5, "slow": 20},
            timeframe="1d",
        )
        att = await strategies_service.attach(s, user.id, cfg.id, symbol="005930", mode="paper")
    root = _root(token, f"/backtest?config={cfg.id}", "ko")
    await _call(root, BacktestState, "load")
    page = await root.get_state(BacktestState)
    assert page.attachments == [
        {"id": str(att.id), "label": f"005930 · {translate('strategy_exec.mode.paper', 'ko')}"}
    ]
    await _call(root, BacktestState, "set_field", "start", first.isoformat())
    await _call(root, BacktestState, "set_field", "max_runs", "3")
    await _call(root, BacktestState, "set_field", "folds", "2")
    jobs = BacktestJobs()
    try:
        await _call(root, BacktestState, "run_walk_forward")
        await jobs.wait_idle()
        assert await page._poll() is False
        assert page.tab == "walk_forward" and len(page.wf_rows) == 2
        fold = page.wf_rows[0]
        assert fold["fold"] == "1" and " ~ " in fold["train"] and " ~ " in fold["test"]
        assert {m["key"] for m in page.wf_metrics} >= {"total_return", "sharpe"}
        assert page.wf_metrics[0]["label"] == translate("bt.metric.total_return", "ko")

        await _call(root, BacktestState, "set_field", "days", "90")
        await _call(root, BacktestState, "run_parity")
        assert page.watch_kind == "parity" and page.field_errors == {}
        await jobs.wait_idle()
        assert await page._poll() is False
    finally:
        await jobs.close()
    assert page.tab == "parity"
    summary = {c["key"]: c for c in page.parity_summary}
    assert summary["matched"]["value"] == "0"  # the attachment has placed nothing
    assert summary["missed"]["label"] == translate("bt.parity.sum.missed", "ko")
    assert int(summary["missed"]["value"]) == len(page.parity_rows) > 0
    assert {r["status_text"] for r in page.parity_rows} == {translate("bt.parity.missed", "ko")}
    assert {r["action"] for r in page.parity_rows} <= {
        translate("bt.buy", "ko"),
        translate("bt.sell", "ko"),
    }
