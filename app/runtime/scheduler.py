"""Periodic jobs (APScheduler) that run beside the runner: portfolio refreshes, digests.

One ``AsyncIOScheduler`` on the app's event loop, so jobs are coroutines that
share the runner's database pool and never block the loop. Jobs are coalesced
and limited to one instance each: a slow broker makes a refresh late, it does
not stack refreshes up behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


def _guarded(name: str, job: Job) -> Job:
    """A failing job is logged and retried at its next run, never unscheduled."""

    async def run() -> object:
        try:
            return await job()
        except Exception:
            log.exception("scheduled job %s failed; it runs again at its next interval", name)
            return None

    run.__name__ = name
    return run


def build_scheduler(jobs: dict[str, tuple[Job, float]]) -> AsyncIOScheduler:
    """``jobs``: name -> (coroutine function, interval in seconds)."""
    scheduler = AsyncIOScheduler(timezone="Asia/Seoul")
    for name, (job, seconds) in jobs.items():
        if seconds <= 0:
            raise ValueError(f"job {name}: interval must be positive, got {seconds}")
        scheduler.add_job(
            _guarded(name, job),
            IntervalTrigger(seconds=seconds),
            id=name,
            name=name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(seconds)),
        )
    return scheduler
