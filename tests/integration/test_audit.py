"""The audit log is append-only, in the database itself, and searchable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import db
from app.models.common import utcnow
from app.services import audit

pytestmark = pytest.mark.usefixtures("database")


async def test_entries_cannot_be_changed_or_deleted():
    await audit.record(audit.SIGN_IN, actor_id=1, target_type="user", target_id=1, ip="10.0.0.1")
    for sql in ("UPDATE audit_log SET outcome = 'ok2'", "DELETE FROM audit_log"):
        async with db.session() as s:
            with pytest.raises(DBAPIError, match="append-only"):
                await s.exec(text(sql))
                await s.commit()
    rows = await audit.search(audit.AuditFilter())
    assert [(r.action, r.outcome, r.ip) for r in rows] == [(audit.SIGN_IN, "ok", "10.0.0.1")]


async def test_search_filters():
    await audit.record(audit.SIGN_IN, actor_id=1)
    await audit.record(audit.SIGN_IN_FAILED, actor_id=None, outcome="failed", ip="1.2.3.4")
    await audit.denied(2, "alert_rule", 7, ip="5.6.7.8")
    await audit.record(audit.ROLE_CHANGED, actor_id=1, target_type="user", target_id=2)
    assert {r.action for r in await audit.search(audit.AuditFilter(action="auth."))} == {
        audit.SIGN_IN,
        audit.SIGN_IN_FAILED,
    }
    denied = await audit.search(audit.AuditFilter(outcome="denied"))
    assert [(r.actor_id, r.target_type, r.target_id) for r in denied] == [(2, "alert_rule", "7")]
    assert len(await audit.search(audit.AuditFilter(actor_id=1))) == 2
    future = utcnow() + timedelta(hours=1)
    assert await audit.search(audit.AuditFilter(since=future)) == []
    assert len(await audit.search(audit.AuditFilter(until=future))) == 4
    # '%' in a filter is literal text, not a wildcard
    assert await audit.search(audit.AuditFilter(action="%")) == []
