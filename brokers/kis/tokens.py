"""KIS access tokens: issued rarely, cached until they expire, never logged.

``POST /oauth2/tokenP`` is limited to one issue a minute per app key (``EGW00133``
past that), and every issue sends the account holder a KakaoTalk message. So a
token is reused from the :class:`TokenStore` (encrypted in the vault, by the app
layer) until shortly before it expires, one issue is shared by every concurrent
caller, and a re-issue needed within a minute of the last one is refused here
(``RateLimited`` with the seconds to wait) instead of hammering the endpoint.

The expiry is ``access_token_token_expired`` (KST), not ``expires_in``: misreading
the latter has caused re-issue loops in other clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx

from brokers.base import AuthExpired, BrokerUnavailable, RateLimited
from brokers.kis.auth import CredentialsRejected
from brokers.kis.clock import Clock, SystemClock
from brokers.kis.errors import TOKEN_ISSUE_LIMIT, MalformedResponse
from brokers.kis.parsing import decode_json, parse_status, parse_token_reply

log = logging.getLogger(__name__)

__all__ = ["CachedToken", "MemoryTokenStore", "TokenManager", "TokenStore"]

ISSUE_PATH = "/oauth2/tokenP"
REVOKE_PATH = "/oauth2/revokeP"
MIN_ISSUE_INTERVAL = timedelta(seconds=60)
DEFAULT_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CachedToken:
    """An access token with its expiry and the time we were given it (both UTC).

    ``issued_at`` travels with the token so that a process that loads it from the
    store also knows when the last issue happened (the one-a-minute rule is per
    app key, not per process).
    """

    access_token: str = field(repr=False)
    expires_at: datetime
    issued_at: datetime

    def __repr__(self) -> str:  # a credential: never in a log line
        return (
            f"CachedToken(access_token='***', expires_at={self.expires_at.isoformat()}, "
            f"issued_at={self.issued_at.isoformat()})"
        )

    __str__ = __repr__

    def valid_at(self, now: datetime, margin: timedelta = DEFAULT_MARGIN) -> bool:
        """Usable at ``now`` with ``margin`` to spare (a call must not outlive it)."""
        return now < self.expires_at - margin

    def to_json(self) -> str:
        """The stored form (the store encrypts it)."""
        return json.dumps(
            {
                "access_token": self.access_token,
                "expires_at": self.expires_at.isoformat(),
                "issued_at": self.issued_at.isoformat(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CachedToken:
        """Inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            token, expires, issued = data["access_token"], data["expires_at"], data["issued_at"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a stored KIS token") from None
        if not (isinstance(token, str) and token and isinstance(expires, str)):
            raise ValueError("not a stored KIS token")
        if not isinstance(issued, str):
            raise ValueError("not a stored KIS token")
        expires_at = datetime.fromisoformat(expires)
        issued_at = datetime.fromisoformat(issued)
        if expires_at.utcoffset() is None or issued_at.utcoffset() is None:
            raise ValueError("stored KIS token times are not timezone-aware")
        return cls(token, expires_at.astimezone(UTC), issued_at.astimezone(UTC))


class TokenStore(Protocol):
    """Where a token outlives the process. The app layer's one encrypts it in the vault."""

    async def load(self) -> CachedToken | None: ...

    async def save(self, token: CachedToken) -> None: ...

    async def clear(self) -> None: ...


class MemoryTokenStore:
    """A store in memory: for tests and for tools that run once."""

    def __init__(self, token: CachedToken | None = None) -> None:
        self.token = token
        self.saves = 0

    def __repr__(self) -> str:
        return f"MemoryTokenStore(token={self.token!r})"

    async def load(self) -> CachedToken | None:
        return self.token

    async def save(self, token: CachedToken) -> None:
        self.token = token
        self.saves += 1

    async def clear(self) -> None:
        self.token = None


def key_id(app_key: str) -> str:
    """A log-safe name for an app key."""
    return hashlib.sha256(app_key.encode("utf-8")).hexdigest()[:8]


class TokenManager:
    """Hands out a valid token, issuing one only when neither memory nor the store has one."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        app_key: str,
        app_secret: str,
        *,
        store: TokenStore | None = None,
        clock: Clock | None = None,
        margin: timedelta = DEFAULT_MARGIN,
        min_issue_interval: timedelta = MIN_ISSUE_INTERVAL,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._app_key = app_key
        self._app_secret = app_secret
        self.store: TokenStore = store if store is not None else MemoryTokenStore()
        self.clock: Clock = clock or SystemClock()
        self.margin = margin
        self.min_issue_interval = min_issue_interval
        self.key_id = key_id(app_key)
        self._current: CachedToken | None = None
        self._rejected: str | None = None  # the last token KIS called expired
        self._last_issue: datetime | None = None
        self._not_before: datetime | None = None  # after EGW00133
        self._lock = asyncio.Lock()
        self.issues = 0

    def __repr__(self) -> str:
        return f"TokenManager(app_key=<{self.key_id}>, issues={self.issues})"

    async def token(self) -> str:
        """A token valid for at least ``margin``; loads or issues one when needed."""
        current = self._current
        if current is not None and current.valid_at(self.clock.now(), self.margin):
            return current.access_token
        async with self._lock:  # concurrent callers share one load / one issue
            now = self.clock.now()
            current = self._current
            if current is not None and current.valid_at(now, self.margin):
                return current.access_token
            stored = await self._load()
            if (
                stored is not None
                and stored.access_token != self._rejected
                and stored.valid_at(now, self.margin)
            ):
                self._current = stored
                return stored.access_token
            if stored is not None and (
                self._last_issue is None or stored.issued_at > self._last_issue
            ):
                self._last_issue = stored.issued_at  # issued by another process
            token = await self._issue(now)
            self._current = token
            await self._save(token)
            return token.access_token

    async def expired(self, token: str) -> None:
        """KIS said ``token`` is expired (EGW00123): forget it here and in the store."""
        async with self._lock:
            self._rejected = token
            if self._current is not None and self._current.access_token == token:
                self._current = None
            stored = await self._load()
            if stored is not None and stored.access_token == token:
                try:
                    await self.store.clear()
                except Exception as exc:  # a cache failure must not stop trading
                    log.warning("KIS token store clear failed: %s", type(exc).__name__)
        log.info("KIS token of app key %s reported expired; a new one will be issued", self.key_id)

    async def revoke(self) -> bool:
        """Revoke the current token at KIS (``/oauth2/revokeP``) and forget it."""
        async with self._lock:
            current = self._current or await self._load()
            self._current = None
            try:
                await self.store.clear()
            except Exception as exc:
                log.warning("KIS token store clear failed: %s", type(exc).__name__)
            if current is None:
                return False
            try:
                response = await self._client.post(
                    f"{self._base_url}{REVOKE_PATH}",
                    content=json.dumps(
                        {
                            "appkey": self._app_key,
                            "appsecret": self._app_secret,
                            "token": current.access_token,
                        }
                    ).encode("utf-8"),
                    headers={"content-type": "application/json; charset=utf-8"},
                )
            except httpx.HTTPError as exc:
                log.warning("KIS token revoke failed: %s", type(exc).__name__)
                return False
            ok = response.status_code == 200
            log.info("KIS token of app key %s revoked: %s", self.key_id, ok)
            return ok

    # --- internals -----------------------------------------------------------------

    async def _load(self) -> CachedToken | None:
        try:
            return await self.store.load()
        except Exception as exc:  # a broken cache means "no cached token", not an outage
            log.warning("KIS token store load failed: %s", type(exc).__name__)
            return None

    async def _save(self, token: CachedToken) -> None:
        try:
            await self.store.save(token)
        except Exception as exc:
            log.warning(
                "KIS token store save failed (%s): the next process will issue again",
                type(exc).__name__,
            )

    def _wait_before_issue(self, now: datetime) -> float:
        waits = [0.0]
        if self._last_issue is not None:
            waits.append((self._last_issue + self.min_issue_interval - now).total_seconds())
        if self._not_before is not None:
            waits.append((self._not_before - now).total_seconds())
        return max(waits)

    async def _issue(self, now: datetime) -> CachedToken:
        wait = self._wait_before_issue(now)
        if wait > 0:
            log.warning(
                "KIS token of app key %s needed again %.0f s too early; not issuing",
                self.key_id,
                wait,
            )
            raise RateLimited(
                f"KIS allows one token issue a minute; retry in {wait:.0f} s",
                retry_after=min(wait, self.min_issue_interval.total_seconds()),
            )
        try:
            response = await self._client.post(
                f"{self._base_url}{ISSUE_PATH}",
                content=json.dumps(
                    {
                        "grant_type": "client_credentials",
                        "appkey": self._app_key,
                        "appsecret": self._app_secret,
                    }
                ).encode("utf-8"),
                headers={"content-type": "application/json; charset=utf-8"},
            )
        except httpx.TimeoutException as exc:
            raise BrokerUnavailable("KIS token issue timed out") from exc
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(f"KIS unreachable: {type(exc).__name__}") from exc
        try:
            body = decode_json(response.content)
        except MalformedResponse:
            if response.status_code >= 500:
                raise BrokerUnavailable(f"KIS token issue: HTTP {response.status_code}") from None
            raise
        if isinstance(body, dict) and ("error_code" in body or "rt_cd" in body):
            status = parse_status(body)
            if status.code == TOKEN_ISSUE_LIMIT:
                retry = self.min_issue_interval.total_seconds()
                if self._last_issue is not None:
                    elapsed = (now - self._last_issue).total_seconds()
                    retry = min(retry, max(1.0, retry - elapsed))
                self._not_before = now + timedelta(seconds=retry)
                log.warning("KIS refused a token issue (EGW00133); next try in %.0f s", retry)
                raise RateLimited("KIS token issue limit (EGW00133)", retry_after=retry)
            if not status.ok:
                if response.status_code >= 500:
                    raise BrokerUnavailable(f"KIS token issue failed: {status.code}")
                raise CredentialsRejected(f"{status.code} {status.message}".strip())
        if response.status_code != 200:
            if response.status_code >= 500:
                raise BrokerUnavailable(f"KIS token issue: HTTP {response.status_code}")
            raise AuthExpired(f"KIS token issue refused: HTTP {response.status_code}")
        reply = parse_token_reply(body, now)
        self._last_issue = now
        self._rejected = None if self._rejected != reply.access_token else self._rejected
        self.issues += 1
        log.info(
            "KIS access token issued for app key %s, valid until %s",
            self.key_id,
            reply.expires_at.isoformat(),
        )
        return CachedToken(reply.access_token, reply.expires_at, now)
