"""The rule builder in Chromium against the production build: live validation in the
form, a preview on the demo's stored history, saving, and the rule list's actions."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import RunningApp
from tests.e2e.ui import no_horizontal_scroll, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.mark.parametrize("width", [1280, 390])
async def test_build_preview_and_save_a_condition_rule(
    running_app: RunningApp, browser: Browser, width: int
):
    base = running_app.base_url
    ctx = await browser.new_context(
        viewport={"width": width, "height": 900}, locale="ko-KR", is_mobile=width < 500
    )
    page = await ctx.new_page()
    await sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)

    await page.goto(f"{base}/rules/new?symbol=005930")
    left = page.locator("#rb-c0-left")
    await expect(left).to_be_visible(timeout=30_000)
    await expect(page.locator("#rb-symbol")).to_have_value("005930", timeout=15_000)

    # Live validation: an unknown indicator and a negative period are named in the form.
    await left.fill("RSX(14)")
    error = page.locator("#error-c0-left")
    await expect(error).to_contain_text("RSX", timeout=15_000)
    await left.fill("RSI(-3)")
    await expect(error).not_to_contain_text("RSX", timeout=15_000)
    await expect(error).not_to_be_empty()
    await left.fill("RSI(14)")
    await expect(error).to_be_empty(timeout=15_000)
    await page.select_option("#rb-c0-op", "less")
    await page.fill("#rb-c0-right", "5")  # never true on the demo: no alert leaks
    await page.select_option("#rb-timeframe", "1d")
    await page.fill("#rb-name", f"e2e RSI {width}")
    await asyncio.sleep(0.5)

    # The preview marks firings on the demo's stored daily history.
    await page.click("#rb-preview")
    preview = page.locator("#rb-preview-text")
    await expect(preview).to_contain_text(re.compile(r"\d"), timeout=30_000)
    await expect(page.locator("#rb-preview-chart")).to_be_visible()
    await asyncio.sleep(0.5)
    await no_horizontal_scroll(page, width)
    await shot(page, "rule-builder", width)

    await page.click("#rb-save")
    await page.wait_for_url(re.compile(r"/rules/?$"), timeout=30_000)
    row = page.locator(".rule-row", has_text=f"e2e RSI {width}")
    await expect(row).to_have_count(1, timeout=15_000)
    await expect(row).to_contain_text("RSI(14) < 5")
    await no_horizontal_scroll(page, width)
    # Leave the shared demo account as it was: other browser tests count its rules.
    await row.locator(".rule-delete").click()
    await expect(row).to_have_count(0, timeout=15_000)
    await ctx.close()
