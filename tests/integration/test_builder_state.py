"""The rule builder's states driven directly, on a real database, as the browser would.

Live validation names only what the user touched; every kind of bad input gets a
translated message (Korean and English) under its own input and saves nothing; a
valid form saves one rule; editing round-trips; the list's toggle and duplicate
work; and the preview marks the firings on stored candles.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.i18n import translate
from app.models.rules import AlertRule
from app.models.users import User
from app.runtime.condition_text import describe
from app.services import candles, condition_rules
from app.services.errors import ValidationFailed
from app.states.builder import RuleActionsState, RuleBuilderState, preview_figure
from app.states.pages import RulesState
from engines.market import KST, Candle, Timeframe
from tests.integration.helpers import T0, make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")

HANGUL = re.compile(r"[\uac00-\ud7a3]")


async def _signed_in(email: str = "builder@example.com") -> tuple[User, str]:
    from app.services import auth

    await seed_symbols()
    user = await make_user(email)
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "3.3.3.3")
    return user, token


def _root(token: str, path: str = "/rules/new", lang: str = "ko") -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": "3.3.3.3",
            "token": "client-builder",
            "pathname": "/rules/new",
            "asPath": path,
        }
    )
    return root


async def _call(root: State, cls: type, handler: str, *args: object) -> object:
    state = await root.get_state(cls)
    return await cls.event_handlers[handler].fn(state, *args)


async def _builder(root: State) -> RuleBuilderState:
    return await root.get_state(RuleBuilderState)


async def _rule_count() -> int:
    async with db.session() as s:
        return (await s.exec(select(func.count()).select_from(AlertRule))).one()


async def _fill(root: State, fields: dict[str, str]) -> None:
    """Type into the inputs in order; a ``cN.type`` goes through the type select."""
    for key, value in fields.items():
        if key.endswith(".type"):
            await _call(root, RuleBuilderState, "set_type", key[1], value)
        else:
            await _call(root, RuleBuilderState, "set_field", key, value)


# ---- loading and live validation ---------------------------------------------------


async def test_fresh_form_has_defaults_and_no_errors_until_fields_are_touched():
    _, token = await _signed_in()
    root = _root(token, lang="en")
    assert await _call(root, RuleBuilderState, "load") is None
    b = await _builder(root)
    assert b.count == 1 and b.editing_id == "" and b.field_errors == {}
    assert {k: b.form[k] for k in ("c0.type", "c0.left", "c0.op", "c0.right")} == {
        "c0.type": "compare",
        "c0.left": "price",
        "c0.op": "crossing",
        "c0.right": "",
    }
    assert (b.form["timeframe"], b.form["frequency"], b.form["hysteresis_pct"]) == (
        "1d",
        "once_per_bar",
        "0.5",
    )

    # The symbol and the right operand are still empty, but untouched: no red yet.
    await _call(root, RuleBuilderState, "set_field", "c0.op", "crossing_up")
    assert b.field_errors == {}

    await _call(root, RuleBuilderState, "set_field", "c0.right", "abc(")
    assert set(b.field_errors) == {"c0.right"}
    # an operand that cannot be read is quoted, so the user sees which one
    assert b.field_errors["c0.right"] == translate(
        "builder.error_with_input",
        "en",
        input="abc(",
        message=translate("error.expr_malformed", "en"),
    )

    await _call(root, RuleBuilderState, "set_field", "symbol", "NOPE")
    assert b.field_errors["symbol"] == translate("error.unknown_symbol", "en", query="NOPE")

    await _call(root, RuleBuilderState, "set_field", "symbol", "005930")
    await _call(root, RuleBuilderState, "set_field", "c0.right", "70,000")
    assert b.field_errors == {}
    assert await _rule_count() == 0  # validating never writes


async def test_symbol_from_the_watchlist_bell_is_prefilled():
    _, token = await _signed_in()
    root = _root(token, path="/rules/new?symbol=005930")
    await _call(root, RuleBuilderState, "load")
    assert (await _builder(root)).form["symbol"] == "005930"


async def test_signed_out_visitors_are_sent_to_login():
    await seed_symbols()
    root = _root("forged")
    for handler, args in [
        ("load", ()),
        ("set_field", ("symbol", "005930")),
        ("add_condition", ()),
        ("save", ()),
        ("run_preview", ()),
    ]:
        assert await _call(root, RuleBuilderState, handler, *args) is not None, handler
    assert (await _builder(root)).form == {}
    assert await _rule_count() == 0


async def test_unknown_keys_and_rows_past_the_count_are_ignored():
    _, token = await _signed_in()
    root = _root(token)
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    before = dict(b.form)
    await _call(root, RuleBuilderState, "set_field", "user_id", "1")
    await _call(root, RuleBuilderState, "set_field", "c3.left", "RSI(14)")
    await _call(root, RuleBuilderState, "set_type", "0", "telepathy")
    await _call(root, RuleBuilderState, "set_type", "9", "gap")
    assert b.form == before and b.count == 1


# ---- rows --------------------------------------------------------------------------


async def test_rows_add_change_type_and_remove_with_renumbering():
    _, token = await _signed_in()
    root = _root(token)
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _call(root, RuleBuilderState, "remove_condition", "0")
    assert b.count == 1  # the last row stays

    await _call(root, RuleBuilderState, "add_condition")
    await _call(root, RuleBuilderState, "add_condition")
    assert b.count == 3
    await _call(root, RuleBuilderState, "set_type", "1", "volume_spike")
    assert b.form["c1.type"] == "volume_spike" and b.form["c1.factor"] == "3"
    assert "c1.left" not in b.form  # the compare inputs went with the old type
    await _call(root, RuleBuilderState, "set_type", "2", "gap")
    await _call(root, RuleBuilderState, "set_field", "c2.pct", "2.5")

    await _call(root, RuleBuilderState, "remove_condition", "1")
    assert b.count == 2
    assert b.form["c1.type"] == "gap" and b.form["c1.pct"] == "2.5"
    assert not any(k.startswith("c2.") for k in b.form)

    for _ in range(10):
        await _call(root, RuleBuilderState, "add_condition")
    assert b.count == 5
    assert sorted({k.split(".")[0] for k in b.form if re.fullmatch(r"c\d\.\w+", k)}) == [
        "c0",
        "c1",
        "c2",
        "c3",
        "c4",
    ]


# ---- bad input: every kind of field --------------------------------------------------

BAD_INPUT: list[tuple[dict[str, str], str, str]] = [
    ({"c0.right": "RSX(14)"}, "c0.right", "unknown_indicator"),
    ({"c0.left": "RSI(-3)"}, "c0.left", "indicator_param"),
    ({"c0.left": "BB(20).side"}, "c0.left", "indicator_output"),
    ({"c0.left": "RSI(14)@4h"}, "c0.left", "timeframe_unsupported"),
    ({"c0.right": "abc("}, "c0.right", "expr_malformed"),
    ({"c0.right": ""}, "c0.right", "expr_empty"),
    ({"c0.right": "x" * 61}, "c0.right", "expr_too_long"),
    ({"c0.left": "70000", "c0.right": "30"}, "c0.right", "operands_both_constant"),
    ({"c0.op": "sideways"}, "c0.op", "bad_choice"),
    ({"timeframe": "4h"}, "timeframe", "timeframe_unsupported"),
    ({"logic": "xor"}, "logic", "bad_choice"),
    (
        {
            "c0.type": "channel",
            "c0.op": "inside",
            "c0.lower": "9,000",
            "c0.upper": "3,000",
        },
        "c0.lower",
        "channel_bounds_inverted",
    ),
    ({"c0.type": "move", "c0.amount": "-1"}, "c0.amount", "amount_not_positive"),
    ({"c0.type": "move", "c0.amount": "150"}, "c0.amount", "pct_out_of_range"),
    ({"c0.type": "move", "c0.amount": "2", "c0.bars": "0"}, "c0.bars", "bars_out_of_range"),
    ({"c0.type": "move", "c0.amount": "2", "c0.bars": "x"}, "c0.bars", "whole_number_required"),
    ({"c0.type": "change", "c0.pct": "45"}, "c0.pct", "pct_out_of_range"),
    ({"c0.type": "change", "c0.pct": "abc"}, "c0.pct", "number_required"),
    ({"c0.type": "breakout", "c0.level": "-5"}, "c0.level", "level_not_positive"),
    ({"c0.type": "breakout", "c0.level": "1.5"}, "c0.level", "level_not_integer"),
    ({"c0.type": "breakout", "c0.pivot_left": "0"}, "c0.pivot_left", "window_out_of_range"),
    ({"c0.type": "volume_spike", "c0.factor": "1"}, "c0.factor", "factor_out_of_range"),
    ({"c0.type": "volume_spike", "c0.window": "0"}, "c0.window", "window_out_of_range"),
    ({"c0.type": "new_extreme", "c0.days": "5000"}, "c0.days", "days_out_of_range"),
    ({"c0.type": "gap", "c0.pct": "0"}, "c0.pct", "pct_out_of_range"),
    (
        {"frequency": "cooldown", "cooldown_minutes": ""},
        "cooldown_minutes",
        "whole_number_required",
    ),
    (
        {"frequency": "cooldown", "cooldown_minutes": "0"},
        "cooldown_minutes",
        "cooldown_out_of_range",
    ),
    ({"frequency": "sometimes"}, "frequency", "bad_choice"),
    ({"expires_at": "2020-01-01T10:00"}, "expires_at", "expiry_past"),
    ({"expires_at": "tomorrow"}, "expires_at", "datetime_required"),
    ({"quiet_start": "25:00", "quiet_end": "07:00"}, "quiet_start", "time_required"),
    ({"quiet_start": "22:00", "quiet_end": "22:00"}, "quiet_start", "quiet_hours_empty"),
    ({"hysteresis_pct": "50"}, "hysteresis_pct", "hysteresis_out_of_range"),
    ({"hysteresis_pct": "lots"}, "hysteresis_pct", "number_required"),
    ({"template": "{price"}, "template", "template_malformed"),
    ({"template": "{foo} now"}, "template", "template_unknown_placeholder"),
    ({"template": "x" * 501}, "template", "template_too_long"),
    ({"symbol": "NOPE"}, "symbol", "unknown_symbol"),
    ({"symbol": ""}, "symbol", "symbol_required"),
    ({"name": "n" * 101}, "name", "name_too_long"),
]
OPERANDS = {"left", "right", "value", "lower", "upper"}
QUOTED = {
    "unknown_indicator",
    "indicator_param",
    "indicator_output",
    "timeframe_unsupported",
    "expr_malformed",
}
VALID_BASE = {"symbol": "005930", "c0.op": "crossing_up", "c0.right": "70,000"}


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize(("fields", "field", "code"), BAD_INPUT, ids=[c for _, _, c in BAD_INPUT])
async def test_bad_input_shows_a_translated_message_under_its_input_and_saves_nothing(
    fields, field, code, lang
):
    user, token = await _signed_in()
    root = _root(token, lang=lang)
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _fill(root, {**VALID_BASE, **fields})

    # The same codes and parameters the service reports, in the page's language.
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as info:
            await condition_rules.validate(s, user, dict(b.form))
    got_code, params = info.value.field_errors[field]
    assert got_code == code, info.value.field_errors
    expected = translate(f"error.{code}", lang, **params) if params else None
    expected = expected or translate(f"error.{code}", lang)
    if field.split(".")[-1] in OPERANDS and code in QUOTED:
        typed = b.form[field].strip()
        expected = translate("builder.error_with_input", lang, input=typed, message=expected)
        assert typed in expected

    # live: the message is already under the touched input
    assert b.field_errors.get(field) == expected, b.field_errors
    result = await _call(root, RuleBuilderState, "save")
    assert result is None  # no redirect: nothing was saved
    assert b.field_errors[field] == expected
    assert b.error == translate("builder.fix_errors", lang)
    assert "{" not in expected and expected.strip()
    if lang == "ko":
        assert HANGUL.search(expected), expected
    assert await _rule_count() == 0


async def test_save_shows_errors_of_untouched_inputs_too():
    _, token = await _signed_in()
    root = _root(token, lang="en")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _call(root, RuleBuilderState, "save")
    assert set(b.field_errors) == {"symbol", "c0.right"}
    assert b.field_errors["c0.right"] == translate("error.expr_empty", "en")
    assert await _rule_count() == 0


# ---- saving and editing ----------------------------------------------------------------

FULL = {
    "symbol": "삼성전자",
    "name": "Samsung oversold",
    "timeframe": "1d",
    "logic": "or",
    "c0.type": "compare",
    "c0.left": "RSI(14)",
    "c0.op": "less",
    "c0.right": "30",
    "frequency": "cooldown",
    "cooldown_minutes": "30",
    "hysteresis_pct": "1",
    "expires_at": "2099-12-31T15:30",
    "quiet_start": "22:00",
    "quiet_end": "07:00",
    "quiet_action": "drop",
    "template": "{name} RSI={v1} at {price}",
}


async def test_a_valid_form_saves_one_rule_with_the_expected_spec():
    user, token = await _signed_in()
    root = _root(token, lang="en")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _fill(root, FULL)
    await _call(root, RuleBuilderState, "add_condition")
    await _fill(root, {"c1.type": "volume_spike", "c1.factor": "2.5", "c1.window": "10"})
    await _call(root, RuleBuilderState, "toggle_email", True)
    assert b.field_errors == {}

    result = await _call(root, RuleBuilderState, "save")
    assert result is not None  # the redirect to /rules
    async with db.session() as s:
        rules = (await s.exec(select(AlertRule))).all()
    assert len(rules) == 1
    rule = rules[0]
    assert (rule.user_id, rule.symbol, rule.name, rule.status) == (
        user.id,
        "005930",
        "Samsung oversold",
        "active",
    )
    spec = rule.spec
    assert spec["kind"] == "condition" and spec["timeframe"] == "1d" and spec["logic"] == "or"
    assert spec["conditions"] == [
        {
            "type": "compare",
            "left": {
                "kind": "indicator",
                "name": "rsi",
                "params": {"window": 14},
                "timeframe": None,
                "output": None,
            },
            "op": "less",
            "right": {"kind": "value", "value": 30.0},
        },
        {"type": "volume_spike", "factor": 2.5, "window": 10},
    ]
    assert spec["frequency"] == "cooldown" and spec["cooldown_minutes"] == 30
    assert spec["hysteresis_pct"] == 1.0
    assert spec["expires_at"].startswith("2099-12-31T06:30")  # 15:30 KST
    assert spec["quiet_hours"] == {"start": "22:00:00", "end": "07:00:00", "action": "drop"}
    assert spec["channels"] == ["in_app", "email"]
    assert spec["template"] == "{name} RSI={v1} at {price}"

    actions = await root.get_state(RuleActionsState)
    assert actions.notice == translate("builder.created", "en")
    assert b.form["symbol"] == "" and b.count == 1  # ready for the next rule

    # the list shows it in words
    await _call(root, RulesState, "load")
    rows = (await root.get_state(RulesState)).rows
    assert [r["kind"] for r in rows] == ["condition"]
    assert rows[0]["condition"] == describe(spec, "en")
    assert rows[0]["status_text"] == "Active"


async def test_edit_round_trip_keeps_the_spec_and_an_edit_changes_it():
    user, token = await _signed_in()
    full = dict(FULL, symbol="005930")
    async with db.session() as s:
        rule = await condition_rules.create(s, user, full)
        original = dict(rule.spec)
        stored_form = await condition_rules.edit_form(s, user, rule.id)

    root = _root(token, path=f"/rules/new?edit={rule.id}")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    assert b.editing_id == str(rule.id) and b.error == ""
    assert {k: b.form[k] for k in stored_form} == stored_form
    assert b.count == 1

    assert await _call(root, RuleBuilderState, "save") is not None
    async with db.session() as s:
        again = await s.get(AlertRule, rule.id)
        assert again.spec == original
        assert (await s.exec(select(func.count()).select_from(AlertRule))).one() == 1

    root = _root(token, path=f"/rules/new?edit={rule.id}")
    await _call(root, RuleBuilderState, "load")
    await _call(root, RuleBuilderState, "set_field", "c0.right", "25")
    await _call(root, RuleBuilderState, "save")
    async with db.session() as s:
        edited = await s.get(AlertRule, rule.id)
    assert edited.spec["conditions"][0]["right"] == {"kind": "value", "value": 25.0}
    assert {k: v for k, v in edited.spec.items() if k != "conditions"} == {
        k: v for k, v in original.items() if k != "conditions"
    }
    assert await _rule_count() == 1


async def test_editing_a_price_rule_or_a_missing_id_is_not_found():
    user, token = await _signed_in()
    from app.services import rules as rules_service

    async with db.session() as s:
        price = await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="above", level="70000"
        )
    for edit in (str(price.id), "999999", "abc"):
        root = _root(token, path=f"/rules/new?edit={edit}", lang="en")
        await _call(root, RuleBuilderState, "load")
        b = await _builder(root)
        assert b.error == translate("error.not_found", "en"), edit
        assert b.editing_id == "" and b.form["c0.right"] == ""


# ---- list actions ----------------------------------------------------------------------


async def test_toggle_and_duplicate_from_the_list():
    user, token = await _signed_in()
    async with db.session() as s:
        rule = await condition_rules.create(s, user, dict(FULL, symbol="005930"))
    root = _root(token, path="/rules", lang="en")
    await _call(root, RulesState, "load")
    rules_state = await root.get_state(RulesState)
    actions = await root.get_state(RuleActionsState)

    await _call(root, RuleActionsState, "toggle", str(rule.id))
    await _call(root, RulesState, "load")
    assert actions.notice == translate("rules.disabled", "en") and actions.error == ""
    assert [(r["status"], r["status_text"]) for r in rules_state.rows] == [
        ("disabled", translate("rules.status.disabled", "en"))
    ]

    await _call(root, RuleActionsState, "toggle", str(rule.id))
    await _call(root, RulesState, "load")
    assert actions.notice == translate("rules.enabled", "en")
    assert [r["status"] for r in rules_state.rows] == ["active"]

    await _call(root, RuleActionsState, "duplicate", str(rule.id))
    await _call(root, RulesState, "load")
    assert actions.notice == translate("rules.duplicated", "en")
    assert len(rules_state.rows) == 2
    async with db.session() as s:
        specs = [r.spec for r in (await s.exec(select(AlertRule))).all()]
    assert specs[0] == specs[1]

    await _call(root, RuleActionsState, "toggle", "999999")
    assert actions.error == translate("error.not_found", "en") and actions.notice == ""


async def test_expired_status_has_a_text():
    user, token = await _signed_in()
    async with db.session() as s:
        rule = await condition_rules.create(s, user, dict(FULL, symbol="005930"))
        row = await s.get(AlertRule, rule.id)
        row.status = "expired"
        s.add(row)
        await s.commit()
    root = _root(token, path="/rules", lang="ko")
    await _call(root, RulesState, "load")
    rows = (await root.get_state(RulesState)).rows
    assert rows[0]["status_text"] == translate("rules.status.expired", "ko")
    assert rows[0]["condition"] == describe(row.spec, "ko")


# ---- preview -----------------------------------------------------------------------------


def _minute_bars(n: int) -> list[Candle]:
    """Flat one-minute bars: five at 69,000, five at 71,000, and so on."""
    out = []
    for k in range(n):
        price = 69_000 if k % 10 < 5 else 71_000
        start = T0 + timedelta(minutes=k)
        out.append(Candle("005930", Timeframe.M1, start, price, price, price, price, 10))
    return out


@pytest.mark.parametrize("frequency", ["once_per_bar", "once_per_bar_close"])
async def test_preview_marks_each_firing_on_the_stored_candles(frequency):
    _, token = await _signed_in()
    bars = _minute_bars(60)
    async with db.session() as s:
        await candles.store(s, bars)
    root = _root(token, lang="en")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _fill(
        root,
        {
            "symbol": "005930",
            "timeframe": "1m",
            "frequency": frequency,
            "hysteresis_pct": "0",
            "c0.op": "crossing_up",
            "c0.right": "70,000",
        },
    )
    await _call(root, RuleBuilderState, "run_preview")
    assert b.preview_ready and b.field_errors == {}
    candle_trace, markers = b.figure.data
    assert len(candle_trace.x) == 60
    # Up through 70,000 at bars 5, 15, ... 55: six firings, each on its own bar.
    expected_x = [bars[k].start.astimezone(KST).strftime("%m-%d %H:%M") for k in range(5, 60, 10)]
    assert list(markers.x) == expected_x
    assert list(markers.y) == [71_000] * 6
    assert b.preview_text == translate("builder.preview_result", "en", count=6, bars=60)
    assert await _rule_count() == 0  # a preview saves nothing


async def test_preview_without_history_or_with_bad_input():
    _, token = await _signed_in()
    root = _root(token, lang="ko")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _call(root, RuleBuilderState, "run_preview")
    assert not b.preview_ready
    assert b.preview_text == translate("builder.preview_fix", "ko")
    assert set(b.field_errors) == {"symbol", "c0.right"}

    await _fill(root, {"symbol": "005930", "c0.right": "70,000"})
    await _call(root, RuleBuilderState, "run_preview")
    assert not b.preview_ready
    assert b.preview_text == translate("builder.preview_no_data", "ko")


def test_preview_figure_puts_close_firings_on_the_bar_that_closed():
    from engines.rules.evaluator import ConditionFired

    bars = _minute_bars(3)

    def fired(ts: datetime, on_close: bool) -> ConditionFired:
        return ConditionFired(0, "005930", ts, 71_000, 1, False, on_close, None)

    fig = preview_figure(
        bars,
        [
            fired(bars[1].start + timedelta(seconds=30), False),  # mid-bar tick: bar 1
            fired(bars[2].start, True),  # closed bar 1 at bar 2's start
            fired(bars[2].start + timedelta(minutes=1), True),  # the last bar's close
        ],
        "Fired",
    )
    labels = [b.start.astimezone(KST).strftime("%m-%d %H:%M") for b in bars]
    assert list(fig.data[1].x) == [labels[1], labels[1], labels[2]]
    assert fig.layout.xaxis.type == "category"


async def test_removed_rows_take_their_touched_marks_along():
    _, token = await _signed_in()
    root = _root(token, lang="en")
    await _call(root, RuleBuilderState, "load")
    b = await _builder(root)
    await _fill(root, {"symbol": "005930", "c0.right": "70,000"})
    await _call(root, RuleBuilderState, "add_condition")
    await _call(root, RuleBuilderState, "set_field", "c1.right", "abc(")
    assert set(b.field_errors) == {"c1.right"}
    await _call(root, RuleBuilderState, "remove_condition", "1")
    assert b.field_errors == {}
    await _call(root, RuleBuilderState, "add_condition")
    assert b.field_errors == {}  # the new row 1 is untouched, though its right side is empty
