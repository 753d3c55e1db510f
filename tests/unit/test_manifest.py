"""The web app manifest meets Chrome's installability rules, and its icons are real.

A manifest that points at a missing or wrongly sized icon fails silently in the
browser (no install offer, a blurry or cropped home-screen icon), so the files
are checked here, by their PNG header, rather than discovered on a phone.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _manifest() -> dict:
    return json.loads((ASSETS / "manifest.json").read_text(encoding="utf-8"))


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which PNG requires to come first."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path.name} has no IHDR first"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _asset(src: str) -> Path:
    assert src.startswith("/") and ".." not in src, src  # served from the site root
    return ASSETS / src.lstrip("/")


def test_required_fields_have_installable_values() -> None:
    m = _manifest()
    assert m["id"] == "/"
    assert m["start_url"] == "/"
    assert m["scope"] == "/"
    assert m["display"] == "standalone"
    assert m["name"] == "Tickwatch · 틱워치"
    assert m["short_name"] == "Tickwatch"
    assert len(m["short_name"]) <= 12  # longer names are truncated under home-screen icons
    assert m["lang"] == "ko"
    assert m["description"].strip()
    assert m["categories"] == ["finance"]
    for field in ("theme_color", "background_color"):
        assert re.fullmatch(r"#[0-9a-f]{6}", m[field]), field


def test_theme_color_matches_the_pages_meta_tag() -> None:
    """The title bar colour would flicker between two values if they differed."""
    source = (ROOT / "app" / "app.py").read_text(encoding="utf-8")
    meta = re.search(r'name="theme-color",\s*content="(#[0-9a-fA-F]{6})"', source)
    assert meta is not None
    assert meta.group(1).lower() == _manifest()["theme_color"]


def test_app_links_the_manifest_and_loads_pwa_js() -> None:
    source = (ROOT / "app" / "app.py").read_text(encoding="utf-8")
    assert 'rel="manifest", href="/manifest.json"' in source
    assert 'src="/pwa.js"' in source
    assert (ASSETS / "pwa.js").is_file() and (ASSETS / "sw.js").is_file()


@pytest.mark.parametrize("icon", _manifest()["icons"], ids=lambda i: i["src"])
def test_every_icon_exists_with_its_declared_size(icon: dict) -> None:
    assert icon["type"] == "image/png"
    width, height = _png_size(_asset(icon["src"]))
    assert icon["sizes"] == f"{width}x{height}"
    assert set(icon.get("purpose", "any").split()) <= {"any", "maskable", "monochrome"}


def test_icon_set_covers_chrome_requirements() -> None:
    """Chrome wants a 192 and a 512 'any' icon; Android's adaptive icons want a maskable one."""
    icons = _manifest()["icons"]

    def has(size: str, purpose: str) -> bool:
        return any(i["sizes"] == size and purpose in i.get("purpose", "any").split() for i in icons)

    assert has("192x192", "any")
    assert has("512x512", "any")
    assert has("512x512", "maskable")


def test_images_the_service_worker_uses_exist() -> None:
    """sw.js names its notification icon and badge and pre-caches files: all must exist."""
    sw = (ASSETS / "sw.js").read_text(encoding="utf-8")
    referenced = set(re.findall(r'"(/[\w.-]+\.(?:png|ico|json))"', sw))
    assert {"/icon-192.png", "/badge-72.png", "/manifest.json", "/favicon.ico"} <= referenced
    for src in referenced:
        assert _asset(src).is_file(), src
    assert _png_size(ASSETS / "badge-72.png") == (72, 72)
