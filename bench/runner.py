"""The runner's tick path: market tick -> quote update -> rule book -> (rarely) outbox.

Drives ``Runner.handle_tick`` directly with ticks from the simulated KRX market over
a real migrated SQLite database, holding 0, 10k and 100k idle rules (levels beyond
the ±30% daily limit, so they can never fire) plus 50 rules that do fire. If the tick
path is O(triggered work), ``us_per_idle_tick`` stays flat as idle rules grow, and
the cost sits in ``ms_per_fired`` (one outbox transaction each).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from app import db
from app.cli import migrate
from app.config import Settings
from app.models.common import utcnow
from app.models.rules import AlertRule
from app.runtime.runner import Runner
from app.services import auth, symbols
from brokers.paper.market import SimulatedMarket
from brokers.paper.symbols import SYMBOLS
from engines.rules.spec import PriceRuleSpec

log = logging.getLogger("bench.runner")
IDLE_SIZES = (0, 10_000, 100_000)
N_STEPS = 2_000  # x 50 symbols, about 80k ticks
N_SYMBOLS = 50
T0 = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)


def _ticks() -> list:
    market = SimulatedMarket(seed=11)
    codes = [s.code for s in SYMBOLS[:N_SYMBOLS]]
    asyncio.run(market.subscribe(codes))
    out = []
    for i in range(N_STEPS):
        out.extend(market.step(T0 + timedelta(milliseconds=200 * i)))
    return out


async def _one(idle: int, ticks: list, workdir: Path) -> dict:
    url = f"sqlite:///{workdir / f'bench-{idle}.db'}"
    await asyncio.to_thread(migrate, url)
    db.configure(url)
    async with db.session() as s:
        await symbols.sync_master(s, SYMBOLS)
        user = await auth.create_local_user(s, "bench@example.com", "bench-password")
    now = utcnow()
    rows = []
    chosen = SYMBOLS[:N_SYMBOLS]
    for i in range(idle):
        sym = chosen[i % N_SYMBOLS]
        far = sym.ref_price * (3 if i % 2 else 1) // 2 + i % 97  # ±50%: beyond the daily limit
        spec = PriceRuleSpec(op="cross_up" if i % 2 else "cross_down", level=far)
        rows.append(
            {
                "user_id": user.id,
                "symbol": sym.code,
                "name": "",
                "spec": spec.model_dump(mode="json"),
                "status": "active",
                "fire_count": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    for sym in chosen:  # one rule per symbol that the walk will cross
        spec = PriceRuleSpec(op="cross", level=sym.ref_price, repeat="rearm")
        rows.append(
            {
                "user_id": user.id,
                "symbol": sym.code,
                "name": "",
                "spec": spec.model_dump(mode="json"),
                "status": "active",
                "fire_count": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with db.session() as s:
        for start in range(0, len(rows), 5_000):
            await s.exec(insert(AlertRule), params=rows[start : start + 5_000])
        await s.commit()
    market = SimulatedMarket(seed=11)
    runner = Runner(Settings(smtp_host=""), market)
    t_sync = time.perf_counter()
    await runner.sync_once()
    sync_s = time.perf_counter() - t_sync
    idle_ns: list[int] = []
    fired_ns: list[int] = []
    fired_total = 0
    for tick in ticks:
        t = time.perf_counter_ns()
        fired = await runner.handle_tick(tick)
        dt = time.perf_counter_ns() - t
        (fired_ns if fired else idle_ns).append(dt)
        fired_total += len(fired)
    await db.dispose()
    return {
        "idle_rules": idle,
        "rules_loaded": len(runner.book),
        "ticks": len(ticks),
        "fired": fired_total,
        "events_recorded": runner.events_recorded,
        "us_per_idle_tick_median": round(statistics.median(idle_ns) / 1000, 2),
        "us_per_idle_tick_p99": round(statistics.quantiles(idle_ns, n=100)[98] / 1000, 2),
        "ms_per_fired_median": round(statistics.median(fired_ns) / 1e6, 2) if fired_ns else None,
        "initial_sync_s": round(sync_s, 2),
    }


def run() -> dict:
    ticks = _ticks()
    with tempfile.TemporaryDirectory() as tmp:
        results = [asyncio.run(_one(n, ticks, Path(tmp))) for n in IDLE_SIZES]
    for r in results:
        log.info("%s", r)
    return {"benchmark": "runner", "database": "sqlite", "symbols": N_SYMBOLS, "sizes": results}
