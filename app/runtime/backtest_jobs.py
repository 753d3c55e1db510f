"""Backtest, optimisation, walk-forward and parity jobs, run off the event loop.

A backtest over years of bars is seconds of pure CPU, an optimisation minutes: run
on the event loop it would freeze every open page. So the pages only queue a row
in ``backtest_runs`` (:mod:`app.services.backtests`), and :class:`BacktestJobs`
runs the rows in a two-process pool (``spawn``, so a worker never inherits the
app's threads, sockets or locks from a fork):

* a backtest (and the backtest half of a parity report) runs whole in one worker;
* an optimisation or a walk-forward is *dispatched* from a thread of this
  process, which hands the single runs to the same pool, so both cores work
  on it while the event loop stays free.

Progress crosses the process boundary through a small shared-memory board, one
slot per running job: the worker writes ``done / total`` into its slot (a plain
store, cheap enough to do on every bar) and reads its stop flag. The event loop
polls the board a few times a second and writes the row only when the figure
moved by :data:`PROGRESS_STEP`, so the page's progress bar moves without the
database taking a write per bar.

At most :data:`MAX_WORKERS` jobs run at once and at most one per user; the rest
wait as ``queued``. Jobs do not survive a restart: on start every row still
``running`` is marked ``failed`` with the code ``interrupted``, which the page
explains (run it again). Queued rows are kept and run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engines.costs import CostModel
from engines.market import Candle

log = logging.getLogger(__name__)

MAX_WORKERS = 2
PROGRESS_STEP = 0.02
"""The row's progress is rewritten when the job moved by 2% (and at the end)."""
BOARD_POLL_SECONDS = 0.2
CANCEL_CHECK_SECONDS = 1.0
DISPATCH_POLL_SECONDS = 1.0
"""Rows queued by another process are noticed within this; this process wakes at once."""
MAX_CURVE_POINTS = 800
MAX_TRADES = 1_000
MAX_OPT_ROWS = 100

__all__ = [
    "MAX_WORKERS",
    "BacktestJobs",
    "JobCancelled",
    "JobSpec",
    "compact_result",
    "current_jobs",
    "set_current_jobs",
]


class JobCancelled(Exception):
    """Raised inside a job (from its progress callback) when its row was cancelled."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a worker needs, picklable: no session, no connection, no callback.

    ``strategy`` is a registry name, never a class, so the worker builds the
    strategy from the registry exactly as the live desk does.
    """

    run_id: int
    kind: str  # backtest | optimize | walk_forward | parity
    strategy: str
    params: dict[str, Any]
    data: dict[str, list[Candle]]
    cash: float
    costs: CostModel
    method: str = "grid"
    metric: str = "sharpe"
    max_runs: int = 50
    folds: int = 4
    seed: int = 0
    plugins_dir: str = ""


# ---- results as JSON -------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON; the page shows ``-`` for ``None``."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _thin(points: list[tuple[Any, float | None]], limit: int = MAX_CURVE_POINTS) -> list[list[Any]]:
    """Every n-th point (always the last): a curve on a phone needs hundreds, not thousands."""
    if len(points) <= limit:
        picked = points
    else:
        step = len(points) / limit
        picked = [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]
    return [[_iso(t), None if v is None else _finite(float(v))] for t, v in picked]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and type(value).__module__.startswith("enum"):
        return value.value
    return _finite(_iso(value))


def _trade_dict(trade: Any) -> dict[str, Any]:
    to_dict = getattr(trade, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    keys = (
        "symbol",
        "entry_bar",
        "exit_bar",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "qty",
        "pnl",
        "return_pct",
        "fees",
        "bars_held",
    )
    return {k: _jsonable(getattr(trade, k, None)) for k in keys}


def compact_result(result: Any) -> dict[str, Any]:
    """A :class:`engines.backtest.BacktestResult` as the JSON stored on the row.

    Curves are thinned to :data:`MAX_CURVE_POINTS`, trades capped at
    :data:`MAX_TRADES` (the count stays in the metrics); signals keep only what
    the parity report matches on (the key names symbol, bar and action).
    """
    trades = list(result.trades)
    return {
        "metrics": _jsonable(result.metrics.to_dict()),
        "trades": [_trade_dict(t) for t in trades[:MAX_TRADES]],
        "trades_total": len(trades),
        "equity": _thin(list(result.equity_curve)),
        "drawdown": _thin(list(result.drawdown_curve)),
        "signals": [
            {"key": s.key, "symbol": s.symbol, "action": str(s.action.value)}
            for s in result.signals
        ],
        "warmup_bars": int(result.warmup_bars),
        "final_equity": _finite(float(result.final_equity)),
    }


def _opt_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "params": _jsonable(dict(r.params)),
            "metrics": _jsonable(dict(r.metrics)),
            "score": _finite(r.score),
        }
        for r in rows[:MAX_OPT_ROWS]
    ]


def _walk_forward_dict(wf: Any) -> dict[str, Any]:
    """The walk-forward result, whatever its exact shape: dataclasses become dicts."""
    to_dict = getattr(wf, "to_dict", None)
    if not callable(to_dict):
        raise TypeError(f"cannot store a walk-forward result of type {type(wf).__name__}")
    out = _jsonable(to_dict())
    if isinstance(out.get("equity_curve"), list):
        out["equity_curve"] = _thin([tuple(p) for p in out["equity_curve"]])
    if isinstance(out.get("trades"), list):
        out["trades_total"] = len(out["trades"])
        out["trades"] = out["trades"][:MAX_TRADES]
    return out


# ---- the worker side (runs in the pool's processes) ----------------------------------

_BOARD: tuple[Any, Any] | None = None
"""(progress doubles, stop flags) shared with the parent; set by :func:`_init_worker`."""


def _init_worker(progress: Any, stop: Any, plugins_dir: str) -> None:
    global _BOARD
    _BOARD = (progress, stop)
    if plugins_dir:
        from pathlib import Path

        from engines.strategies import registry

        registry.load_plugins(Path(plugins_dir))


def _config(spec: JobSpec) -> Any:
    from engines.backtest import BacktestConfig

    return BacktestConfig(cash=spec.cash, costs=spec.costs)


def run_backtest_job(spec: JobSpec, slot: int) -> dict[str, Any]:
    """One backtest in a worker; progress and the stop flag go through board slot ``slot``."""
    from engines.backtest import run_backtest
    from engines.strategies.registry import create

    assert _BOARD is not None, "the pool initializer did not run"
    progress_board, stop_board = _BOARD

    def progress(done: int, total: int) -> None:
        progress_board[slot] = done / total if total else 1.0

    def should_stop() -> bool:
        return bool(stop_board[slot])

    result = run_backtest(
        lambda: create(spec.strategy, spec.params),
        spec.data,
        _config(spec),
        progress=progress,
        should_stop=should_stop,
    )
    return compact_result(result)


# ---- the parent side -------------------------------------------------------------------


@dataclass
class _Running:
    run_id: int
    user_id: int
    slot: int
    task: asyncio.Task[None] | None = None
    local_progress: float = 0.0  # thread-dispatched jobs report here, not on the board
    stop: bool = False
    started: float = field(default_factory=time.monotonic)


class BacktestJobs:
    """Claims queued rows and runs them in a process pool; see the module docstring.

    ``run()`` is the lifespan loop. Tests drive it the same way, or call
    :meth:`dispatch_once` and :meth:`wait_idle` to run what is queued.
    """

    def __init__(
        self,
        *,
        max_workers: int = MAX_WORKERS,
        plugins_dir: str = "",
        dispatch_poll: float = DISPATCH_POLL_SECONDS,
    ) -> None:
        self.max_workers = max_workers
        self._mp = multiprocessing.get_context("spawn")
        self._progress = self._mp.Array("d", max_workers, lock=False)
        self._stop = self._mp.Array("b", max_workers, lock=False)
        self._plugins_dir = plugins_dir
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[int, _Running] = {}
        self._wake = asyncio.Event()
        self._dispatch_poll = dispatch_poll
        self._closed = False

    # ---- pool ----

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=self._mp,
                initializer=_init_worker,
                initargs=(self._progress, self._stop, self._plugins_dir),
            )
        return self._pool

    def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Stop every running job (their rows are left for the next start to sweep)."""
        self._closed = True
        for job in list(self._running.values()):
            self._request_stop(job)
        tasks = [j.task for j in self._running.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    # ---- the loop ----

    def notify(self) -> None:
        """A row was queued in this process: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Sweep orphans, then dispatch queued rows until cancelled."""
        from app import db
        from app.services import backtests

        async with db.session() as s:
            swept = await backtests.fail_orphans(s)
        if swept:
            log.warning("%d backtest job(s) interrupted by a restart were marked failed", swept)
        while not self._closed:
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("backtest dispatch failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._dispatch_poll)
            self._wake.clear()

    def _free_slot(self) -> int | None:
        used = {j.slot for j in self._running.values()}
        return next((i for i in range(self.max_workers) if i not in used), None)

    async def dispatch_once(self) -> list[int]:
        """Start every queued run that may start now; return their ids."""
        from app import db
        from app.services import backtests

        started: list[int] = []
        while not self._closed:
            slot = self._free_slot()
            if slot is None:
                break
            async with db.session() as s:
                claimed = await backtests.claim_next(s)
            if claimed is None:
                break
            run_id, user_id = claimed
            job = _Running(run_id, user_id, slot)
            self._progress[slot] = 0.0
            self._stop[slot] = 0
            self._running[run_id] = job
            job.task = asyncio.create_task(self._execute(job), name=f"backtest-{run_id}")
            started.append(run_id)
        return started

    async def wait_idle(self, timeout: float = 120.0) -> None:
        """Until nothing is running or queued (tests)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.dispatch_once()
            tasks = [j.task for j in self._running.values() if j.task is not None]
            if not tasks:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("backtest jobs still running")
            await asyncio.wait(tasks, timeout=remaining)

    def running_ids(self) -> list[int]:
        return sorted(self._running)

    def cancel(self, run_id: int) -> bool:
        """Ask a job running in this process to stop; ``False`` if it does not run here."""
        job = self._running.get(run_id)
        if job is None:
            return False
        self._request_stop(job)
        return True

    def _request_stop(self, job: _Running) -> None:
        job.stop = True
        self._stop[job.slot] = 1

    # ---- one job ----

    def _fraction(self, job: _Running, thread_side: bool) -> float:
        value = job.local_progress if thread_side else self._progress[job.slot]
        return min(max(float(value), 0.0), 1.0)

    async def _execute(self, job: _Running) -> None:
        from app import db
        from app.services import backtests

        try:
            async with db.session() as s:
                spec = await backtests.job_spec(s, job.run_id, plugins_dir=self._plugins_dir)
            thread_side = spec.kind in ("optimize", "walk_forward")
            if thread_side:
                work: asyncio.Future[Any] = asyncio.ensure_future(
                    asyncio.to_thread(self._dispatch_in_thread, spec, job)
                )
            else:
                loop = asyncio.get_running_loop()
                work = loop.run_in_executor(self._executor(), run_backtest_job, spec, job.slot)
            output = await self._watch(job, work, thread_side)
            if job.stop:
                async with db.session() as s:
                    await backtests.mark_cancelled(s, job.run_id)
                return
            async with db.session() as s:
                await backtests.finish_run(s, job.run_id, output)
            log.info(
                "backtest run %s (%s) done in %.1f s",
                job.run_id,
                spec.kind,
                time.monotonic() - job.started,
            )
        except asyncio.CancelledError:
            raise
        except backtests.JobInputError as exc:
            await self._fail(job, exc.code)
        except JobCancelled:
            async with db.session() as s:
                await backtests.mark_cancelled(s, job.run_id)
        except BrokenProcessPool:
            log.exception("backtest worker died during run %s", job.run_id)
            self._reset_pool()
            await self._fail(job, "backtest_worker_crashed")
        except Exception:
            if job.stop:
                async with db.session() as s:
                    await backtests.mark_cancelled(s, job.run_id)
            else:
                log.exception("backtest run %s failed", job.run_id)
                await self._fail(job, "backtest_failed")
        finally:
            self._running.pop(job.run_id, None)
            self._progress[job.slot] = 0.0
            self._stop[job.slot] = 0
            self._wake.set()

    async def _fail(self, job: _Running, code: str) -> None:
        from app import db
        from app.services import backtests

        async with db.session() as s:
            await backtests.fail_run(s, job.run_id, code)

    async def _watch(self, job: _Running, work: asyncio.Future[Any], thread_side: bool) -> Any:
        """Write progress as it moves and notice a cancel made by the page, until done."""
        from app import db
        from app.services import backtests

        written = 0.0
        checked = time.monotonic()
        while True:
            done, _ = await asyncio.wait({work}, timeout=BOARD_POLL_SECONDS)
            if done:
                return work.result()
            fraction = self._fraction(job, thread_side)
            now = time.monotonic()
            if fraction >= written + PROGRESS_STEP and fraction < 1.0:
                async with db.session() as s:
                    still = await backtests.set_progress(s, job.run_id, fraction)
                written = fraction
                checked = now
                if not still:
                    self._request_stop(job)
            elif now - checked >= CANCEL_CHECK_SECONDS:
                async with db.session() as s:
                    if not await backtests.is_running(s, job.run_id):
                        self._request_stop(job)
                checked = now

    # ---- jobs dispatched from a thread: the single runs go to the pool ----

    def _thread_progress(self, job: _Running) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            if job.stop:
                raise JobCancelled
            job.local_progress = done / total if total else 1.0

        return progress

    def _dispatch_in_thread(self, spec: JobSpec, job: _Running) -> dict[str, Any]:
        from engines.backtest import optimize, walk_forward

        executor: Executor = self._executor()
        common: dict[str, Any] = {
            "metric": spec.metric,
            "method": spec.method,
            "max_runs": spec.max_runs,
            "seed": spec.seed,
            "executor": executor,
            "fixed": _fixed(spec),
            "progress": self._thread_progress(job),
        }
        if spec.kind == "optimize":
            rows = optimize(spec.strategy, spec.data, _config(spec), **common)
            return {
                "rows": _opt_rows(list(rows)),
                "metric": spec.metric,
                "method": spec.method,
                "skipped": int(getattr(rows, "skipped", 0) or 0),
                "space_size": _finite(getattr(rows, "space_size", None)),
            }
        wf = walk_forward(spec.strategy, spec.data, _config(spec), folds=spec.folds, **common)
        if job.stop:
            raise JobCancelled
        return {"walk_forward": _walk_forward_dict(wf), "metric": spec.metric}


def _fixed(spec: JobSpec) -> dict[str, Any]:
    """The config's params the search does not vary (choices, flags, unbounded numbers):
    an optimisation of an EMA cross must stay an EMA cross."""
    from engines.strategies.registry import get_strategy

    searched = {r.name for r in get_strategy(spec.strategy).Params.space()}
    return {k: v for k, v in spec.params.items() if k not in searched}


_current: BacktestJobs | None = None


def current_jobs() -> BacktestJobs | None:
    """The process's job runner, if the app started one (not in most tests)."""
    return _current


def set_current_jobs(jobs: BacktestJobs | None) -> None:
    global _current
    _current = jobs
