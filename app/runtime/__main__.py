"""``python -m app.runtime``: the runner as a process of its own, without the web app.

For operators who separate web and engine: web workers run with
``RUNNER_ENABLED=false`` and one or more of these processes run the engine. Any
number may run; the leader lock (``LEADER_LOCK``) lets one lead and the others
stand by to take over. SIGTERM or SIGINT stops the engine, releases the lock (so
a standby takes over at once rather than after a lease) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from app import db
from app.config import get_settings
from app.logging_setup import configure_logging
from app.runtime.engine import run_engine
from app.runtime.leader import LeaderConfigError, LeaderElection, build_lock
from app.runtime.live_bus import BusAlertSink, bus_for
from app.vault_keys import get_key_ring

log = logging.getLogger("app.runtime")


async def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.json_logs)
    get_key_ring()  # a bad vault key configuration stops start-up, not a later send
    try:
        lock = build_lock(
            settings.leader_lock,
            settings.database_url,
            settings.redis_url,
            lease=settings.leader_lease_seconds,
            name=settings.leader_lock_name,
        )
    except LeaderConfigError as exc:
        log.error("cannot start the runner: %s", exc)
        return 2
    election = LeaderElection(lock, lease=settings.leader_lease_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No Reflex app here: in-app alerts go on the bus and a web worker shows them.
    # Without Redis no web worker can read it, so pages only list them on reload.
    ui = BusAlertSink(bus_for(settings.redis_url)) if settings.redis_url else None
    if ui is None:
        log.warning("no REDIS_URL: in-app alerts appear when a page reloads, not as they fire")
    task = asyncio.create_task(election.run(lambda: run_engine(settings, ui=ui)), name="election")
    waiter = asyncio.create_task(stop.wait())
    log.warning("runner process started: holder=%s backend=%s", lock.holder_id, lock.backend)
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.dispose()
    log.warning("runner process stopped: holder=%s", lock.holder_id)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
