"""A crash between a signal and its order's acknowledgement, then a restart: one order.

The executor runs in its own process and is SIGKILLed at each point where a crash
leaves something half done:

* ``pending`` - the order row is claimed, nothing was sent;
* ``sent`` - the row says sent, but the broker never got the request;
* ``placed`` - the broker has the order, the ack never came back to us (paper: the
  broker stored it; KIS: the loopback fake recorded it and holds its reply while the
  process is killed).

A fresh executor then reconciles, and the orders are counted at the broker: exactly
one, linked to the row, and replaying the signal changes nothing.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.services.strategy_orders import OrderExecutor
from app.vault_keys import KeyRing, set_key_ring
from brokers.ratelimit import reset_registry
from tests.integration import helpers
from tests.integration.test_strategy_kit import (
    buy,
    kis_account,
    kis_env,
    kis_order_posts,
    kis_settings,
    live_columns,
    orders_of,
    paper_market,
    paper_orders,
    seed,
    start_kis,
)

pytestmark = pytest.mark.usefixtures("database")

ROOT = Path(__file__).resolve().parents[2]
SIGNAL = buy("2026-03-05T00:00:00+00:00", qty=3)

CHILD = r"""
import asyncio
import os
from pathlib import Path


async def main() -> None:
    from app import db
    from app.config import get_settings
    from app.services import strategy_orders as so
    from brokers.paper.market import SimulatedMarket
    from engines.strategies.base import Action, Signal

    db.configure(os.environ["DATABASE_URL"])
    marker = Path(os.environ["CRASH_MARKER"])
    point = os.environ["CRASH_AT"]

    async def hang(where: str) -> None:
        marker.write_text(where)
        await asyncio.sleep(3600)

    if point == "pending":
        async def mark_sent(self, row, from_states):
            await hang("pending")

        so.OrderExecutor._mark_sent = mark_sent
    elif point == "sent":
        async def place(self, request):
            await hang("sent")

        so.PaperVenue.place = place
        so.KisVenue.place = place
    elif point == "placed" and os.environ["VENUE"] == "paper":
        real_place = so.PaperVenue.place

        async def place(self, request):
            await real_place(self, request)
            await hang("placed")

        so.PaperVenue.place = place
    executor = so.OrderExecutor(SimulatedMarket(seed=1), get_settings())
    signal = Signal(
        Action.BUY, os.environ["SYMBOL"], qty=int(os.environ["QTY"]), key=os.environ["SIGNAL_KEY"]
    )
    await executor.execute(int(os.environ["ATTACHMENT_ID"]), signal, 70_000)
    marker.write_text("finished")


asyncio.run(main())
"""


def _run_child(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "executor_child.py"
    script.write_text(CHILD)
    log = (tmp_path / "child.log").open("ab")
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _kill_when(child: subprocess.Popen[bytes], ready, tmp_path: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 60
    try:
        while not ready():
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "child.log").read_text()
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _env(database: str, key: bytes, tmp_path: Path, point: str, venue: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database,
        "VAULT_KEYS": f"crash:{base64.b64encode(key).decode()}",
        "VAULT_ACTIVE_KEY": "crash",
        "VAULT_KEYS_FILE": "",
        "LOG_LEVEL": "WARNING",
        "CRASH_AT": point,
        "CRASH_MARKER": str(tmp_path / "marker"),
        "VENUE": venue,
        "SYMBOL": SIGNAL.symbol,
        "QTY": str(SIGNAL.qty),
        "SIGNAL_KEY": SIGNAL.key,
    }


@pytest.mark.parametrize("point", ["pending", "sent", "placed"])
async def test_paper_crash_then_restart_leaves_exactly_one_order(
    database, tmp_path, point, report_figures
):
    att = await seed("crash-paper@example.com", mode="paper")
    env = {**_env(database, os.urandom(32), tmp_path, point, "paper")}
    env["ATTACHMENT_ID"] = str(att.attachment_id)
    marker = tmp_path / "marker"
    child = _run_child(env, tmp_path)
    _kill_when(child, lambda: marker.exists(), tmp_path)
    assert marker.read_text() == point

    [row] = await orders_of(att.attachment_id)
    at_broker = len(await paper_orders())
    assert row.state == ("pending" if point == "pending" else "sent")
    assert at_broker == (1 if point == "placed" else 0)

    executor = OrderExecutor(paper_market(), helpers.settings())
    assert await executor.reconcile(att.attachment_id) is True
    [row] = await orders_of(att.attachment_id)
    [stored] = await paper_orders()
    assert row.state == "acked" and row.broker_order_id == str(stored.id)
    assert stored.client_order_id == row.client_order_id and stored.qty == SIGNAL.qty
    again = await executor.execute(att.attachment_id, SIGNAL, 70_000)
    assert again.id == row.id and len(await paper_orders()) == 1
    report_figures(venue="paper", point=point, at_broker_after_kill=at_broker, after_restart=1)


@pytest.mark.parametrize("point", ["pending", "sent", "placed"])
async def test_kis_crash_then_restart_leaves_exactly_one_order(
    database, tmp_path, point, report_figures
):
    key = os.urandom(32)
    set_key_ring(KeyRing({"crash": key}, "crash"))
    reset_registry()
    fake, server = start_kis()
    try:
        first = await seed("crash-kis@example.com", mode="alert")
        credential = await kis_account(first.user_id)
        from sqlalchemy import update
        from sqlmodel import col

        from app import db
        from app.models.strategies import StrategyAttachment

        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == first.attachment_id)
                .values(**await live_columns(first.user_id, credential))
            )
            await s.commit()
        env = {**_env(database, key, tmp_path, point, "kis"), **kis_env(server)}
        env["ATTACHMENT_ID"] = str(first.attachment_id)
        marker = tmp_path / "marker"
        if point == "placed":
            fake.hold_reply_s = 30.0  # recorded; the reply waits while the child dies

            def ready() -> bool:
                return kis_order_posts(fake) == 1
        else:

            def ready() -> bool:
                return marker.exists()

        child = _run_child(env, tmp_path)
        _kill_when(child, ready, tmp_path)
        fake.hold_reply_s = 0.0

        [row] = await orders_of(first.attachment_id)
        at_broker = kis_order_posts(fake)
        assert row.state == ("pending" if point == "pending" else "sent")
        assert at_broker == (1 if point == "placed" else 0)

        executor = OrderExecutor(paper_market(), kis_settings(server))
        assert await executor.reconcile(first.attachment_id) is True
        [row] = await orders_of(first.attachment_id)
        assert kis_order_posts(fake) == 1
        [order] = [o for o in fake.orders.values() if not o.original]
        assert row.state == "acked" and row.broker_order_id == order.order_id
        assert (order.symbol, order.qty, order.side) == (SIGNAL.symbol, SIGNAL.qty, "02")
        again = await executor.execute(first.attachment_id, SIGNAL, 70_000)
        assert again.id == row.id and kis_order_posts(fake) == 1
        report_figures(venue="kis", point=point, at_broker_after_kill=at_broker, after_restart=1)
    finally:
        server.stop()
