"""The runner leader lock: of several workers, only the holder streams, evaluates and sends.

With Redis configured Reflex forks several workers and each runs every lifespan
task. Without a lock each would open its own broker streams, fire every rule and
send every alert. So every runner-enabled worker runs a :class:`LeaderElection`,
and only the worker holding the lock runs the engine (:mod:`app.runtime.engine`).

Backends (``LEADER_LOCK``):

* ``postgres``: a session-level advisory lock held on a dedicated connection. If the
  holder dies its connection closes and PostgreSQL releases the lock at once. The
  holder pings that connection every ``lease/3`` seconds; a failed or slow ping
  means the lock may be gone, and the engine is stopped. The fencing token is the
  cluster's transaction id at acquisition (``txid_current()``), which only grows.
* ``redis``: ``SET NX PX`` with a lease, a fencing token from ``INCR``, renewed at
  ``lease/3`` by a compare-and-pexpire script, released by compare-and-delete.
  The holder counts its lease from the moment it *sent* the last successful renew
  and stops the engine once two thirds of it are gone without a renewal, so it
  has stopped before the key can expire and another worker can take it.
* ``local``: SQLite is one process by construction (one writer, a file on one
  machine), and ``none`` is the operator saying there is one runner; both always
  lead, with the role ``single``.

``auto`` picks postgres for a PostgreSQL database, else redis when ``REDIS_URL`` is
set, else local. :func:`current_leadership` tells health and metrics where this
process stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from app.models.common import utcnow

log = logging.getLogger(__name__)

Role = Literal["leader", "standby", "single", "off"]
Backend = Literal["postgres", "redis", "local", "none"]

DEFAULT_LOCK_NAME = "tickwatch:runner"
RETRY_SECONDS = 1.0
"""A standby tries to take the lock this often: a dead holder's successor starts
within ``RETRY_SECONDS`` (PostgreSQL) or ``lease + RETRY_SECONDS`` (Redis)."""
STOP_TIMEOUT = 5.0
"""Seconds a stopping engine gets to finish its cancellation before we move on."""


class LeaderConfigError(ValueError):
    """The lock settings cannot work (a start-up error, not a silent single runner)."""


@dataclass(frozen=True, slots=True)
class LeaderStatus:
    """Where this process stands; ``role`` is ``off`` where no runner is configured."""

    role: Role
    backend: Backend
    since: datetime | None
    fencing_token: int | None
    holder_id: str


def new_holder_id() -> str:
    """Unique per lock instance, readable in logs: which machine, which process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_status = LeaderStatus("off", "none", None, None, new_holder_id())


def current_leadership() -> LeaderStatus:
    """This process's leadership, for ``/api/health`` and ``/metrics``."""
    return _status


def _set_status(status: LeaderStatus) -> None:
    global _status
    _status = status


class LeaderLock(Protocol):
    backend: Backend
    holder_id: str
    takeover_grace: float
    """Seconds a new holder waits, still checking the lock, before its engine starts:
    how long a predecessor that lost the lock without knowing may take to notice."""

    @property
    def token(self) -> int | None: ...

    async def try_acquire(self) -> bool:
        """Take the lock if free; ``False`` if another holds it or the backend is down."""
        ...

    async def keep(self) -> bool:
        """Renew or verify the lock; ``False`` means it is lost or may be lost."""
        ...

    async def release(self) -> None:
        """Give the lock up if still held (never raises)."""
        ...

    async def close(self) -> None: ...


# ---- PostgreSQL ---------------------------------------------------------------------------


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def pg_conninfo(database_url: str) -> str:
    """A libpq URL from the app's SQLAlchemy URL (``postgresql+psycopg://`` and kin)."""
    from sqlalchemy.engine import make_url

    u = make_url(database_url)
    if u.get_backend_name() != "postgresql":
        raise LeaderConfigError("the postgres leader lock needs a PostgreSQL DATABASE_URL")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


class PgAdvisoryLock:
    """A session-level advisory lock on a connection of its own, held while leading."""

    backend: Backend = "postgres"

    def __init__(
        self,
        database_url: str,
        *,
        name: str = DEFAULT_LOCK_NAME,
        timeout: float = 2.0,
        holder_id: str | None = None,
    ) -> None:
        self.conninfo = pg_conninfo(database_url)
        self.key = advisory_key(name)
        self.timeout = timeout
        # PostgreSQL frees the lock the moment it drops a session, also one whose process
        # is alive (a network cut, a server restart, an admin's kill): that holder only
        # notices at its next ping (every ``timeout``, answered within ``timeout``).
        self.takeover_grace = 2 * timeout + 0.5
        self.holder_id = holder_id or new_holder_id()
        self._conn: object | None = None
        self._token: int | None = None

    @property
    def token(self) -> int | None:
        return self._token

    async def _connect(self) -> object:
        import psycopg

        # Keepalives make the server notice a vanished holder (a cut cable, not only a
        # closed socket) and free the lock; the holder's own ping stops it sooner.
        return await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=max(1, int(self.timeout)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
            application_name=f"tickwatch-leader {self.holder_id}"[:63],  # who holds it, in pg_locks
        )

    async def _drop(self) -> None:
        conn, self._conn, self._token = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timeout)  # type: ignore[attr-defined]

    async def try_acquire(self) -> bool:
        try:
            if self._conn is None:
                self._conn = await asyncio.wait_for(self._connect(), self.timeout * 2)
            conn = self._conn
            cur = await asyncio.wait_for(
                conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)),  # type: ignore[attr-defined]
                self.timeout,
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                return False
            cur = await conn.execute("SELECT txid_current()")  # type: ignore[attr-defined]
            row = await cur.fetchone()
            self._token = int(row[0]) if row else None
            return True
        except Exception as exc:
            log.warning("leader lock (postgres): cannot try the lock: %r", exc)
            await self._drop()
            return False

    async def keep(self) -> bool:
        conn = self._conn
        if conn is None or self._token is None:
            return False
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), self.timeout)  # type: ignore[attr-defined]
            return True
        except Exception as exc:
            log.error("leader lock (postgres): lock connection lost: %r", exc)
            await self._drop()
            return False

    async def release(self) -> None:
        conn = self._conn
        if conn is not None and self._token is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)),  # type: ignore[attr-defined]
                    self.timeout,
                )
        self._token = None

    async def close(self) -> None:
        await self.release()
        await self._drop()


# ---- Redis --------------------------------------------------------------------------------

_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisLeaseLock:
    """A leased Redis key holding ``holder|token``; the token comes from ``INCR``."""

    backend: Backend = "redis"

    def __init__(
        self,
        redis_url: str,
        *,
        name: str = DEFAULT_LOCK_NAME,
        lease: float = 6.0,
        holder_id: str | None = None,
        client: object | None = None,
    ) -> None:
        if lease <= 0:
            raise LeaderConfigError("the lease must be positive")
        import redis.asyncio as redis

        self.key = f"{name}:leader"
        # None needed: a holder stops itself before its key can expire (see ``_margin``).
        self.takeover_grace = 0.0
        self.fence_key = f"{name}:fence"
        self.lease = lease
        self.holder_id = holder_id or new_holder_id()
        self._client = client or redis.Redis.from_url(
            redis_url, socket_timeout=lease / 3, socket_connect_timeout=lease / 3
        )
        self._token: int | None = None
        self._valid_until = 0.0
        """Monotonic time after which the lease may have run out on the server."""

    @property
    def token(self) -> int | None:
        return self._token

    def _value(self) -> str:
        return f"{self.holder_id}|{self._token}"

    def _margin(self) -> float:
        """The part of the lease kept back: time for the engine to stop before expiry."""
        return self.lease / 3

    async def try_acquire(self) -> bool:
        sent = time.monotonic()
        try:
            token = await asyncio.wait_for(
                self._client.eval(  # type: ignore[attr-defined]
                    _ACQUIRE, 2, self.key, self.fence_key, self.holder_id, int(self.lease * 1000)
                ),
                self.lease / 3,
            )
        except Exception as exc:
            log.warning("leader lock (redis): cannot try the lock: %r", exc)
            return False
        if not token:
            return False
        self._token = int(token)
        self._valid_until = sent + self.lease - self._margin()
        return True

    async def keep(self) -> bool:
        if self._token is None:
            return False
        sent = time.monotonic()
        budget = self._valid_until - sent
        if budget <= 0:
            log.error("leader lock (redis): lease not renewed in time; giving it up")
            self._token = None
            return False
        try:
            ok = await asyncio.wait_for(
                self._client.eval(  # type: ignore[attr-defined]
                    _RENEW, 1, self.key, self._value(), int(self.lease * 1000)
                ),
                budget,
            )
        except Exception as exc:
            log.error("leader lock (redis): renew failed: %r", exc)
            self._token = None
            return False
        if not ok:
            log.error("leader lock (redis): the lock is held by another holder now")
            self._token = None
            return False
        self._valid_until = sent + self.lease - self._margin()
        return True

    def valid_for(self) -> float:
        """Seconds this holder may still act without a renewal (0 when not holding)."""
        if self._token is None:
            return 0.0
        return max(0.0, self._valid_until - time.monotonic())

    async def release(self) -> None:
        if self._token is None:
            return
        value, self._token = self._value(), None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._client.eval(_RELEASE, 1, self.key, value),  # type: ignore[attr-defined]
                self.lease / 3,
            )

    async def close(self) -> None:
        await self.release()
        with contextlib.suppress(Exception):
            await self._client.aclose()  # type: ignore[attr-defined]


# ---- single process -----------------------------------------------------------------------


class LocalLock:
    """SQLite, or ``LEADER_LOCK=none``: one runner by construction, always the leader."""

    def __init__(self, backend: Backend = "local", holder_id: str | None = None) -> None:
        self.backend: Backend = backend
        self.holder_id = holder_id or new_holder_id()
        self.takeover_grace = 0.0
        self._held = False

    @property
    def token(self) -> int | None:
        return None

    async def try_acquire(self) -> bool:
        self._held = True
        return True

    async def keep(self) -> bool:
        return self._held

    async def release(self) -> None:
        self._held = False

    async def close(self) -> None:
        self._held = False


def choose_backend(mode: str, database_url: str, redis_url: str) -> Backend:
    from app.db import is_sqlite

    sqlite = is_sqlite(database_url)
    if mode == "auto":
        if not sqlite:
            return "postgres"
        return "redis" if redis_url else "local"
    if mode == "postgres" and sqlite:
        raise LeaderConfigError("LEADER_LOCK=postgres needs a PostgreSQL DATABASE_URL")
    if mode == "redis" and not redis_url:
        raise LeaderConfigError("LEADER_LOCK=redis needs REDIS_URL")
    if mode not in ("postgres", "redis", "none"):
        raise LeaderConfigError(f"unknown LEADER_LOCK {mode!r}")
    return mode  # type: ignore[return-value]


def build_lock(
    mode: str,
    database_url: str,
    redis_url: str,
    *,
    lease: float,
    name: str = DEFAULT_LOCK_NAME,
) -> LeaderLock:
    backend = choose_backend(mode, database_url, redis_url)
    if backend == "postgres":
        return PgAdvisoryLock(database_url, name=name, timeout=max(0.5, lease / 3))
    if backend == "redis":
        return RedisLeaseLock(redis_url, name=name, lease=lease)
    return LocalLock(backend)


# ---- the election loop --------------------------------------------------------------------

Lead = Callable[[], Awaitable[None]]


class LeaderElection:
    """Runs ``lead`` while holding the lock; stands by and retries while another holds it.

    ``lead`` is the engine: a coroutine that runs until cancelled. It is cancelled
    (and awaited) the moment a renewal fails, before the lock is given up, so two
    engines never overlap on a healthy lock. An engine that stops on its own (a
    crash) gives the lock up so another worker can try; this one tries again too.
    """

    def __init__(
        self,
        lock: LeaderLock,
        *,
        lease: float = 6.0,
        retry: float = RETRY_SECONDS,
        publish: bool = True,
    ) -> None:
        self.lock = lock
        self.check_every = lease / 3
        self.retry = retry
        self.publish = publish
        self.single = isinstance(lock, LocalLock)
        self.terms = 0
        """How many times this process became leader (tests, metrics)."""
        self.leading = asyncio.Event()
        self._status = LeaderStatus("standby", lock.backend, None, None, lock.holder_id)
        self._publish(self._status)

    @property
    def status(self) -> LeaderStatus:
        return self._status

    def _publish(self, status: LeaderStatus) -> None:
        self._status = status
        if self.publish:
            _set_status(status)

    async def run(self, lead: Lead) -> None:
        """Until cancelled: the lock is released and the engine stopped on the way out."""
        try:
            while True:
                if await self.lock.try_acquire() and await self._grace():
                    await self._lead(lead)
                    await asyncio.sleep(self.retry)  # let another worker have a go
                else:
                    await asyncio.sleep(self.retry)
        finally:
            with contextlib.suppress(Exception):
                await self.lock.close()
            self.leading.clear()
            self._publish(replace(self._status, role="off", since=None, fencing_token=None))

    async def _grace(self) -> bool:
        """Hold the lock without leading for ``takeover_grace``: a predecessor cut off
        from the lock stops its engine meanwhile. ``False`` if the lock was lost."""
        grace = self.lock.takeover_grace
        if grace <= 0:
            return True
        log.warning(
            "runner lock taken; engine starts in %.1f s: holder=%s", grace, self.lock.holder_id
        )
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(self.check_every, left))
            if not await self.lock.keep():
                await self.lock.release()
                return False
        return True

    async def _lead(self, lead: Lead) -> None:
        role: Role = "single" if self.single else "leader"
        self.terms += 1
        self._publish(
            LeaderStatus(role, self.lock.backend, utcnow(), self.lock.token, self.lock.holder_id)
        )
        log.warning(
            "runner leadership acquired: backend=%s token=%s holder=%s",
            self.lock.backend,
            self.lock.token,
            self.lock.holder_id,
        )
        self.leading.set()
        task = asyncio.create_task(lead(), name="leader-engine")
        reason = "cancelled"
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.check_every)
                if done:
                    reason = "engine stopped"
                    if not task.cancelled() and task.exception() is not None:
                        log.error("engine failed; giving up leadership", exc_info=task.exception())
                    break
                if not await self.lock.keep():
                    reason = "lock lost"
                    break
        finally:
            self.leading.clear()
            await _stop(task)
            await self.lock.release()
            self._publish(
                LeaderStatus("standby", self.lock.backend, None, None, self.lock.holder_id)
            )
            log.warning("runner leadership ended (%s): holder=%s", reason, self.lock.holder_id)


async def _stop(task: asyncio.Task[None]) -> None:
    if task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if not done:
        # Waiting longer would keep the lock from a healthy successor forever.
        log.error("engine did not stop within %.0f s of losing leadership", STOP_TIMEOUT)
    elif not task.cancelled() and task.exception() is not None:
        log.error("engine stopped with an error", exc_info=task.exception())


__all__ = [
    "LeaderConfigError",
    "LeaderElection",
    "LeaderLock",
    "LeaderStatus",
    "LocalLock",
    "PgAdvisoryLock",
    "RedisLeaseLock",
    "advisory_key",
    "build_lock",
    "choose_backend",
    "current_leadership",
    "new_holder_id",
]
