"""OAuth / OpenID Connect sign-in routes (filled in by the OAuth work)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
