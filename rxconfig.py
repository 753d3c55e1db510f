"""Reflex config. Every setting comes from the environment (see .env.example)."""

import os

import reflex as rx
from reflex.plugins.sitemap import SitemapPlugin

_base_url = os.environ.get("APP_BASE_URL", "http://localhost:3000").rstrip("/")

config = rx.Config(
    app_name="app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # Our own routes share this CORS policy; never "*" with credentials.
    cors_allowed_origins=[_base_url],
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="medium"))],
    disable_plugins=[SitemapPlugin],
)
