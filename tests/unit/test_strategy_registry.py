"""The strategy registry: stable names, form validation with stable error codes, the
catalogue the form renders, and operator plugins (a folder and entry points), including
the broken ones that must be refused without taking the others down."""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.i18n import LANGUAGES, catalog, translate
from engines.market import Candle, Timeframe
from engines.strategies.base import Action, StrategyHost
from engines.strategies.registry import (
    ENTRY_POINT_GROUP,
    ERROR_CODES,
    ParamsInvalid,
    UnknownStrategy,
    catalogue,
    clear_plugins,
    create,
    get_strategy,
    is_builtin,
    load_plugins,
    refused_plugins,
    strategy_names,
    validate_params,
)

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "fixtures" / "strategy_plugins"
BUILTIN_NAMES = ("ma_cross", "rsi_reversion", "macd_cross", "bollinger", "combined", "ml")


@pytest.fixture(autouse=True)
def _no_plugins() -> Iterator[None]:
    clear_plugins()
    yield
    clear_plugins()


# ---- names and catalogue ----------------------------------------------------------------


def test_builtin_names_are_stable_and_unique():
    # Stored in users' configs: this list only ever grows at the end.
    assert strategy_names() == BUILTIN_NAMES
    for name in BUILTIN_NAMES:
        assert get_strategy(name).name == name
        assert is_builtin(name)
    assert len({get_strategy(n) for n in BUILTIN_NAMES}) == len(BUILTIN_NAMES)


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(UnknownStrategy, match=r"'nope'.*ma_cross"):
        get_strategy("nope")
    with pytest.raises(UnknownStrategy):
        create("nope")
    with pytest.raises(UnknownStrategy):
        validate_params("nope", {})
    assert isinstance(UnknownStrategy("x"), ValueError)


def test_catalogue_text_exists_in_both_languages():
    infos = catalogue()
    assert [i.name for i in infos] == list(BUILTIN_NAMES)
    for lang in LANGUAGES:
        texts = catalog(lang)
        for info in infos:
            assert info.builtin and not info.texts
            keys = [info.title_key, info.description_key]
            for f in info.fields:
                keys += [f.label_key, f.help_key, *f.choice_keys]
            missing = [k for k in keys if k not in texts]
            assert not missing, (lang, info.name, missing)
        for code in ERROR_CODES:
            assert f"error.strategy_{code}" in texts, (lang, code)


def test_every_reason_key_in_the_strategies_is_translated():
    """Signal reasons are i18n keys written as literals in the strategy modules."""
    keys: set[str] = set()
    for path in (ROOT / "engines" / "strategies").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        keys |= set(re.findall(r'"(strategy\.[a-z_]+\.[a-z_]+)"', text))
    assert len(keys) >= 15 + 2 * len(BUILTIN_NAMES)  # reasons, titles, descriptions
    for lang in LANGUAGES:
        assert not keys - set(catalog(lang)), (lang, keys - set(catalog(lang)))


def test_fields_describe_the_params_model():
    for info in catalogue():
        model = info.params
        defaults = model()
        assert [f.name for f in info.fields] == list(model.model_fields)
        for f in info.fields:
            assert f.default == getattr(defaults, f.name)
            if f.kind == "choice":
                assert len(f.choices) >= 2 and f.default in f.choices
            else:
                assert f.kind in {"int", "float"}
                assert f.low is not None and f.high is not None and f.step
                assert f.low <= f.default <= f.high
        optimisable = {f.name for f in info.fields if f.optimisable}
        assert optimisable == {r.name for r in model.space()}
        assert "fraction" not in optimisable  # sizing is not a signal parameter


def test_param_spaces_are_sane_grids():
    for info in catalogue():
        space = info.params.space()
        assert space, info.name
        defaults = info.params()
        for r in space:
            grid = r.grid()
            assert 2 <= len(grid) <= 60, (info.name, r)
            assert grid == sorted(set(grid)), (info.name, r)
            assert math.isclose(grid[0], r.low) and math.isclose(grid[-1], r.high), (info.name, r)
            assert r.low <= getattr(defaults, r.name) <= r.high
            if r.kind == "int":
                assert all(isinstance(v, int) for v in grid)
            assert all(r.low <= v <= r.high for v in grid)


# ---- parameter validation ---------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_defaults_are_valid(name: str):
    params = validate_params(name, {})
    assert params == get_strategy(name).Params()
    assert create(name).params == params


def test_form_strings_are_accepted():
    params = validate_params(
        "ma_cross", {"fast": "10", "slow": " 30 ", "kind": "ema", "fraction": "0.5"}
    )
    assert (params.fast, params.slow, params.kind, params.fraction) == (10, 30, "ema", 0.5)
    assert type(params.fast) is int
    strategy = create("ma_cross", params)
    assert strategy.params is params


BAD: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = [
    ("ma_cross", {"fast": 60, "slow": 20}, "slow", "fast_not_shorter", {"fast": 60, "slow": 20}),
    (
        "ma_cross",
        {"fast": "30", "slow": "30"},
        "slow",
        "fast_not_shorter",
        {"fast": 30, "slow": 30},
    ),
    ("ma_cross", {"fast": "20.5"}, "fast", "not_number", {}),
    ("ma_cross", {"fast": 20.5}, "fast", "not_number", {}),
    ("ma_cross", {"fast": ""}, "fast", "not_number", {}),
    ("ma_cross", {"fast": "abc"}, "fast", "not_number", {}),
    ("ma_cross", {"fast": True}, "fast", "not_number", {}),
    ("ma_cross", {"fast": None}, "fast", "not_number", {}),
    ("ma_cross", {"fast": 2}, "fast", "too_low", {"min": 5}),
    ("ma_cross", {"slow": "1000"}, "slow", "too_high", {"max": 300}),
    ("ma_cross", {"kind": "wma"}, "kind", "not_choice", {"choices": "sma, ema"}),
    ("ma_cross", {"fastt": 5}, "fastt", "unknown_param", {"name": "fastt"}),
    ("ma_cross", {"fraction": 0}, "fraction", "above", {"min": 0.0}),
    ("ma_cross", {"fraction": "nan"}, "fraction", "not_number", {}),
    ("ma_cross", {"fraction": float("inf")}, "fraction", "not_number", {}),
    ("ma_cross", {"fraction": "-Infinity"}, "fraction", "not_number", {}),
    ("ma_cross", {"fraction": True}, "fraction", "not_number", {}),
    (
        "rsi_reversion",
        {"lower": 50, "upper": 50},
        "upper",
        "lower_not_below_upper",
        {"lower": 50, "upper": 50},
    ),
    ("rsi_reversion", {"upper": 99}, "upper", "too_high", {"max": 95}),
    ("macd_cross", {"fast": 30, "slow": 20}, "slow", "fast_not_shorter", {"fast": 30, "slow": 20}),
    ("bollinger", {"num_std": "0.5"}, "num_std", "too_low", {"min": 1.0}),
    ("bollinger", {"mode": ""}, "mode", "not_choice", {"choices": "breakout, reversion"}),
    (
        "combined",
        {"rsi_buy": 50, "rsi_sell": 50},
        "rsi_sell",
        "lower_not_below_upper",
        {"lower": 50, "upper": 50},
    ),
    ("combined", {"fast": 100, "slow": 60}, "slow", "fast_not_shorter", {"fast": 100, "slow": 60}),
    (
        "ml",
        {"buy_threshold": 0.5, "sell_threshold": 0.5},
        "sell_threshold",
        "threshold_range",
        {"buy": 0.5, "sell": 0.5},
    ),
    ("ml", {"buy_threshold": 1.2}, "buy_threshold", "too_high", {"max": 0.99}),
    ("ml", {"buy_threshold": "0.4"}, "buy_threshold", "too_low", {"min": 0.5}),
    ("ml", {"sell_threshold": 0}, "sell_threshold", "too_low", {"min": 0.01}),
    ("ml", {"horizon": "1.0e1"}, "horizon", "not_number", {}),
]


@pytest.mark.parametrize(("name", "raw", "field", "code", "params"), BAD)
def test_bad_values_get_the_right_code_on_the_right_field(
    name: str, raw: dict[str, Any], field: str, code: str, params: dict[str, Any]
):
    with pytest.raises(ParamsInvalid) as caught:
        validate_params(name, raw)
    assert caught.value.errors == {field: (code, params)}
    assert field in str(caught.value) and code in str(caught.value)
    for lang in LANGUAGES:  # the form can always render the message
        text = translate(f"error.strategy_{code}", lang, **params)
        assert "{" not in text
    # The API path (create) refuses the same input too, with pydantic's own error
    # (pydantic alone would take ``true`` for 1.0: only the form path screens booleans).
    if not any(isinstance(v, bool) for v in raw.values()):
        with pytest.raises(ValidationError):
            create(name, raw)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ParamsInvalid) as caught:
        validate_params("ma_cross", {"fast": "x", "slow": 9_999, "bogus": 1})
    assert caught.value.errors == {
        "fast": ("not_number", {}),
        "slow": ("too_high", {"max": 300}),
        "bogus": ("unknown_param", {"name": "bogus"}),
    }


def test_a_bad_field_does_not_trigger_a_misleading_cross_field_error():
    # fast=True is not a number; it must not fall back to its default (20) and then
    # complain that 20 is not shorter than slow=10.
    with pytest.raises(ParamsInvalid) as caught:
        validate_params("ma_cross", {"fast": True, "slow": 10})
    assert caught.value.errors == {"fast": ("not_number", {})}


def test_input_that_is_not_a_mapping():
    with pytest.raises(ParamsInvalid) as caught:
        validate_params("ma_cross", ["fast", 5])  # type: ignore[arg-type]
    assert caught.value.errors == {"": ("invalid", {})}


def test_params_are_frozen():
    params = validate_params("ma_cross", {})
    with pytest.raises(ValidationError):
        params.fast = 5  # type: ignore[misc]


# ---- plugins ----------------------------------------------------------------------------

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def _run(name: str, closes: list[int]) -> list[tuple[int, Action]]:
    host = StrategyHost(create(name), "000660")
    out = []
    for i, c in enumerate(closes):
        candle = Candle("000660", Timeframe.D1, T0 + timedelta(days=i), c, c, c, c, 100)
        out.extend((i, s.action) for s in host.on_candle(candle))
    return out


def test_plugins_folder_loads_the_example():
    assert load_plugins(PLUGINS, entry_points=False) == ["donchian_breakout"]
    assert strategy_names() == (*BUILTIN_NAMES, "donchian_breakout")
    assert not is_builtin("donchian_breakout") and refused_plugins() == []
    info = catalogue()[-1]
    assert info.name == "donchian_breakout" and not info.builtin
    assert [f.name for f in info.fields] == ["entry", "exit"]
    for lang in LANGUAGES:
        assert info.title_key in info.texts[lang]
    # It runs: 30 flat bars, a close above the 20-bar high, then one below the 10-bar low.
    closes = [10_000, 10_010] * 15 + [10_500, 10_400, 9_000]
    assert _run("donchian_breakout", closes) == [(30, Action.BUY), (32, Action.SELL)]
    with pytest.raises(ParamsInvalid) as caught:
        validate_params("donchian_breakout", {"entry": "abc"})
    assert caught.value.errors == {"entry": ("not_number", {})}


BROKEN = {
    "a_syntax.py": "def broken(:\n",
    "b_raises.py": "raise RuntimeError('plugin exploded at import')\n",
    "c_not_strategy.py": "class Thing:\n    name = 'thing'\n\nSTRATEGIES = (Thing,)\n",
    "d_no_list.py": "from engines.strategies.base import Strategy\n",
    "e_builtin_clash.py": (
        "from engines.strategies.base import Strategy\n"
        "class Fake(Strategy):\n    name = 'ma_cross'\n\nSTRATEGIES = (Fake,)\n"
    ),
    "f_bad_name.py": (
        "from engines.strategies.base import Strategy\n"
        "class Bad(Strategy):\n    name = 'Bad-Name'\n\n"
        "class Empty(Strategy):\n    pass\n\nSTRATEGIES = (Bad, Empty)\n"
    ),
    "g_duplicate.py": (
        "from engines.strategies.base import Strategy\n"
        "class Twin(Strategy):\n    name = 'donchian_breakout'\n\nSTRATEGIES = (Twin,)\n"
    ),
    "h_bad_param.py": (
        "from engines.strategies.base import Strategy, StrategyParams\n"
        "class P(StrategyParams):\n    label: str = 'x'\n\n"
        "class S(Strategy):\n    name = 'text_param'\n    Params = P\n\nSTRATEGIES = (S,)\n"
    ),
    "i_exits.py": "import sys\nsys.exit(3)\n",
    "z_good.py": (
        "from engines.strategies.base import Strategy\n"
        "class Quiet(Strategy):\n    name = 'quiet'\n\nSTRATEGIES = [Quiet]\n"
    ),
}


def test_broken_plugins_are_refused_and_logged_without_harming_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    shutil.copy(PLUGINS / "donchian.py", tmp_path / "c_donchian.py")
    for filename, source in BROKEN.items():
        (tmp_path / filename).write_text(source, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="engines.strategies.registry"):
        loaded = load_plugins(str(tmp_path), entry_points=False)
    assert loaded == ["donchian_breakout", "quiet"]
    assert strategy_names() == (*BUILTIN_NAMES, "donchian_breakout", "quiet")
    assert get_strategy("ma_cross").__module__ == "engines.strategies.ma_cross"

    reasons = {source.rsplit("/", 1)[-1]: reason for source, reason in refused_plugins()}
    assert set(reasons) == {name.removesuffix(".py") for name in BROKEN} - {"z_good"}
    assert "SyntaxError" in reasons["a_syntax"]
    assert "plugin exploded" in reasons["b_raises"]
    assert "not a subclass" in reasons["c_not_strategy"]
    assert "no STRATEGIES" in reasons["d_no_list"]
    assert "built-in" in reasons["e_builtin_clash"]
    assert "not a valid strategy name" in reasons["f_bad_name"]
    assert "already registered" in reasons["g_duplicate"]
    assert "must be int, float, bool or a Literal" in reasons["h_bad_param"]
    assert "SystemExit" in reasons["i_exits"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == len(refused_plugins()) == 10  # f_bad_name refuses two classes
    assert all("strategy plugin refused" in r.getMessage() for r in logged)
    # A module that failed to import leaves nothing half-loaded behind.
    assert not [m for m in sys.modules if m.endswith((".a_syntax", ".b_raises", ".i_exits"))]


def test_an_empty_or_missing_folder_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="engines.strategies.registry"):
        assert load_plugins(tmp_path / "does-not-exist", entry_points=False) == []
    assert "holds no Python modules" in caplog.text


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_entry_points_load_and_win_over_the_folder(caplog: pytest.LogCaptureFixture):
    eps = [
        _ep("donchian_breakout", "tests.fixtures.strategy_plugins.donchian:Donchian"),
        _ep("renamed", "tests.fixtures.strategy_plugins.donchian:Donchian"),
        _ep("missing", "tests.fixtures.no_such_module:Nothing"),
        _ep("not_a_class", "tests.fixtures.strategy_plugins.donchian:STRATEGIES"),
    ]
    with caplog.at_level(logging.ERROR, logger="engines.strategies.registry"):
        loaded = load_plugins(PLUGINS, entry_points=eps)
    assert loaded == ["donchian_breakout"]
    cls = get_strategy("donchian_breakout")
    assert cls.__module__ == "tests.fixtures.strategy_plugins.donchian"  # the entry point's
    reasons = [reason for _, reason in refused_plugins()]
    assert len(reasons) == 4
    assert "named 'renamed' but the strategy 'donchian_breakout'" in reasons[0]
    assert "ModuleNotFoundError" in reasons[1]
    assert "not a subclass" in reasons[2]
    assert "already registered by entry point donchian_breakout" in reasons[3]
    assert caplog.text.count("strategy plugin refused") == 4


def test_installed_entry_points_are_read_without_error():
    # The real metadata scan: nothing in this environment declares the group.
    assert load_plugins(None) == []
    assert strategy_names() == BUILTIN_NAMES


def test_clear_plugins_forgets_them():
    load_plugins(PLUGINS, entry_points=False)
    clear_plugins()
    assert strategy_names() == BUILTIN_NAMES
    with pytest.raises(UnknownStrategy):
        get_strategy("donchian_breakout")
    # And they load again after a clear.
    assert load_plugins(PLUGINS, entry_points=False) == ["donchian_breakout"]
