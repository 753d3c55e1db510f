"""The walking skeleton, as a user meets it: real Chromium against the production build.

Sign in, watch 005930, see its price move, set an alert the simulated market
will cross, see it in the app and in the history, and receive the e-mail.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import Browser, Page, expect

from tests.e2e.conftest import ARTIFACTS, RunningApp
from tests.e2e.ui import DEMO_EMAIL
from tests.e2e.ui import no_horizontal_scroll as _no_horizontal_scroll
from tests.e2e.ui import shot as _shot
from tests.e2e.ui import sign_in as _sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _to_int(text: str) -> int:
    return int(text.replace(",", "").strip())


async def _price(page: Page, code: str) -> int:
    loc = page.locator(f"#price-{code}")
    await expect(loc).to_have_text(re.compile(r"^\d[\d,]*$"), timeout=30_000)
    return _to_int(await loc.inner_text())


async def test_tick_to_delivered_alert(running_app: RunningApp, browser: Browser):
    base = running_app.base_url
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="ko-KR")
    page = await ctx.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    first_response = await page.goto(f"{base}/login")
    headers = await first_response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert (
        "'unsafe-inline'"
        not in headers["content-security-policy"].split("script-src")[1].split(";")[0]
    )
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["x-content-type-options"] == "nosniff"

    # a wrong password is refused with a message, and no cookie is set
    await _sign_in(page, base, password="wrong-password")
    await expect(page.locator("#login-error")).to_be_visible(timeout=30_000)
    assert not [c for c in await ctx.cookies() if c["name"] == "tw_session"]
    await _shot(page, "login", 1280)

    await _sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)
    session_cookie = [c for c in await ctx.cookies() if c["name"] == "tw_session"][0]
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
    assert await page.evaluate("document.cookie.includes('tw_session')") is False
    await expect(page.locator(".watch-row")).to_have_count(3, timeout=30_000)

    # add 005930 by code
    await page.fill("#symbol-input", "005930")
    await page.click("#add-symbol")
    await expect(page.locator("#watch-notice")).to_be_visible(timeout=15_000)
    await expect(page.locator(".watch-row")).to_have_count(4)

    # its price changes on screen without a reload
    first = await _price(page, "005930")
    deadline = time.monotonic() + 30
    while await _price(page, "005930") == first:
        assert time.monotonic() < deadline, "price did not change on screen in 30 s"
        await asyncio.sleep(0.2)

    # bad input: unknown symbol and a duplicate are refused in the form, nothing added
    for bad in ("999999", "000660"):
        await page.fill("#symbol-input", bad)
        await page.click("#add-symbol")
        await expect(page.locator("#watch-error")).to_be_visible(timeout=15_000)
        await expect(page.locator(".watch-row")).to_have_count(4)
    assert "999999" not in await page.locator("#watchlist").inner_text()
    await _shot(page, "watchlist", 1280)

    # alert rules: bad input first
    await page.goto(f"{base}/rules")
    await expect(page.locator("#rule-symbol")).to_be_visible(timeout=30_000)
    for symbol, level, field in (
        ("005930", "-5", "level"),
        ("005930", "abc", "level"),
        ("없는종목", "70000", "symbol"),
    ):
        await page.fill("#rule-symbol", symbol)
        await page.fill("#rule-level", level)
        await page.click("#create-rule")
        await expect(page.locator(f"#error-{field}")).to_be_visible(timeout=15_000)
    await expect(page.locator(".rule-row")).to_have_count(0)

    # a crossing the market will make: the level is the price now on screen
    await page.goto(f"{base}/")
    level = await _price(page, "005930")
    await page.click("#alert-005930")  # the row's bell opens the form for that symbol
    await page.wait_for_url(re.compile(r"/rules/?\?symbol=005930"), timeout=30_000)
    await expect(page.locator("#rule-symbol")).to_have_value("005930", timeout=15_000)
    await page.select_option("#rule-op", "cross")
    await page.fill("#rule-level", f"{level:,}")
    await page.click("#create-rule")
    await expect(page.locator(".rule-row")).to_have_count(1, timeout=15_000)
    await expect(page.locator("#rules-notice")).to_be_visible()
    await _shot(page, "rules", 1280)

    # wait on the history page: the in-app alert arrives in the open page
    await page.click("a[href='/alerts']")
    await page.wait_for_url(re.compile(r"/alerts"), timeout=30_000)
    loaded_before_alert = await page.locator(".history-row").count() == 0
    await expect(page.locator("#alert-toast")).to_be_visible(timeout=120_000)
    assert "005930" in await page.locator("#toast-text").inner_text()
    await expect(page.locator("#unread-badge")).to_have_text("1")
    await _shot(page, "alert-toast", 1280)

    # the history shows it, with its deliveries; if the page was open before the
    # alert fired, it offers to show the new one instead of staying stale
    if loaded_before_alert and await page.locator(".history-row").count() == 0:
        await page.click("#history-refresh")
    await expect(page.locator(".history-row")).to_have_count(1, timeout=30_000)
    row_text = await page.locator(".history-row").first.inner_text()
    assert "005930" in row_text and f"{level:,}" in row_text
    assert "체결가" in row_text  # the traded price line, in the user's language
    await _shot(page, "history", 1280)

    # and the e-mail reached the SMTP server
    deadline = time.monotonic() + 30
    while not running_app.smtp.messages:
        assert time.monotonic() < deadline, "no e-mail in 30 s"
        await asyncio.sleep(0.2)
    mail = running_app.smtp.messages[0]
    assert running_app.smtp.envelopes[0][1] == [DEMO_EMAIL]
    assert "삼성전자" in mail["Subject"] and f"{level:,}" in mail["Subject"]
    assert len(running_app.smtp.messages) == 1

    # delivery log on the history page says both channels were sent
    await page.reload()
    await expect(page.locator(".history-row").first).to_contain_text("전송됨", timeout=30_000)

    # the strict CSP broke nothing the user did above
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors

    # language switch
    await page.click("#lang-toggle")
    await expect(page.get_by_role("link", name="Watchlist")).to_be_visible(timeout=15_000)
    await page.click("#lang-toggle")
    await expect(page.get_by_role("link", name="관심종목")).to_be_visible(timeout=15_000)
    await ctx.close()


async def test_phone_width_and_sign_out(running_app: RunningApp, browser: Browser):
    base = running_app.base_url
    ctx = await browser.new_context(
        viewport={"width": 390, "height": 844}, locale="ko-KR", is_mobile=True, has_touch=True
    )
    page = await ctx.new_page()
    await _sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)
    await expect(page.locator(".watch-row").first).to_be_visible(timeout=30_000)
    await _price(page, "000660")
    for path, name, ready in (
        ("/", "watchlist", ".watch-row"),
        ("/rules", "rules", "#rule-symbol"),
        ("/alerts", "history", "#history-list"),
    ):
        await page.goto(f"{base}{path}")
        await expect(page.locator(ready).first).to_be_visible(timeout=30_000)
        await asyncio.sleep(0.5)
        await _no_horizontal_scroll(page, 390)
        await _shot(page, name, 390)
    await page.goto(f"{base}/login")
    await _shot(page, "login", 390)

    # sign out revokes the session: the old cookie no longer opens a page
    await page.goto(f"{base}/")
    await expect(page.locator(".watch-row").first).to_be_visible(timeout=30_000)
    old = [c for c in await ctx.cookies() if c["name"] == "tw_session"][0]
    # the session token is never pickled to disk with Reflex's state
    states_dir = ARTIFACTS.parents[2] / ".states"
    pickled = list(states_dir.glob("*")) if states_dir.is_dir() else []
    assert not [p for p in pickled if old["value"].encode() in p.read_bytes()]
    await page.get_by_role("button", name="로그아웃").click()
    await page.wait_for_url(re.compile(r"/login/?\?signed_out=1"), timeout=30_000)
    await ctx.add_cookies([old])
    await page.goto(f"{base}/")
    await page.wait_for_url(re.compile(r"/login"), timeout=30_000)
    await ctx.close()
