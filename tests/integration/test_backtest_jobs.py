"""The backtest job service and its process pool, on SQLite and PostgreSQL.

Jobs run for real: rows queued through ``services.backtests``, claimed by
``BacktestJobs``, computed in its spawned worker processes, written back. A test
plugin strategy (written to a temporary plugins folder, which the workers load
like an operator's) sleeps now and then, so a run lasts long enough to watch its
progress, cancel it, or "crash" the process under it.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import func, select

from app import db
from app.i18n import translate
from app.models.paper import PaperFillRow, PaperOrderRow
from app.models.strategies import BacktestRun, StrategyOrder
from app.runtime.backtest_jobs import BacktestJobs
from app.services import audit, backtests, candles, paper_accounts
from app.services import strategies as strategies_service
from app.services.errors import NotFound, ValidationFailed
from engines.market import KST, Candle, Timeframe
from engines.strategies import registry
from engines.strategies.base import StrategyHost
from tests.integration.helpers import make_user, seed_symbols

pytestmark = [pytest.mark.usefixtures("database"), pytest.mark.timeout(240)]

SYMBOLS = ("005930", "000660", "373220", "207940", "005380")
FIRST_DAY = date(2008, 1, 2)

SLOW_PLUGIN = '''
"""A test plugin: the MA cross, slowed down every 100th bar (and loudly if asked)."""
import time

from engines.strategies.ma_cross import MACross


class SlowCross(MACross):
    name = "slow_cross_test"
    pause = {pause}

    def on_candle(self, ctx, candle):
        if ctx.bar_index % 100 == 0:
            time.sleep(self.pause)
        return super().on_candle(ctx, candle)


STRATEGIES = [SlowCross]
'''


def daily(
    symbol: str, n: int, first: date = FIRST_DAY, phase: float = 0.0, period: float = 9.0
) -> list[Candle]:
    """``n`` weekday bars of a wave, so moving averages cross every few weeks."""
    out: list[Candle] = []
    day = first
    i = 0
    while len(out) < n:
        if day.weekday() < 5:
            start = datetime(day.year, day.month, day.day, 9, tzinfo=KST).astimezone(UTC)
            base = 50_000 + 8_000 * math.sin(i / period + phase) + 1_500 * math.sin(i / 2.3)
            p = int(base) // 100 * 100
            out.append(Candle(symbol, Timeframe.D1, start, p, p + 300, p - 300, p + 100, 1_000))
            i += 1
        day += timedelta(days=1)
    return out


async def _store(bars: list[Candle]) -> None:
    async with db.session() as s:
        await candles.store(s, bars)


def _form(symbols: str = "005930", **overrides: str) -> dict[str, str]:
    form = {
        "symbols": symbols,
        "start": "2008-01-01",
        "end": "2030-01-01",
        "cash": "10,000,000",
        "commission_pct": "0.015",
        "tax_pct": "0.2",
        "slippage_ticks": "1",
        "method": "grid",
        "metric": "sharpe",
        "max_runs": "6",
        "folds": "2",
    }
    form.update(overrides)
    return form


async def _config(user_id: int, strategy: str = "ma_cross", label: str = "cross") -> int:
    async with db.session() as s:
        cfg = await strategies_service.create_config(
            s,
            user_id,
            label=label,
            strategy=strategy,
            params={"fast": "5", "slow": "20"},
            timeframe="1d",
        )
    return cfg.id


async def _row(run_id: int) -> BacktestRun:
    async with db.session() as s:
        row = await s.get(BacktestRun, run_id)
        assert row is not None
        return row


async def _run_count() -> int:
    async with db.session() as s:
        return (await s.exec(select(func.count()).select_from(BacktestRun))).one()


@pytest.fixture
def slow_plugin(tmp_path: Path):
    """Writes the slow strategy into a plugins folder; returns a factory of that folder
    for a given pause (seconds per 100 bars), loaded here and in the workers."""
    made: list[str] = []

    def make(pause: float) -> str:
        folder = tmp_path / f"plugins_{len(made)}"
        folder.mkdir()
        (folder / "slow_cross.py").write_text(SLOW_PLUGIN.format(pause=pause))
        registry.clear_plugins()
        assert registry.load_plugins(folder, entry_points=False) == ["slow_cross_test"]
        made.append(str(folder))
        return str(folder)

    yield make
    registry.clear_plugins()


async def _wait_for(predicate, timeout: float = 60.0, every: float = 0.05):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError("condition not reached in time")


# ---- progress, results, one run per user ---------------------------------------------


async def test_progress_rises_monotonically_to_one_and_the_result_is_stored(
    slow_plugin, report_figures
):
    folder = slow_plugin(0.01)
    await seed_symbols()
    user = await make_user()
    for k, code in enumerate(SYMBOLS):
        await _store(daily(code, 4_500, phase=k))
    config_id = await _config(user.id, "slow_cross_test")
    async with db.session() as s:
        run_id = await backtests.start_backtest(s, user.id, config_id, _form(",".join(SYMBOLS)))
    assert (await _row(run_id)).status == "queued"

    jobs = BacktestJobs(plugins_dir=folder)
    seen: list[tuple[str, float]] = []

    async def sample() -> None:
        while True:
            row = await _row(run_id)
            seen.append((row.status, row.progress))
            if row.status not in ("queued", "running"):
                return
            await asyncio.sleep(0.03)

    started = time.monotonic()
    sampler = asyncio.create_task(sample())
    await jobs.wait_idle()
    await sampler
    await jobs.close()
    elapsed = time.monotonic() - started

    values = [p for _, p in seen]
    assert values == sorted(values), values  # never goes back
    assert seen[-1] == ("done", 1.0)
    between = sorted({p for st, p in seen if st == "running" and 0 < p < 1})
    # 22,500 bars reported every 4,096 by the engine: several steps are visible
    assert len(between) >= 3, seen
    report_figures(bars=22_500, seconds=round(elapsed, 2), progress_steps=between)

    async with db.session() as s:
        view = await backtests.get_run(s, user.id, run_id)
    out = view.output
    assert view.status == "done" and view.error == "" and view.finished_at is not None
    assert set(out["metrics"]) >= {"total_return", "sharpe", "max_drawdown", "trades"}
    # closed trades count in the metrics; a position still open at the end is listed too
    metrics = out["metrics"]
    assert metrics["trades"] + metrics["open_trades"] == out["trades_total"] > 0
    assert {t["symbol"] for t in out["trades"]} == set(SYMBOLS)
    assert len(out["equity"]) <= 800 and out["equity"][-1][1] == pytest.approx(out["final_equity"])
    # the stored trades are what the engine computes from the same stored candles
    from engines.backtest import BacktestConfig, run_backtest
    from engines.costs import CostModel

    async with db.session() as s:
        data = {
            c: await candles.between(
                s,
                c,
                Timeframe.D1,
                datetime(2007, 1, 1, tzinfo=UTC),
                datetime(2031, 1, 1, tzinfo=UTC),
            )
            for c in SYMBOLS
        }
    costs = CostModel(commission_rate=0.00015, sell_tax_rate=0.002, slippage_ticks=1)
    direct = run_backtest(
        lambda: registry.create("ma_cross", {"fast": 5, "slow": 20}),
        data,
        BacktestConfig(cash=10_000_000, costs=costs),
    )
    assert out["final_equity"] == pytest.approx(direct.final_equity)
    assert [(t["symbol"], t["entry_price"], t["qty"]) for t in out["trades"]] == [
        (t.symbol, t.entry_price, t.qty) for t in direct.trades
    ]


async def test_one_running_job_per_user_the_rest_wait(slow_plugin):
    folder = slow_plugin(0.02)
    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    await _store(daily("005930", 2_000))
    a_cfg = await _config(alice.id, "slow_cross_test")
    b_cfg = await _config(bob.id)
    async with db.session() as s:
        a1 = await backtests.start_backtest(s, alice.id, a_cfg, _form())
        a2 = await backtests.start_backtest(s, alice.id, a_cfg, _form())
        b1 = await backtests.start_backtest(s, bob.id, b_cfg, _form())

    jobs = BacktestJobs(plugins_dir=folder)
    try:
        started = await jobs.dispatch_once()
        # two free workers, but Alice's second run waits for her first
        assert sorted(started) == sorted([a1, b1])
        assert (await _row(a2)).status == "queued"
        assert (await _row(a1)).status == "running"
        await jobs.wait_idle()
    finally:
        await jobs.close()
    first, second = await _row(a1), await _row(a2)
    assert {first.status, second.status, (await _row(b1)).status} == {"done"}
    assert second.started_at is not None and first.finished_at is not None
    assert second.started_at >= first.finished_at


async def test_cancel_stops_a_running_job_and_a_queued_one(slow_plugin, report_figures):
    folder = slow_plugin(0.08)  # 12,500 bars: about 10 s if left alone
    await seed_symbols()
    user = await make_user()
    await _store(daily("005930", 12_500, first=date(1989, 1, 2)))  # to 2036
    config_id = await _config(user.id, "slow_cross_test")
    form = _form(start="1989-01-01", end="2040-01-01")
    async with db.session() as s:
        running = await backtests.start_backtest(s, user.id, config_id, form)
        queued = await backtests.start_backtest(s, user.id, config_id, form)
    jobs = BacktestJobs(plugins_dir=folder)
    try:
        await jobs.dispatch_once()

        async def moved() -> bool:
            return (await _row(running)).progress > 0

        await _wait_for(moved)
        async with db.session() as s:
            q = await backtests.cancel_run(s, user.id, queued)
            assert q.status == "cancelled"
            asked = time.monotonic()
            view = await backtests.cancel_run(s, user.id, running)
        assert view.status == "cancelled"
        await jobs.wait_idle()
        stopped_after = time.monotonic() - asked
    finally:
        await jobs.close()
    row = await _row(running)
    assert row.status == "cancelled" and row.result is None and row.progress < 1
    assert (await _row(queued)).started_at is None  # never ran
    # stopped at the engine's next check (every 4,096 bars, ~3.3 s here), not after the
    # ~7 s the remaining 8,400 bars would take
    assert stopped_after < 5.5, stopped_after
    report_figures(seconds_to_stop=round(stopped_after, 2))
    # cancelling a finished run changes nothing
    async with db.session() as s:
        again = await backtests.cancel_run(s, user.id, running)
    assert again.status == "cancelled"


async def test_a_restart_marks_the_orphaned_run_failed_and_runs_the_queued_one(slow_plugin):
    folder = slow_plugin(0.08)
    await seed_symbols()
    user = await make_user()
    other = await make_user("other@example.com")
    await _store(daily("005930", 9_000, first=date(1990, 1, 1)))  # after KST's 1988 DST
    config_id = await _config(user.id, "slow_cross_test")
    other_cfg = await _config(other.id)
    async with db.session() as s:
        orphan = await backtests.start_backtest(s, user.id, config_id, _form(start="1990-01-01"))
    first = BacktestJobs(plugins_dir=folder)
    await first.dispatch_once()

    async def running() -> bool:
        return (await _row(orphan)).progress > 0

    await _wait_for(running)
    # The process dies: its workers are killed and its tasks vanish without a word.
    pool = first._pool
    assert pool is not None
    for proc in list(pool._processes.values()):
        os.kill(proc.pid, signal.SIGKILL)
    for job in list(first._running.values()):
        assert job.task is not None
        job.task.cancel()
    await asyncio.sleep(0.2)
    first._running.clear()
    pool.shutdown(wait=False, cancel_futures=True)
    assert (await _row(orphan)).status == "running"  # what a crash leaves behind

    async with db.session() as s:
        waiting = await backtests.start_backtest(s, other.id, other_cfg, _form("005930"))
    second = BacktestJobs(plugins_dir=folder, dispatch_poll=0.05)
    loop = asyncio.create_task(second.run())
    try:

        async def finished() -> bool:
            return (await _row(waiting)).status == "done"

        await _wait_for(finished)
    finally:
        loop.cancel()
        await second.close()
    row = await _row(orphan)
    assert (row.status, row.error) == ("failed", "backtest_interrupted")
    # the page explains the code in both languages
    assert "restart" in translate(f"error.{row.error}", "en")
    assert translate(f"error.{row.error}", "ko")


# ---- optimisation and walk-forward -------------------------------------------------------


async def test_optimization_and_walk_forward_store_their_tables():
    await seed_symbols()
    user = await make_user()
    await _store(daily("005930", 1_200))
    config_id = await _config(user.id)
    async with db.session() as s:
        opt = await backtests.start_optimization(s, user.id, config_id, _form(max_runs="6"))
        wf = await backtests.start_walk_forward(s, user.id, config_id, _form(max_runs="4"))
    jobs = BacktestJobs()
    try:
        await jobs.wait_idle()
    finally:
        await jobs.close()
    async with db.session() as s:
        o = await backtests.get_run(s, user.id, opt)
        w = await backtests.get_run(s, user.id, wf)
    assert (o.status, o.progress, w.status, w.progress) == ("done", 1.0, "done", 1.0)
    rows = o.output["rows"]
    assert 1 <= len(rows) <= 6
    scores = [r["score"] for r in rows if r["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        assert r["params"]["fast"] < r["params"]["slow"]  # invalid combinations skipped
        assert r["params"]["kind"] == "sma"  # the config's choice is kept fixed
        assert r["score"] == r["metrics"]["sharpe"]
    folds = w.output["walk_forward"]["folds"]
    assert len(folds) == 2
    for f in folds:
        assert f["test_start"] >= f["train_end"]
        assert f["params"] is None or f["params"]["fast"] < f["params"]["slow"]
    assert "total_return" in w.output["walk_forward"]["metrics"]


# ---- bad requests ------------------------------------------------------------------------


async def test_bad_requests_name_the_field_and_queue_nothing():
    await seed_symbols()
    user = await make_user()
    mallory = await make_user("mallory@example.com")
    await _store(daily("005930", 300))
    config_id = await _config(user.id)

    async def refused(form: dict[str, str]) -> dict[str, tuple[str, dict]]:
        async with db.session() as s:
            with pytest.raises(ValidationFailed) as info:
                await backtests.start_backtest(s, user.id, config_id, form)
        return info.value.field_errors

    errors = await refused(_form(start="2024-05-01", end="2024-01-01"))
    assert errors["end"][0] == "backtest_dates_reversed"
    errors = await refused(_form("NOPE99"))
    assert errors["symbols"] == ("unknown_symbol", {"query": "NOPE99"})
    many = ",".join(
        ["005930", "000660", "373220", "207940", "005380", "000270", "068270", "035420"]
        + ["035720", "051910", "006400"]
    )
    assert (await refused(_form(many)))["symbols"][0] == "backtest_too_many_symbols"
    errors = await refused(_form(start="2008-01-01", end="2008-01-20"))
    code, params = errors["symbols"]
    assert code == "backtest_not_enough_candles" and params["symbol"] == "005930"
    assert params["bars"] < params["need"]
    assert (await refused(_form("000660")))["symbols"][0] == "backtest_not_enough_candles"
    errors = await refused(_form(cash="12", commission_pct="abc", slippage_ticks="1.5"))
    assert errors["cash"][0] == "backtest_out_of_range"
    assert errors["commission_pct"][0] == "backtest_not_number"
    assert errors["slippage_ticks"][0] == "backtest_not_number"
    errors = await refused(_form(start="", end="yesterday"))
    assert errors["start"][0] == "backtest_required"
    assert errors["end"][0] == "backtest_date_invalid"
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as info:
            await backtests.start_optimization(
                s, user.id, config_id, _form(method="magic", max_runs="100000")
            )
    assert set(info.value.field_errors) == {"method", "max_runs"}
    # every message exists in both languages with its parameters filled
    for lang in ("ko", "en"):
        text = translate("error.backtest_not_enough_candles", lang, **params)
        assert "005930" in text and str(params["need"]) in text

    # someone else's config: not found, audited, nothing queued
    before = len(await audit.search(audit.AuditFilter(outcome="denied", actor_id=mallory.id)))
    async with db.session() as s:
        with pytest.raises(NotFound):
            await backtests.start_backtest(s, mallory.id, config_id, _form())
    after = len(await audit.search(audit.AuditFilter(outcome="denied", actor_id=mallory.id)))
    assert after == before + 1
    assert await _run_count() == 0

    # a valid request queues exactly one row; another user cannot read or cancel it
    async with db.session() as s:
        run_id = await backtests.start_backtest(s, user.id, config_id, _form())
        for call in (backtests.get_run, backtests.cancel_run):
            with pytest.raises(NotFound):
                await call(s, mallory.id, run_id)
    assert await _run_count() == 1
    assert (await _row(run_id)).status == "queued"


async def test_a_user_cannot_flood_the_queue():
    await seed_symbols()
    user = await make_user()
    await _store(daily("005930", 300))
    config_id = await _config(user.id)
    async with db.session() as s:
        for _ in range(backtests.MAX_ACTIVE_PER_USER):
            await backtests.start_backtest(s, user.id, config_id, _form())
        with pytest.raises(ValidationFailed) as info:
            await backtests.start_backtest(s, user.id, config_id, _form())
    assert info.value.field_errors["form"][0] == "backtest_queue_full"
    assert await _run_count() == backtests.MAX_ACTIVE_PER_USER


# ---- parity ------------------------------------------------------------------------------


def _signals(bars: list[Candle]) -> list:
    """What the live desk's host emits on these bars: the same keys the backtest makes."""
    host = StrategyHost(registry.create("ma_cross", {"fast": 5, "slow": 20}), bars[0].symbol)
    out = []
    for c in bars:
        out.extend(s for s in host.on_candle(c) if s.action.value in ("buy", "sell"))
    return out


async def test_parity_report_sets_the_backtest_beside_the_paper_orders():
    await seed_symbols()
    user = await make_user()
    now = datetime.now(UTC)
    first = (now - timedelta(days=400)).astimezone(KST).date()
    bars = daily("005930", 400, first=first, period=4.0)
    bars = [b for b in bars if b.start < now - timedelta(days=1)]
    await _store(bars)
    config_id = await _config(user.id)
    async with db.session() as s:
        att = await strategies_service.attach(s, user.id, config_id, symbol="005930", mode="paper")
        account = await paper_accounts.get_account(s, user.id)

    window_start = backtests.day_start((now.astimezone(KST) - timedelta(days=120)).date())
    in_window = [sig for sig in _signals(bars) if sig.key.split("|")[2] >= window_start.isoformat()]
    assert len(in_window) >= 4, len(in_window)
    by_start = {b.start.isoformat(): i for i, b in enumerate(bars)}
    matched, rejected, missed = in_window[0], in_window[1], in_window[2]
    signal_bars = {sig.key.split("|")[2] for sig in in_window}
    quiet = next(b for b in reversed(bars[:-2]) if b.start.isoformat() not in signal_bars)
    extra_key = f"005930|1d|{quiet.start.isoformat()}|0|buy"

    async with db.session() as s:
        for n, (sig, state, fill_at) in enumerate(
            [(matched, "acked", 100), (rejected, "rejected", None)]
        ):
            bar = bars[by_start[sig.key.split("|")[2]] + 1]
            order = PaperOrderRow(
                account_id=account.id,
                client_order_id=f"c{n}",
                symbol="005930",
                side=sig.action.value,
                order_type="market",
                qty=3,
                price=0,
                reserved_cash=0,
                state="filled" if fill_at else "rejected",
                filled_qty=3 if fill_at else 0,
            )
            s.add(order)
            await s.flush()
            if fill_at:
                s.add(
                    PaperFillRow(
                        account_id=account.id,
                        order_id=order.id,
                        symbol="005930",
                        side=sig.action.value,
                        qty=3,
                        price=bar.open + fill_at,
                        commission=0,
                        tax=0,
                        ts=bar.start,
                    )
                )
            s.add(
                StrategyOrder(
                    user_id=user.id,
                    attachment_id=att.id,
                    client_order_id=f"cid{n}",
                    signal_key=sig.key,
                    symbol="005930",
                    side=sig.action.value,
                    qty=3,
                    order_type="market",
                    mode="paper",
                    state=state,
                    broker_order_id=str(order.id) if fill_at else None,
                    reason="" if fill_at else "max_order_value",
                )
            )
        s.add(
            StrategyOrder(
                user_id=user.id,
                attachment_id=att.id,
                client_order_id="cid-extra",
                signal_key=extra_key,
                symbol="005930",
                side="buy",
                qty=1,
                order_type="limit",
                price=bars[-2].open,
                mode="paper",
                state="acked",
            )
        )
        await s.commit()
        run_id = await backtests.start_parity(s, user.id, att.id, days="120", now=now)
        with pytest.raises(ValidationFailed) as info:
            await backtests.start_parity(s, user.id, att.id, days="1000", now=now)
        assert info.value.field_errors["days"][0] == "backtest_out_of_range"

    jobs = BacktestJobs()
    try:
        await jobs.wait_idle()
    finally:
        await jobs.close()
    async with db.session() as s:
        view = await backtests.get_run(s, user.id, run_id)
    assert view.status == "done", view.error
    report = view.output["parity"]
    rows = {r["key"]: r for r in report["rows"]}
    assert rows[matched.key]["status"] == "matched"
    fill_bar = bars[by_start[matched.key.split("|")[2]] + 1]
    row = rows[matched.key]
    # the paper account's costs have no slippage: the backtest fills at the next open,
    # the paper fill was 100 won worse (more paid on a buy, less received on a sell)
    assert row["bt_price"] == fill_bar.open
    assert row["actual_price"] == fill_bar.open + 100
    sign = 1 if matched.action.value == "buy" else -1
    assert row["slip_won"] == sign * 100
    assert row["slip_pct"] == pytest.approx(sign * 100 / fill_bar.open * 100, abs=1e-4)
    assert rows[rejected.key]["status"] == "refused"
    assert rows[rejected.key]["reason"] == "max_order_value"
    assert rows[missed.key]["status"] == "missed"
    assert rows[extra_key]["status"] == "extra"
    summary = report["summary"]
    assert (summary["matched"], summary["refused"], summary["extra"]) == (1, 1, 1)
    assert summary["missed"] == len(in_window) - 2
    assert summary["backtest_signals"] == len(in_window)
    # nothing before the window is compared
    assert all(r["time"] >= window_start.isoformat() for r in report["rows"])


def test_parity_compare_signs_slippage_against_the_trader():
    t0 = datetime(2025, 3, 3, 0, tzinfo=UTC)
    bars = [
        Candle("005930", Timeframe.D1, t0 + timedelta(days=i), 1000, 1010, 990, 1000, 1)
        for i in range(4)
    ]
    key = [f"005930|1d|{bars[i].start.isoformat()}|0|{a}" for i, a in ((0, "buy"), (2, "sell"))]
    output = {
        "signals": [
            {"key": key[0], "symbol": "005930", "action": "buy"},
            {"key": key[1], "symbol": "005930", "action": "sell"},
        ],
        "trades": [
            {
                "symbol": "005930",
                "entry_time": bars[1].start.isoformat(),
                "exit_time": bars[3].start.isoformat(),
                "entry_price": 1000,
                "exit_price": 1100,
                "qty": 10,
                "pnl": 1000,
            }
        ],
    }
    actual = [
        backtests.ActualOrder(key[0], "buy", 10, 1010.0, "acked", ""),  # paid 10 more
        backtests.ActualOrder(key[1], "sell", 10, 1080.0, "acked", ""),  # got 20 less
    ]
    report = backtests.parity_compare(output, bars, actual, t0)
    buy, sell = report["rows"]
    assert (buy["slip_won"], sell["slip_won"]) == (10, 20)
    assert buy["slip_pct"] == pytest.approx(1.0)
    assert sell["slip_pct"] == pytest.approx(20 / 1100 * 100, abs=1e-4)
    assert report["summary"]["backtest_return"] == pytest.approx(0.1)
    assert report["summary"]["actual_return"] == pytest.approx(700 / 10100)
