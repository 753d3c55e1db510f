"""KIS access tokens cached in the vault, so a restart does not issue a new one.

KIS allows one token issue a minute per app key and sends the account holder a
KakaoTalk message for every issue, while a token stays valid for 24 hours. So the
token ``brokers.kis.tokens.TokenManager`` receives is kept here, encrypted like any
other secret (AES-256-GCM, bound to owner table, row, user and field), and every
process (the runner, a restarted runner, a web worker) reuses it until it expires.

The stored value is JSON: the token, its expiry and issue time, and a digest of the
app key it was issued for. A token is only returned for the same app key, so a user
who replaces the key of an account never gets the old key's token back.

Anything wrong with the cached value (missing, tampered, written under another key
or user) is a cache miss: the adapter issues a new token. A cache never stops trading.

Two owners:

* :class:`VaultTokenStore` - a user's account: the ``broker_credentials`` row, field
  ``access_token``, next to the account's app key and secret. Deleting the account
  (which deletes every secret of the row) deletes the token with it.
* :class:`ServiceTokenStore` - the operator's service key for shared market data
  (``KIS_SERVICE_APP_KEY``), which belongs to no account row. See its docstring for
  the owner id scheme.
"""

from __future__ import annotations

import hashlib
import json
import logging

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.models.users import User
from app.models.vault import BrokerCredential, VaultSecret
from app.services import vault
from app.vault_keys import KeyRing, VaultError
from brokers.kis.tokens import CachedToken

log = logging.getLogger(__name__)

__all__ = [
    "ACCESS_TOKEN_FIELD",
    "SERVICE_OWNER_TABLE",
    "ServiceTokenStore",
    "VaultTokenStore",
    "service_owner_id",
]

ACCESS_TOKEN_FIELD = "access_token"
CREDENTIAL_OWNER_TABLE = "broker_credentials"
SERVICE_OWNER_TABLE = "kis_service_keys"


def _fingerprint(app_key: str) -> str:
    return hashlib.sha256(b"tickwatch-kis-app-key:" + app_key.encode("utf-8")).hexdigest()[:32]


def service_owner_id(app_key: str) -> int:
    """The vault owner id of a service key: 31 bits of a digest of the key.

    Positive and below 2**31 so it fits the ``INTEGER`` owner_id column on both
    databases.
    """
    digest = hashlib.sha256(b"tickwatch-kis-service:" + app_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def _encode(token: CachedToken, app_key: str) -> str:
    return json.dumps(
        {"app_key": _fingerprint(app_key), "token": token.to_json()}, separators=(",", ":")
    )


def _decode(value: str, app_key: str, where: str) -> CachedToken | None:
    try:
        data = json.loads(value)
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            raise ValueError("not a cached token")
        if data.get("app_key") != _fingerprint(app_key):
            log.info("cached KIS token of %s was issued for another app key; ignored", where)
            return None
        return CachedToken.from_json(data["token"])
    except ValueError:
        log.warning("cached KIS token of %s is unreadable; ignored", where)
        return None


async def _delete_field(session: AsyncSession, owner_table: str, owner_id: int) -> None:
    await session.exec(  # type: ignore[call-overload]
        delete(VaultSecret).where(
            col(VaultSecret.owner_table) == owner_table,
            col(VaultSecret.owner_id) == owner_id,
            col(VaultSecret.field) == ACCESS_TOKEN_FIELD,
        )
    )


async def _load(
    owner_table: str, owner_id: int, user_id: int, app_key: str, ring: KeyRing | None
) -> CachedToken | None:
    where = f"{owner_table}#{owner_id}"
    async with db.session() as s:
        try:
            values = await vault.read(
                s, owner_table, owner_id, user_id, [ACCESS_TOKEN_FIELD], ring=ring
            )
        except vault.VaultSecretMissing:
            return None
        except VaultError as exc:  # tampered, moved, or written for another user: a miss
            log.warning("cached KIS token of %s does not decrypt (%s); ignored", where, exc.code)
            return None
    return _decode(values[ACCESS_TOKEN_FIELD], app_key, where)


async def _save(
    session: AsyncSession,
    owner_table: str,
    owner_id: int,
    user_id: int,
    token: CachedToken,
    app_key: str,
    ring: KeyRing | None,
) -> None:
    # Replace rather than update: a row left by another user (see ServiceTokenStore)
    # cannot be updated under this user's associated data.
    await _delete_field(session, owner_table, owner_id)
    await vault.put(
        session,
        owner_table,
        owner_id,
        user_id,
        {ACCESS_TOKEN_FIELD: _encode(token, app_key)},
        ring=ring,
    )
    await session.commit()


class VaultTokenStore:
    """The token of one user's KIS account (a ``BrokerCredential`` row).

    ``user_id`` must be the row's owner: it is part of the associated data, and a
    store built for another user finds nothing (and writes nothing).
    """

    def __init__(
        self, credential_id: int, user_id: int, app_key: str, *, ring: KeyRing | None = None
    ) -> None:
        self.credential_id = credential_id
        self.user_id = user_id
        self._app_key = app_key
        self._ring = ring

    def __repr__(self) -> str:
        return f"VaultTokenStore(credential_id={self.credential_id}, user_id={self.user_id})"

    async def _owned(self, session: AsyncSession) -> bool:
        row = await session.get(BrokerCredential, self.credential_id)
        return row is not None and row.user_id == self.user_id

    async def load(self) -> CachedToken | None:
        async with db.session() as s:
            if not await self._owned(s):
                return None
        return await _load(
            CREDENTIAL_OWNER_TABLE, self.credential_id, self.user_id, self._app_key, self._ring
        )

    async def save(self, token: CachedToken) -> None:
        async with db.session() as s:
            if not await self._owned(s):
                log.warning(
                    "KIS token not cached: credential %d is gone or not user %d's",
                    self.credential_id,
                    self.user_id,
                )
                return
            await _save(
                s,
                CREDENTIAL_OWNER_TABLE,
                self.credential_id,
                self.user_id,
                token,
                self._app_key,
                self._ring,
            )

    async def clear(self) -> None:
        async with db.session() as s:
            await _delete_field(s, CREDENTIAL_OWNER_TABLE, self.credential_id)
            await s.commit()


class ServiceTokenStore:
    """The token of the operator's service key, which has no account row.

    Owner: ``owner_table`` ``kis_service_keys``, ``owner_id`` = :func:`service_owner_id`
    (a 31-bit digest of the app key). Why a digest rather than a fixed id such as 0:

    * with several service keys (``KIS_SERVICE_MAX_SESSIONS`` > 1) each has its own slot;
    * replacing the key in the environment moves to a new slot, so the old key's token
      is never tried with the new key (and the old row is simply never read again);
    * the key itself is not written anywhere in clear;
    * a digest collision between two keys could at worst hand one key the other's
      token, which the app-key fingerprint inside the encrypted value rejects.

    ``user_id``: every vault row names a user (a foreign key, so deleting a user leaves
    no secret behind), and the service key belongs to the operator, so the row is
    filed under the first administrator (lowest id, the one who set the instance up).
    If that changes, the old row no longer decrypts (its associated data names the
    old user): a cache miss, one re-issue, and the new row replaces it. With no
    administrator yet, the token is cached in this process only.
    """

    def __init__(self, app_key: str, *, ring: KeyRing | None = None) -> None:
        self.owner_id = service_owner_id(app_key)
        self._app_key = app_key
        self._ring = ring
        self._memory: CachedToken | None = None

    def __repr__(self) -> str:
        return f"ServiceTokenStore(owner_id={self.owner_id})"

    @staticmethod
    async def _operator(session: AsyncSession) -> int | None:
        return (
            await session.exec(
                select(User.id).where(User.role == "admin").order_by(col(User.id)).limit(1)
            )
        ).first()

    async def load(self) -> CachedToken | None:
        async with db.session() as s:
            operator = await self._operator(s)
        if operator is None:
            return self._memory
        return await _load(SERVICE_OWNER_TABLE, self.owner_id, operator, self._app_key, self._ring)

    async def save(self, token: CachedToken) -> None:
        async with db.session() as s:
            operator = await self._operator(s)
            if operator is None:
                log.warning("no administrator yet: the KIS service token is cached in memory only")
                self._memory = token
                return
            await _save(
                s, SERVICE_OWNER_TABLE, self.owner_id, operator, token, self._app_key, self._ring
            )

    async def clear(self) -> None:
        self._memory = None
        async with db.session() as s:
            await _delete_field(s, SERVICE_OWNER_TABLE, self.owner_id)
            await s.commit()
