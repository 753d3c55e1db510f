"""Small page helpers shared by the browser tests."""

from __future__ import annotations

import re

from playwright.async_api import Page

from tests.e2e.conftest import ARTIFACTS, DEMO_PASSWORD

DEMO_EMAIL = "demo@example.com"


async def sign_in(page: Page, base: str, password: str = DEMO_PASSWORD) -> None:
    await page.goto(f"{base}/")
    await page.wait_for_url(re.compile(r"/login"), timeout=60_000)
    await page.fill("#email", DEMO_EMAIL)
    await page.fill("#password", password)
    await page.click("#login-submit")


async def shot(page: Page, name: str, width: int) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)


async def no_horizontal_scroll(page: Page, width: int) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"page is {overflow}px wide at a {width}px viewport"
