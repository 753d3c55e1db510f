"""KIS tokens cached in the vault (SQLite and PostgreSQL): a restart reuses the token
instead of issuing a new one (each issue sends the user a KakaoTalk message), and
the token is stored only encrypted, bound to its account, user and app key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from app import db
from app.models.vault import VaultSecret
from app.services import auth, credentials
from app.services.broker_tokens import (
    ACCESS_TOKEN_FIELD,
    SERVICE_OWNER_TABLE,
    ServiceTokenStore,
    VaultTokenStore,
    service_owner_id,
)
from brokers.kis.rest import KisRest
from brokers.kis.tokens import CachedToken
from brokers.ratelimit import reset_registry
from tests.integration.helpers import make_user
from tests.kis_fake import FakeQuote, KisFake
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.usefixtures("database")

APP_KEY = "PS" + "K" * 34
APP_SECRET = "S" * 180
ACCOUNT = "50123456"
SAMSUNG = "005930"


@pytest.fixture
def kis() -> Iterator[tuple[KisFake, LoopbackServer]]:
    reset_registry()
    fake = KisFake(
        app_keys={APP_KEY: APP_SECRET, "PS" + "Z" * 34: APP_SECRET},
        quotes={SAMSUNG: FakeQuote(70_000, 69_000, 69_500, 70_500, 68_900, 1)},
    )
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()
        reset_registry()


@pytest.fixture
async def clients() -> AsyncIterator[list[KisRest]]:
    made: list[KisRest] = []
    yield made
    for client in made:
        await client.close()


def _rest(server: LoopbackServer, store: object, made: list[KisRest], **kw: object) -> KisRest:
    args: dict[str, object] = {
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "paper": False,
        "account_no": ACCOUNT,
        "base_url": server.base_url,
        "token_store": store,
    }
    args.update(kw)
    rest = KisRest(**args)  # type: ignore[arg-type]
    made.append(rest)
    return rest


async def _account(user_id: int) -> int:
    async with db.session() as s:
        row = await credentials.create_kis_account(
            s,
            user_id,
            label="main",
            app_key=APP_KEY,
            app_secret=APP_SECRET,
            account_no=ACCOUNT,
            is_paper=False,
        )
    return row.id


async def _token_rows() -> list[VaultSecret]:
    async with db.session() as s:
        rows = await s.exec(select(VaultSecret).where(VaultSecret.field == ACCESS_TOKEN_FIELD))
        return list(rows.all())


def _issued_tokens(fake: KisFake) -> set[str]:
    return {r.headers["authorization"].removeprefix("Bearer ") for r in fake.uapi_requests()}


async def test_token_survives_a_restart_encrypted(kis, clients):
    fake, server = kis
    user = await make_user()
    credential = await _account(user.id)
    await _rest(server, VaultTokenStore(credential, user.id, APP_KEY), clients).quote(SAMSUNG)
    assert fake.issues == [APP_KEY]
    (token,) = _issued_tokens(fake)

    # A restart: the pool, the limiter registry, the store and the adapter are all new.
    await db.dispose()
    reset_registry()
    store = VaultTokenStore(credential, user.id, APP_KEY)
    cached = await store.load()
    assert cached is not None and cached.access_token == token
    assert token not in repr(store) and token not in repr(cached)
    await _rest(server, store, clients).quote(SAMSUNG)
    assert fake.issues == [APP_KEY]  # no second issue, no second KakaoTalk message
    assert _issued_tokens(fake) == {token}

    (row,) = await _token_rows()
    assert (row.owner_table, row.owner_id, row.user_id) == (
        "broker_credentials",
        credential,
        user.id,
    )
    assert row.ciphertext.startswith("v1.test.")
    for fragment in (token, token[:16], token[-16:], APP_KEY, "access_token"):
        assert fragment not in row.ciphertext
    # ...nor anywhere else in the database's secrets
    async with db.session() as s:
        everything = json.dumps(
            [r.model_dump(mode="json") for r in (await s.exec(select(VaultSecret))).all()]
        )
    assert token not in everything and token[:16] not in everything


async def test_token_is_bound_to_user_account_and_app_key(kis, clients):
    fake, server = kis
    user = await make_user()
    other = await make_user("other@example.com")
    credential = await _account(user.id)
    second = await _account(user.id)
    await _rest(server, VaultTokenStore(credential, user.id, APP_KEY), clients).quote(SAMSUNG)
    assert await VaultTokenStore(credential, user.id, APP_KEY).load() is not None
    # another user, another account, or another app key finds nothing
    assert await VaultTokenStore(credential, other.id, APP_KEY).load() is None
    assert await VaultTokenStore(second, user.id, APP_KEY).load() is None
    assert await VaultTokenStore(credential, user.id, "PS" + "Z" * 34).load() is None
    # a ciphertext moved to another account's row does not decrypt there
    (row,) = await _token_rows()
    async with db.session() as s:
        s.add(
            VaultSecret(
                user_id=user.id,
                owner_table="broker_credentials",
                owner_id=second,
                field=ACCESS_TOKEN_FIELD,
                key_id=row.key_id,
                ciphertext=row.ciphertext,
            )
        )
        await s.commit()
    assert await VaultTokenStore(second, user.id, APP_KEY).load() is None
    # the other user's store does not write into this user's account either
    await VaultTokenStore(credential, other.id, APP_KEY).save(
        CachedToken("eyJ-other", datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC))
    )
    assert (await VaultTokenStore(credential, user.id, APP_KEY).load()).access_token != "eyJ-other"


async def test_clear_and_delete_account(kis, clients):
    fake, server = kis
    user = await make_user()
    credential = await _account(user.id)
    store = VaultTokenStore(credential, user.id, APP_KEY)
    await _rest(server, store, clients).quote(SAMSUNG)
    await store.clear()
    assert await store.load() is None
    # the account's own secrets are untouched
    async with db.session() as s:
        secrets = await credentials.use_kis_account(s, user.id, credential, purpose="test")
    assert secrets.app_key == APP_KEY
    await store.save(await _a_token())
    async with db.session() as s:
        await credentials.delete_kis_account(s, user.id, credential)
    assert await _token_rows() == []
    await store.save(await _a_token())  # the account is gone: nothing is written
    assert await _token_rows() == []


async def _a_token() -> CachedToken:
    now = datetime.now(UTC).replace(microsecond=0)
    return CachedToken("eyJ-a-token", now + timedelta(hours=24), now)


async def test_service_key_token_survives_a_restart(kis, clients):
    fake, server = kis
    async with db.session() as s:
        admin = await auth.create_local_user(s, "ops@example.com", "correct horse 1", role="admin")
    await make_user()  # a later, ordinary user
    await _rest(server, ServiceTokenStore(APP_KEY), clients, account_no="").quote(SAMSUNG)
    assert fake.issues == [APP_KEY]
    (token,) = _issued_tokens(fake)
    await db.dispose()
    reset_registry()
    await _rest(server, ServiceTokenStore(APP_KEY), clients, account_no="").quote(SAMSUNG)
    assert fake.issues == [APP_KEY]
    (row,) = await _token_rows()
    assert (row.owner_table, row.owner_id, row.user_id) == (
        SERVICE_OWNER_TABLE,
        service_owner_id(APP_KEY),
        admin.id,
    )
    assert 0 < row.owner_id < 2**31 and service_owner_id("PS" + "Z" * 34) != row.owner_id
    assert token not in row.ciphertext and token[:16] not in row.ciphertext
    assert await ServiceTokenStore("PS" + "Z" * 34).load() is None


async def test_service_key_without_an_admin_is_cached_in_memory(kis, clients):
    fake, server = kis
    await make_user()
    store = ServiceTokenStore(APP_KEY)
    rest = _rest(server, store, clients, account_no="")
    await rest.quote(SAMSUNG)
    assert await _token_rows() == []
    cached = await store.load()
    assert cached is not None and cached.access_token in _issued_tokens(fake)
