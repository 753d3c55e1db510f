"""The link in an extra e-mail address's verification mail lands here.

A GET route rather than a page event: it is opened from a mail client, often on
another device, and must work with one click and no JavaScript. It verifies the
channel and redirects to the channels page with ``?verified=email`` or
``?error=<code>``, so the token leaves the address bar (and every Referer) at once.
The token is the capability; a browser signed in as another user is still refused
(see ``channel_links.verify_email``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app import db
from app.api.auth_routes import _client_ip
from app.services import auth, channel_links

log = logging.getLogger(__name__)
router = APIRouter()
CHANNELS_PAGE = "/settings/channels"


def _back(**query: str) -> RedirectResponse:
    response = RedirectResponse(f"{CHANNELS_PAGE}?{urlencode(query)}", status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get(channel_links.VERIFY_PATH)
async def verify_email(request: Request, token: str = "") -> RedirectResponse:
    async with db.session() as s:
        viewer = await auth.resolve_session(s, request.cookies.get(auth.SESSION_COOKIE))
        try:
            await channel_links.verify_email(
                s,
                token,
                viewer_id=None if viewer is None else viewer.id,
                ip=_client_ip(request),
            )
        except channel_links.LinkRefused as exc:
            log.info("e-mail verification refused: %s", exc.code)
            return _back(error=exc.code)
    return _back(verified="email")
