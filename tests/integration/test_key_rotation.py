"""``python -m app.cli rotate-keys`` on a real database (SQLite and PostgreSQL), run as the
operator runs it: a subprocess configured through DATABASE_URL and VAULT_KEYS.

Rotation moves 10,000 secrets to the new key, survives SIGKILL midway (a rerun picks up
where the killed run's last committed batch left off), verifies every value, and
--drop-key retires the old key only once nothing uses it."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.engine import Engine

from app import db
from app.db import engine_execution_options, sync_url
from app.models.common import utcnow
from app.models.users import User
from app.models.vault import BrokerCredential, VaultSecret
from app.services import audit, vault
from app.vault_keys import KeyRing, parse_key_file_text, set_key_ring, write_key_file

pytestmark = pytest.mark.usefixtures("database")

ROOT = Path(__file__).resolve().parents[2]
K0 = bytes([7] * 32)
K1 = bytes(range(32))
K2 = bytes(range(200, 232))
OLD = KeyRing({"k1": K1}, "k1")
BOTH = KeyRing({"k1": K1, "k2": K2}, "k2")
FIELDS = ("app_key", "app_secret", "account_no", "hts_id")
SECRETS_PER_USER = 2000  # 5 users x 500 accounts x 4 fields = 10,000 secrets
BATCH = 200


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _plain(owner_id: int, field: str) -> str:
    return f"{field}:{owner_id}:value"


@pytest.fixture(autouse=True)
def no_process_ring() -> Iterator[None]:
    """Every call below passes its ring explicitly; none may fall back to data/."""
    set_key_ring(None)
    yield
    set_key_ring(None)


@pytest.fixture
def sync_engine(database: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(database), execution_options=engine_execution_options(database))
    yield engine
    engine.dispose()


async def _seed(total_secrets: int, ring: KeyRing = OLD) -> None:
    """Bulk insert pre-encrypted secrets: users, accounts, then four secrets per account."""
    n_users = max(1, total_secrets // SECRETS_PER_USER)
    accounts = total_secrets // len(FIELDS)
    async with db.session() as s:
        users = [User(email=f"rot{i}@example.com") for i in range(n_users)]
        s.add_all(users)
        await s.commit()
        user_ids = [u.id for u in users]
        conn = await s.connection()
        await conn.execute(
            insert(BrokerCredential.__table__),
            [
                {
                    "user_id": user_ids[i % n_users],
                    "broker": "kis",
                    "label": f"acct {i}",
                    "is_paper": True,
                    "product_code": "01",
                    "account_tail": f"{i % 10000:04d}",
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
                for i in range(accounts)
            ],
        )
        owners = (
            await conn.execute(
                select(BrokerCredential.id, BrokerCredential.user_id).order_by(BrokerCredential.id)
            )
        ).all()
        rows = []
        for owner_id, user_id in owners:
            for field in FIELDS:
                ref = vault.SecretRef("broker_credentials", owner_id, user_id, field)
                rows.append(
                    {
                        "user_id": user_id,
                        "owner_table": ref.owner_table,
                        "owner_id": owner_id,
                        "field": field,
                        "key_id": ring.active,
                        "ciphertext": vault.encrypt(ring, ref, _plain(owner_id, field)),
                        "created_at": utcnow(),
                    }
                )
        await conn.execute(insert(VaultSecret.__table__), rows)
        await s.commit()


def _on_key(engine: Engine, kid: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(VaultSecret).where(VaultSecret.key_id == kid)
        ).scalar_one()


def _all_secret_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(VaultSecret.__table__).order_by(VaultSecret.id)).all()
        ]


def _env(database: str, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "VAULT_KEYS": f"k1:{_b64(K1)},k2:{_b64(K2)}",
        "VAULT_ACTIVE_KEY": "k2",
        "VAULT_KEYS_FILE": "",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rotate-keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_every_value(engine: Engine, ring: KeyRing) -> int:
    rows = 0
    with engine.connect() as conn:
        for r in conn.execute(select(VaultSecret.__table__)).mappings():
            ref = vault.SecretRef(r["owner_table"], r["owner_id"], r["user_id"], r["field"])
            assert vault.decrypt(ring, ref, r["ciphertext"], key_id=r["key_id"]) == _plain(
                r["owner_id"], r["field"]
            )
            rows += 1
    return rows


async def test_rotation_of_10000_secrets_resumes_after_sigkill(database: str, sync_engine: Engine):
    total = 10_000
    started = time.monotonic()
    await _seed(total)
    seeded = time.monotonic()
    assert _on_key(sync_engine, "k1") == total

    env = _env(database)
    cmd = [sys.executable, "-m", "app.cli", "rotate-keys", "--batch-size", str(BATCH)]
    # --pause throttles the batches so the kill reliably lands mid-run
    killed = subprocess.Popen(
        [*cmd, "--pause", "0.05"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:
        while _on_key(sync_engine, "k2") < 3 * BATCH:
            assert killed.poll() is None, killed.communicate()
            assert time.monotonic() < deadline, "rotation made no progress"
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    moved = _on_key(sync_engine, "k2")
    assert 0 < moved < total, moved
    assert moved % BATCH == 0, "a batch was half-committed"
    assert _on_key(sync_engine, "k1") == total - moved
    assert _check_every_value(sync_engine, BOTH) == total  # the kill lost nothing

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finished = time.monotonic()
    assert rerun.returncode == 0, rerun.stderr
    summary = rerun.stdout.strip()
    assert summary.count("\n") == 0, summary
    assert f"re-encrypted {total - moved} in" in summary
    assert f"verified {total}/{total}" in summary and summary.endswith("OK")
    assert _on_key(sync_engine, "k1") == 0
    assert _check_every_value(sync_engine, KeyRing({"k2": K2}, "k2")) == total

    [entry] = await audit.search(audit.AuditFilter(action=audit.KEY_ROTATION))
    assert entry.outcome == "ok"
    assert (entry.detail["rotated"], entry.detail["total"]) == (total - moved, total)
    assert entry.detail["by_key_after"] == {"k2": total}
    assert entry.detail["by_key_before"] == {"k1": total - moved, "k2": moved}

    # A rerun with nothing left to do is a no-op that still verifies everything.
    again = _cli(env, "--batch-size", str(BATCH))
    assert again.returncode == 0 and "re-encrypted 0 in 0 batches" in again.stdout
    sys.stderr.write(
        f"\n[rotation timings {database.split(':')[0]}] seed {seeded - started:.1f}s, "
        f"killed after {moved} rows, rerun+verify {finished - seeded:.1f}s\n"
    )


async def test_drop_key_refused_while_in_use_then_allowed(
    database: str, sync_engine: Engine, tmp_path: Path
):
    await _seed(40)
    env = _env(database)

    refused = _cli(env, "--drop-key", "k1")
    assert refused.returncode == 3
    assert "refusing to drop vault key 'k1': 40 secrets still use it" in refused.stderr
    active = _cli(env, "--drop-key", "k2")
    assert active.returncode == 3 and "it is the active key" in active.stderr
    assert _on_key(sync_engine, "k1") == 40  # refusals change nothing

    assert _cli(env, "--batch-size", "7").returncode == 0
    assert _on_key(sync_engine, "k2") == 40

    from_env = _cli(env, "--drop-key", "k1")
    assert from_env.returncode == 0, from_env.stderr
    assert "remove it from VAULT_KEYS" in from_env.stdout

    # With a key file, the command rewrites the file itself (still mode 0600).
    key_file = tmp_path / "vault-keys.json"
    write_key_file(key_file, BOTH, replace=False)
    file_env = _env(database, VAULT_KEYS="", VAULT_ACTIVE_KEY="", VAULT_KEYS_FILE=str(key_file))
    dropped = _cli(file_env, "--drop-key", "k1")
    assert dropped.returncode == 0, dropped.stderr
    assert f"removed it from {key_file}" in dropped.stdout
    left = parse_key_file_text(key_file.read_text())
    assert (left.kids, left.active, left.key("k2")) == (("k2",), "k2", K2)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _cli(file_env).returncode == 0  # everything still decrypts with the smaller ring

    entries = await audit.search(audit.AuditFilter(action=audit.KEY_ROTATION))
    assert sorted(e.outcome for e in entries) == ["failed", "failed", "ok", "ok", "ok", "ok"]
    assert all(_b64(K1) not in json.dumps(e.detail) for e in entries)


async def test_rows_that_cannot_be_decrypted_are_left_alone_and_fail_the_run(
    database: str, sync_engine: Engine
):
    await _seed(20)
    # One row written with a key the ring does not hold, one row tampered with.
    with sync_engine.begin() as conn:
        first, second = conn.execute(
            select(VaultSecret.id, VaultSecret.owner_id, VaultSecret.user_id, VaultSecret.field)
            .order_by(VaultSecret.id)
            .limit(2)
        ).all()
        ref = vault.SecretRef("broker_credentials", first.owner_id, first.user_id, first.field)
        lost = vault.encrypt(KeyRing({"k0": K0}, "k0"), ref, "unreadable")
        table = VaultSecret.__table__
        conn.execute(
            table.update().where(table.c.id == first.id).values(ciphertext=lost, key_id="k0")
        )
        tampered = conn.execute(select(table.c.ciphertext).where(table.c.id == second.id))
        token = tampered.scalar_one()
        conn.execute(
            table.update()
            .where(table.c.id == second.id)
            .values(ciphertext=token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
        )
    before = {r[0]: r for r in _all_secret_rows(sync_engine)}

    result = _cli(_env(database), "--batch-size", "5")
    assert result.returncode == 1
    assert "re-encrypted 18 in" in result.stdout and "FAILED" in result.stdout
    assert "2 left on other keys" in result.stdout
    after = {r[0]: r for r in _all_secret_rows(sync_engine)}
    assert after[first.id] == before[first.id] and after[second.id] == before[second.id]
    assert _on_key(sync_engine, "k2") == 18

    bad_ring = _cli(_env(database, VAULT_KEYS=f"k1:{_b64(K1[:16])}", VAULT_ACTIVE_KEY=""))
    assert bad_ring.returncode == 2 and "16 bytes" in bad_ring.stderr
