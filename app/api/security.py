"""Security headers on every response, the compiled frontend included.

The CSP allows no inline script except the exact ones the production build
prerendered into its HTML (React Router's hydration data), listed by hash, so an
injected ``<script>`` does not run. Styles keep 'unsafe-inline': Radix and emotion
set style attributes at run time, and a style cannot execute code.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import PROJECT_ROOT

log = logging.getLogger(__name__)
BUILD_DIR = PROJECT_ROOT / ".web" / "build" / "client"
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


def inline_script_hashes(html_files: Iterable[Path]) -> list[str]:
    hashes: set[str] = set()
    for path in html_files:
        for body in _INLINE_SCRIPT.findall(path.read_text(encoding="utf-8", errors="replace")):
            digest = hashlib.sha256(body.encode("utf-8")).digest()
            hashes.add(f"'sha256-{base64.b64encode(digest).decode()}'")
    return sorted(hashes)


def content_security_policy(script_hashes: list[str]) -> str:
    script_src = " ".join(["'self'", *script_hashes]) if script_hashes else "'self' 'unsafe-inline'"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self'",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    """ASGI middleware: adds the headers unless a response already set them."""

    def __init__(self, app: ASGIApp, build_dir: Path = BUILD_DIR) -> None:
        self.app = app
        self.build_dir = build_dir
        self._headers: list[tuple[bytes, bytes]] | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self._headers is None:
            files = list(self.build_dir.rglob("*.html")) if self.build_dir.is_dir() else []
            hashes = inline_script_hashes(files)
            if not hashes:
                log.warning("no production build found; CSP allows inline scripts")
            pairs = {
                "content-security-policy": content_security_policy(hashes),
                "x-content-type-options": "nosniff",
                "x-frame-options": "DENY",
                "referrer-policy": "strict-origin-when-cross-origin",
                "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
                "cross-origin-opener-policy": "same-origin",
            }
            self._headers = [(k.encode(), v.encode()) for k, v in pairs.items()]
        return self._headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https" or any(
            k == b"x-forwarded-proto" and v.split(b",")[0].strip() == b"https"
            for k, v in scope.get("headers", [])
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers() if k not in present]
                if https:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
