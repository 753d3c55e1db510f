"""PriceRuleSpec and parse_level: what users may type, and the error codes the app translates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engines.rules.spec import (
    LEVEL_MAX,
    PriceOp,
    PriceRuleSpec,
    RuleSpecError,
    parse_level,
    rearm_band_won,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (70000, 70000),
        ("70000", 70000),
        ("70,000", 70000),
        ("1,234,567", 1234567),
        ("  70,000 ", 70000),
        ("+500", 500),
        ("007", 7),
        (70000.0, 70000),
        ("70000.00", 70000),
        (1, 1),
        (LEVEL_MAX - 1, LEVEL_MAX - 1),
        ("99,999,999", 99_999_999),
    ],
)
def test_parse_level_accepts(raw, expected):
    value = parse_level(raw)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("abc", "level_not_number"),
        ("7e4", "level_not_number"),
        ("", "level_not_number"),
        ("70 000", "level_not_number"),
        ("7,0000", "level_not_number"),
        ("70_000", "level_not_number"),
        ("\uff17\uff10\uff10", "level_not_number"),  # full-width digits
        ("0x10", "level_not_number"),
        (True, "level_not_number"),
        (False, "level_not_number"),
        (None, "level_not_number"),
        (float("nan"), "level_not_number"),
        (float("inf"), "level_not_number"),
        ([70000], "level_not_number"),
        (1.5, "level_not_integer"),
        ("70,000.5", "level_not_integer"),
        ("0.5", "level_not_integer"),
        (-5, "level_not_positive"),
        ("-5", "level_not_positive"),
        ("-70,000", "level_not_positive"),
        (-1.0, "level_not_positive"),
        (0, "level_not_positive"),
        ("0", "level_not_positive"),
        ("000", "level_not_positive"),
        (LEVEL_MAX, "level_too_large"),
        ("100,000,000", "level_too_large"),
        (10**30, "level_too_large"),
        (1e20, "level_too_large"),
        ("9" * 5000, "level_too_large"),  # past int()'s digit limit: still a clean code
    ],
)
def test_parse_level_rejects_with_code(raw, code):
    with pytest.raises(RuleSpecError) as info:
        parse_level(raw)
    assert info.value.code == code
    assert info.value.message
    assert isinstance(info.value, ValueError)


def test_model_accepts_and_coerces():
    spec = PriceRuleSpec(op="cross_up", level="70,000")
    assert spec.op is PriceOp.CROSS_UP
    assert spec.level == 70000
    assert spec.kind == "price"
    assert spec.repeat == "once"
    assert spec.rearm_band_pct == 0.5


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (-1, "level_not_positive"),
        (0, "level_not_positive"),
        ("abc", "level_not_number"),
        ("7e4", "level_not_number"),
        (1.5, "level_not_integer"),
        (True, "level_not_number"),
        (10**9, "level_too_large"),
    ],
)
def test_model_reports_level_code_as_error_type(raw, code):
    with pytest.raises(ValidationError) as info:
        PriceRuleSpec(op="above", level=raw)
    errors = info.value.errors()
    assert len(errors) == 1
    assert errors[0]["type"] == code
    assert errors[0]["loc"] == ("level",)


def test_json_level_code_survives_json_parsing():
    with pytest.raises(ValidationError) as info:
        PriceRuleSpec.model_validate_json('{"op": "below", "level": 12.5}')
    assert info.value.errors()[0]["type"] == "level_not_integer"


@pytest.mark.parametrize(
    "data",
    [
        {"op": "sideways", "level": 100},
        {"op": "above", "level": 100, "kind": "indicator"},
        {"op": "above", "level": 100, "repeat": "always"},
        {"op": "above", "level": 100, "rearm_band_pct": 0},
        {"op": "above", "level": 100, "rearm_band_pct": -1},
        {"op": "above", "level": 100, "rearm_band_pct": 20.01},
        {"op": "above", "level": 100, "rearm_band_pct": float("nan")},
        {"op": "above", "level": 100, "rearm_band_pct": True},
        {"op": "above", "level": 100, "colour": "red"},
        {"level": 100},
    ],
)
def test_model_rejects_other_fields(data):
    with pytest.raises(ValidationError):
        PriceRuleSpec.model_validate(data)


def test_band_pct_bounds_inclusive_at_20():
    assert PriceRuleSpec(op="above", level=100, rearm_band_pct=20).rearm_band_pct == 20.0


@pytest.mark.parametrize("op", list(PriceOp))
@pytest.mark.parametrize("repeat", ["once", "rearm"])
def test_json_round_trip(op, repeat):
    spec = PriceRuleSpec(op=op, level=70000, repeat=repeat, rearm_band_pct=1.25)
    text = spec.model_dump_json()
    assert f'"op":"{op.value}"' in text
    again = PriceRuleSpec.model_validate_json(text)
    assert again == spec
    assert again.model_dump(mode="json") == {
        "kind": "price",
        "op": op.value,
        "level": 70000,
        "repeat": repeat,
        "rearm_band_pct": 1.25,
    }


def test_spec_is_immutable():
    spec = PriceRuleSpec(op="above", level=100)
    with pytest.raises(ValidationError):
        spec.level = 200  # type: ignore[misc]


@pytest.mark.parametrize(
    ("level", "pct", "band"),
    [
        (70000, 0.5, 350),  # ceil(350.0)
        (70000, 0.1, 100),  # 70 won < one 100-won tick
        (70000, 0.15, 105),  # exact decimal: not 106 from float noise
        (1000, 0.5, 5),
        (1000, 0.01, 1),  # one 1-won tick
        (3000, 0.01, 5),  # one 5-won tick
        (1001, 1.0, 11),  # ceil(10.01)
        (123_456, 20.0, 24692),  # ceil(24691.2)
    ],
)
def test_rearm_band_won(level, pct, band):
    assert rearm_band_won(level, pct) == band
    spec = PriceRuleSpec(op="cross", level=level, repeat="rearm", rearm_band_pct=pct)
    assert spec.rearm_band() == band
