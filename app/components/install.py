"""The "install app" button: present in every navbar, visible only when installable.

Chrome decides when the app may be installed and says so with a
``beforeinstallprompt`` event, which only plain JavaScript can catch. So
``assets/pwa.js`` owns the state: it marks ``<html data-tw-install="ready">``
while the browser's offer is usable and removes the mark once it is used or the
app is installed. This component only reacts to that mark with CSS, so it is
right from the first paint (hidden) and after React re-mounts the navbar on
another page. The click is wired in pwa.js by the button's id.
"""

from __future__ import annotations

import reflex as rx

from app.components.i18n import t

INSTALL_BUTTON_ID = "install-app"
INSTALL_READY_SELECTOR = "html[data-tw-install='ready'] &"


def install_button() -> rx.Component:
    """Hidden wrapper around the button; shown by CSS while pwa.js holds an offer."""
    return rx.el.div(
        rx.button(
            rx.icon("download", size=16),
            t("pwa.install"),
            id=INSTALL_BUTTON_ID,
            type="button",
            variant="soft",
            size="2",
            title=t("pwa.install_hint"),
        ),
        id="install-slot",
        display="none",
        style={INSTALL_READY_SELECTOR: {"display": "block"}},
    )
