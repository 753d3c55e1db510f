"""Web-push subscriptions: the browser's service worker registers itself here; and
FCM registration tokens, which an operator's native wrapper app registers the same way.

A JSON route rather than a Reflex event because ``PushSubscription`` lives in
the service worker's world (``pwa.js`` calls it with ``fetch``). The user comes
from the session cookie, and a cross-site origin is refused, so another site
cannot subscribe a victim's browser to anything or remove their devices.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import db
from app.api.auth_routes import _client_ip, _same_origin
from app.config import get_settings
from app.services import auth, channels
from app.services.errors import ValidationFailed

router = APIRouter()
MAX_BODY = 4096


async def _caller(request: Request) -> int | None:
    async with db.session() as s:
        user = await auth.resolve_session(s, request.cookies.get(auth.SESSION_COOKIE))
    return None if user is None else user.id


async def _raw_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY: reading stops there, not at its end."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> dict | None:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _body(request: Request) -> dict | None:
    raw = await _raw_body(request)
    return None if raw is None else _parse(raw)


def _error(status: int, code: str, reason: str = "") -> JSONResponse:
    return JSONResponse({"error": code, "reason": reason}, status_code=status)


async def _signed_in_caller(request: Request) -> int | JSONResponse:
    """The user id, or the answer for another site (403) or a signed-out browser (401):
    every route here changes what the caller's devices receive."""
    if not _same_origin(request):
        return _error(403, "cross_origin")
    user_id = await _caller(request)
    return _error(401, "signed_out") if user_id is None else user_id


def _refused(exc: ValidationFailed) -> JSONResponse:
    code, params = next(iter(exc.field_errors.values()))
    return _error(400, code, str(params.get("reason", "")))


@router.get("/api/push/vapid-public-key")
async def vapid_public_key() -> JSONResponse:
    key = get_settings().vapid_public_key
    if not key:
        return _error(404, "push_not_configured")
    return JSONResponse({"key": key})


@router.post("/api/push/subscriptions")
async def subscribe(request: Request) -> JSONResponse:
    user_id = await _signed_in_caller(request)
    if isinstance(user_id, JSONResponse):
        return user_id
    body = await _body(request)
    if body is None:
        return _error(400, "bad_json")
    label = str(body.pop("label", "") or "")[:60]
    try:
        async with db.session() as s:
            row = await channels.add_webpush(
                s, user_id, json.dumps(body), label, ip=_client_ip(request)
            )
    except ValidationFailed as exc:
        return _refused(exc)
    return JSONResponse({"id": row.id, "hint": row.hint}, status_code=201)


@router.delete("/api/push/subscriptions")
async def unsubscribe(request: Request) -> JSONResponse:
    user_id = await _signed_in_caller(request)
    if isinstance(user_id, JSONResponse):
        return user_id
    body = await _body(request)
    endpoint = str((body or {}).get("endpoint", ""))
    if not endpoint:
        return _error(400, "bad_json")
    async with db.session() as s:
        removed = await channels.remove_webpush(s, user_id, endpoint, ip=_client_ip(request))
    return JSONResponse({"removed": removed}, status_code=200 if removed else 404)


# --- FCM: a native wrapper app registers its device's registration token -------------


def _fcm_configured() -> bool:
    settings = get_settings()
    return bool(settings.fcm_project_id and settings.fcm_service_account_file)


async def _fcm_body(request: Request) -> dict | JSONResponse:
    """The JSON object sent, or the error answer: too large (413) or not JSON (400)."""
    raw = await _raw_body(request)
    if raw is None:
        return _error(413, "body_too_large", f"at most {MAX_BODY} bytes")
    body = _parse(raw)
    return _error(400, "bad_json") if body is None else body


@router.post("/api/push/fcm-tokens")
async def register_fcm(request: Request) -> JSONResponse:
    user_id = await _signed_in_caller(request)
    if isinstance(user_id, JSONResponse):
        return user_id
    if not _fcm_configured():
        return _error(404, "fcm_not_configured", "FCM not configured")
    body = await _fcm_body(request)
    if isinstance(body, JSONResponse):
        return body
    token = body.get("token")
    label = str(body.get("label", "") or "")[:60]
    try:
        async with db.session() as s:
            row = await channels.add_fcm(
                s, user_id, token if isinstance(token, str) else "", label, ip=_client_ip(request)
            )
    except ValidationFailed as exc:
        return _refused(exc)
    return JSONResponse({"id": row.id, "hint": row.hint}, status_code=201)


@router.delete("/api/push/fcm-tokens")
async def unregister_fcm(request: Request) -> JSONResponse:
    """Works with FCM switched off too: removing one's own device is always allowed."""
    user_id = await _signed_in_caller(request)
    if isinstance(user_id, JSONResponse):
        return user_id
    body = await _fcm_body(request)
    if isinstance(body, JSONResponse):
        return body
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return _error(400, "bad_json", "token is required")
    async with db.session() as s:
        removed = await channels.remove_fcm(s, user_id, token, ip=_client_ip(request))
    return JSONResponse({"removed": removed}, status_code=200 if removed else 404)
