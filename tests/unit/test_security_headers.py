"""CSP hashes cover exactly the inline scripts of the build, and headers reach every response."""

from __future__ import annotations

import base64
import hashlib

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.api.security import SecurityHeaders, content_security_policy, inline_script_hashes


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_hashes_only_inline_scripts(tmp_path):
    page = tmp_path / "index.html"
    page.write_text(
        '<script>window.a=1</script><script type="module" src="/x.js"></script>'
        '<script id="_R_">b()</script>'
    )
    assert inline_script_hashes([page]) == sorted([_sha("window.a=1"), _sha("b()")])
    csp = content_security_policy(inline_script_hashes([page]))
    script_src = csp.split("script-src ")[1].split(";")[0]
    assert "'unsafe-inline'" not in script_src and _sha("b()") in script_src
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp


async def test_middleware_sets_headers_and_hsts_only_on_https(tmp_path):
    async def hello(request):
        return PlainTextResponse("hi", headers={"x-frame-options": "SAMEORIGIN"})

    app = SecurityHeaders(Starlette(routes=[Route("/", hello)]), build_dir=tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        plain = await client.get("/")
        tls = await client.get("/", headers={"x-forwarded-proto": "https"})
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["x-frame-options"] == "SAMEORIGIN"  # a route's own value wins
    assert "strict-transport-security" not in plain.headers
    assert tls.headers["strict-transport-security"].startswith("max-age=")
    # no build yet: the app must still work, so inline scripts are allowed (and logged)
    assert "'unsafe-inline'" in plain.headers["content-security-policy"].split("script-src")[1]
