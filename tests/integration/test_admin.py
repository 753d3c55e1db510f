"""Roles are enforced in services; admin actions and refusals are audited."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import db
from app.models.users import User
from app.services import admin, audit, auth, sessions
from app.services.errors import NotFound, PermissionDenied, ValidationFailed
from tests.integration.helpers import make_user

pytestmark = pytest.mark.usefixtures("database")


async def _admin_and_user() -> tuple[User, User]:
    boss = await make_user("boss@example.com")
    async with db.session() as s:
        row = await s.get(User, boss.id)
        row.role = "admin"
        s.add(row)
        await s.commit()
        await s.refresh(row)
    return row, await make_user("user@example.com")


async def test_non_admin_is_refused_everywhere_and_audited():
    _, user = await _admin_and_user()
    calls = [
        lambda s: admin.list_users(s, user),
        lambda s: admin.set_role(s, user, user.id, "admin"),
        lambda s: admin.set_active(s, user, user.id, False),
        lambda s: admin.system_status(s, user),
        lambda s: admin.audit_log(user, audit.AuditFilter()),
    ]
    for call in calls:
        async with db.session() as s:
            with pytest.raises(PermissionDenied):
                await call(s)
    async with db.session() as s:
        assert (await s.get(User, user.id)).role == "user"
    denied = await audit.search(audit.AuditFilter(outcome="denied"))
    assert len(denied) == len(calls) and {d.actor_id for d in denied} == {user.id}


async def test_role_change_and_disable_are_audited_and_guarded():
    boss, user = await _admin_and_user()
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1))
        await admin.set_role(s, boss, user.id, "admin", ip="10.1.1.1")
        assert (await s.get(User, user.id)).role == "admin"
        with pytest.raises(ValidationFailed):
            await admin.set_role(s, boss, user.id, "superuser")
        await admin.set_role(s, boss, user.id, "user")
        # the last admin can neither be demoted nor disabled, nor disable themselves
        with pytest.raises(ValidationFailed) as err:
            await admin.set_role(s, boss, boss.id, "user")
        assert err.value.code == "last_admin"
        with pytest.raises(ValidationFailed):
            await admin.set_active(s, boss, boss.id, False)
        with pytest.raises(NotFound):
            await admin.set_role(s, boss, 99_999, "admin")
        # disabling signs the user out everywhere
        assert await auth.resolve_session(s, token) is not None
        await admin.set_active(s, boss, user.id, False)
        assert await auth.resolve_session(s, token) is None
        await admin.set_active(s, boss, user.id, True)
        status = await admin.system_status(s, boss)
        assert status.users == 2
    changes = await audit.search(audit.AuditFilter(action="admin."))
    actions = sorted(c.action for c in changes)
    assert actions == sorted(
        [audit.ROLE_CHANGED, audit.ROLE_CHANGED, audit.USER_DISABLED, audit.USER_ENABLED]
    )
    first = [c for c in changes if c.action == audit.ROLE_CHANGED][-1]
    assert first.detail == {"from": "user", "to": "admin"} and first.ip == "10.1.1.1"


async def test_sessions_list_and_revoke_only_own():
    a = await make_user("a@example.com")
    b = await make_user("b@example.com")
    async with db.session() as s:
        ta1 = await auth.create_session(s, a, timedelta(hours=1), "Firefox", "1.1.1.1")
        await auth.create_session(s, a, timedelta(hours=1), "Phone", "2.2.2.2")
        tb = await auth.create_session(s, b, timedelta(hours=1), "Chrome", "3.3.3.3")
        rows = await sessions.list_active(s, a.id, ta1)
        assert sorted(r.user_agent for r in rows) == ["Firefox", "Phone"]
        assert [r.current for r in rows if r.user_agent == "Firefox"] == [True]
        b_rows = await sessions.list_active(s, b.id, tb)
        # a cannot revoke b's session
        with pytest.raises(NotFound):
            await sessions.revoke(s, a.id, b_rows[0].id)
        assert await auth.resolve_session(s, tb) is not None
        phone = [r for r in rows if r.user_agent == "Phone"][0]
        await sessions.revoke(s, a.id, phone.id)
        assert [r.user_agent for r in await sessions.list_active(s, a.id, ta1)] == ["Firefox"]
    denied = await audit.search(audit.AuditFilter(outcome="denied"))
    assert [(d.actor_id, d.target_type) for d in denied] == [(a.id, "user_session")]


async def test_cli_set_role_is_audited(capsys):
    from app.cli import set_role

    user = await make_user("ops@example.com")
    assert await set_role("ops@example.com", "admin") == 0
    assert await set_role("nobody@example.com", "admin") == 1
    async with db.session() as s:
        assert (await s.get(User, user.id)).role == "admin"
    entry = (await audit.search(audit.AuditFilter(action=audit.ROLE_CHANGED)))[0]
    assert entry.actor_id is None and entry.detail["via"] == "cli"
    assert "user -> admin" in capsys.readouterr().out
