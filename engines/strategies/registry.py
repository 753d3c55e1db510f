"""Strategies by name: the built-ins, operator plugins, and parameter validation for forms.

Names are stored in users' strategy configs, so they are stable: add names, never
rename or remove one. Built-in names cannot be taken by a plugin.

Users never upload code. The operator installs plugins in one of two ways (see
``docs/strategy-plugins.md``):

* a package declaring entry points in the group ``tickwatch.strategies``, each
  pointing at a :class:`~engines.strategies.base.Strategy` subclass, with the entry
  point's name equal to the strategy's ``name``;
* a folder of modules (``STRATEGY_PLUGINS_DIR``), each listing its classes in a
  module-level ``STRATEGIES`` sequence.

Importing this module registers the built-ins and nothing else: it reads no
environment, file or package metadata. The app calls :func:`load_plugins` once at
start. A plugin that fails to import, has a bad or taken name, or is not a Strategy
is refused with a logged error; the other plugins still load.

:func:`validate_params` turns pydantic's errors into stable codes for the form: each
field maps to ``(code, params)``, and the message is the i18n key
``error.strategy_<code>`` formatted with ``params``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import pkgutil
import re
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, get_origin

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from engines.strategies.base import Strategy, StrategyParams
from engines.strategies.bollinger import BollingerStrategy
from engines.strategies.combined import Combined
from engines.strategies.ma_cross import MACross
from engines.strategies.macd_cross import MACDCross
from engines.strategies.ml import MLStrategy
from engines.strategies.rsi_reversion import RSIReversion

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "ERROR_CODES",
    "ParamField",
    "ParamsInvalid",
    "PluginRefused",
    "StrategyInfo",
    "UnknownStrategy",
    "catalogue",
    "clear_plugins",
    "create",
    "get_strategy",
    "is_builtin",
    "load_plugins",
    "refused_plugins",
    "register",
    "strategy_names",
    "validate_params",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tickwatch.strategies"
PLUGIN_PACKAGE = "tickwatch_strategy_plugins"
"""Folder plugins are imported as ``tickwatch_strategy_plugins.<module>``, so a plugin
file named like an installed package (``json.py``) cannot shadow it."""

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,39}")
"""Strategy names: lowercase ASCII, digits and underscores, 2 to 40 characters."""

BUILTINS: tuple[type[Strategy], ...] = (
    MACross,
    RSIReversion,
    MACDCross,
    BollingerStrategy,
    Combined,
    MLStrategy,
)

ERROR_CODES: tuple[str, ...] = (
    "too_low",
    "too_high",
    "above",
    "below",
    "not_number",
    "not_bool",
    "not_choice",
    "missing",
    "unknown_param",
    "invalid",
    "fast_not_shorter",
    "lower_not_below_upper",
    "threshold_range",
)
"""Every code :func:`validate_params` can report; each has an ``error.strategy_<code>``
message in the catalogs. Plugin-specific custom errors are reported as ``invalid``."""

_NOT_NUMBER = frozenset(
    {"int_parsing", "int_from_float", "int_type", "float_parsing", "float_type", "finite_number"}
)
_NOT_BOOL = frozenset({"bool_parsing", "bool_type"})
_CUSTOM = frozenset({"fast_not_shorter", "lower_not_below_upper", "threshold_range"})


class UnknownStrategy(ValueError):
    """No strategy is registered under this name (a typo, or a plugin no longer installed)."""


class PluginRefused(ValueError):
    """A plugin strategy was not registered; the message says why."""


class ParamsInvalid(ValueError):
    """Parameters a user typed do not validate.

    ``errors`` maps a field name (``""`` for input that is not a mapping at all) to
    ``(code, params)``; the form shows ``error.strategy_<code>`` formatted with
    ``params`` beside that field.
    """

    def __init__(self, strategy: str, errors: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.strategy = strategy
        self.errors = errors
        detail = "; ".join(f"{f or '(input)'}: {code} {p}" for f, (code, p) in errors.items())
        super().__init__(f"invalid parameters for strategy {strategy!r}: {detail}")


@dataclass(frozen=True, slots=True)
class ParamField:
    """What a form needs to render one parameter and what the optimiser may vary."""

    name: str
    kind: str
    """``"int"``, ``"float"``, ``"bool"`` or ``"choice"``."""
    default: Any
    required: bool
    low: float | None
    high: float | None
    step: float | None
    choices: tuple[str, ...]
    label_key: str
    help_key: str
    choice_keys: tuple[str, ...]
    """i18n keys of the choices' labels, in the order of ``choices``."""
    optimisable: bool
    """In :meth:`StrategyParams.space`: bounded on both sides by ``ge``/``le``."""


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    name: str
    title_key: str
    description_key: str
    params: type[StrategyParams]
    fields: list[ParamField] = field(default_factory=list)
    builtin: bool = True
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """A plugin's own text, ``{lang: {i18n key: text}}``, for keys the app's catalogs
    lack (the app's catalogs cannot know a plugin's keys). Empty for built-ins."""


_BUILTIN: dict[str, type[Strategy]] = {cls.name: cls for cls in BUILTINS}
_plugins: dict[str, type[Strategy]] = {}
_plugin_sources: dict[str, str] = {}
_refused: list[tuple[str, str]] = []


# ---- lookup -------------------------------------------------------------------------


def strategy_names() -> tuple[str, ...]:
    """Built-ins in their fixed order, then plugins in the order they loaded."""
    return (*_BUILTIN, *_plugins)


def is_builtin(name: str) -> bool:
    return name in _BUILTIN


def get_strategy(name: str) -> type[Strategy]:
    cls = _BUILTIN.get(name) or _plugins.get(name)
    if cls is None:
        raise UnknownStrategy(
            f"unknown strategy {name!r}; registered: {', '.join(strategy_names())}"
        )
    return cls


def create(name: str, params: Mapping[str, Any] | StrategyParams | None = None) -> Strategy:
    """A fresh strategy ``name``; pydantic's ``ValidationError`` propagates on bad params."""
    cls = get_strategy(name)
    if params is None or isinstance(params, StrategyParams):
        return cls(params)
    return cls(dict(params))


def catalogue() -> list[StrategyInfo]:
    """Every registered strategy with its form fields, for the strategy picker."""
    infos: list[StrategyInfo] = []
    for name in strategy_names():
        cls = get_strategy(name)
        infos.append(
            StrategyInfo(
                name=name,
                title_key=cls.title_key or f"strategy.{name}.title",
                description_key=cls.description_key or f"strategy.{name}.description",
                params=cls.Params,
                fields=param_fields(cls.Params),
                builtin=name in _BUILTIN,
                texts=getattr(cls, "texts", None) or {},
            )
        )
    return infos


def _bound(metadata: list[Any], attrs: tuple[str, str]) -> float | None:
    """The bound set by any of ``attrs`` (``ge``/``gt`` or ``le``/``lt``) in field metadata."""
    found = None
    for meta in metadata:
        for attr in attrs:
            value = getattr(meta, attr, None)
            if value is not None:
                found = value
    return found


def param_fields(params: type[StrategyParams]) -> list[ParamField]:
    """The form fields of ``params``; ``TypeError`` for a field no form can render."""
    ranges = {r.name: r for r in params.space()}
    fields: list[ParamField] = []
    for name, info in params.model_fields.items():
        annotation = info.annotation
        choices: tuple[str, ...] = ()
        if get_origin(annotation) is Literal:
            kind = "choice"
            choices = tuple(str(a) for a in get_args(annotation))
        elif annotation is bool:
            kind = "bool"
        elif annotation is int:
            kind = "int"
        elif annotation is float:
            kind = "float"
        else:
            raise TypeError(
                f"{params.__name__}.{name}: a parameter must be int, float, bool or a Literal "
                f"of choices, not {annotation!r}"
            )
        low = _bound(info.metadata, ("ge", "gt"))
        high = _bound(info.metadata, ("le", "lt"))
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        step = extra.get("step")
        if step is None and name in ranges:
            step = ranges[name].step
        required = info.default is PydanticUndefined
        fields.append(
            ParamField(
                name=name,
                kind=kind,
                default=None if required else info.default,
                required=required,
                low=low,
                high=high,
                step=step,  # type: ignore[arg-type]
                choices=choices,
                label_key=f"strategy.param.{name}",
                help_key=f"strategy.param.{name}.help",
                choice_keys=tuple(f"strategy.choice.{name}.{c}" for c in choices),
                optimisable=name in ranges,
            )
        )
    return fields


# ---- validation for forms and the API -----------------------------------------------


def _non_finite_text(value: str) -> bool:
    try:
        return not math.isfinite(float(value.strip()))
    except ValueError:
        return False


def _error_code(err: Any, choices: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "greater_than_equal":
        return "too_low", {"min": ctx["ge"]}
    if kind == "greater_than":
        return "above", {"min": ctx["gt"]}
    if kind == "less_than_equal":
        return "too_high", {"max": ctx["le"]}
    if kind == "less_than":
        return "below", {"max": ctx["lt"]}
    if kind in _NOT_NUMBER:
        return "not_number", {}
    if kind in _NOT_BOOL:
        return "not_bool", {}
    if kind == "literal_error":
        return "not_choice", {"choices": ", ".join(choices)}
    if kind == "missing":
        return "missing", {}
    if kind == "extra_forbidden":
        return "unknown_param", {"name": str(err["loc"][0]) if err["loc"] else ""}
    if kind in _CUSTOM:
        return kind, dict(ctx)
    return "invalid", {}


def validate_params(name: str, raw: Mapping[str, object]) -> StrategyParams:
    """``raw`` (form strings or JSON values) as ``name``'s validated params.

    Raises :class:`UnknownStrategy` for an unknown name and :class:`ParamsInvalid`
    listing every bad field. Stricter than pydantic's lax mode where a form would
    otherwise accept nonsense: ``true`` is not a number, and neither are NaN or
    infinity, even for a plugin whose model allows them.
    """
    cls = get_strategy(name)
    model = cls.Params
    if not isinstance(raw, Mapping):
        raise ParamsInvalid(name, {"": ("invalid", {})})
    errors: dict[str, tuple[str, dict[str, Any]]] = {}
    screened: dict[str, object] = {}
    for key, value in raw.items():
        info = model.model_fields.get(key) if isinstance(key, str) else None
        if info is not None and info.annotation in (int, float):
            bad = isinstance(value, bool)
            bad = bad or (isinstance(value, float) and not math.isfinite(value))
            bad = bad or (isinstance(value, str) and _non_finite_text(value))
            if bad:
                errors[key] = ("not_number", {})
                value = None  # fails the field without feeding a cross-field check
        screened[str(key)] = value
    try:
        params = model.model_validate(screened)
    except ValidationError as exc:
        for err in exc.errors():
            where = str(err["loc"][0]) if err["loc"] else ""
            info = model.model_fields.get(where)
            choices = ()
            if info is not None and get_origin(info.annotation) is Literal:
                choices = tuple(str(a) for a in get_args(info.annotation))
            errors.setdefault(where, _error_code(err, choices))
        raise ParamsInvalid(name, errors) from None
    if errors:  # unreachable with a sane model, kept so a lax plugin cannot slip through
        raise ParamsInvalid(name, errors)
    return params


# ---- plugins --------------------------------------------------------------------------


class _FsPath(Protocol):
    """A path (``pathlib.Path``, ...): engines may not import pathlib or os."""

    def __fspath__(self) -> str: ...


def _refuse(source: str, reason: str, *, exc_info: bool = False) -> None:
    _refused.append((source, reason))
    logger.error("strategy plugin refused (%s): %s", source, reason, exc_info=exc_info)


def _valid_texts(texts: object) -> bool:
    return isinstance(texts, Mapping) and all(
        isinstance(lang, str)
        and isinstance(table, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())
        for lang, table in texts.items()
    )


def register(cls: object, *, source: str = "") -> str:
    """Register a plugin strategy class; :class:`PluginRefused` says why not."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls is Strategy:
        raise PluginRefused(f"{cls!r} is not a subclass of engines.strategies.Strategy")
    name = cls.name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PluginRefused(
            f"{cls.__qualname__}.name {name!r} is not a valid strategy name "
            "(lowercase letters, digits and _, starting with a letter, 2 to 40 characters)"
        )
    if name in _BUILTIN:
        raise PluginRefused(f"{name!r} is a built-in strategy and cannot be replaced")
    if name in _plugins:
        raise PluginRefused(f"{name!r} is already registered by {_plugin_sources[name]}")
    params = cls.Params
    if not (isinstance(params, type) and issubclass(params, StrategyParams)):
        raise PluginRefused(f"{name}: Params must subclass engines.strategies.StrategyParams")
    try:
        param_fields(params)
    except TypeError as exc:
        raise PluginRefused(f"{name}: {exc}") from None
    texts = getattr(cls, "texts", None)
    if texts is not None and not _valid_texts(texts):
        raise PluginRefused(
            f"{name}: texts must map a language to {{i18n key: text}}, "
            'e.g. {"ko": {...}, "en": {...}}'
        )
    _plugins[name] = cls
    _plugin_sources[name] = source or cls.__module__
    return name


def _register_logged(cls: object, source: str) -> str | None:
    try:
        return register(cls, source=source)
    except PluginRefused as exc:
        _refuse(source, str(exc))
        return None


def _import_folder_module(info: pkgutil.ModuleInfo) -> types.ModuleType:
    found = info.module_finder.find_spec(info.name)  # type: ignore[call-arg]
    if found is None or found.origin is None:
        raise ImportError(f"cannot find {info.name}")
    if PLUGIN_PACKAGE not in sys.modules:
        parent = types.ModuleType(PLUGIN_PACKAGE, "Operator strategy plugins (folder).")
        parent.__path__ = []
        sys.modules[PLUGIN_PACKAGE] = parent
    qualified = f"{PLUGIN_PACKAGE}.{info.name}"
    spec = importlib.util.spec_from_file_location(
        qualified, found.origin, submodule_search_locations=found.submodule_search_locations
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {found.origin}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(qualified, None)
        raise
    return module


def _load_folder(folder: str) -> list[str]:
    loaded: list[str] = []
    modules = sorted(pkgutil.iter_modules([folder]), key=lambda m: m.name)
    if not modules:
        logger.warning("strategy plugin folder %s holds no Python modules", folder)
    for info in modules:
        source = f"{folder}/{info.name}"
        try:
            module = _import_folder_module(info)
        except (Exception, SystemExit) as exc:
            _refuse(source, f"import failed: {exc!r}", exc_info=True)
            continue
        classes = getattr(module, "STRATEGIES", None)
        if classes is None or isinstance(classes, str) or not isinstance(classes, Iterable):
            _refuse(source, "the module has no STRATEGIES sequence of Strategy classes")
            continue
        for cls in classes:
            name = _register_logged(cls, source)
            if name:
                loaded.append(name)
    return loaded


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> str | None:
    source = f"entry point {ep.name} = {ep.value}"
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:
        _refuse(source, f"import failed: {exc!r}", exc_info=True)
        return None
    if isinstance(obj, type) and issubclass(obj, Strategy) and obj.name != ep.name:
        _refuse(source, f"the entry point is named {ep.name!r} but the strategy {obj.name!r}")
        return None
    return _register_logged(obj, source)


def load_plugins(
    folder: str | _FsPath | None,
    *,
    entry_points: bool | Iterable[importlib.metadata.EntryPoint] = True,
) -> list[str]:
    """Register operator plugins; returns the names registered.

    ``entry_points``: ``True`` reads the installed packages' ``tickwatch.strategies``
    group, ``False`` skips it, an iterable gives the entry points to load (tests).
    Entry points load before the folder, so on a name clash the installed package
    wins. Refusals are logged and kept in :func:`refused_plugins`; nothing raises.
    """
    loaded: list[str] = []
    if entry_points is True:
        eps: Iterable[importlib.metadata.EntryPoint] = importlib.metadata.entry_points(
            group=ENTRY_POINT_GROUP
        )
    elif entry_points is False:
        eps = ()
    else:
        eps = entry_points
    for ep in eps:
        name = _load_entry_point(ep)
        if name:
            loaded.append(name)
    if folder is not None:
        path = folder if isinstance(folder, str) else folder.__fspath__()
        loaded.extend(_load_folder(path))
    if loaded:
        logger.info("strategy plugins loaded: %s", ", ".join(loaded))
    return loaded


def refused_plugins() -> list[tuple[str, str]]:
    """``(source, reason)`` of every plugin refused since the last :func:`clear_plugins`."""
    return list(_refused)


def clear_plugins() -> None:
    """Forget every plugin (tests; a reload). The built-ins stay."""
    _plugins.clear()
    _plugin_sources.clear()
    _refused.clear()
    for mod in [
        m for m in sys.modules if m == PLUGIN_PACKAGE or m.startswith(PLUGIN_PACKAGE + ".")
    ]:
        del sys.modules[mod]
