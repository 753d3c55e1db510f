"""The deployed app recovers on its own from a Redis restart and a PostgreSQL restart.

Three granian workers (``python -m app.serve``) run on a private PostgreSQL and Redis
(``private_services``). A signed-in tab (a websocket client speaking Reflex's
protocol, as in ``python -m bench ui``) watches live prices. Each service is crashed
and started again; the tab that stayed open must get live prices again, a tab opened
afterwards must sign in and get them too, and exactly one worker must lead. The
time from the service's return to the open tab's next fresh price is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bench import ui
from bench._ui_clients import ReflexClient, Tally, Window
from tests.integration.private_services import PrivatePostgres, PrivateRedis

DOWN_SECONDS = 1.5
RECOVERY_LIMIT = 30.0


class Tab:
    """One open watchlist tab, counting fresh prices as they arrive."""

    def __init__(self, port: int, token: str) -> None:
        self.tally = Tally()
        self.client = ReflexClient(
            url=f"ws://127.0.0.1:{port}/_event/?EIO=4&transport=websocket&token={uuid.uuid4()}",
            origin=f"http://localhost:{port}",
            session_token=token,
            window=Window(start=0.0),
            tally=self.tally,
        )
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.task = asyncio.create_task(self.client.run(asyncio.Semaphore(1)))
        await asyncio.wait_for(self.client.linked.wait(), 60)

    async def fresh_price(self, timeout: float) -> float:
        """Seconds until the next quote with a new trade time reaches this tab."""
        loop = asyncio.get_running_loop()
        start, before = loop.time(), self.tally.updates
        while self.tally.updates == before:
            if loop.time() - start > timeout:
                raise AssertionError(f"no fresh price in {timeout:.0f} s: {self.tally.errors}")
            await asyncio.sleep(0.05)
        return loop.time() - start

    async def close(self) -> None:
        self.client.window.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


@contextlib.asynccontextmanager
async def deployment(
    pg: PrivatePostgres, redis_url: str
) -> AsyncIterator[tuple[int, list[str], Path]]:
    plan = ui.Plan(clients=4, symbols=3, workers=3, seconds=1.0)
    db_url = pg.create_database()
    tokens = await ui.seed(db_url, plan)
    port = ui.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "app.log"
        env = ui.backend_env(plan, db_url, redis_url, port)
        with ui.backend(env, port, log_path) as proc:
            await asyncio.to_thread(ui.wait_until_ready, proc, port, log_path)
            yield port, tokens, log_path


async def _survives(
    port: int,
    tokens: list[str],
    log_path: Path,
    crash: Callable[[], None],
    start: Callable[[], None],
) -> dict[str, float]:
    tab = Tab(port, tokens[0])
    await tab.open()
    try:
        await tab.fresh_price(20)  # live before the fault
        await asyncio.to_thread(crash)
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(start)
        open_tab = await tab.fresh_price(RECOVERY_LIMIT)
        late = Tab(port, tokens[1])
        loop = asyncio.get_running_loop()
        began = loop.time()
        await late.open()
        await late.fresh_price(RECOVERY_LIMIT)
        new_tab = loop.time() - began
        await late.close()
    finally:
        await tab.close()
    facts = ui.scan_log(log_path)
    return {
        "open_tab_prices_again_s": round(open_tab, 2),
        "new_tab_signed_in_with_prices_s": round(new_tab, 2),
        "leader_terms": facts.leaders,
        "leader_pids": len(facts.leader_pids),
    }


async def test_redis_restart(private_pg, private_redis: PrivateRedis, report_figures):
    """Reflex's state manager and the live bus lose Redis for a while; the leader (on
    the PostgreSQL lock) keeps running and its publishes fail meanwhile; every worker
    resubscribes when Redis is back."""
    async with deployment(private_pg, private_redis.url) as (port, tokens, log_path):
        figures = await _survives(port, tokens, log_path, private_redis.crash, private_redis.start)
    assert figures["leader_terms"] == 1  # the lock is in PostgreSQL: no handover needed
    report_figures(fault="redis restart", workers=3, **figures)


async def test_postgres_restart(private_pg, private_redis: PrivateRedis, report_figures):
    """The leader's lock session dies with the server: after the restart a worker
    takes the lock again (one engine), and sessions are read from the database again."""
    async with deployment(private_pg, private_redis.url) as (port, tokens, log_path):
        figures = await _survives(port, tokens, log_path, private_pg.crash, private_pg.start)
    assert figures["leader_terms"] == 2  # lost with the server, taken once afterwards
    report_figures(fault="postgres restart", workers=3, **figures)
