"""Everything only the leader runs, as one coroutine the leader election starts and stops.

Market streams, rule evaluation, the strategy desk, outbox delivery, the scheduler
(portfolio refresh, daily digest) and backtest job dispatch with its orphan sweep
all live and die together: a worker that loses the lock stops every one of them
before another worker starts its own. What survives a handover is in the
database: stored candles warm indicators, the outbox is delivered from where it
was, strategy orders reconcile on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app import db
from app.config import Settings
from app.runtime.backtest_jobs import BacktestJobs, set_current_jobs
from app.runtime.daily_digest import digest_jobs
from app.runtime.live_bus import STATUS_EVERY
from app.runtime.market_source import build_market
from app.runtime.notifier_setup import build_notifiers
from app.runtime.runner import Runner, UiSink, set_current_runner
from app.runtime.scheduler import Job, build_scheduler
from app.services import symbols as symbols_service
from brokers.base import MarketData

log = logging.getLogger(__name__)


async def run_engine(
    settings: Settings,
    *,
    ui: UiSink | None = None,
    jobs: dict[str, tuple[Job, float]] | None = None,
    market: MarketData | None = None,
    backtests: bool = True,
) -> None:
    """Run the engine until cancelled; ``jobs`` are extra scheduler entries (the web
    app adds its page refresh), ``market`` replaces the configured source (tests)."""
    market = market or build_market(settings)
    scheduler = None
    backtest_jobs: BacktestJobs | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with db.session() as s:
            await symbols_service.sync_master(s, await market.list_symbols())
        notifiers = build_notifiers(settings)
        runner = Runner(settings, market, ui=ui, notifiers=notifiers)
        set_current_runner(runner)
        tasks.append(asyncio.create_task(runner.run(), name="runner"))
        tasks.append(asyncio.create_task(_publish_status(runner), name="runner-status"))
        if backtests:
            # Only the leader sweeps: a standby marking "running" rows failed would fail
            # the jobs the leader is running right now.
            backtest_jobs = BacktestJobs(plugins_dir=settings.strategy_plugins_dir.strip())
            set_current_jobs(backtest_jobs)
            tasks.append(asyncio.create_task(backtest_jobs.run(), name="backtest-jobs"))
        scheduler = build_scheduler(
            {**(jobs or {}), **digest_jobs(settings, notifiers, runner.market)}
        )
        scheduler.start()
        log.info("engine started (email %s)", "on" if settings.email_enabled else "off")
        await asyncio.gather(*tasks)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if backtest_jobs is not None:
            with contextlib.suppress(Exception):
                await backtest_jobs.close()
            set_current_jobs(None)
        with contextlib.suppress(Exception):
            await market.close()
        set_current_runner(None)
        log.info("engine stopped")


async def _publish_status(runner: Runner) -> None:
    """The runner's figures on the live bus, for workers that do not run it."""
    from app.services import ops_status

    while True:
        try:
            await runner.bus.publish_status(ops_status.leader_payload(runner))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # health pages elsewhere go stale; nothing else
            log.warning("could not publish the runner status: %r", exc)
        await asyncio.sleep(STATUS_EVERY)
