"""Reflex config. Every setting comes from the environment (see .env.example)."""

import os

import reflex as rx
from reflex.plugins.sitemap import SitemapPlugin

from app.config import get_settings

config = rx.Config(
    app_name="app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # Our own routes share this CORS policy; never "*" with credentials.
    cors_allowed_origins=[get_settings().app_base_url.rstrip("/")],
    # Pages read the client IP as our HTTP routes do (app/api/client_ip.py).
    trusted_proxy_hops=get_settings().trusted_proxy_hops,
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="medium"))],
    disable_plugins=[SitemapPlugin],
    # Reflex pickles each tab's state, router headers included, and those headers carry
    # the session cookie. Without Redis keep it in memory, never in .states/ on disk.
    state_manager_mode="redis" if os.environ.get("REFLEX_REDIS_URL") else "memory",
)
