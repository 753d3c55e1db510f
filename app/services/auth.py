"""Sign-in for local accounts, and cookie sessions.

This is the small interface the OAuth issue extends: the web layer only calls
``authenticate``, ``create_session``, ``resolve_session`` and ``revoke_session``.
The cookie carries a random token; the DB keeps only its SHA-256, so a leaked
database does not hand out live sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.common import utcnow
from app.models.users import User, UserSession

log = logging.getLogger(__name__)

SESSION_COOKIE = "tw_session"
_hasher = PasswordHasher()  # argon2id with the library's current recommended costs
# Verified against when the e-mail is unknown, so timing does not reveal accounts.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
_LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthFailed(Exception):
    """Wrong e-mail or password, or a disabled account: one answer for all three."""


class RateLimited(Exception):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LoginThrottle:
    """Failed sign-ins per account and per IP within a sliding window.

    In-process memory: with several workers each keeps its own count, which
    still bounds guessing to workers × limit per window. The accounts issue moves
    this to Redis.
    """

    def __init__(
        self, max_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self._clock() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def check(self, *keys: str) -> None:
        if any(len(self._recent(k)) >= self.max_failures for k in keys):
            raise RateLimited()

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for k in keys:
            self._recent(k).append(now)

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._failures.pop(k, None)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    stmt = select(User).where(func.lower(User.email) == normalize_email(email))
    return (await session.exec(stmt)).first()


async def create_local_user(
    session: AsyncSession,
    email: str,
    password: str,
    display_name: str = "",
    language: str = "ko",
    role: str = "user",
) -> User:
    user = User(
        email=normalize_email(email),
        display_name=display_name or email.split("@")[0],
        password_hash=await asyncio.to_thread(hash_password, password),
        language=language,
        role=role,
    )
    session.add(user)
    await session.commit()
    await session.refresh(user)
    return user


async def authenticate(
    session: AsyncSession, email: str, password: str, throttle: LoginThrottle, ip: str
) -> User:
    """Check a password: ``RateLimited`` or ``AuthFailed``, never saying which part was wrong."""
    email_n = normalize_email(email)
    keys = (f"acct:{email_n}", f"ip:{ip}")
    throttle.check(*keys)
    user = await get_user_by_email(session, email_n)
    ok = verify_password(
        user.password_hash if user and user.password_hash else _DUMMY_HASH, password
    )
    if not (user and ok and user.is_active and user.password_hash):
        throttle.failed(*keys)
        log.info("sign-in failed", extra={"ip": ip})
        raise AuthFailed()
    throttle.succeeded(f"acct:{email_n}")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(hash_password, password)
        session.add(user)
        await session.commit()
    return user


async def create_session(
    session: AsyncSession, user: User, ttl: timedelta, user_agent: str = "", ip: str = ""
) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    assert user.id is not None
    session.add(
        UserSession(
            token_hash=hash_token(token),
            user_id=user.id,
            created_at=now,
            expires_at=now + ttl,
            last_used_at=now,
            user_agent=user_agent[:400],
            ip=ip[:64],
        )
    )
    await session.commit()
    return token


async def resolve_session(
    session: AsyncSession, token: str | None, now: datetime | None = None
) -> User | None:
    """The signed-in user for a cookie token, or None if it is unknown, expired or revoked."""
    if not token:
        return None
    now = now or utcnow()
    row = (
        await session.exec(select(UserSession).where(UserSession.token_hash == hash_token(token)))
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if now - row.last_used_at > _LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        await session.commit()
    return user


async def revoke_session(session: AsyncSession, token: str | None) -> None:
    if not token:
        return
    row = (
        await session.exec(select(UserSession).where(UserSession.token_hash == hash_token(token)))
    ).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        await session.commit()
