"""Settings and admin pages in a real browser: sessions, revocation, roles, audit log."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import ARTIFACTS, KIS_APP_KEY, KIS_APP_SECRET, RunningApp
from tests.e2e.ui import no_horizontal_scroll as _no_horizontal_scroll
from tests.e2e.ui import shot as _shot
from tests.e2e.ui import sign_in as _sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_sessions_can_be_revoked_from_another_device(
    running_app: RunningApp, browser: Browser
):
    base = running_app.base_url
    laptop = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="ko-KR")
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, locale="ko-KR", user_agent="TickwatchPhone/1.0"
    )
    lp, pp = await laptop.new_page(), await phone.new_page()
    await _sign_in(lp, base)
    await lp.wait_for_url(f"{base}/", timeout=60_000)
    await _sign_in(pp, base)
    await pp.wait_for_url(f"{base}/", timeout=60_000)

    await lp.goto(f"{base}/settings")
    phone_row = lp.locator(".session-row", has_text="TickwatchPhone/1.0")
    await expect(phone_row).to_have_count(1, timeout=30_000)
    await expect(lp.locator(".session-row", has_text="이 기기")).to_have_count(1)
    await _shot(lp, "settings", 1280)
    await phone_row.get_by_role("button").click()
    await expect(phone_row).to_have_count(0, timeout=15_000)

    # the phone is signed out at its next page load
    await pp.goto(f"{base}/rules")
    await pp.wait_for_url(re.compile(r"/login"), timeout=30_000)
    await laptop.close()
    await phone.close()


async def test_admin_pages(running_app: RunningApp, browser: Browser):
    base = running_app.base_url
    for width in (1280, 390):
        ctx = await browser.new_context(viewport={"width": width, "height": 900}, locale="ko-KR")
        page = await ctx.new_page()
        await _sign_in(page, base)
        await page.wait_for_url(f"{base}/", timeout=60_000)
        await page.get_by_role("link", name="관리").click()
        await page.wait_for_url(re.compile(r"/admin/users"), timeout=30_000)
        await expect(page.locator(".admin-user-row").first).to_be_visible(timeout=30_000)
        await expect(page.locator(".admin-user-row", has_text="demo@example.com")).to_contain_text(
            "admin"
        )
        await _no_horizontal_scroll(page, width)
        await _shot(page, "admin-users", width)

        await page.goto(f"{base}/admin/audit")
        await expect(page.locator(".audit-row").first).to_be_visible(timeout=30_000)
        await expect(page.locator(".audit-row", has_text="auth.sign_in").first).to_be_visible()
        await page.fill("input[name=action]", "admin.")
        await page.get_by_role("button", name="필터").click()
        await expect(page.locator(".audit-row", has_text="auth.sign_in")).to_have_count(
            0, timeout=15_000
        )
        await _no_horizontal_scroll(page, width)
        await _shot(page, "admin-audit", width)

        await page.goto(f"{base}/admin/status")
        await expect(page.locator("#status-grid")).to_contain_text("on", timeout=30_000)
        await _no_horizontal_scroll(page, width)
        await _shot(page, "admin-status", width)
        await ctx.close()
    assert (ARTIFACTS / "admin-users-390.png").exists()


async def test_canary_secrets_never_reach_the_browser_logs_or_disk(
    running_app: RunningApp,
    browser: Browser,
):
    """Secrets typed into the broker form never come back: not in a frame, a log or a file."""
    import secrets as pysecrets

    base = running_app.base_url
    canaries = {
        "app_key": KIS_APP_KEY,
        "app_secret": KIS_APP_SECRET,
        "hts_id": "canary" + pysecrets.token_hex(3),
    }
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="ko-KR")
    page = await ctx.new_page()
    received: list[str] = []

    def on_ws(ws) -> None:
        ws.on("framereceived", lambda payload: received.append(str(payload)))

    page.on("websocket", on_ws)
    await _sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)
    await page.goto(f"{base}/settings")
    await page.click("#brokers-link")
    await page.wait_for_url(re.compile(r"/settings/brokers"), timeout=30_000)
    await page.fill("#broker-label", "Canary account")
    await page.fill("#broker-app_key", canaries["app_key"])
    await page.fill("#broker-app_secret", canaries["app_secret"])
    await page.fill("#broker-account_no", "87654321")
    await page.fill("#broker-hts_id", canaries["hts_id"])
    await page.click("#save-broker")
    await expect(page.locator(".broker-row")).to_have_count(1, timeout=30_000)
    await expect(page.locator(".broker-row")).to_contain_text("4321")
    # write-only: the secret inputs are empty again
    assert await page.input_value("#broker-app_secret") == ""
    await _shot(page, "brokers", 1280)
    await page.reload()
    await expect(page.locator(".broker-row")).to_have_count(1, timeout=30_000)
    # "test connection": the server decrypts the pair and KIS (the fake) accepts it
    await page.locator(".broker-test").click()
    await expect(page.locator("#brokers-notice")).to_contain_text("KIS", timeout=30_000)
    assert running_app.kis.approvals == [KIS_APP_KEY]

    html = await page.content()
    log_text = running_app.log_path.read_text(errors="replace")
    db_bytes = b"".join(p.read_bytes() for p in running_app.db_path.parent.glob("e2e.db*"))
    states_dir = ARTIFACTS.parents[2] / ".states"
    pickled = b"".join(p.read_bytes() for p in states_dir.glob("*")) if states_dir.is_dir() else b""
    assert received, "no websocket frames were captured"
    for name, value in canaries.items():
        assert not [f for f in received if value in f], f"{name} came back in a websocket frame"
        assert value not in html, name
        assert value not in log_text, f"{name} is in the app log"
        assert value.encode() not in db_bytes, f"{name} is stored in plaintext"
        assert value.encode() not in pickled, f"{name} is in Reflex's pickled state"
    assert "87654321" not in html and b"87654321" not in db_bytes
    await ctx.close()


def test_cors_is_pinned_to_the_apps_own_origin(running_app: RunningApp):
    import urllib.request

    def preflight(origin: str) -> dict[str, str]:
        req = urllib.request.Request(
            f"{running_app.base_url}/api/health",
            method="OPTIONS",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:  # a refused preflight is a 400
            return {k.lower(): v for k, v in err.headers.items()}

    evil = preflight("https://evil.example")
    assert evil.get("access-control-allow-origin") not in ("*", "https://evil.example")
    own = preflight(running_app.base_url)
    assert own.get("access-control-allow-origin") == running_app.base_url
