"""Tick-to-browser latency of a multi-worker deployment: ``python -m bench ui``.

``python -m bench ui [--clients N] [--symbols S] [--workers W] [--seconds T] [--quick]
[--app-log PATH]``

What runs, all on loopback, and all torn down at the end (also on errors):

* a fresh PostgreSQL database, migrated, with the symbol master and ``ceil(N / 2)``
  users, each with a session (the raw token is the ``tw_session`` cookie, the table
  keeps its hash) and a watchlist of a few of the first S simulated symbols, so that
  every one of the S is watched by someone;
* the backend only (``python -m app.serve --backend-only``, i.e. ``reflex run --env
  prod`` with crashed workers respawned) with W granian workers,
  Reflex's Redis state manager on its own Redis database (flushed before and after),
  the PostgreSQL leader lock, and the simulated market ticking every 0.2 s;
* N websocket clients in this process (:mod:`bench._ui_clients`): two tabs per user,
  each hydrating ``/`` as a browser does, so ``SessionState.guard`` and
  ``LiveState.connect`` link the tab to the shared ``user-<id>`` state.

After every tab is linked and a warm-up, for T seconds each quote a tab receives with a
new ``at`` (the trade's time in epoch ms) gives one latency sample: receive time minus
``at``. That is the whole path a user sees: market step, runner, coalescing
(``UI_PUSH_INTERVAL``, app default 0.5 s), ``modify_state`` through Redis, the worker
holding the tab's socket, the socket. Backend CPU and memory are read from ``/proc``
over the backend's process tree; the client side's own CPU and event-loop lag are
reported too, since clients and backend share the machine's two cores.

``goal_p95_ms`` is the target; the benchmark reports it and does not enforce it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy.engine import make_url

from bench._ui_clients import ReflexClient, Tally, Window, loop_lag

log = logging.getLogger("bench.ui")

ROOT = Path(__file__).resolve().parents[1]
GOAL_P95_MS = 250
TABS_PER_USER = 2
WATCH_PER_USER = 3
WARMUP_S = 3.0
MARKET_TICK_INTERVAL = "0.2"
REDIS_DB = 9
"""Reflex's state and the app's Redis use this database; FLUSHDB before and after."""
CONNECT_CONCURRENCY = 20
"""Handshakes in flight at once: a page load storm, not a single-instant SYN flood."""
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = "redis://127.0.0.1:6379"
PR_SET_PDEATHSIG = 1
LEADER_ACQUIRED = "runner leadership acquired"
LEADER_ENDED = "runner leadership ended"


@dataclass(frozen=True)
class Plan:
    clients: int
    symbols: int
    workers: int
    seconds: float

    @property
    def users(self) -> int:
        return math.ceil(self.clients / TABS_PER_USER)


DEFAULT = Plan(clients=200, symbols=50, workers=3, seconds=20.0)
QUICK = Plan(clients=20, symbols=10, workers=3, seconds=6.0)


def parse_args(argv: Sequence[str]) -> tuple[Plan, bool, Path | None]:
    """``--quick`` sets the CI sizes; explicit options still override them."""
    parser = argparse.ArgumentParser(prog="python -m bench ui")
    parser.add_argument("--quick", action="store_true", help="20 clients, 10 symbols, ~6 s")
    parser.add_argument("--clients", type=int, help=f"websocket tabs (default {DEFAULT.clients})")
    parser.add_argument("--symbols", type=int, help=f"symbols watched (default {DEFAULT.symbols})")
    parser.add_argument("--workers", type=int, help=f"granian workers (default {DEFAULT.workers})")
    parser.add_argument("--seconds", type=float, help=f"window (default {DEFAULT.seconds:g})")
    parser.add_argument("--app-log", type=Path, help="keep the backend's log at this path")
    args = parser.parse_args(list(argv))
    base = QUICK if args.quick else DEFAULT
    plan = Plan(
        clients=base.clients if args.clients is None else args.clients,
        symbols=base.symbols if args.symbols is None else args.symbols,
        workers=base.workers if args.workers is None else args.workers,
        seconds=base.seconds if args.seconds is None else args.seconds,
    )
    from brokers.paper.symbols import SYMBOLS

    if not (1 <= plan.symbols <= len(SYMBOLS)):
        parser.error(f"--symbols must be within 1..{len(SYMBOLS)}")
    if plan.clients < 1 or plan.workers < 1 or plan.seconds <= 0:
        parser.error("--clients, --workers and --seconds must be positive")
    return plan, bool(args.quick), args.app_log


# ---- database and users -----------------------------------------------------------------


def admin_conninfo() -> str:
    """libpq parameters for the server's ``postgres`` database, where CREATE DATABASE runs."""
    u = make_url(PG_ADMIN_URL)
    return f"host={u.host} port={u.port or 5432} user={u.username or 'postgres'} dbname=postgres"


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def drop_orphans(conn: psycopg.Connection) -> None:
    """Drop the databases of earlier runs that were killed outright (SIGKILL runs no
    ``finally``): named ``bench_ui_<pid>_...`` after a process that no longer exists."""
    names = conn.execute(
        "SELECT datname FROM pg_database WHERE datname ~ '^bench_ui_[0-9]+_[0-9a-f]+$'"
    ).fetchall()
    for (name,) in names:
        if not _pid_alive(int(name.split("_")[2])):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log.warning("dropped %s, left behind by a killed run", name)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own per run, dropped (connections forced out) however it ends."""
    name = f"bench_ui_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
        drop_orphans(conn)
        conn.execute(f'CREATE DATABASE "{name}"')
    log.info("database %s created", name)
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log.info("database %s dropped", name)


def watch_codes(user_index: int, codes: Sequence[str], per_user: int) -> list[str]:
    """Consecutive blocks round the symbol list: with ``users * per_user >= len(codes)``
    every symbol has a watcher, and each symbol about the same number of them."""
    start = user_index * per_user
    return list(dict.fromkeys(codes[(start + j) % len(codes)] for j in range(per_user)))


async def seed(url: str, plan: Plan) -> list[str]:
    """Migrate, load the symbol master, create the users; returns one session token each.

    Users are created as identity-provider accounts (no password): what is measured
    is the session cookie path, and 100 argon2 hashes would only cost start-up time.
    """
    from app import db
    from app.cli import migrate
    from app.models.users import User
    from app.services import auth, symbols, watchlist
    from brokers.paper.symbols import SYMBOLS

    await asyncio.to_thread(migrate, url)
    db.configure(url)
    codes = [s.code for s in SYMBOLS[: plan.symbols]]
    per_user = min(len(codes), max(WATCH_PER_USER, math.ceil(len(codes) / plan.users)))
    tokens: list[str] = []
    try:
        async with db.session() as s:
            await symbols.sync_master(s, SYMBOLS)
            for i in range(plan.users):
                user = User(email=f"bench-{i}@example.com", display_name=f"Bench {i}")
                s.add(user)
                await s.commit()
                await s.refresh(user)
                tokens.append(
                    await auth.create_session(s, user, timedelta(hours=2), user_agent="bench-ui")
                )
                for code in watch_codes(i, codes, per_user):
                    await watchlist.add(s, user.id or 0, code)
    finally:
        await db.dispose()
    log.info("%d users with sessions, %d symbols watched each", plan.users, per_user)
    return tokens


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


# ---- the backend --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push_interval(env: dict[str, str]) -> float:
    """The UI push interval the backend runs with: the caller's setting or the app's default."""
    from app.config import Settings

    return float(env.get("UI_PUSH_INTERVAL", Settings.model_fields["ui_push_interval"].default))


def backend_env(plan: Plan, db_url: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REFLEX_REDIS_URL": redis_url,
        "GRANIAN_WORKERS": str(plan.workers),
        "LEADER_LOCK": "postgres",
        "LEADER_LOCK_NAME": f"bench-ui:{uuid.uuid4().hex}",
        "MARKET_TICK_INTERVAL": MARKET_TICK_INTERVAL,
        "VAULT_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
        "VAULT_ACTIVE_KEY": "bench",
        "REFLEX_CHECK_LATEST_VERSION": "0",
        "REFLEX_TELEMETRY_ENABLED": "0",
        "APP_BASE_URL": f"http://localhost:{port}",
        "LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def backend(env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m app.serve --backend-only`` in a session of its own; the whole
    process group (supervisor and workers) is stopped on the way out."""
    # The production entry: ``reflex run --env prod`` with crashed workers respawned.
    cmd = [sys.executable, "-m", "app.serve", "--backend-only"]
    cmd += ["--backend-host", "127.0.0.1", "--backend-port", str(port)]
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    log.info("backend pid %d on port %d, log %s", proc.pid, port, log_path)
    try:
        yield proc
    finally:
        stop_group(proc)


def _die_with_parent() -> None:
    """In the child, before exec: should the bench be killed outright (SIGKILL, where no
    ``finally`` runs), the kernel sends the backend SIGTERM and it stops its workers."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        log.warning("backend did not stop in 20 s; killing it")
    # Workers outlive a supervisor that died first: sweep the group either way.
    deadline = time.monotonic() + 10
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def wait_until_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """``/ping`` answers, then one worker has taken the runner lock and started the engine."""
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited with {proc.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"backend not ready in 180 s:\n{_tail(log_path)}")
        if _pings(port) and scan_log(log_path).leaders >= 1:
            return
        time.sleep(0.5)


def _pings(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class LogFacts:
    """What the app log says about the run (app/runtime/leader.py logs the elections)."""

    leaders: int = 0
    leader_changes: int = 0
    leader_pids: set[int] = field(default_factory=set)
    errors: int = 0
    push_failures: int = 0
    tracebacks: int = 0


def scan_log(path: Path) -> LogFacts:
    """Count the JSON log lines of leader elections and trouble; plain lines are
    Reflex's and granian's own, of which only tracebacks matter here."""
    facts = LogFacts()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            facts.tracebacks += "Traceback" in line
            continue
        if not isinstance(record, dict):
            continue
        msg = str(record.get("msg", ""))
        if msg.startswith(LEADER_ACQUIRED):
            facts.leaders += 1
            facts.leader_pids.add(int(record.get("pid", 0)))
        facts.leader_changes += msg.startswith(LEADER_ENDED)
        facts.errors += record.get("level") in ("ERROR", "CRITICAL")
        facts.push_failures += msg.startswith(
            ("UI push failed", "price push to a tab failed", "live bus publish failed")
        )
    return facts


def redis_counters(url: str) -> tuple[float, int]:
    """(CPU seconds, commands processed) of the Redis server: the state manager's cost.
    Server-wide, so other users of this Redis would show up too."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        cpu = client.info("cpu")
        stats = client.info("stats")
    finally:
        client.close()
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], int(stats["total_commands_processed"])


# ---- /proc --------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _all_stats() -> dict[int, list[str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            out[int(entry)] = fields
    return out


def group_members(pgid: int) -> list[int]:
    return [pid for pid, f in _all_stats().items() if int(f[2]) == pgid]


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (the supervisor and its granian workers)."""
    children: dict[int, list[int]] = {}
    for pid, fields in _all_stats().items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User plus system CPU of each live process, in seconds."""
    out = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pids``. Forked workers share pages, so the RSS sum
    counts those once per worker; PSS splits them and is the honest total."""
    rss = pss = 0
    for pid in pids:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return rss / 2**20, pss / 2**20


# ---- the measurement ----------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: an observed value, never an interpolation between two."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _wait_linked(clients: list[ReflexClient], tasks: list[asyncio.Task[None]]) -> None:
    """Until every tab is linked to its user's live state, has failed, or time is up."""
    deadline = time.monotonic() + 30 + 0.5 * len(clients)
    while time.monotonic() < deadline:
        pending = [
            c
            for c, t in zip(clients, tasks, strict=True)
            if not (c.linked.is_set() or c.failed.is_set() or t.done())
        ]
        if not pending:
            return
        await asyncio.sleep(0.1)
    log.warning("%d tabs not linked after the connect timeout", len(pending))


@dataclass
class Usage:
    """Resources over the window: per backend process, Redis, and this process."""

    wall: float
    cpu_by_pid: dict[int, float]
    redis_cpu: float
    redis_commands: int
    own_cpu: float
    rss_mb: float
    pss_mb: float


class UsageMeter:
    """Counters read at the window's start and end; only processes alive at both count."""

    def __init__(self, backend_pid: int, redis_url: str) -> None:
        self.backend_pid = backend_pid
        self.redis_url = redis_url
        self.pids: list[int] = []
        self.cpu0: dict[int, float] = {}
        self.redis0 = (0.0, 0)
        self.own0 = self.t0 = 0.0

    def start(self) -> None:
        self.pids = process_tree(self.backend_pid)
        self.cpu0 = cpu_seconds(self.pids)
        self.redis0 = redis_counters(self.redis_url)
        self.own0 = time.process_time()
        self.t0 = time.time()

    def stop(self) -> Usage:
        wall = time.time() - self.t0
        own = time.process_time() - self.own0
        cpu1 = cpu_seconds(self.pids)
        redis1 = redis_counters(self.redis_url)
        rss, pss = memory_mb(process_tree(self.backend_pid))
        return Usage(
            wall=wall,
            cpu_by_pid={p: cpu1[p] - self.cpu0[p] for p in cpu1 if p in self.cpu0},
            redis_cpu=redis1[0] - self.redis0[0],
            redis_commands=redis1[1] - self.redis0[1],
            own_cpu=own,
            rss_mb=rss,
            pss_mb=pss,
        )


async def measure(plan: Plan, port: int, tokens: list[str], meter: UsageMeter) -> dict[str, Any]:
    """Connect every tab, warm up, then sample for ``plan.seconds``."""
    window, tally = Window(), Tally()
    url = f"ws://127.0.0.1:{port}/_event/?EIO=4&transport=websocket&token="
    clients = [
        ReflexClient(
            url=url + str(uuid.uuid4()),  # each tab its own client token
            origin=f"http://localhost:{port}",
            session_token=tokens[i // TABS_PER_USER],
            window=window,
            tally=tally,
        )
        for i in range(plan.clients)
    ]
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
    lags: list[float] = []
    lag_task = asyncio.create_task(loop_lag(window, lags))
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run(slots)) for c in clients]
    try:
        await _wait_linked(clients, tasks)
        connect_s = time.perf_counter() - started
        linked = sum(c.linked.is_set() for c in clients)
        log.info("%d of %d tabs linked in %.1f s", linked, plan.clients, connect_s)
        await asyncio.sleep(WARMUP_S)
        meter.start()
        window.start = meter.t0
        await asyncio.sleep(plan.seconds)
        window.end = time.time()
        usage = meter.stop()
    finally:
        window.stopping = True
        for task in [*tasks, lag_task]:
            task.cancel()
        await asyncio.gather(*tasks, lag_task, return_exceptions=True)
    lat, newest = sorted(tally.latencies_ms), sorted(tally.newest_ms)
    lags.sort()
    wall = usage.wall
    return {
        "clients": sum(c.receiving for c in clients),
        "clients_linked": linked,
        "connect_s": round(connect_s, 2),
        "seconds": round(wall, 2),
        "updates": tally.updates,
        "updates_per_s": round(tally.updates / wall, 1),
        "quotes": len(lat),
        "quotes_per_s": round(len(lat) / wall, 1),
        "resent_quotes_per_s": round(tally.resent_quotes / wall, 1),
        "symbols_seen": len(tally.symbols_seen),
        "p50_ms": _ms(percentile(lat, 0.50)),
        "p95_ms": _ms(percentile(lat, 0.95)),
        "p99_ms": _ms(percentile(lat, 0.99)),
        "max_ms": _ms(lat[-1] if lat else math.nan),
        "min_ms": _ms(lat[0] if lat else math.nan),
        "newest_quote_p50_ms": _ms(percentile(newest, 0.50)),
        "newest_quote_p95_ms": _ms(percentile(newest, 0.95)),
        "backend_cpu_pct": round(sum(usage.cpu_by_pid.values()) / wall * 100, 1),
        "backend_rss_mb": round(usage.rss_mb, 1),
        "backend_pss_mb": round(usage.pss_mb, 1),
        "backend_processes": len(usage.cpu_by_pid),
        "redis_cpu_pct": round(usage.redis_cpu / wall * 100, 1),
        "redis_commands_per_s": round(usage.redis_commands / wall),
        "client_cpu_pct": round(usage.own_cpu / wall * 100, 1),
        "client_loop_lag_p99_ms": _ms(percentile(lags, 0.99)),
        "client_loop_lag_max_ms": _ms(lags[-1] if lags else math.nan),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "_cpu_by_pid": {p: c / wall * 100 for p, c in usage.cpu_by_pid.items()},
    }


def _ms(value: float) -> float | None:
    """JSON has no NaN: an empty sample set is ``null``."""
    return None if math.isnan(value) else round(value, 1)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so the backend is stopped and
    the database dropped on the way out instead of being left behind. Further SIGTERMs
    are ignored meanwhile, so they cannot cut that clean-up short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.warning("terminated; cleaning up")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Set up, measure, tear down; the JSON the runner prints."""
    plan, quick, keep_log = parse_args(argv or [])
    with sigterm_unwinds():
        return _run(plan, quick, keep_log)


def _run(plan: Plan, quick: bool, keep_log: Path | None) -> dict[str, Any]:
    redis_url = f"{REDIS_BASE_URL}/{REDIS_DB}"
    port = free_port()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp, fresh_database() as db_url:
        flush_redis(redis_url)
        log_path = Path(tmp) / "app.log"
        try:
            tokens = asyncio.run(seed(db_url, plan))
            env = backend_env(plan, db_url, redis_url, port)
            with backend(env, port, log_path) as proc:
                wait_until_ready(proc, port, log_path)
                startup_s = time.perf_counter() - began
                log.info("backend ready after %.1f s; connecting %d tabs", startup_s, plan.clients)
                result = asyncio.run(measure(plan, port, tokens, UsageMeter(proc.pid, redis_url)))
                facts = scan_log(log_path)
                if facts.errors or facts.tracebacks:
                    log.warning("app log tail:\n%s", _tail(log_path))
        finally:
            flush_redis(redis_url)
            if keep_log is not None and log_path.exists():
                shutil.copyfile(log_path, keep_log)
    cpu_by_pid: dict[int, float] = result.pop("_cpu_by_pid")
    result["errors"] += facts.errors + facts.tracebacks
    p95 = result["p95_ms"]
    return {
        "benchmark": "ui",
        "quick": quick,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "workers": plan.workers,
        "symbols": plan.symbols,
        "users": plan.users,
        "clients_requested": plan.clients,
        **result,
        "backend_cpu_pct_by_process": sorted(
            (round(v, 1) for v in cpu_by_pid.values()), reverse=True
        ),
        "leader_cpu_pct": round(sum(cpu_by_pid.get(p, 0.0) for p in facts.leader_pids), 1),
        "leaders": facts.leaders,
        "leader_changes": facts.leader_changes,
        "app_log_errors": facts.errors,
        "push_failures": facts.push_failures,
        "ui_push_interval_s": push_interval(env),
        "market_tick_interval_s": float(MARKET_TICK_INTERVAL),
        "warmup_s": WARMUP_S,
        "startup_s": round(startup_s, 1),
        "goal_p95_ms": GOAL_P95_MS,
        "goal_met": p95 is not None and p95 <= GOAL_P95_MS,
        "total_s": round(time.perf_counter() - began, 1),
    }
