"""OAuth / OpenID Connect sign-in, end to end over loopback HTTP.

The app's FastAPI routes run in-process (httpx's ASGI transport, with a cookie
jar playing the browser); the identity provider is a real authlib server on
127.0.0.1 (tests/oidc_provider.py) that the app reaches over real HTTP. Each test
runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlmodel import col, select

from app import db
from app.api import auth_routes
from app.config import reset_settings_cache
from app.models.audit import AuditEntry
from app.models.common import utcnow
from app.models.identities import OAuthFlow, UserIdentity
from app.models.users import User, UserSession
from app.services import audit, auth
from app.services import oauth_providers as providers
from tests.integration.helpers import make_user
from tests.oidc_provider import LocalOP, OPClient, TestUser, make_apple_key

pytestmark = pytest.mark.usefixtures("database")

BASE = "http://testserver"
CLIENT_IP = "203.0.113.7"
APPLE_TEAM = "TEAM123456"


@pytest.fixture(scope="module")
def op() -> Iterator[LocalOP]:
    with LocalOP() as server:
        server.add_client(
            OPClient("google-client", "google-secret", [f"{BASE}/auth/callback/google"])
        )
        # Kakao without its optional client secret: a client that authenticates with "none".
        server.add_client(
            OPClient("kakao-client", "", [f"{BASE}/auth/callback/kakao"], auth_methods=("none",))
        )
        server.add_client(
            OPClient(
                "naver-client",
                "naver-secret",
                [f"{BASE}/auth/callback/naver"],
                pkce=False,
                auth_methods=("client_secret_post",),
            )
        )
        apple_key = make_apple_key()
        server.add_client(
            OPClient(
                "com.example.tickwatch",
                "",
                [f"{BASE}/auth/callback/apple"],
                auth_methods=("client_secret_post",),
                jwt_secret_key=apple_key,
                jwt_secret_issuer=APPLE_TEAM,
                jwt_secret_audience=server.issuer,
            )
        )
        server.apple_key = apple_key  # type: ignore[attr-defined]
        yield server


@pytest.fixture(autouse=True)
def oauth_env(op: LocalOP, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    env = {
        "APP_BASE_URL": BASE,
        "GOOGLE_CLIENT_ID": "google-client",
        "GOOGLE_CLIENT_SECRET": "google-secret",
        "GOOGLE_DISCOVERY_URL": op.discovery_url,
        "KAKAO_CLIENT_ID": "kakao-client",
        "KAKAO_CLIENT_SECRET": "",
        "KAKAO_DISCOVERY_URL": op.discovery_url,
        "NAVER_CLIENT_ID": "naver-client",
        "NAVER_CLIENT_SECRET": "naver-secret",
        "NAVER_AUTHORIZE_URL": f"{op.issuer}/authorize",
        "NAVER_TOKEN_URL": f"{op.issuer}/token",
        "NAVER_PROFILE_URL": f"{op.issuer}/v1/nid/me",
        "APPLE_CLIENT_ID": "com.example.tickwatch",
        "APPLE_TEAM_ID": APPLE_TEAM,
        "APPLE_KEY_ID": op.apple_key.kid,  # type: ignore[attr-defined]
        # As it would sit on one .env line: newlines written as \n.
        "APPLE_PRIVATE_KEY": op.apple_key.as_pem(private=True)  # type: ignore[attr-defined]
        .decode()
        .replace("\n", "\\n"),
        "APPLE_DISCOVERY_URL": op.discovery_url,
        "LOCAL_LOGIN_ENABLED": "true",
        "COOKIE_SECURE": "auto",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    op.reset()
    providers.clear_caches()
    auth_routes._throttle = None
    reset_settings_cache()
    yield
    reset_settings_cache()
    auth_routes._throttle = None


@pytest.fixture
async def op_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _browser() -> httpx.AsyncClient:
    from app.app import api

    transport = httpx.ASGITransport(app=api, client=(CLIENT_IP, 50000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with _browser() as client:
        yield client


@dataclass
class Callback:
    """Where the provider sent the browser back: a GET URL, or a form to POST (form_post)."""

    method: str
    path: str
    query: str = ""
    form: dict[str, str] | None = None

    @property
    def params(self) -> dict[str, str]:
        if self.form is not None:
            return dict(self.form)
        return {k: v[0] for k, v in parse_qs(self.query).items()}

    def with_params(self, **changes: str) -> Callback:
        params = {**self.params, **changes}
        if self.form is not None:
            return Callback(self.method, self.path, form=params)
        return Callback(self.method, self.path, query=str(httpx.QueryParams(params)))


async def authorize(browser: httpx.AsyncClient, op_http: httpx.AsyncClient, start: str) -> Callback:
    """Start at the app, follow it to the provider, and stop where the provider answers."""
    r = await browser.get(start)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith("http://127.0.0.1:"), location
    r = await op_http.get(location)
    if r.status_code == 200 and "<form" in r.text:
        action = unescape(re.search(r'action="([^"]+)"', r.text).group(1))
        fields = {
            unescape(k): unescape(v)
            for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', r.text)
        }
        assert action.startswith(BASE), action
        return Callback("POST", urlsplit(action).path, form=fields)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == BASE
    return Callback("GET", back.path, back.query)


async def finish(browser: httpx.AsyncClient, cb: Callback) -> httpx.Response:
    if cb.method == "POST":
        r = await browser.post(cb.path, data=cb.form)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/auth/callback/")
        return await browser.get(r.headers["location"])
    return await browser.get(f"{cb.path}?{cb.query}")


async def sign_in_with(
    browser: httpx.AsyncClient,
    op_http: httpx.AsyncClient,
    provider: str = "google",
    next_path: str = "/rules",
) -> httpx.Response:
    cb = await authorize(browser, op_http, f"/auth/login/{provider}?next={next_path}")
    return await finish(browser, cb)


def _session_cookie_header(r: httpx.Response) -> str:
    found = [h for h in r.headers.get_list("set-cookie") if h.startswith("tw_session=")]
    assert len(found) == 1, r.headers.get_list("set-cookie")
    return found[0]


async def _signed_in_user(browser: httpx.AsyncClient) -> User | None:
    async with db.session() as s:
        return await auth.resolve_session(s, browser.cookies.get("tw_session"))


async def _all(model: type) -> list:
    async with db.session() as s:
        return list((await s.exec(select(model))).all())


async def _audit(action: str) -> list[AuditEntry]:
    found = await audit.search(audit.AuditFilter(action=action))
    return [e for e in reversed(found) if e.action == action]  # the filter is a prefix


async def _assert_refused(r: httpx.Response, code: str, reason: str, provider: str = "google"):
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"/login?error={code}"), r.headers["location"]
    assert "tw_session" not in r.headers.get("set-cookie", "")
    failures = await _audit(audit.SIGN_IN_FAILED)
    assert failures, "the refusal was not audited"
    last = failures[-1]
    assert last.detail["provider"] == provider
    assert last.detail["reason"] == reason
    assert last.ip == CLIENT_IP
    assert last.outcome in ("failed", "denied")


# --- happy paths ---------------------------------------------------------------------------


async def test_google_sign_in_creates_user_identity_and_session(browser, op_http, op):
    op.user = TestUser(sub="g-123", email="New.Trader@Example.COM", name="New Trader")
    r = await sign_in_with(browser, op_http, "google", next_path="/rules")

    assert r.status_code == 303
    assert r.headers["location"] == "/rules"
    cookie = _session_cookie_header(r).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; https makes it Secure

    user = await _signed_in_user(browser)
    assert user is not None
    assert user.email == "new.trader@example.com"
    assert user.display_name == "New Trader"
    assert user.password_hash is None
    (identity,) = await _all(UserIdentity)
    assert (identity.user_id, identity.provider, identity.subject) == (user.id, "google", "g-123")
    assert identity.email == "new.trader@example.com" and identity.last_login_at is not None
    # the session row stores only the token's hash
    (row,) = await _all(UserSession)
    assert row.token_hash == auth.hash_token(browser.cookies["tw_session"])
    assert row.ip == CLIENT_IP
    # the flow is gone once used
    assert await _all(OAuthFlow) == []

    # PKCE and nonce went the whole way: a challenge at /authorize, the verifier at /token
    (authz,) = op.authorize_requests
    assert authz["code_challenge_method"] == "S256" and authz["nonce"]
    assert authz["redirect_uri"] == f"{BASE}/auth/callback/google"
    (tok,) = op.token_requests
    assert create_s256_code_challenge(tok["code_verifier"]) == authz["code_challenge"]

    (entry,) = await _audit(audit.SIGN_IN)
    assert entry.actor_id == user.id and entry.ip == CLIENT_IP
    assert entry.detail == {"method": "oauth", "provider": "google", "new_user": True}


async def test_second_sign_in_reuses_the_user(browser, op_http, op):
    op.user = TestUser(sub="g-reuse", email="reuse@example.com")
    await sign_in_with(browser, op_http)
    first = await _signed_in_user(browser)
    async with _browser() as other:
        r = await sign_in_with(other, op_http)
        assert r.headers["location"] == "/rules"
        again = await _signed_in_user(other)
    assert first is not None and again is not None and again.id == first.id
    assert len(await _all(User)) == 1
    assert len(await _all(UserIdentity)) == 1
    assert len(await _all(UserSession)) == 2
    assert [e.detail["new_user"] for e in await _audit(audit.SIGN_IN)] == [True, False]


@pytest.mark.parametrize("provider", ["kakao", "naver", "apple"])
async def test_other_providers_sign_in(browser, op_http, op, provider):
    op.user = TestUser(sub=f"{provider}-1", email=f"{provider}@example.com", name="")
    if provider == "apple":
        op.user.email_verified = "true"  # Apple sends a string
    r = await sign_in_with(browser, op_http, provider, next_path="/alerts")
    assert r.headers["location"] == "/alerts", r.headers["location"]
    user = await _signed_in_user(browser)
    assert user is not None and user.email == f"{provider}@example.com"
    assert user.display_name == provider  # no name given: the address's local part
    (identity,) = await _all(UserIdentity)
    assert (identity.provider, identity.subject) == (provider, f"{provider}-1")

    (authz,) = op.authorize_requests
    (tok,) = op.token_requests
    if provider == "naver":
        # plain OAuth 2: no nonce, no PKCE (Naver documents none), state also at /token
        assert "nonce" not in authz and "code_challenge" not in authz
        assert "code_verifier" not in tok
        assert tok["state"] == authz["state"]
        assert tok["client_id"] == "naver-client"
    else:
        assert authz["nonce"] and authz["code_challenge_method"] == "S256"
        assert create_s256_code_challenge(tok["code_verifier"]) == authz["code_challenge"]
    if provider == "kakao":
        assert tok["client_id"] == "kakao-client" and tok["_basic_auth"] == "no"
    if provider == "apple":
        assert authz["response_mode"] == "form_post"
        assert tok["_basic_auth"] == "no"  # client_secret_post, and the OP checked the JWT


async def test_apple_refuses_a_wrong_client_secret_key(browser, op_http, op, monkeypatch):
    other = make_apple_key(kid=op.apple_key.kid)
    monkeypatch.setenv("APPLE_PRIVATE_KEY", other.as_pem(private=True).decode())
    reset_settings_cache()
    cb = await authorize(browser, op_http, "/auth/login/apple")
    r = await finish(browser, cb)
    await _assert_refused(r, "oauth_failed", "token_exchange_failed", "apple")
    assert (await _audit(audit.SIGN_IN_FAILED))[-1].detail["provider_error"] == "invalid_client"


# --- refusals ------------------------------------------------------------------------------


async def test_wrong_state_is_refused(browser, op_http, op):
    cb = await authorize(browser, op_http, "/auth/login/google")
    r = await finish(browser, cb.with_params(state="not-the-state-we-sent"))
    await _assert_refused(r, "oauth_state", "bad_state")
    assert op.token_requests == []  # the code was never redeemed
    r = await finish(browser, cb.with_params(state=""))
    await _assert_refused(r, "oauth_state", "missing_state")
    assert await _all(User) == []


async def test_replayed_callback_and_replayed_code_are_refused(browser, op_http, op):
    cb = await authorize(browser, op_http, "/auth/login/google")
    r = await finish(browser, cb)
    assert r.headers["location"] == "/"
    # the same callback again: its flow was consumed
    async with _browser() as fresh:
        fresh.cookies.set("tw_oauth", browser.cookies["tw_oauth"], domain="testserver")
        r = await finish(fresh, cb)
    await _assert_refused(r, "oauth_state", "bad_state")
    assert len(op.token_requests) == 1

    # the old code under a brand-new flow of this browser: the provider refuses it
    cb2 = await authorize(browser, op_http, "/auth/login/google")
    r = await finish(browser, cb2.with_params(code=cb.params["code"]))
    await _assert_refused(r, "oauth_failed", "token_exchange_failed")
    assert (await _audit(audit.SIGN_IN_FAILED))[-1].detail["provider_error"] == "invalid_grant"
    assert len(await _all(UserSession)) == 1


async def test_two_callbacks_at_once_complete_only_one_flow(browser, op_http, op):
    cb = await authorize(browser, op_http, "/auth/login/google")
    first, second = await asyncio.gather(finish(browser, cb), finish(browser, cb))
    locations = sorted([first.headers["location"], second.headers["location"]])
    assert locations == ["/", "/login?error=oauth_state"]
    assert len(op.token_requests) == 1
    assert len(await _all(UserSession)) == 1


async def test_nonce_mismatch_is_refused(browser, op_http, op):
    op.nonce_override = "a-nonce-we-never-sent"
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_failed", "id_token_nonce")
    assert await _all(User) == [] and await _all(UserSession) == []


async def test_token_for_another_audience_is_refused(browser, op_http, op):
    op.audience_override = "someone-elses-client"
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_failed", "id_token_audience")
    assert await _all(User) == []


async def test_provider_requires_pkce(op, op_http):
    """The OP refuses an authorization request without a challenge, and a token request
    without the verifier, so the app's PKCE is checked against a strict server."""
    redirect = f"{BASE}/auth/callback/google"
    base = {
        "response_type": "code",
        "client_id": "google-client",
        "redirect_uri": redirect,
        "scope": "openid email",
        "state": "s1",
        "nonce": "n1",
    }
    r = await op_http.get(f"{op.issuer}/authorize", params=base)
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["invalid_request"]

    verifier = "v" * 64
    params = {
        **base,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    r = await op_http.get(f"{op.issuer}/authorize", params=params)
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    token_form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
    auth_ = ("google-client", "google-secret")
    r = await op_http.post(f"{op.issuer}/token", data=token_form, auth=auth_)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await op_http.post(
        f"{op.issuer}/token", data={**token_form, "code_verifier": "w" * 64}, auth=auth_
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await op_http.post(
        f"{op.issuer}/token", data={**token_form, "code_verifier": verifier}, auth=auth_
    )
    assert r.status_code == 200 and r.json()["id_token"]
    # and the code is single-use at the provider too
    r = await op_http.post(
        f"{op.issuer}/token", data={**token_form, "code_verifier": verifier}, auth=auth_
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_flow_without_a_stored_verifier_is_never_redeemed(browser, op_http, op):
    cb = await authorize(browser, op_http, "/auth/login/google")
    async with db.session() as s:
        (flow,) = (await s.exec(select(OAuthFlow))).all()
        flow.code_verifier = ""
        s.add(flow)
        await s.commit()
    r = await finish(browser, cb)
    await _assert_refused(r, "oauth_failed", "pkce_missing")
    assert op.token_requests == []


async def test_callback_in_another_browser_is_refused(browser, op_http, op):
    """Login CSRF: a callback URL planted in a victim's browser does not sign them in."""
    cb = await authorize(browser, op_http, "/auth/login/google")
    async with _browser() as victim:
        r = await finish(victim, cb)
        await _assert_refused(r, "oauth_state", "browser_mismatch")
        assert "tw_session" not in victim.cookies
    assert op.token_requests == []
    # and the flow is spent: the attacker's own browser cannot use it afterwards either
    r = await finish(browser, cb)
    await _assert_refused(r, "oauth_state", "bad_state")


async def test_expired_flow_is_refused(browser, op_http, op):
    cb = await authorize(browser, op_http, "/auth/login/google")
    async with db.session() as s:
        (flow,) = (await s.exec(select(OAuthFlow))).all()
        flow.expires_at = utcnow() - timedelta(seconds=1)
        s.add(flow)
        await s.commit()
    r = await finish(browser, cb)
    await _assert_refused(r, "oauth_state", "state_expired")
    assert op.token_requests == []


async def test_user_says_no_at_the_provider(browser, op_http, op):
    op.deny = True
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_denied", "provider_denied")
    assert (await _audit(audit.SIGN_IN_FAILED))[-1].detail["provider_error"] == "access_denied"
    assert await _all(OAuthFlow) == []


async def test_existing_email_is_not_linked_automatically(browser, op_http, op):
    owner = await make_user("trader@example.com")
    op.user = TestUser(sub="g-attacker", email="TRADER@example.com")
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_email_exists", "email_exists")
    assert await _all(UserIdentity) == []
    assert "tw_session" not in browser.cookies
    last = (await _audit(audit.SIGN_IN_FAILED))[-1]
    assert last.actor_id == owner.id and last.outcome == "denied"
    assert len(await _all(User)) == 1


async def test_unverified_or_missing_email_is_refused(browser, op_http, op):
    op.user = TestUser(sub="g-unverified", email="maybe@example.com", email_verified=False)
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_email_unverified", "email_unverified")
    op.user = TestUser(sub="g-noemail", email="")
    r = await sign_in_with(browser, op_http)
    await _assert_refused(r, "oauth_email_missing", "email_missing")
    assert await _all(User) == []


async def test_unknown_provider_and_unsafe_next(browser, op_http, op, monkeypatch):
    r = await browser.get("/auth/login/github")
    await _assert_refused(r, "oauth_unavailable", "unknown_provider", provider="github")
    monkeypatch.setenv("NAVER_CLIENT_ID", "")
    reset_settings_cache()
    r = await browser.get("/auth/login/naver")
    await _assert_refused(r, "oauth_unavailable", "unknown_provider", provider="naver")

    r = await sign_in_with(browser, op_http, next_path="//evil.example/steal")
    assert r.headers["location"] == "/"


async def test_providers_endpoint_lists_only_enabled(browser, monkeypatch):
    r = await browser.get("/auth/providers")
    assert r.json() == {
        "providers": [{"id": "google"}, {"id": "kakao"}, {"id": "naver"}, {"id": "apple"}],
        "local_login": True,
    }
    for var in ("GOOGLE_CLIENT_SECRET", "APPLE_KEY_ID"):
        monkeypatch.setenv(var, "")
    monkeypatch.setenv("LOCAL_LOGIN_ENABLED", "false")
    reset_settings_cache()
    r = await browser.get("/auth/providers")
    assert r.json() == {"providers": [{"id": "kakao"}, {"id": "naver"}], "local_login": False}


# --- linking -------------------------------------------------------------------------------


async def _password_sign_in(client: httpx.AsyncClient, email: str, password: str) -> None:
    r = await client.post("/auth/login", data={"email": email, "password": password})
    assert r.status_code == 303 and r.headers["location"] == "/", r.headers["location"]


async def test_link_while_signed_in_and_no_stealing(browser, op_http, op):
    alice = await make_user("alice@example.com", "alice password 1")
    mallory = await make_user("mallory@example.com", "mallory password 1")
    await _password_sign_in(browser, "alice@example.com", "alice password 1")
    alice_cookie = browser.cookies["tw_session"]

    # Alice links her Google account, whose address differs from her account's
    op.user = TestUser(sub="g-alice", email="alice.personal@gmail.example")
    cb = await authorize(browser, op_http, "/auth/link/google?next=/settings")
    r = await finish(browser, cb)
    assert r.status_code == 303 and r.headers["location"] == "/settings"
    assert browser.cookies["tw_session"] == alice_cookie  # still the same session
    (identity,) = await _all(UserIdentity)
    assert (identity.user_id, identity.subject) == (alice.id, "g-alice")
    (linked,) = await _audit(audit.IDENTITY_LINKED)
    assert linked.actor_id == alice.id and linked.detail == {"provider": "google"}
    assert linked.ip == CLIENT_IP

    # from now on Google signs Alice in, in a browser that has no session
    async with _browser() as elsewhere:
        await sign_in_with(elsewhere, op_http)
        user = await _signed_in_user(elsewhere)
        assert user is not None and user.id == alice.id

    # Mallory, signed in as herself, cannot take that Google identity over
    async with _browser() as mallorys:
        await _password_sign_in(mallorys, "mallory@example.com", "mallory password 1")
        cb = await authorize(mallorys, op_http, "/auth/link/google")
        r = await finish(mallorys, cb)
        await _assert_refused(r, "oauth_identity_taken", "identity_taken")
    last = (await _audit(audit.SIGN_IN_FAILED))[-1]
    assert last.actor_id == mallory.id and last.outcome == "denied"
    (identity,) = await _all(UserIdentity)
    assert identity.user_id == alice.id
    assert len(await _audit(audit.IDENTITY_LINKED)) == 1


async def test_link_needs_a_signed_in_user(browser, op_http, op):
    r = await browser.get("/auth/link/google?next=/settings")
    await _assert_refused(r, "oauth_link_sign_in", "link_requires_sign_in")
    assert op.authorize_requests == []

    # signed in at the start but signed out before the callback: refused, nothing linked
    await make_user("bob@example.com", "bob password 12")
    await _password_sign_in(browser, "bob@example.com", "bob password 12")
    cb = await authorize(browser, op_http, "/auth/link/google")
    r = await browser.post("/auth/logout")
    assert r.headers["location"] == "/login?signed_out=1"
    r = await finish(browser, cb)
    await _assert_refused(r, "oauth_link_sign_in", "link_requires_sign_in")
    assert await _all(UserIdentity) == []


# --- local sign-in -------------------------------------------------------------------------


async def test_disabled_local_login_refuses_the_form_post(browser, monkeypatch):
    await make_user("local@example.com", "local password 1")
    monkeypatch.setenv("LOCAL_LOGIN_ENABLED", "false")
    reset_settings_cache()
    r = await browser.post(
        "/auth/login", data={"email": "local@example.com", "password": "local password 1"}
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/login?error=local_login_disabled"
    assert "tw_session" not in browser.cookies and await _all(UserSession) == []
    (entry,) = await _audit(audit.SIGN_IN_FAILED)
    assert entry.detail == {"method": "password", "reason": "local_login_disabled"}
    assert entry.ip == CLIENT_IP


async def test_local_sign_in_out_and_failures_are_audited(browser, monkeypatch):
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "2")
    reset_settings_cache()
    user = await make_user("local@example.com", "local password 1")
    form = {"email": "local@example.com", "password": "wrong"}
    for expected in ("invalid_credentials", "invalid_credentials", "rate_limited"):
        r = await browser.post("/auth/login", data=form)
        assert r.headers["location"] == f"/login?error={expected}"
    failures = await _audit(audit.SIGN_IN_FAILED)
    assert [f.detail["reason"] for f in failures] == [
        "invalid_credentials",
        "invalid_credentials",
        "rate_limited",
    ]
    assert {f.ip for f in failures} == {CLIENT_IP}
    assert all("password" not in str(f.detail.get("reason")) for f in failures)

    auth_routes._throttle = None
    await _password_sign_in(browser, "local@example.com", "local password 1")
    (entry,) = await _audit(audit.SIGN_IN)
    assert entry.actor_id == user.id and entry.ip == CLIENT_IP
    assert entry.detail == {"method": "password"}

    r = await browser.post("/auth/logout")
    assert r.headers["location"] == "/login?signed_out=1"
    (out,) = await _audit(audit.SIGN_OUT)
    assert out.actor_id == user.id and out.ip == CLIENT_IP


async def test_no_secret_reaches_the_audit_log(browser, op_http, op):
    op.nonce_override = "other"
    await sign_in_with(browser, op_http)
    op.nonce_override = None
    await sign_in_with(browser, op_http)
    async with db.session() as s:
        rows = (await s.exec(select(AuditEntry).order_by(col(AuditEntry.id)))).all()
    text = repr([(r.detail, r.target_id) for r in rows])
    for tok in op.token_requests:
        assert tok["code"] not in text and tok["code_verifier"] not in text
    assert browser.cookies["tw_session"] not in text
    assert "google-secret" not in text
