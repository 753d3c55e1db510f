"""The engine run apart (``python -m app.runtime``) and web workers without a runner: an
alert it fires pops up in the user's open tabs, once per tab.

The engine has no Reflex app, so it queues the in-app alert on the live bus (Redis);
one web worker takes it and writes the user's shared state, which reaches every tab
of that user on every worker. The tabs are websocket clients speaking Reflex's
protocol (``bench._ui_clients``), signed in with session cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from app import db
from app.models.users import User
from app.services import rules as rules_service
from bench import ui
from bench._ui_clients import ReflexClient, Tally, Window
from brokers.paper.symbols import SYMBOLS

TOAST_VAR = "toast_rx_state_"
UNREAD_VAR = "unread_rx_state_"
RULE_NAME = "relay-check"


@dataclass
class AlertTab(ReflexClient):
    """A watchlist tab that also records the alert pop-ups and unread counts it gets."""

    toasts: list[dict[str, Any]] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)

    def _on_live(self, live: dict[str, Any], received: float) -> None:
        super()._on_live(live, received)
        if live.get(TOAST_VAR):
            self.toasts.append(live[TOAST_VAR])
        if UNREAD_VAR in live:
            self.unread.append(int(live[UNREAD_VAR]))


def _tab(port: int, token: str) -> AlertTab:
    return AlertTab(
        url=f"ws://127.0.0.1:{port}/_event/?EIO=4&transport=websocket&token={uuid.uuid4()}",
        origin=f"http://localhost:{port}",
        session_token=token,
        window=Window(start=0.0),
        tally=Tally(),
    )


@contextlib.contextmanager
def _engine(env: dict[str, str], log_path: Path):  # noqa: ANN202
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.runtime"],
            cwd=ui.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        ui.stop_group(proc)


def _ready(web: subprocess.Popen[bytes], engine: subprocess.Popen[bytes], port: int, logs) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 180
    while not (ui._pings(port) and ui.scan_log(logs[1]).leaders >= 1):
        for proc, path in ((web, logs[0]), (engine, logs[1])):
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}:\n{ui._tail(path)}")
        if time.monotonic() > deadline:
            raise RuntimeError("not ready in 180 s:\n" + ui._tail(logs[0]) + ui._tail(logs[1]))
        time.sleep(0.5)


async def _fire_rule(db_url: str, code: str) -> int:
    """An ``above`` rule below the price: it fires on the next trade."""
    db.configure(db_url)
    try:
        async with db.session() as s:
            user = (await s.exec(select(User).where(User.email == "bench-0@example.com"))).one()
            reference = next(s.ref_price for s in SYMBOLS if s.code == code)
            level = reference // 2 // 100 * 100
            await rules_service.create_price_rule(
                s,
                user.id,
                symbol_query=code,
                op="above",
                level=str(level),
                repeat="once",
                name=RULE_NAME,
            )
            return user.id or 0
    finally:
        await db.dispose()


async def test_alert_from_the_engine_apart_pops_up_once_in_every_tab(report_figures):
    plan = ui.Plan(clients=2, symbols=3, workers=2, seconds=1.0)
    redis_url = f"{ui.REDIS_BASE_URL}/{ui.REDIS_DB - 2}"
    ui.flush_redis(redis_url)
    with ui.fresh_database() as db_url, tempfile.TemporaryDirectory() as tmp:
        tokens = await ui.seed(db_url, plan)
        port = ui.free_port()
        logs = (Path(tmp) / "web.log", Path(tmp) / "engine.log")
        env = ui.backend_env(plan, db_url, redis_url, port)
        web_env = {**env, "RUNNER_ENABLED": "false"}
        with ui.backend(web_env, port, logs[0]) as web, _engine(env, logs[1]) as engine:
            await asyncio.to_thread(_ready, web, engine, port, logs)
            tabs = [_tab(port, tokens[0]) for _ in range(2)]
            tasks = [asyncio.create_task(t.run(asyncio.Semaphore(1))) for t in tabs]
            try:
                for t in tabs:
                    await asyncio.wait_for(t.linked.wait(), 60)
                code = ui.watch_codes(0, [s.code for s in SYMBOLS[: plan.symbols]], 3)[0]
                loop = asyncio.get_running_loop()
                began = loop.time()
                await _fire_rule(db_url, code)
                while not all(t.toasts for t in tabs):
                    assert loop.time() - began < 30, [t.tally.errors for t in tabs]
                    await asyncio.sleep(0.05)
                popped_s = loop.time() - began
                await asyncio.sleep(2.0)  # time for a second copy to show up, were there one
            finally:
                for t in tabs:
                    t.window.stopping = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        web_facts, engine_facts = ui.scan_log(logs[0]), ui.scan_log(logs[1])

    assert web_facts.leaders == 0 and engine_facts.leaders == 1  # the engine runs apart
    for t in tabs:
        assert len(t.toasts) == 1, t.toasts  # shown once, by one worker
        assert RULE_NAME in str(t.toasts[0])
        assert t.unread and t.unread[-1] == 1
    report_figures(workers=2, tabs=len(tabs), alert_to_popup_s=round(popped_s, 2))
