"""Reflex config. Every setting comes from the environment (see .env.example)."""

import reflex as rx
from reflex.plugins.sitemap import SitemapPlugin

from app.config import get_settings

config = rx.Config(
    app_name="app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # Our own routes share this CORS policy; never "*" with credentials.
    cors_allowed_origins=[get_settings().app_base_url.rstrip("/")],
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="medium"))],
    disable_plugins=[SitemapPlugin],
)
