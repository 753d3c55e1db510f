"""A new user's view of the market pages on the demo, in Chromium at desktop and phone width:
the symbol chart (candles from the demo's stored history, overlays, live price)."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import RunningApp
from tests.e2e.ui import no_horizontal_scroll, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.mark.parametrize("width", [1280, 390])
async def test_symbol_chart_on_the_demo(running_app: RunningApp, browser: Browser, width: int):
    base = running_app.base_url
    ctx = await browser.new_context(
        viewport={"width": width, "height": 900}, locale="ko-KR", is_mobile=width < 500
    )
    page = await ctx.new_page()
    await sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)

    await page.goto(f"{base}/symbol?code=005930")
    await expect(page.locator("#chart-name")).to_have_text("삼성전자", timeout=30_000)
    chart = page.locator("#symbol-chart")
    await expect(chart).to_be_visible(timeout=30_000)
    # plotly drew candles: one path per bar in the candlestick trace
    await expect(chart.locator("g.trace.boxes path").first).to_be_attached(timeout=30_000)
    bars = await chart.locator("g.trace.boxes path").count()
    assert bars >= 50, bars
    await expect(page.locator("#chart-price")).to_have_text(re.compile(r"^\d{1,3}(,\d{3})+$"))

    # Bollinger adds three lines to the MA20 already shown
    lines_before = await chart.locator("g.scatterlayer g.trace").count()
    await page.click("#overlay-bb")
    await expect(page.locator("#overlay-bb")).to_have_attribute("aria-pressed", "true")
    await expect(chart.locator("g.scatterlayer g.trace")).to_have_count(lines_before + 3)

    # intraday: the demo's 5-minute history, then the live price keeps moving
    await page.click("#tf-5m")
    await expect(page.locator("#tf-5m")).to_have_attribute("aria-pressed", "true")
    await expect(chart.locator("g.trace.boxes path").first).to_be_attached(timeout=30_000)
    first_price = await page.locator("#chart-price").inner_text()
    await expect(page.locator("#chart-price")).not_to_have_text(first_price, timeout=60_000)

    await asyncio.sleep(0.5)
    await no_horizontal_scroll(page, width)
    await shot(page, "symbol-chart", width)

    # an unknown code is a clear message, not an empty chart
    await page.goto(f"{base}/symbol?code=999999")
    await expect(page.locator("#chart-not-found")).to_contain_text("999999", timeout=30_000)
    await ctx.close()


@pytest.mark.parametrize("width", [1280, 390])
async def test_portfolio_and_a_paper_order_on_the_demo(
    running_app: RunningApp, browser: Browser, width: int
):
    base = running_app.base_url
    ctx = await browser.new_context(
        viewport={"width": width, "height": 900}, locale="en-US", is_mobile=width < 500
    )
    page = await ctx.new_page()
    await sign_in(page, base)
    await page.wait_for_url(f"{base}/", timeout=60_000)

    await page.goto(f"{base}/portfolio")
    await expect(page.locator("#pf-total")).to_have_text(
        re.compile(r"^\d{1,3}(,\d{3})+$"), timeout=30_000
    )
    await expect(page.locator("#pf-source")).to_have_value("paper")

    # bad input: a price off the KRX tick grid is named under the price field
    await page.fill("#pf-symbol", "005930")
    await page.fill("#pf-qty", "2")
    await page.fill("#pf-price", "70,030")
    await page.click("#pf-place")
    await expect(page.locator("#pf-error-price")).to_contain_text("70,000", timeout=15_000)

    # a market buy fills at the demo's next trade; the holding appears on refresh
    await page.select_option("#pf-type", "market")
    await expect(page.locator("#pf-price")).to_have_count(0)
    await page.click("#pf-place")
    await expect(page.locator("#pf-notice")).to_have_text(
        re.compile("Order placed.|주문이 접수되었습니다."), timeout=15_000
    )
    newest = page.locator(".pf-order").first
    await expect(newest).to_contain_text("005930")
    for _ in range(30):  # filled: the newest order no longer offers "cancel"
        if await newest.locator("button").count() == 0:
            break
        await asyncio.sleep(1)
        await page.click("#pf-refresh")
    await expect(newest.locator("button")).to_have_count(0)
    await expect(page.locator('.pf-row[data-symbol="005930"]')).to_be_visible()
    await expect(page.locator(".pf-fill").first).to_contain_text("005930")

    await asyncio.sleep(0.5)
    await no_horizontal_scroll(page, width)
    await shot(page, "portfolio", width)
    await ctx.close()
