"""The credential vault: AES-256-GCM encryption of secrets at rest, and key rotation.

Stored format (one text column, ``vault.secrets.ciphertext``)::

    v1.<kid>.<nonce>.<ciphertext+tag>

``v1`` is the format version, ``kid`` the id of the key in the ring that wrote
it, and the last two parts are unpadded URL-safe base64 of the random 96-bit
nonce and of AESGCM's output (ciphertext with its 16-byte tag appended). The
kid is repeated in the ``key_id`` column so rotation can find old rows through
an index; decryption refuses a row whose column and envelope disagree.

Associated data (authenticated, not stored) binds a ciphertext to where it
belongs: the JSON array ``["tickwatch-vault","v1",owner_table,owner_id,user_id,
field]``. It is rebuilt from the row being read, so a ciphertext copied to
another owner row, another user or another field fails its tag check instead
of decrypting into the wrong place.

Plaintext leaves this module only as a return value; nothing here logs a value,
and errors name rows and key ids, never contents. Decrypt-for-use (with its
audit entry) is ``app.services.credentials``'s job; this module is the mechanism.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.models.common import utcnow
from app.models.vault import VaultSecret
from app.vault_keys import KID_PATTERN, KeyRing, VaultError, VaultKeyMissing, get_key_ring

log = logging.getLogger(__name__)

FORMAT_VERSION = "v1"
NONCE_BYTES = 12  # 96 bits, the size GCM is specified for
TAG_BYTES = 16
AAD_DOMAIN = "tickwatch-vault"
MAX_PLAINTEXT_BYTES = 4096

__all__ = [
    "Envelope",
    "RotationReport",
    "SecretRef",
    "VaultDecryptError",
    "VaultError",
    "VaultFormatError",
    "VaultKeyMissing",
    "VaultSecretMissing",
    "VerifyReport",
    "decrypt",
    "delete_owner",
    "encrypt",
    "key_ids",
    "key_usage",
    "parse_envelope",
    "put",
    "read",
    "rotate",
    "verify_all",
]


class VaultDecryptError(VaultError):
    """The tag check failed: wrong key under that id, tampering, or a moved ciphertext."""

    def __init__(self, where: str, kid: str) -> None:
        super().__init__(
            "vault_decrypt_failed",
            f"the secret {where} does not decrypt with vault key {kid!r}: the key differs "
            "from the one that wrote it, or the stored value was altered or moved from "
            "another row, user or field",
            kid=kid,
        )
        self.kid = kid


class VaultFormatError(VaultDecryptError):
    """The stored text is not a vault envelope this version understands."""

    def __init__(self, where: str, reason: str) -> None:
        VaultError.__init__(
            self, "vault_bad_format", f"the secret {where} is not a valid vault value: {reason}"
        )
        self.kid = ""


class VaultSecretMissing(VaultError):
    """An owner row exists but one of its secret rows does not (a half-deleted owner)."""

    def __init__(self, where: str) -> None:
        super().__init__("vault_secret_missing", f"the secret {where} is missing from the vault")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret belongs. Every part goes into the AEAD's associated data."""

    owner_table: str
    owner_id: int
    user_id: int
    field: str

    def aad(self) -> bytes:
        parts = [AAD_DOMAIN, FORMAT_VERSION, self.owner_table, self.owner_id, self.user_id]
        return json.dumps([*parts, self.field], separators=(",", ":")).encode("utf-8")

    def __str__(self) -> str:
        return f"{self.owner_table}#{self.owner_id}.{self.field} (user {self.user_id})"


@dataclass(frozen=True, slots=True)
class Envelope:
    version: str
    kid: str
    nonce: bytes
    ciphertext: bytes  # with the GCM tag appended, as AESGCM returns it


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not text or "=" in text:
        raise ValueError("empty or padded")
    std = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)


def parse_envelope(token: str, where: str = "value") -> Envelope:
    """Split and check a stored value; raises VaultFormatError saying what is wrong."""
    if not isinstance(token, str):
        raise VaultFormatError(where, "not text")
    parts = token.split(".")
    if len(parts) != 4:
        raise VaultFormatError(where, f"expected 4 dot-separated parts, found {len(parts)}")
    version, kid, nonce_b64, ct_b64 = parts
    if version != FORMAT_VERSION:
        raise VaultFormatError(where, f"unknown format version {version[:16]!r}")
    if not KID_PATTERN.match(kid):
        raise VaultFormatError(where, "bad key id")
    try:
        nonce = _b64d(nonce_b64)
        ciphertext = _b64d(ct_b64)
    except (binascii.Error, ValueError):
        raise VaultFormatError(where, "nonce or ciphertext is not base64url") from None
    if len(nonce) != NONCE_BYTES:
        raise VaultFormatError(where, f"nonce is {len(nonce)} bytes, expected {NONCE_BYTES}")
    if len(ciphertext) < TAG_BYTES:
        raise VaultFormatError(where, "ciphertext is shorter than its tag")
    return Envelope(version, kid, nonce, ciphertext)


def encrypt(ring: KeyRing, ref: SecretRef, plaintext: str) -> str:
    """Encrypt with the ring's active key and a fresh random nonce; returns the envelope."""
    data = plaintext.encode("utf-8")
    if len(data) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"vault values are limited to {MAX_PLAINTEXT_BYTES} bytes")
    nonce = os.urandom(NONCE_BYTES)
    ct = AESGCM(ring.active_key).encrypt(nonce, data, ref.aad())
    return f"{FORMAT_VERSION}.{ring.active}.{_b64e(nonce)}.{_b64e(ct)}"


def decrypt(ring: KeyRing, ref: SecretRef, token: str, *, key_id: str | None = None) -> str:
    """The plaintext, or VaultKeyMissing / VaultDecryptError / VaultFormatError.

    ``key_id`` is the row's ``key_id`` column when there is one: a row whose column
    and envelope disagree was edited by hand and is refused.
    """
    env = parse_envelope(token, str(ref))
    if key_id is not None and key_id != env.kid:
        raise VaultFormatError(str(ref), f"key_id column {key_id!r} != envelope {env.kid!r}")
    key = ring.key(env.kid)
    try:
        data = AESGCM(key).decrypt(env.nonce, env.ciphertext, ref.aad())
    except InvalidTag:
        raise VaultDecryptError(str(ref), env.kid) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # authentic, so only a bug could write this
        raise VaultFormatError(str(ref), "plaintext is not UTF-8") from None


def _ring(ring: KeyRing | None) -> KeyRing:
    return ring if ring is not None else get_key_ring()


def _ref_of(row: Any) -> SecretRef:
    """The ref a stored row claims (a VaultSecret or a selected row of its columns)."""
    return SecretRef(row.owner_table, row.owner_id, row.user_id, row.field)


# --- rows -------------------------------------------------------------------------


async def put(
    session: AsyncSession,
    owner_table: str,
    owner_id: int,
    user_id: int,
    values: Mapping[str, str],
    *,
    ring: KeyRing | None = None,
) -> None:
    """Insert or replace the owner's secret fields. Does not commit: the caller's
    transaction covers the owner row and its secrets together."""
    ring = _ring(ring)
    existing = {
        row.field: row
        for row in (
            await session.exec(
                select(VaultSecret).where(
                    VaultSecret.owner_table == owner_table,
                    VaultSecret.owner_id == owner_id,
                    col(VaultSecret.field).in_(list(values)),
                )
            )
        ).all()
    }
    now = utcnow()
    for name, plaintext in values.items():
        ref = SecretRef(owner_table, owner_id, user_id, name)
        token = encrypt(ring, ref, plaintext)
        row = existing.get(name)
        if row is None:
            row = VaultSecret(
                user_id=user_id,
                owner_table=owner_table,
                owner_id=owner_id,
                field=name,
                key_id=ring.active,
                ciphertext=token,
                created_at=now,
            )
        else:
            if row.user_id != user_id:
                raise VaultFormatError(str(ref), "secret row belongs to another user")
            row.key_id = ring.active
            row.ciphertext = token
            row.created_at = now
            row.rotated_at = None
        session.add(row)


async def read(
    session: AsyncSession,
    owner_table: str,
    owner_id: int,
    user_id: int,
    fields: Iterable[str],
    *,
    ring: KeyRing | None = None,
) -> dict[str, str]:
    """Decrypt the named fields. The AAD uses the caller's ``user_id`` (taken from the
    owner row), not the secret row's column, so a re-pointed row does not decrypt."""
    ring = _ring(ring)
    wanted = list(fields)
    rows = {
        row.field: row
        for row in (
            await session.exec(
                select(VaultSecret).where(
                    VaultSecret.owner_table == owner_table,
                    VaultSecret.owner_id == owner_id,
                    col(VaultSecret.field).in_(wanted),
                )
            )
        ).all()
    }
    out: dict[str, str] = {}
    for name in wanted:
        ref = SecretRef(owner_table, owner_id, user_id, name)
        row = rows.get(name)
        if row is None:
            raise VaultSecretMissing(str(ref))
        out[name] = decrypt(ring, ref, row.ciphertext, key_id=row.key_id)
    return out


async def key_ids(session: AsyncSession, owner_table: str, owner_id: int) -> list[str]:
    rows = await session.exec(
        select(VaultSecret.key_id).where(
            VaultSecret.owner_table == owner_table, VaultSecret.owner_id == owner_id
        )
    )
    return sorted(set(rows.all()))


async def delete_owner(session: AsyncSession, owner_table: str, owner_id: int) -> None:
    """Remove every secret of an owner. Does not commit (the owner goes in the same one)."""
    await session.exec(  # type: ignore[call-overload]
        delete(VaultSecret).where(
            col(VaultSecret.owner_table) == owner_table, col(VaultSecret.owner_id) == owner_id
        )
    )


async def key_usage(session: AsyncSession) -> dict[str, int]:
    """How many secrets each key id protects."""
    rows = await session.exec(
        select(VaultSecret.key_id, func.count()).group_by(col(VaultSecret.key_id))
    )
    return {kid: int(n) for kid, n in rows.all()}


# --- rotation and verification ----------------------------------------------------


@dataclass
class RotationReport:
    active: str
    rotated: int = 0
    batches: int = 0
    # (secret id, error code) for rows that could not be re-encrypted; they keep their key
    failures: list[tuple[int, str]] = field(default_factory=list)
    remaining: int = 0  # rows not on the active key once the pass ended


@dataclass
class VerifyReport:
    total: int = 0
    ok: int = 0
    failed: int = 0
    by_key: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)  # first 100

    @property
    def passed(self) -> bool:
        return self.failed == 0


_SECRET_COLUMNS = (
    col(VaultSecret.id),
    col(VaultSecret.user_id),
    col(VaultSecret.owner_table),
    col(VaultSecret.owner_id),
    col(VaultSecret.field),
    col(VaultSecret.key_id),
    col(VaultSecret.ciphertext),
)


async def rotate(
    ring: KeyRing | None = None,
    *,
    batch_size: int = 500,
    pause: float = 0.0,
    on_batch: Callable[[int, int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every secret that is not on the active key, one transaction per batch.

    Interrupted (killed, crashed, Ctrl-C), it loses at most the batch in flight, which
    rolls back: rerunning picks up the rows still on an old key. Each update is
    conditional on the ciphertext it read, so a value a user replaces meanwhile (already
    on the active key) is never overwritten with the old one. Rows that do not decrypt
    are left untouched and reported; nothing is ever deleted. ``pause`` seconds between
    batches spare a busy production database.
    """
    ring = _ring(ring)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = RotationReport(active=ring.active)
    table = VaultSecret.__table__  # type: ignore[attr-defined]
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.ciphertext == bindparam("b_old"))
        .values(ciphertext=bindparam("b_new"), key_id=ring.active, rotated_at=bindparam("b_at"))
    )
    last_id = 0
    while True:
        async with db.session() as s:
            rows = (
                await s.exec(
                    select(*_SECRET_COLUMNS)
                    .where(col(VaultSecret.key_id) != ring.active, col(VaultSecret.id) > last_id)
                    .order_by(col(VaultSecret.id))
                    .limit(batch_size)
                )
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            now = utcnow()
            params: list[dict[str, object]] = []
            for row in rows:
                ref = _ref_of(row)
                try:
                    plain = decrypt(ring, ref, row.ciphertext, key_id=row.key_id)
                except VaultError as exc:
                    report.failures.append((row.id, exc.code))
                    log.error("rotation: secret %d not re-encrypted: %s", row.id, exc)
                    continue
                token = encrypt(ring, ref, plain)
                params.append(
                    {"b_id": row.id, "b_old": row.ciphertext, "b_new": token, "b_at": now}
                )
            if params:
                conn = await s.connection()
                await conn.execute(stmt, params)
            await s.commit()
        report.rotated += len(params)
        report.batches += 1
        log.info("rotation: batch %d committed, %d rows re-encrypted", report.batches, len(params))
        if on_batch is not None:
            on_batch(report.batches, report.rotated)
        if pause > 0:
            await asyncio.sleep(pause)
    async with db.session() as s:
        report.remaining = int(
            (
                await s.exec(
                    select(func.count())
                    .select_from(VaultSecret)
                    .where(col(VaultSecret.key_id) != ring.active)
                )
            ).one()
        )
    return report


async def verify_all(ring: KeyRing | None = None, *, batch_size: int = 1000) -> VerifyReport:
    """Decrypt every secret with the ring (values are discarded at once)."""
    ring = _ring(ring)
    report = VerifyReport()
    last_id = 0
    while True:
        async with db.session() as s:
            rows = (
                await s.exec(
                    select(*_SECRET_COLUMNS)
                    .where(col(VaultSecret.id) > last_id)
                    .order_by(col(VaultSecret.id))
                    .limit(batch_size)
                )
            ).all()
        if not rows:
            break
        last_id = rows[-1].id
        for row in rows:
            report.total += 1
            report.by_key[row.key_id] = report.by_key.get(row.key_id, 0) + 1
            try:
                decrypt(ring, _ref_of(row), row.ciphertext, key_id=row.key_id)
            except VaultError as exc:
                report.failed += 1
                if len(report.failures) < 100:
                    report.failures.append((row.id, exc.code))
            else:
                report.ok += 1
    return report
