"""Broker credentials: write-only for the user, decrypted only at the moment of use.

A KIS account is one ``broker_credentials`` row (label, paper or real, product
code, the account's last four digits) plus four ``vault.secrets`` rows (app key,
app secret, account number, HTS id), always written or removed together in one
transaction, so nothing is ever half-saved.

Pages get ``AccountRow``s: masked, never a secret. The only way to plaintext is
``use_kis_account``, which checks ownership and writes an audit entry for every
decrypt (purpose, credential, key ids; no values). Its ``KisSecrets`` masks itself
in ``repr`` and refuses to be pickled, so it cannot slip into a log line or into
Reflex state (which is pickled to disk or Redis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import httpx
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings, get_settings
from app.models.audit import OUTCOME_FAILED
from app.models.common import utcnow
from app.models.vault import BROKER_KIS, BrokerCredential
from app.services import audit, vault
from app.services.errors import NotFound, ValidationFailed
from app.vault_keys import KeyRing, VaultError
from brokers.base import BrokerUnavailable
from brokers.kis.auth import CredentialsRejected, request_approval_key

OWNER_TABLE = "broker_credentials"
TARGET_TYPE = "broker_credential"
KIS_FIELDS = ("app_key", "app_secret", "account_no", "hts_id")

MAX_LABEL = 60
MAX_ACCOUNTS = 20
MAX_PURPOSE = 64
MASK = "••••"

_APP_KEY = re.compile(r"^[\x21-\x7e]{16,128}$")  # KIS issues 36 characters
_APP_SECRET = re.compile(r"^[\x21-\x7e]{32,512}$")  # KIS issues 180 characters
_ACCOUNT_NO = re.compile(r"^\d{8}$")
_PRODUCT_CODE = re.compile(r"^\d{2}$")
_HTS_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_PURPOSE = re.compile(r"^[a-z0-9_.:-]{1,64}$")

FieldErrors = dict[str, tuple[str, dict[str, object]]]


@dataclass(frozen=True, slots=True)
class AccountRow:
    """What a page may show: no secret, the account number masked."""

    id: int
    broker: str
    label: str
    is_paper: bool
    product_code: str
    masked_account: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class KisSecrets:
    """Plaintext KIS credentials for one call. Hold it only as long as the call lasts."""

    credential_id: int
    user_id: int
    is_paper: bool
    product_code: str
    app_key: str = field(repr=False)
    app_secret: str = field(repr=False)
    account_no: str = field(repr=False)
    hts_id: str = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"KisSecrets(credential_id={self.credential_id}, user_id={self.user_id}, "
            f"is_paper={self.is_paper}, product_code={self.product_code!r}, "
            f"app_key='***', app_secret='***', account_no={mask_account(self.account_no)!r}, "
            "hts_id='***')"
        )

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> object:
        # Pickling is how a value would reach Reflex state on disk or Redis.
        raise TypeError("KisSecrets must not be pickled or copied")


def mask_account(account_no_or_tail: str) -> str:
    tail = account_no_or_tail[-4:]
    return f"{MASK}{tail}" if tail else MASK


def _clean_account_no(value: str) -> str:
    # People paste "1234-5678"; spaces and hyphens carry no meaning.
    return re.sub(r"[\s-]", "", value or "")


def _validate_label(label: str, errors: FieldErrors) -> str:
    label = (label or "").strip()
    if not label:
        errors["label"] = ("label_required", {})
    elif len(label) > MAX_LABEL:
        errors["label"] = ("label_too_long", {"limit": MAX_LABEL})
    return label


def _validate_product_code(product_code: str, errors: FieldErrors) -> str:
    code = (product_code or "").strip()
    if not _PRODUCT_CODE.match(code):
        errors["product_code"] = ("product_code_format", {})
    return code


def _validate_secrets(values: dict[str, str | None], errors: FieldErrors) -> dict[str, str]:
    """Checks the given secret fields; ``None`` means "not given" (kept on update)."""
    out: dict[str, str] = {}
    app_key = values.get("app_key")
    if app_key is not None:
        app_key = app_key.strip()
        if not app_key:
            errors["app_key"] = ("app_key_required", {})
        elif not _APP_KEY.match(app_key):
            errors["app_key"] = ("app_key_format", {})
        out["app_key"] = app_key
    app_secret = values.get("app_secret")
    if app_secret is not None:
        app_secret = app_secret.strip()
        if not app_secret:
            errors["app_secret"] = ("app_secret_required", {})
        elif not _APP_SECRET.match(app_secret):
            errors["app_secret"] = ("app_secret_format", {})
        out["app_secret"] = app_secret
    account_no = values.get("account_no")
    if account_no is not None:
        account_no = _clean_account_no(account_no)
        if not account_no:
            errors["account_no"] = ("account_no_required", {})
        elif not _ACCOUNT_NO.match(account_no):
            errors["account_no"] = ("account_no_format", {})
        out["account_no"] = account_no
    hts_id = values.get("hts_id")
    if hts_id is not None:
        hts_id = hts_id.strip()
        # Optional: KIS needs it only for the execution-notice stream.
        if hts_id and not _HTS_ID.match(hts_id):
            errors["hts_id"] = ("hts_id_format", {})
        out["hts_id"] = hts_id
    return out


async def _owned(
    session: AsyncSession, user_id: int, credential_id: int, ip: str
) -> BrokerCredential:
    """The user's credential, or NotFound (audited) for a missing or someone else's one."""
    row = await session.get(BrokerCredential, credential_id)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, TARGET_TYPE, credential_id, ip)
        raise NotFound()
    return row


async def owned_account(
    session: AsyncSession, user_id: int, credential_id: int, ip: str = ""
) -> AccountRow:
    """The caller's account, without its secrets; NotFound (audited) for anyone else's."""
    return _account_row(await _owned(session, user_id, credential_id, ip))


async def create_kis_account(
    session: AsyncSession,
    user_id: int,
    *,
    label: str,
    app_key: str,
    app_secret: str,
    account_no: str,
    product_code: str = "01",
    hts_id: str = "",
    is_paper: bool = True,
    ip: str = "",
    ring: KeyRing | None = None,
) -> AccountRow:
    """Validate everything, then write the metadata row and its secrets in one commit."""
    errors: FieldErrors = {}
    label = _validate_label(label, errors)
    secrets = _validate_secrets(
        {"app_key": app_key, "app_secret": app_secret, "account_no": account_no, "hts_id": hts_id},
        errors,
    )
    product_code = _validate_product_code(product_code, errors)
    if errors:
        raise ValidationFailed(errors)
    count = (
        await session.exec(
            select(func.count())
            .select_from(BrokerCredential)
            .where(BrokerCredential.user_id == user_id)
        )
    ).one()
    if count >= MAX_ACCOUNTS:
        raise ValidationFailed.single("label", "too_many_accounts", limit=MAX_ACCOUNTS)
    row = BrokerCredential(
        user_id=user_id,
        broker=BROKER_KIS,
        label=label,
        is_paper=bool(is_paper),
        product_code=product_code,
        account_tail=secrets["account_no"][-4:],
    )
    try:
        session.add(row)
        await session.flush()  # the row id is part of every secret's associated data
        assert row.id is not None
        await vault.put(session, OWNER_TABLE, row.id, user_id, secrets, ring=ring)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        audit.CREDENTIAL_CREATED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=row.id,
        ip=ip,
        detail={"broker": BROKER_KIS, "is_paper": row.is_paper, "fields": sorted(secrets)},
    )
    return _account_row(row)


async def update_kis_account(
    session: AsyncSession,
    user_id: int,
    credential_id: int,
    *,
    label: str | None = None,
    is_paper: bool | None = None,
    product_code: str | None = None,
    app_key: str | None = None,
    app_secret: str | None = None,
    account_no: str | None = None,
    hts_id: str | None = None,
    ip: str = "",
    ring: KeyRing | None = None,
) -> AccountRow:
    """Change what is given (``None`` keeps a field). Secrets are replaced, never shown."""
    row = await _owned(session, user_id, credential_id, ip)
    errors: FieldErrors = {}
    new_label = _validate_label(label, errors) if label is not None else row.label
    new_code = (
        _validate_product_code(product_code, errors)
        if product_code is not None
        else row.product_code
    )
    secrets = _validate_secrets(
        {"app_key": app_key, "app_secret": app_secret, "account_no": account_no, "hts_id": hts_id},
        errors,
    )
    if errors:
        raise ValidationFailed(errors)
    changed: list[str] = []
    if new_label != row.label:
        row.label = new_label
        changed.append("label")
    if new_code != row.product_code:
        row.product_code = new_code
        changed.append("product_code")
    if is_paper is not None and bool(is_paper) != row.is_paper:
        row.is_paper = bool(is_paper)
        changed.append("is_paper")
    if "account_no" in secrets:
        row.account_tail = secrets["account_no"][-4:]
    row.updated_at = utcnow()
    try:
        session.add(row)
        if secrets:
            await vault.put(session, OWNER_TABLE, credential_id, user_id, secrets, ring=ring)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        audit.CREDENTIAL_UPDATED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=credential_id,
        ip=ip,
        detail={"fields": sorted(changed + list(secrets))},
    )
    return _account_row(row)


async def delete_kis_account(
    session: AsyncSession, user_id: int, credential_id: int, *, ip: str = ""
) -> None:
    """The metadata row and every secret of it go in the same transaction."""
    row = await _owned(session, user_id, credential_id, ip)
    try:
        await vault.delete_owner(session, OWNER_TABLE, credential_id)
        await session.delete(row)
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    await audit.record(
        audit.CREDENTIAL_DELETED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=credential_id,
        ip=ip,
        detail={"broker": row.broker},
    )


def _account_row(row: BrokerCredential) -> AccountRow:
    return AccountRow(
        id=row.id or 0,
        broker=row.broker,
        label=row.label,
        is_paper=row.is_paper,
        product_code=row.product_code,
        masked_account=mask_account(row.account_tail),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def list_accounts(session: AsyncSession, user_id: int) -> list[AccountRow]:
    rows = await session.exec(
        select(BrokerCredential)
        .where(BrokerCredential.user_id == user_id)
        .order_by(col(BrokerCredential.created_at), col(BrokerCredential.id))
    )
    return [_account_row(r) for r in rows.all()]


async def use_kis_account(
    session: AsyncSession,
    user_id: int,
    credential_id: int,
    *,
    purpose: str,
    ring: KeyRing | None = None,
) -> KisSecrets:
    """The one way to plaintext. Every call is audited, a failed decrypt included.

    ``purpose`` is a short machine word ("order", "quote_stream", "token_issue", ...)
    kept in the audit entry, so the log says why each decrypt happened.
    """
    if not _PURPOSE.match(purpose or ""):
        raise ValueError(f"purpose must match {_PURPOSE.pattern} (max {MAX_PURPOSE} chars)")
    row = await _owned(session, user_id, credential_id, "")
    key_ids = await vault.key_ids(session, OWNER_TABLE, credential_id)
    detail: dict[str, object] = {"purpose": purpose, "fields": list(KIS_FIELDS), "keys": key_ids}
    try:
        values = await vault.read(
            session, OWNER_TABLE, credential_id, row.user_id, KIS_FIELDS, ring=ring
        )
    except VaultError as exc:
        await audit.record(
            audit.CREDENTIAL_DECRYPTED,
            actor_id=user_id,
            target_type=TARGET_TYPE,
            target_id=credential_id,
            outcome=OUTCOME_FAILED,
            detail={**detail, "error": exc.code},
        )
        raise
    await audit.record(
        audit.CREDENTIAL_DECRYPTED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=credential_id,
        detail=detail,
    )
    return KisSecrets(
        credential_id=credential_id,
        user_id=user_id,
        is_paper=row.is_paper,
        product_code=row.product_code,
        app_key=values["app_key"],
        app_secret=values["app_secret"],
        account_no=values["account_no"],
        hts_id=values["hts_id"],
    )


ConnectionResult = Literal["ok", "rejected", "unavailable"]


async def check_kis_connection(
    session: AsyncSession,
    user_id: int,
    credential_id: int,
    *,
    ip: str = "",
    settings: Settings | None = None,
    ring: KeyRing | None = None,
) -> ConnectionResult:
    """Ask KIS for a websocket approval key with the stored pair: proof without a token.

    The decrypt is audited by ``use_kis_account``; the outcome is audited here. The
    plaintext lives only inside this call.
    """
    settings = settings or get_settings()
    await _owned(session, user_id, credential_id, ip)  # audits a refusal, with the IP
    secrets = await use_kis_account(
        session, user_id, credential_id, purpose="test_connection", ring=ring
    )
    base_url = settings.kis_paper_base_url if secrets.is_paper else settings.kis_real_base_url
    result: ConnectionResult = "ok"
    reason = ""
    try:
        async with httpx.AsyncClient(timeout=settings.kis_timeout) as client:
            await request_approval_key(client, base_url, secrets.app_key, secrets.app_secret)
    except CredentialsRejected as exc:
        result, reason = "rejected", exc.reason
    except BrokerUnavailable as exc:
        result, reason = "unavailable", str(exc)
    finally:
        del secrets
    await audit.record(
        audit.CONNECTION_TESTED,
        actor_id=user_id,
        target_type=TARGET_TYPE,
        target_id=credential_id,
        outcome="ok" if result == "ok" else OUTCOME_FAILED,
        ip=ip,
        detail={"result": result, "reason": reason[:200]},
    )
    return result
