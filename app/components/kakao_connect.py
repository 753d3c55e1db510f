"""The "connect KakaoTalk" button for the channels page.

Linking is a server-side OAuth flow (``app.api.kakao_link``), so this is a link the
browser follows itself (``reload_document``): a client-side route change would never
reach the server, and a form would be blocked by the CSP's ``form-action 'self'`` once
the answer redirects to Kakao. The route answers with ``?linked=kakao`` or
``?error=<code>`` on the channels page, whose texts are in ``*.kakao_link.json``.
"""

from __future__ import annotations

import reflex as rx
from reflex_components_core.react_router.dom import ReactRouterLink

from app.components.i18n import t

START_HREF = "/api/channels/kakao/start"
BUTTON_ID = "kakao-connect"


def kakao_connect_button() -> rx.Component:
    """KakaoTalk's yellow, with the help line saying what the user agrees to at Kakao."""
    return rx.flex(
        rx.button(
            ReactRouterLink.create(
                t("kakao_link.connect"),
                to=START_HREF,
                reload_document=True,
                id=BUTTON_ID,
            ),
            as_child=True,
            size="2",
            background="#FEE500",
            color="rgba(0, 0, 0, 0.85)",
            text_decoration="none",
        ),
        rx.text(t("kakao_link.connect_help"), size="1", color="var(--gray-11)"),
        direction="column",
        spacing="1",
        align="start",
    )
