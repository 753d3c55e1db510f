"""Sign in with "Google" in real Chromium, against the production build.

The app's Google settings point at the local OpenID provider (tests/oidc_provider.py),
which the e2e conftest starts before the app. Only Google is configured there, so
only the Google button may show.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import RunningApp
from tests.e2e.ui import shot as _shot
from tests.oidc_provider import TestUser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
OAUTH_EMAIL = "oauth.e2e@example.com"


async def _assert_session_cookie_is_safe(ctx: BrowserContext, page: Page) -> None:
    cookies = {c["name"]: c for c in await ctx.cookies()}
    session = cookies["tw_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/"
    flow = cookies.get("tw_oauth")
    assert flow is None or (flow["httpOnly"] and flow["sameSite"] == "Lax")
    seen_by_scripts = await page.evaluate("document.cookie")
    assert "tw_session" not in seen_by_scripts and "tw_oauth" not in seen_by_scripts


async def test_google_sign_in_in_the_browser(running_app: RunningApp, browser: Browser):
    base = running_app.base_url
    op = running_app.op
    op.user = TestUser(sub="e2e-google-1", email=OAUTH_EMAIL, name="OAuth E2E")
    before = len(op.token_requests)

    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = await ctx.new_page()
    await page.goto(f"{base}/login")
    google = page.locator("#oauth-google")
    await expect(google).to_be_visible(timeout=60_000)
    await expect(google).to_have_text("Continue with Google")
    # only configured providers are offered
    for other in ("kakao", "naver", "apple"):
        await expect(page.locator(f"#oauth-{other}")).to_have_count(0)
    await expect(page.locator("#login-submit")).to_be_visible()  # local sign-in is still on
    await _shot(page, "oauth-login", 1280)

    await google.click()
    await page.wait_for_url(f"{base}/", timeout=60_000)
    await expect(page.locator("#symbol-input")).to_be_visible(timeout=30_000)
    await asyncio.sleep(1)  # the guard ran on load: still here means the session is valid
    assert page.url == f"{base}/"
    await _assert_session_cookie_is_safe(ctx, page)
    await _shot(page, "oauth-signed-in", 1280)

    # the browser went through the provider, with PKCE and a nonce
    new = op.token_requests[before:]
    assert len(new) == 1 and new[0]["code_verifier"]
    authz = op.authorize_requests[-1]
    assert authz["nonce"] and authz["code_challenge_method"] == "S256"
    assert create_s256_code_challenge(new[0]["code_verifier"]) == authz["code_challenge"]
    assert authz["redirect_uri"] == f"{base}/auth/callback/google"
    await ctx.close()


async def test_google_sign_in_at_phone_width_keeps_next(running_app: RunningApp, browser: Browser):
    base = running_app.base_url
    running_app.op.user = TestUser(sub="e2e-google-1", email=OAUTH_EMAIL, name="OAuth E2E")
    ctx = await browser.new_context(
        viewport={"width": 390, "height": 844}, locale="ko-KR", is_mobile=True, has_touch=True
    )
    page = await ctx.new_page()
    await page.goto(f"{base}/login?next=/rules")
    google = page.locator("#oauth-google")
    await expect(google).to_be_visible(timeout=60_000)
    await expect(google).to_have_text("Google로 계속하기")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"login page is {width}px wide at 390"
    await _shot(page, "oauth-login", 390)

    await google.click()
    await page.wait_for_url(re.compile(r"/rules/?$"), timeout=60_000)
    await expect(page.locator("#rule-symbol")).to_be_visible(timeout=30_000)
    await _assert_session_cookie_is_safe(ctx, page)
    await _shot(page, "oauth-signed-in", 390)
    await ctx.close()
