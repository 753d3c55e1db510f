"""``python -m bench ui --quick`` (what CI runs): a real multi-worker backend serves tabs.

The bench starts the production backend with three workers on PostgreSQL and Redis
and drives 20 websocket tabs; this checks the facts that can fail (every tab was
served, one leader, every watched symbol reached someone, sane latencies). Speed is
reported by the bench, not asserted here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from bench.ui import QUICK, REDIS_BASE_URL, admin_conninfo

ROOT = Path(__file__).resolve().parents[2]


def _unreachable() -> str | None:
    """Why the bench cannot run here, or None: it needs the CI services, nothing else."""
    try:
        with psycopg.connect(admin_conninfo(), connect_timeout=3):
            pass
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable: {exc}"
    client = redis.Redis.from_url(REDIS_BASE_URL, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis unreachable: {exc}"
    finally:
        client.close()
    return None


@pytest.fixture(scope="module")
def quick_result() -> dict:
    if reason := _unreachable():
        pytest.skip(reason)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--quick"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench stops its backend and drops its database
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"bench ui --quick took over 240 s:\n{stderr[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-6000:]
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout  # one JSON line; diagnostics went to stderr
    return json.loads(lines[0])


@pytest.mark.postgres
def test_quick_ui_bench_serves_every_tab(quick_result: dict, report_figures) -> None:
    out = quick_result
    report_figures(
        **{
            k: out[k]
            for k in ("clients", "updates_per_s", "p50_ms", "p95_ms", "max_ms", "backend_cpu_pct")
        }
    )
    assert out["benchmark"] == "ui" and out["quick"] is True
    assert (out["workers"], out["symbols"]) == (QUICK.workers, QUICK.symbols)
    assert out["clients"] == QUICK.clients == 20, out  # connected, linked and receiving
    assert out["leaders"] == 1, out  # of three workers exactly one ran the engine
    assert out["leader_changes"] == 0, out
    assert out["errors"] == 0, out  # client disconnects, protocol errors, app log errors
    assert out["updates"] > 0
    assert out["symbols_seen"] == QUICK.symbols, out  # every watched symbol reached a tab
    assert out["goal_p95_ms"] == 250


@pytest.mark.postgres
def test_quick_ui_bench_latencies_are_sane(quick_result: dict) -> None:
    out = quick_result
    percentiles = [out[k] for k in ("min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")]
    assert all(isinstance(v, float) and math.isfinite(v) for v in percentiles), percentiles
    assert 0 < out["min_ms"] <= out["p50_ms"] <= out["p95_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert out["quotes"] >= out["updates"] > 0
    assert out["backend_cpu_pct"] > 0 and out["backend_rss_mb"] > 0
    json.dumps(out, allow_nan=False)
