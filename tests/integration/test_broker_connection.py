"""'Test connection' asks KIS (a loopback fake of its protocol) for an approval key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import db
from app.config import Settings
from app.services import audit, credentials
from app.services.errors import NotFound
from tests.integration.helpers import make_user
from tests.kis_fake import KisFake
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.usefixtures("database")
APP_KEY, APP_SECRET = "PS" + "A" * 34, "S" * 180


@pytest.fixture
def kis() -> Iterator[tuple[KisFake, LoopbackServer]]:
    fake = KisFake(app_keys={APP_KEY: APP_SECRET})
    server = fake.serve()
    try:
        yield fake, server
    finally:
        server.stop()


async def _account(user_id: int, secret: str, is_paper: bool = True) -> int:
    async with db.session() as s:
        row = await credentials.create_kis_account(
            s,
            user_id,
            label="main",
            app_key=APP_KEY,
            app_secret=secret,
            account_no="12345678",
            product_code="01",
            is_paper=is_paper,
        )
    return row.id


async def test_right_pair_ok_wrong_pair_rejected_down_unavailable(kis):
    fake, server = kis
    cfg = Settings(kis_paper_base_url=server.base_url, kis_real_base_url=server.base_url)
    user = await make_user()
    good = await _account(user.id, APP_SECRET)
    bad = await _account(user.id, "X" * 180, is_paper=False)
    async with db.session() as s:
        assert await credentials.check_kis_connection(s, user.id, good, settings=cfg) == "ok"
        assert await credentials.check_kis_connection(s, user.id, bad, settings=cfg) == "rejected"
        fake.down = True
        result = await credentials.check_kis_connection(s, user.id, good, settings=cfg)
        assert result == "unavailable"
    assert fake.approvals == [APP_KEY, APP_KEY]  # the down call never reached the check
    tested = await audit.search(audit.AuditFilter(action=audit.CONNECTION_TESTED))
    assert sorted(e.detail["result"] for e in tested) == ["ok", "rejected", "unavailable"]
    assert "EGW00105" in [e for e in tested if e.detail["result"] == "rejected"][0].detail["reason"]
    decrypts = await audit.search(audit.AuditFilter(action=audit.CREDENTIAL_DECRYPTED))
    assert len(decrypts) == 3 and {e.detail["purpose"] for e in decrypts} == {"test_connection"}
    # no secret in any audit entry
    everything = str([(e.detail, e.target_id) for e in await audit.search(audit.AuditFilter())])
    assert APP_SECRET not in everything and APP_KEY not in everything


async def test_unreachable_host_is_unavailable_and_others_cannot_test(kis):
    _, server = kis
    user = await make_user()
    other = await make_user("other@example.com")
    account = await _account(user.id, APP_SECRET)
    cfg = Settings(kis_paper_base_url="http://127.0.0.1:9", kis_timeout=2)
    async with db.session() as s:
        assert await credentials.check_kis_connection(s, user.id, account, settings=cfg) == (
            "unavailable"
        )
        with pytest.raises(NotFound):
            await credentials.check_kis_connection(s, other.id, account, ip="7.7.7.7")
    denied = await audit.search(audit.AuditFilter(outcome="denied"))
    assert [(d.actor_id, d.ip) for d in denied] == [(other.id, "7.7.7.7")]
