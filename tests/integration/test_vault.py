"""The credential vault on a real database (SQLite and PostgreSQL): secrets are stored
encrypted in their own table, bound to their row, user and field, written whole or not
at all, decrypted only through ``use_kis_account`` and audited every time."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import func, select

from app import db
from app.db import is_sqlite, sync_url
from app.models.audit import AuditEntry
from app.models.users import User
from app.models.vault import BrokerCredential, VaultSecret
from app.services import audit, credentials, vault
from app.services.errors import NotFound, ValidationFailed
from app.vault_keys import KeyRing, VaultKeyMissing, set_key_ring
from tests.integration.helpers import make_user

pytestmark = pytest.mark.usefixtures("database")

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
RING = KeyRing({"k1": K1}, "k1")

APP_KEY = "PSa1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7"
APP_SECRET = "s3cr3t/" + "Q" * 170 + "=="
ACCOUNT = "50123456"
HTS_ID = "traderhts"


@pytest.fixture(autouse=True)
def key_ring() -> Iterator[KeyRing]:
    """An explicit ring: tests never read VAULT_* settings nor touch data/."""
    set_key_ring(RING)
    yield RING
    set_key_ring(None)


async def _create(user_id: int, **overrides: object) -> credentials.AccountRow:
    fields: dict[str, object] = {
        "label": "모의 계좌",
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "account_no": ACCOUNT,
        "product_code": "01",
        "hts_id": HTS_ID,
        "is_paper": True,
    }
    fields.update(overrides)
    async with db.session() as s:
        return await credentials.create_kis_account(s, user_id, **fields)  # type: ignore[arg-type]


async def _use(user_id: int, credential_id: int, ring: KeyRing | None = None):
    async with db.session() as s:
        return await credentials.use_kis_account(
            s, user_id, credential_id, purpose="test", ring=ring
        )


async def _count(model: type) -> int:
    async with db.session() as s:
        return int((await s.exec(select(func.count()).select_from(model))).one())


async def _secret_rows() -> list[tuple]:
    async with db.session() as s:
        rows = await s.exec(select(VaultSecret).order_by(VaultSecret.id))
        return [
            (r.id, r.user_id, r.owner_table, r.owner_id, r.field, r.key_id, r.ciphertext)
            for r in rows.all()
        ]


async def _set_ciphertext(secret_id: int, ciphertext: str) -> None:
    async with db.session() as s:
        row = await s.get(VaultSecret, secret_id)
        row.ciphertext = ciphertext
        s.add(row)
        await s.commit()


async def _secret(owner_id: int, field: str) -> VaultSecret:
    async with db.session() as s:
        return (
            await s.exec(
                select(VaultSecret).where(
                    VaultSecret.owner_id == owner_id, VaultSecret.field == field
                )
            )
        ).one()


async def _audit(action: str) -> list[AuditEntry]:
    return await audit.search(audit.AuditFilter(action=action))


async def test_create_stores_only_ciphertext_and_lists_masked():
    user = await make_user()
    row = await _create(user.id)
    assert row.masked_account == "••••3456" and row.is_paper and row.label == "모의 계좌"
    secrets = await _secret_rows()
    assert sorted(r[4] for r in secrets) == ["account_no", "app_key", "app_secret", "hts_id"]
    for _, uid, table, owner, _, kid, ct in secrets:
        assert (uid, table, owner, kid) == (user.id, "broker_credentials", row.id, "k1")
        assert ct.startswith("v1.k1.")
        for plain in (APP_KEY, APP_SECRET, ACCOUNT, HTS_ID, APP_KEY[:12]):
            assert plain not in ct
    # The metadata row holds nothing secret beyond the last four digits.
    async with db.session() as s:
        meta = (await s.exec(select(BrokerCredential))).one()
    assert ACCOUNT not in json.dumps(meta.model_dump(mode="json"))
    async with db.session() as s:
        listed = await credentials.list_accounts(s, user.id)
    assert [(r.id, r.masked_account, r.product_code) for r in listed] == [
        (row.id, "••••3456", "01")
    ]
    assert APP_KEY not in repr(listed)
    created = await _audit(audit.CREDENTIAL_CREATED)
    assert [(e.actor_id, e.target_id) for e in created] == [(user.id, str(row.id))]


async def test_use_decrypts_and_audits_every_time_without_secrets_in_the_log():
    user = await make_user()
    row = await _create(user.id, is_paper=False, product_code="22", account_no="1234-5678")
    first = await _use(user.id, row.id)
    assert (first.app_key, first.app_secret, first.account_no, first.hts_id) == (
        APP_KEY,
        APP_SECRET,
        "12345678",
        HTS_ID,
    )
    assert (first.is_paper, first.product_code) == (False, "22")
    assert APP_SECRET not in repr(first)
    await _use(user.id, row.id)
    entries = await _audit(audit.CREDENTIAL_DECRYPTED)
    assert len(entries) == 2
    assert all(e.outcome == "ok" and e.detail["purpose"] == "test" for e in entries)
    dumped = json.dumps([e.model_dump(mode="json") for e in await _audit("")])
    for plain in (APP_KEY, APP_SECRET, "12345678", HTS_ID):
        assert plain not in dumped


async def test_bad_input_is_refused_field_by_field_and_nothing_is_written():
    user = await make_user()
    cases = [
        ({"label": ""}, "label", "label_required"),
        ({"label": "x" * 61}, "label", "label_too_long"),
        ({"app_key": "  "}, "app_key", "app_key_required"),
        ({"app_key": "short"}, "app_key", "app_key_format"),
        ({"app_key": "PS key with spaces 0123456789"}, "app_key", "app_key_format"),
        ({"app_secret": ""}, "app_secret", "app_secret_required"),
        ({"app_secret": "tooshort"}, "app_secret", "app_secret_format"),
        ({"account_no": ""}, "account_no", "account_no_required"),
        ({"account_no": "1234567"}, "account_no", "account_no_format"),
        ({"account_no": "12345678-01"}, "account_no", "account_no_format"),
        ({"account_no": "1234567a"}, "account_no", "account_no_format"),
        ({"product_code": "1"}, "product_code", "product_code_format"),
        ({"product_code": "ab"}, "product_code", "product_code_format"),
        ({"hts_id": "has space"}, "hts_id", "hts_id_format"),
    ]
    for overrides, field, code in cases:
        with pytest.raises(ValidationFailed) as err:
            await _create(user.id, **overrides)
        assert err.value.field_errors[field][0] == code, overrides
    with pytest.raises(ValidationFailed) as err:
        await _create(user.id, label="", app_key="", account_no="x")
    assert set(err.value.field_errors) == {"label", "app_key", "account_no"}
    assert await _count(BrokerCredential) == 0
    assert await _count(VaultSecret) == 0
    assert await _audit(audit.CREDENTIAL_CREATED) == []


async def test_a_failure_while_writing_secrets_leaves_nothing_half_saved():
    user = await make_user()
    other = await make_user("other@example.com")
    # A stray secret row already sits where the new account's secrets will go (owner id 1):
    # writing the account must fail as a whole, leaving neither row nor secret behind.
    async with db.session() as s:
        await vault.put(s, "broker_credentials", 1, other.id, {"app_key": "stray"})
        await s.commit()
    with pytest.raises(vault.VaultError):
        await _create(user.id)
    assert await _count(BrokerCredential) == 0
    assert [r[4] for r in await _secret_rows()] == ["app_key"]


async def test_ciphertext_moved_to_another_row_user_or_field_does_not_decrypt():
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    a1 = await _create(alice.id)
    a2 = await _create(alice.id, app_key="PSotherkey0123456789", label="second")
    b1 = await _create(bob.id)
    stolen = (await _secret(a1.id, "app_key")).ciphertext
    moves = [
        ((a2.id, "app_key"), alice.id, a2.id),  # another row of the same user
        ((b1.id, "app_key"), bob.id, b1.id),  # another user
        ((a1.id, "app_secret"), alice.id, a1.id),  # another field of the same row
    ]
    for (owner_id, field), user_id, cred_id in moves:
        target = await _secret(owner_id, field)
        await _set_ciphertext(target.id, stolen)
        with pytest.raises(vault.VaultDecryptError, match="does not decrypt"):
            await _use(user_id, cred_id)
        await _set_ciphertext(target.id, target.ciphertext)  # put the real value back
        await _use(user_id, cred_id)  # the failure was the move, not a broken row
    failed = [e for e in await _audit(audit.CREDENTIAL_DECRYPTED) if e.outcome == "failed"]
    assert len(failed) == 3
    assert {e.detail["error"] for e in failed} == {"vault_decrypt_failed"}
    assert (await _use(alice.id, a1.id)).app_key == APP_KEY


async def test_missing_or_wrong_key_is_a_clear_error_and_changes_nothing():
    user = await make_user()
    row = await _create(user.id)
    before = await _secret_rows()
    with pytest.raises(VaultKeyMissing, match="'k1' is not in the key ring"):
        await _use(user.id, row.id, ring=KeyRing({"k2": K2}, "k2"))
    with pytest.raises(vault.VaultDecryptError, match="vault key 'k1'"):
        await _use(user.id, row.id, ring=KeyRing({"k1": K2}, "k1"))
    assert await _secret_rows() == before
    check = await vault.verify_all(KeyRing({"k1": K2}, "k1"))
    assert (check.total, check.failed) == (4, 4)
    assert (await vault.verify_all(RING)).passed
    assert (await _use(user.id, row.id)).app_secret == APP_SECRET


async def test_other_users_cannot_use_update_or_delete_and_are_audited():
    owner = await make_user()
    intruder = await make_user("intruder@example.com")
    row = await _create(owner.id)
    calls = [
        lambda s: credentials.use_kis_account(s, intruder.id, row.id, purpose="order"),
        lambda s: credentials.update_kis_account(s, intruder.id, row.id, label="mine"),
        lambda s: credentials.delete_kis_account(s, intruder.id, row.id),
        lambda s: credentials.use_kis_account(s, intruder.id, 9999, purpose="order"),
    ]
    for call in calls:
        async with db.session() as s:
            with pytest.raises(NotFound):
                await call(s)
    denied = await audit.search(audit.AuditFilter(action=audit.ACCESS_DENIED))
    assert len(denied) == 4
    assert {(e.actor_id, e.target_type) for e in denied} == {(intruder.id, "broker_credential")}
    assert await _audit(audit.CREDENTIAL_DECRYPTED) == []
    async with db.session() as s:
        assert await credentials.list_accounts(s, intruder.id) == []
    assert (await _use(owner.id, row.id)).app_key == APP_KEY


async def test_update_replaces_secrets_and_delete_removes_them():
    user = await make_user()
    row = await _create(user.id)
    keep = await _create(user.id, label="keep")
    new_secret = "N" * 180
    async with db.session() as s:
        updated = await credentials.update_kis_account(
            s, user.id, row.id, app_secret=new_secret, account_no="99990000", is_paper=False
        )
    assert (updated.masked_account, updated.is_paper) == ("••••0000", False)
    used = await _use(user.id, row.id)
    assert (used.app_key, used.app_secret, used.account_no) == (APP_KEY, new_secret, "99990000")
    async with db.session() as s:
        with pytest.raises(ValidationFailed) as err:
            await credentials.update_kis_account(s, user.id, row.id, account_no="12")
    assert err.value.field_errors["account_no"][0] == "account_no_format"
    assert (await _use(user.id, row.id)).account_no == "99990000"
    [upd] = await _audit(audit.CREDENTIAL_UPDATED)
    assert upd.detail["fields"] == ["account_no", "app_secret", "is_paper"]
    assert new_secret not in json.dumps(upd.detail)

    async with db.session() as s:
        await credentials.delete_kis_account(s, user.id, row.id)
    assert {r[3] for r in await _secret_rows()} == {keep.id}
    assert await _count(VaultSecret) == 4
    async with db.session() as s:
        assert [r.id for r in await credentials.list_accounts(s, user.id)] == [keep.id]
    assert len(await _audit(audit.CREDENTIAL_DELETED)) == 1
    with pytest.raises(NotFound):
        await _use(user.id, row.id)


async def test_deleting_a_user_removes_their_credentials_and_secrets():
    gone = await make_user()
    stays = await make_user("stays@example.com")
    await _create(gone.id)
    kept = await _create(stays.id)
    async with db.session() as s:
        await s.delete(await s.get(User, gone.id))
        await s.commit()
    assert await _count(BrokerCredential) == 1
    assert {r[1] for r in await _secret_rows()} == {stays.id}
    assert (await _use(stays.id, kept.id)).hts_id == HTS_ID


async def test_too_many_accounts_are_refused():
    user = await make_user()
    async with db.session() as s:
        for i in range(credentials.MAX_ACCOUNTS):
            s.add(BrokerCredential(user_id=user.id, label=f"a{i}", account_tail="0000"))
        await s.commit()
    with pytest.raises(ValidationFailed) as err:
        await _create(user.id)
    assert err.value.field_errors["label"][0] == "too_many_accounts"


async def test_secrets_live_in_their_own_schema_on_postgres(database: str):
    engine = create_engine(sync_url(database))
    try:
        with engine.connect() as conn:
            if is_sqlite(database):
                assert "secrets" in inspect(conn).get_table_names()
                return
            where = conn.execute(
                text(
                    "SELECT table_schema FROM information_schema.tables "
                    "WHERE table_name IN ('secrets', 'broker_credentials') ORDER BY table_name"
                )
            ).all()
            assert [r[0] for r in where] == ["public", "vault"]
            assert "secrets" not in inspect(conn).get_table_names()  # not in public
            assert "secrets" in inspect(conn).get_table_names(schema="vault")
    finally:
        engine.dispose()
