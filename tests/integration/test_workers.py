"""Three real web workers (granian, as ``python -m app.serve`` forks them with Redis)
on PostgreSQL and Redis: exactly one runs the engine, and when it is killed another
takes over within 10 s while a new worker replaces the dead one.

The backend is started the way ``python -m bench ui`` starts it (backend only, its
own database and Redis database, JSON logs); the leader is found from the JSON log
line of its election, which carries its pid, and killed with SIGKILL, as a crashed
worker dies: no lock release, no clean-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis

from bench import ui


def _leader_lines(log_path: Path) -> list[tuple[float, int]]:
    """(time seen, pid) of each 'leadership acquired' line, in order."""
    out: list[tuple[float, int]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("msg", "")).startswith(ui.LEADER_ACQUIRED):
            out.append((time.monotonic(), int(record["pid"])))
    return out


def _wait(predicate, timeout: float, step: float = 0.1):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def _services_up() -> bool:
    try:
        redis.Redis.from_url(ui.REDIS_BASE_URL, socket_timeout=2).ping()
        with psycopg.connect(ui.admin_conninfo(), connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.mark.skipif(not _services_up(), reason="needs PostgreSQL and Redis on loopback")
def test_three_workers_one_leader_and_a_killed_leader_is_replaced_within_10s(report_figures):
    plan = ui.Plan(clients=2, symbols=3, workers=3, seconds=1.0)
    redis_url = f"{ui.REDIS_BASE_URL}/{ui.REDIS_DB - 1}"
    ui.flush_redis(redis_url)
    with ui.fresh_database() as db_url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(ui.seed(db_url, plan))
        port = ui.free_port()
        log_path = Path(tmp) / "app.log"
        with ui.backend(ui.backend_env(plan, db_url, redis_url, port), port, log_path) as proc:
            ui.wait_until_ready(proc, port, log_path)
            workers = ui.group_members(proc.pid)
            # Every worker has had time to stand for election (each retries every 1 s).
            time.sleep(4)
            lines = _leader_lines(log_path)
            assert len(lines) == 1, lines  # exactly one engine runs
            leader = lines[0][1]
            assert leader in workers and len(set(workers) - {proc.pid}) >= 3

            killed_at = time.monotonic()
            os.kill(leader, signal.SIGKILL)
            lines = _wait(lambda: len(_leader_lines(log_path)) >= 2 and _leader_lines(log_path), 15)
            assert lines and len(lines) >= 2, ui._tail(log_path, 6000)
            handover = lines[1][0] - killed_at
            successor = lines[1][1]
            assert successor != leader
            assert handover < 10
            time.sleep(3)  # nobody else starts an engine afterwards
            assert [pid for _, pid in _leader_lines(log_path)] == [leader, successor]
            # The app still serves, and the dead worker was replaced (app.serve turns
            # granian's respawn on; without it the whole server stops).
            assert ui._pings(port)
            respawned = _wait(lambda: set(ui.group_members(proc.pid)) - set(workers), 15)
            assert respawned and leader not in ui.group_members(proc.pid)
    ui.flush_redis(redis_url)
    report_figures(
        workers=3, leader_pid=leader, successor_pid=successor, handover_s=round(handover, 2)
    )
