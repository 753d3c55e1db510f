"""Backtest, optimisation, walk-forward and parity runs: validated requests and their rows.

Pages call the ``start_*`` functions, which check everything a user can get wrong
(an owned config, known symbols, a date range the wrong way round, too many
symbols, too few stored candles for the strategy's warm-up, costs out of range)
and answer with field errors the form shows; only a valid request becomes a
``queued`` row. :mod:`app.runtime.backtest_jobs` runs the rows and reports back
through the job-side functions at the bottom (no acting user there: the row
already belongs to one).

A row is a snapshot: the strategy name and params are copied from the config
when the run is queued, so editing the config afterwards does not change what a
stored result claims to be the result of. The request (cash, costs, optimiser
options) is kept in ``options``; the output, as JSON text, in ``result``.

The parity report (``kind="parity"``) is the backtest of one attachment over its
last N days of stored candles, with the attachment's own params and the paper
account's cost model, set beside the orders the attachment actually placed in
those days. Backtest signals and actual orders are matched by signal key, which
names the symbol, the bar and the action: the same bar on both sides.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.candles import StoredCandle
from app.models.common import utcnow
from app.models.strategies import BacktestRun
from app.runtime.backtest_jobs import JobSpec
from app.services import audit, paper_accounts, symbols
from app.services import candles as candle_store
from app.services import strategies as strategies_service
from app.services.backtest_parity import ActualOrder, _actual_orders, parity_compare
from app.services.errors import NotFound, ValidationFailed
from engines.costs import CostModel
from engines.market import KST, Candle, Timeframe
from engines.strategies import registry
from engines.strategies.base import StrategyHost

log = logging.getLogger(__name__)

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "KINDS",
    "METHODS",
    "METRICS",
    "QUEUED",
    "RUNNING",
    "ActualOrder",
    "JobInputError",
    "RunView",
    "cancel_run",
    "claim_next",
    "fail_orphans",
    "fail_run",
    "finish_run",
    "get_run",
    "is_running",
    "job_spec",
    "list_runs",
    "mark_cancelled",
    "parity_compare",
    "set_progress",
    "start_backtest",
    "start_optimization",
    "start_parity",
    "start_walk_forward",
]

KINDS = ("backtest", "optimize", "walk_forward", "parity")
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
TARGET_TYPE = "backtest_run"

MAX_SYMBOLS = 10
MAX_ACTIVE_PER_USER = 5
"""Queued plus running runs a user may have: enough to line up a comparison, not a flood."""
MIN_TRADING_BARS = 20
"""Bars after the warm-up a run needs: fewer give metrics that mean nothing."""
CASH_RANGE = (100_000, 100_000_000_000)
COMMISSION_MAX_PCT = 1.0
TAX_MAX_PCT = 1.0
SLIPPAGE_MAX_TICKS = 20
MAX_RUNS_RANGE = (1, 300)
FOLDS_RANGE = (2, 8)
PARITY_DAYS_RANGE = (5, 365)
METHODS = ("grid", "random")
METRICS = (
    "sharpe",
    "sortino",
    "calmar",
    "total_return",
    "cagr",
    "profit_factor",
    "win_rate",
    "expectancy",
)

FieldErrors = dict[str, tuple[str, dict[str, object]]]


class JobInputError(Exception):
    """A queued run can no longer be built (its config or candles went away)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class RunView:
    id: int
    kind: str
    status: str
    progress: float
    error: str
    config_id: int | None
    strategy: str
    params: dict[str, Any]
    symbols: list[str]
    start: date | None
    end: date | None
    request: dict[str, Any]
    output: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


# ---- rows <-> views ----------------------------------------------------------------------


def _json(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(KST).date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _view(row: BacktestRun) -> RunView:
    return RunView(
        id=row.id or 0,
        kind=row.kind,
        status=row.status,
        progress=float(row.progress or 0.0),
        error=row.error or "",
        config_id=row.config_id,
        strategy=row.strategy,
        params=dict(_json(row.params) or {}),
        symbols=list(_json(row.symbols) or []),
        start=_as_date(row.start_date),
        end=_as_date(row.end_date),
        request={**(row.options or {}), "timeframe": row.timeframe},
        output=dict(_json(row.result) or {}),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


# ---- parsing the form ------------------------------------------------------------------


def _number(raw: object, field: str, errors: FieldErrors, *, integer: bool) -> float | None:
    text = str(raw if raw is not None else "").strip().replace(",", "").replace("_", "")
    if not text:
        errors[field] = ("backtest_required", {})
        return None
    try:
        value = float(text)
    except ValueError:
        errors[field] = ("backtest_not_number", {})
        return None
    if not math.isfinite(value) or (integer and value != int(value)):
        errors[field] = ("backtest_not_number", {})
        return None
    return value


def _bounded(
    raw: object, field: str, errors: FieldErrors, low: float, high: float, *, integer: bool
) -> float | None:
    value = _number(raw, field, errors, integer=integer)
    if value is None:
        return None
    if not low <= value <= high:
        shown = (f"{int(low):,}", f"{int(high):,}") if integer else (f"{low:g}", f"{high:g}")
        errors[field] = ("backtest_out_of_range", {"min": shown[0], "max": shown[1]})
        return None
    return value


def _day(raw: object, field: str, errors: FieldErrors) -> date | None:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    text = str(raw or "").strip()
    if not text:
        errors[field] = ("backtest_required", {})
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = ("backtest_date_invalid", {})
        return None


def _choice(raw: object, field: str, allowed: Sequence[str], errors: FieldErrors) -> str:
    value = str(raw or "").strip()
    if value not in allowed:
        errors[field] = ("backtest_bad_choice", {})
    return value


def day_start(day: date) -> datetime:
    """00:00 KST of ``day``, in UTC: the half-open window's bound for the candle store."""
    return datetime(day.year, day.month, day.day, tzinfo=KST).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Costs:
    cash: int
    commission_pct: float
    tax_pct: float
    slippage_ticks: int

    def request(self) -> dict[str, Any]:
        return {
            "cash": self.cash,
            "commission_pct": self.commission_pct,
            "tax_pct": self.tax_pct,
            "slippage_ticks": self.slippage_ticks,
        }


def default_costs() -> Costs:
    """The paper account's own costs: a backtest should charge what paper trading charges."""
    fees = paper_accounts.fee_schedule()
    return Costs(
        cash=10_000_000,
        commission_pct=round(fees.commission_rate * 100, 6),
        tax_pct=round(fees.sell_tax_rate * 100, 6),
        slippage_ticks=fees.slippage_ticks,
    )


def _costs(raw: Mapping[str, object], errors: FieldErrors) -> Costs | None:
    cash = _bounded(raw.get("cash"), "cash", errors, *CASH_RANGE, integer=True)
    commission = _bounded(
        raw.get("commission_pct"), "commission_pct", errors, 0, COMMISSION_MAX_PCT, integer=False
    )
    tax = _bounded(raw.get("tax_pct"), "tax_pct", errors, 0, TAX_MAX_PCT, integer=False)
    slippage = _bounded(
        raw.get("slippage_ticks"), "slippage_ticks", errors, 0, SLIPPAGE_MAX_TICKS, integer=True
    )
    if cash is None or commission is None or tax is None or slippage is None:
        return None
    return Costs(int(cash), commission, tax, int(slippage))


def cost_model(request: Mapping[str, Any]) -> CostModel:
    return CostModel(
        commission_rate=float(request["commission_pct"]) / 100,
        sell_tax_rate=float(request["tax_pct"]) / 100,
        slippage_ticks=int(request["slippage_ticks"]),
        whole_won=True,
    )


def _warmup(strategy: str, params: Mapping[str, Any]) -> int:
    """Bars the strategy needs before its signals mean anything (its host's warm-up)."""
    return StrategyHost(registry.create(strategy, dict(params)), "000000").warmup


async def _symbols(
    session: AsyncSession, raw: Iterable[str] | str, errors: FieldErrors
) -> list[str]:
    # commas (or new lines) separate symbols: a name may contain spaces ("SK hynix")
    items = re.split(r"[,;\n]+", raw) if isinstance(raw, str) else [str(x) for x in raw]
    codes: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            sym = await symbols.resolve(session, item, field="symbols")
        except ValidationFailed as exc:
            errors.update(exc.field_errors)
            return []
        if sym.code not in codes:
            codes.append(sym.code)
    if not codes:
        errors["symbols"] = ("backtest_symbols_required", {})
    elif len(codes) > MAX_SYMBOLS:
        errors["symbols"] = ("backtest_too_many_symbols", {"max": MAX_SYMBOLS})
    return codes


async def _bar_count(
    session: AsyncSession, symbol: str, tf: Timeframe, start: datetime, end: datetime
) -> int:
    t = StoredCandle.__table__
    stmt = (
        select(func.count())
        .select_from(t)
        .where(t.c.symbol == symbol, t.c.timeframe == tf.value)
        .where(t.c.start >= start, t.c.start < end)
    )
    return int((await session.exec(stmt)).one())


async def _check_history(
    session: AsyncSession,
    codes: Sequence[str],
    tf: Timeframe,
    start: datetime,
    end: datetime,
    need: int,
    errors: FieldErrors,
) -> None:
    for code in codes:
        have = await _bar_count(session, code, tf, start, end)
        if have < need:
            errors["symbols"] = (
                "backtest_not_enough_candles",
                {"symbol": code, "bars": have, "need": need},
            )
            return


async def _active_count(session: AsyncSession, user_id: int) -> int:
    stmt = (
        select(func.count())
        .select_from(BacktestRun)
        .where(BacktestRun.user_id == user_id, col(BacktestRun.status).in_(ACTIVE))
    )
    return int((await session.exec(stmt)).one())


async def _queue(
    session: AsyncSession,
    user_id: int,
    *,
    kind: str,
    config: Any,
    codes: list[str],
    start: date,
    end: date,
    request: dict[str, Any],
) -> int:
    if await _active_count(session, user_id) >= MAX_ACTIVE_PER_USER:
        raise ValidationFailed.single("form", "backtest_queue_full", max=MAX_ACTIVE_PER_USER)
    row = BacktestRun(
        user_id=user_id,
        config_id=config.id,
        strategy=config.strategy,
        params=json.dumps(dict(config.params)),
        timeframe=config.timeframe,
        symbols=list(codes),
        start_date=start,
        end_date=end,
        options=dict(request),
        kind=kind,
        status=QUEUED,
        progress=0.0,
        error="",
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    log.info("backtest run %s (%s) queued for user %s", row.id, kind, user_id)
    return row.id or 0


async def _validated(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    raw: Mapping[str, object],
    errors: FieldErrors,
    *,
    ip: str,
    extra_bars: int = 0,
) -> tuple[Any, list[str], date | None, date | None, Costs | None]:
    """The owned config (or NotFound, audited), then every field's problem at once."""
    config = await strategies_service.get_config(session, user_id, config_id, ip=ip)
    codes = await _symbols(session, raw.get("symbols") or "", errors)
    start = _day(raw.get("start"), "start", errors)
    end = _day(raw.get("end"), "end", errors)
    if start is not None and end is not None and start >= end:
        errors["end"] = ("backtest_dates_reversed", {})
    costs = _costs(raw, errors)
    if codes and start is not None and end is not None and not {"end", "symbols"} & set(errors):
        try:
            need = _warmup(config.strategy, config.params) + MIN_TRADING_BARS + extra_bars
        except Exception:
            log.exception("config %s: strategy %s could not be built", config.id, config.strategy)
            errors["form"] = ("backtest_strategy_unavailable", {"name": config.strategy})
        else:
            await _check_history(
                session,
                codes,
                Timeframe(config.timeframe),
                day_start(start),
                day_start(end + timedelta(days=1)),
                need,
                errors,
            )
    return config, codes, start, end, costs


async def _start(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    raw: Mapping[str, object],
    *,
    kind: str,
    ip: str,
    search: bool = False,
    extra_bars: int = 0,
    extra: Mapping[str, Any] | None = None,
    errors: FieldErrors | None = None,
) -> int:
    """Validate the backtest fields (plus the search fields if ``search``) and queue.

    The backtest, the optimisation and the walk-forward take the same form and differ
    only in what they add to the request, so they share one validate-then-queue path
    and refuse bad input identically. ``errors`` carries refusals found by the caller
    first, so the user sees every bad field at once.
    """
    errors = {} if errors is None else errors
    config, codes, start, end, costs = await _validated(
        session, user_id, config_id, raw, errors, ip=ip, extra_bars=extra_bars
    )
    found = _search(raw, errors) if search else {}
    if errors:
        raise ValidationFailed(errors)
    assert start is not None and end is not None and costs is not None
    return await _queue(
        session,
        user_id,
        kind=kind,
        config=config,
        codes=codes,
        start=start,
        end=end,
        request={**costs.request(), **found, **(extra or {})},
    )


async def start_backtest(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    raw: Mapping[str, object],
    *,
    ip: str = "",
) -> int:
    """Queue a backtest of the user's config. ``raw``: symbols, start, end, cash,
    commission_pct, tax_pct, slippage_ticks (strings from the form are fine)."""
    return await _start(session, user_id, config_id, raw, kind="backtest", ip=ip)


def _search(raw: Mapping[str, object], errors: FieldErrors) -> dict[str, Any]:
    method = _choice(raw.get("method", "grid"), "method", METHODS, errors)
    metric = _choice(raw.get("metric", "sharpe"), "metric", METRICS, errors)
    runs = _bounded(raw.get("max_runs"), "max_runs", errors, *MAX_RUNS_RANGE, integer=True)
    return {"method": method, "metric": metric, "max_runs": int(runs or 0)}


async def start_optimization(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    raw: Mapping[str, object],
    *,
    ip: str = "",
) -> int:
    """Queue a parameter search: the backtest fields plus method, metric and max_runs."""
    return await _start(session, user_id, config_id, raw, kind="optimize", ip=ip, search=True)


async def start_walk_forward(
    session: AsyncSession,
    user_id: int,
    config_id: int,
    raw: Mapping[str, object],
    *,
    ip: str = "",
) -> int:
    """Queue a walk-forward: the optimisation fields plus ``folds``. Each fold's test
    slice needs its own warm-up and trading bars, so the history needed grows with it."""
    errors: FieldErrors = {}
    folds = _bounded(raw.get("folds"), "folds", errors, *FOLDS_RANGE, integer=True)
    return await _start(
        session,
        user_id,
        config_id,
        raw,
        kind="walk_forward",
        ip=ip,
        search=True,
        extra_bars=(int(folds) - 1) * MIN_TRADING_BARS * 2 if folds else 0,
        extra={} if folds is None else {"folds": int(folds)},
        errors=errors,
    )


async def _owned_attachment(
    session: AsyncSession, user_id: int, attachment_id: int, ip: str
) -> tuple[Any, Any]:
    """(config, attachment) of one of the caller's attachments, or NotFound (audited)."""
    for config in await strategies_service.list_configs(session, user_id):
        for att in config.attachments:
            if att.id == attachment_id:
                return config, att
    await audit.denied(user_id, "strategy_attachment", attachment_id, ip)
    raise NotFound()


async def start_parity(
    session: AsyncSession,
    user_id: int,
    attachment_id: int,
    *,
    days: object,
    now: datetime,
    ip: str = "",
) -> int:
    """Queue the parity report of one attachment over its last ``days`` calendar days.

    The candles read start ``warm-up`` bars before the window, so the strategy is
    as warm at the window's first bar as the live desk was.
    """
    errors: FieldErrors = {}
    config, att = await _owned_attachment(session, user_id, attachment_id, ip)
    n = _bounded(days, "days", errors, *PARITY_DAYS_RANGE, integer=True)
    if errors:
        raise ValidationFailed(errors)
    assert n is not None
    end = now.astimezone(KST).date()
    start = end - timedelta(days=int(n))
    tf = Timeframe(config.timeframe)
    if (
        await _bar_count(session, att.symbol, tf, day_start(start), day_start(end + timedelta(1)))
        < 1
    ):
        raise ValidationFailed.single("days", "backtest_no_candles_in_window", symbol=att.symbol)
    costs = default_costs()
    request = {**costs.request(), "attachment_id": att.id, "mode": att.mode, "days": int(n)}
    return await _queue(
        session,
        user_id,
        kind="parity",
        config=config,
        codes=[att.symbol],
        start=start,
        end=end,
        request=request,
    )


# ---- reading and cancelling ------------------------------------------------------------


async def _owned_run(session: AsyncSession, user_id: int, run_id: int, ip: str) -> BacktestRun:
    row = await session.get(BacktestRun, run_id)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, TARGET_TYPE, run_id, ip)
        raise NotFound()
    return row


async def get_run(session: AsyncSession, user_id: int, run_id: int, *, ip: str = "") -> RunView:
    return _view(await _owned_run(session, user_id, run_id, ip))


async def list_runs(
    session: AsyncSession,
    user_id: int,
    *,
    config_id: int | None = None,
    kinds: Sequence[str] = KINDS,
    limit: int = 20,
) -> list[RunView]:
    """The caller's runs, newest first."""
    stmt = select(BacktestRun).where(
        BacktestRun.user_id == user_id, col(BacktestRun.kind).in_(list(kinds))
    )
    if config_id is not None:
        stmt = stmt.where(BacktestRun.config_id == config_id)
    stmt = stmt.order_by(col(BacktestRun.id).desc()).limit(limit)
    return [_view(r) for r in (await session.exec(stmt)).all()]


async def cancel_run(session: AsyncSession, user_id: int, run_id: int, *, ip: str = "") -> RunView:
    """Mark a queued or running run cancelled; the job runner notices and stops it.

    A finished run is left as it is (cancelling it again changes nothing).
    """
    row = await _owned_run(session, user_id, run_id, ip)
    await session.exec(
        update(BacktestRun)
        .where(col(BacktestRun.id) == run_id, col(BacktestRun.status).in_(ACTIVE))
        .values(status=CANCELLED, finished_at=utcnow())
    )
    await session.commit()
    await session.refresh(row)
    return _view(row)


# ---- the job side (called by app.runtime.backtest_jobs) ------------------------------


async def claim_next(session: AsyncSession) -> tuple[int, int] | None:
    """Mark the oldest queued run whose user has none running as ``running``.

    The conditional update makes the claim atomic: of two dispatchers racing
    for one row, one updates it and the other sees no row changed.
    """
    for _ in range(5):
        busy = select(BacktestRun.user_id).where(BacktestRun.status == RUNNING)
        stmt = (
            select(BacktestRun.id, BacktestRun.user_id)
            .where(BacktestRun.status == QUEUED)
            .where(col(BacktestRun.user_id).not_in(busy))
            .order_by(col(BacktestRun.id))
            .limit(1)
        )
        found = (await session.exec(stmt)).first()
        if found is None:
            return None
        run_id, user_id = found
        result = await session.exec(
            update(BacktestRun)
            .where(col(BacktestRun.id) == run_id, col(BacktestRun.status) == QUEUED)
            .values(status=RUNNING, progress=0.0, started_at=utcnow())
        )
        await session.commit()
        if result.rowcount == 1:
            return int(run_id), int(user_id)
    return None


async def _candles_for(
    session: AsyncSession, symbol: str, tf: Timeframe, start: datetime, end: datetime, warm: int
) -> list[Candle]:
    """The window's candles, led by ``warm`` stored bars before it."""
    window = await candle_store.between(session, symbol, tf, start, end)
    if warm <= 0:
        return window
    t = StoredCandle.__table__
    stmt = (
        select(t.c.start)
        .where(t.c.symbol == symbol, t.c.timeframe == tf.value, t.c.start < start)
        .order_by(t.c.start.desc())
        .limit(warm)
    )
    before = (await session.exec(stmt)).all()
    if not before:
        return window
    lead = await candle_store.between(session, symbol, tf, before[-1], start)
    return lead + window


async def job_spec(session: AsyncSession, run_id: int, *, plugins_dir: str = "") -> JobSpec:
    """What the worker runs for ``run_id``: the snapshot plus the candles, read now."""
    row = await session.get(BacktestRun, run_id)
    if row is None:
        raise JobInputError("backtest_run_gone")
    view = _view(row)
    req = view.request
    tf = Timeframe(req.get("timeframe", "1d"))
    assert view.start is not None and view.end is not None
    start, end = day_start(view.start), day_start(view.end + timedelta(days=1))
    warm = 0
    if view.kind == "parity":
        try:
            warm = _warmup(view.strategy, view.params)
        except Exception as exc:
            raise JobInputError("backtest_strategy_unavailable") from exc
    data: dict[str, list[Candle]] = {}
    for code in view.symbols:
        data[code] = await _candles_for(session, code, tf, start, end, warm)
        if not data[code]:
            raise JobInputError("backtest_no_candles")
    return JobSpec(
        run_id=run_id,
        kind=view.kind,
        strategy=view.strategy,
        params=view.params,
        data=data,
        cash=float(req.get("cash", 10_000_000)),
        costs=cost_model(req),
        method=str(req.get("method", "grid")),
        metric=str(req.get("metric", "sharpe")),
        max_runs=int(req.get("max_runs", 50) or 50),
        folds=int(req.get("folds", 4) or 4),
        seed=run_id,
        plugins_dir=plugins_dir,
    )


async def set_progress(session: AsyncSession, run_id: int, fraction: float) -> bool:
    """Raise the row's progress (never lower it); ``False`` if the run is no longer running."""
    result = await session.exec(
        update(BacktestRun)
        .where(col(BacktestRun.id) == run_id, col(BacktestRun.status) == RUNNING)
        .where(col(BacktestRun.progress) < fraction)
        .values(progress=fraction)
    )
    await session.commit()
    if result.rowcount == 1:
        return True
    return await is_running(session, run_id)


async def is_running(session: AsyncSession, run_id: int) -> bool:
    stmt = select(BacktestRun.status).where(BacktestRun.id == run_id)
    return (await session.exec(stmt)).first() == RUNNING


async def _store(session: AsyncSession, run_id: int, status: str, **values: Any) -> bool:
    """Finish a running row; a row cancelled meanwhile keeps its ``cancelled``."""
    result = await session.exec(
        update(BacktestRun)
        .where(col(BacktestRun.id) == run_id, col(BacktestRun.status) == RUNNING)
        .values(status=status, finished_at=utcnow(), **values)
    )
    await session.commit()
    return result.rowcount == 1


async def finish_run(session: AsyncSession, run_id: int, output: dict[str, Any]) -> None:
    row = await session.get(BacktestRun, run_id)
    if row is None:
        return
    view = _view(row)
    if view.kind == "parity":
        output = {**output, "parity": await _parity(session, view, output)}
    body = json.dumps(output, allow_nan=False)
    await _store(session, run_id, DONE, progress=1.0, result=body, error="")


async def fail_run(session: AsyncSession, run_id: int, code: str) -> None:
    await _store(session, run_id, FAILED, error=code)


async def mark_cancelled(session: AsyncSession, run_id: int) -> None:
    await _store(session, run_id, CANCELLED)


async def fail_orphans(session: AsyncSession) -> int:
    """Rows left ``running`` by a process that is gone: their jobs died with it."""
    result = await session.exec(
        update(BacktestRun)
        .where(col(BacktestRun.status) == RUNNING)
        .values(status=FAILED, error="backtest_interrupted", finished_at=utcnow())
    )
    await session.commit()
    return max(result.rowcount or 0, 0)


# ---- parity (the comparison itself: app.services.backtest_parity) ---------------------


async def _parity(
    session: AsyncSession, view: RunView, output: Mapping[str, Any]
) -> dict[str, Any]:
    row = await session.get(BacktestRun, view.id)
    assert row is not None and view.start is not None and view.end is not None
    attachment_id = int(view.request.get("attachment_id", 0))
    actual = await _actual_orders(session, row.user_id, attachment_id)
    tf = Timeframe(view.request.get("timeframe", "1d"))
    window_start = day_start(view.start)
    candles = await candle_store.between(
        session, view.symbols[0], tf, window_start, day_start(view.end + timedelta(days=1))
    )
    return parity_compare(output, candles, actual, window_start)
