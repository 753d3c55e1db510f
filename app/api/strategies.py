"""The strategies REST API: the catalogue, the caller's configs, attaching, the kill switch.

Same rules as the other JSON routes (``app/api/push.py``): the user comes from the
session cookie, a cross-site origin is refused, and bodies are read only up to
``MAX_BODY``. Everything goes through ``app.services.strategies``, which checks
ownership: another user's id is a 404, exactly like an id that does not exist.

Refusals are 422 with ``{"errors": {field: {"code", "message"}}}``, the message
translated (the ``tw_lang`` cookie the pages set, else Accept-Language, else the
user's stored language), so a form or a script can show it beside the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.api.auth_routes import _client_ip, _same_origin
from app.i18n import LANGUAGES, catalog, language_from_accept, normalize_language, translate
from app.models.users import User
from app.services import auth
from app.services import strategies as service
from app.services.errors import NotFound, ValidationFailed
from engines.strategies import registry

log = logging.getLogger(__name__)

router = APIRouter()
MAX_BODY = 16_384
T = TypeVar("T")
LANG_COOKIE = "tw_lang"


# ---- plumbing -------------------------------------------------------------------------


def _language(request: Request, user: User | None) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen:
        return normalize_language(chosen)
    accept = language_from_accept(request.headers.get("accept-language"), default="")
    if accept:
        return accept
    return normalize_language(user.language if user else None)


def _message(code: str, params: dict[str, object], lang: str) -> str:
    key = f"error.{code}"
    texts = catalog(lang)
    if key not in texts:
        key = "error.invalid_input"
    try:
        return translate(key, lang, **params)
    except (KeyError, IndexError, ValueError):
        return texts[key]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _attachment(view: service.AttachmentView) -> dict[str, Any]:
    out = _jsonable(asdict(view))
    out.update(
        killed=view.killed,
        live_confirmed=view.live_confirmed,
        needs_confirmation=view.needs_confirmation,
    )
    return out


def _config(view: service.ConfigView) -> dict[str, Any]:
    out = _jsonable(asdict(view))
    out["attachments"] = [_attachment(a) for a in view.attachments]
    return out


def _error(status: int, code: str, lang: str) -> JSONResponse:
    key = f"strategy_exec.api.{code}"
    text = translate(key, lang) if key in catalog(lang) else _message(code, {}, lang)
    return JSONResponse({"error": code, "message": text}, status_code=status)


def _invalid(exc: ValidationFailed, lang: str) -> JSONResponse:
    errors = {
        field: {"code": code, "message": _message(code, dict(params), lang)}
        for field, (code, params) in exc.field_errors.items()
    }
    return JSONResponse({"errors": errors}, status_code=422)


class _Caller:
    def __init__(self, user: User, lang: str, ip: str) -> None:
        self.user_id = user.id or 0
        self.lang = lang
        self.ip = ip


async def _caller(request: Request) -> _Caller | JSONResponse:
    """The signed-in user, or the answer for another site (403) or no session (401)."""
    if not _same_origin(request):
        return _error(403, "cross_origin", _language(request, None))
    async with db.session() as s:
        user = await auth.resolve_session(s, request.cookies.get(auth.SESSION_COOKIE))
    if user is None:
        return _error(401, "not_signed_in", _language(request, None))
    return _Caller(user, _language(request, user), _client_ip(request))


async def _body(request: Request, lang: str) -> dict[str, Any] | JSONResponse:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return _error(413, "body_too_large", lang)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return _error(400, "bad_json", lang)
    return body if isinstance(body, dict) else _error(400, "bad_json", lang)


async def _caller_and_body(request: Request) -> tuple[_Caller, dict[str, Any]] | JSONResponse:
    """The caller and their JSON body, or the refusal for whichever check failed first."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    body = await _body(request, caller.lang)
    if isinstance(body, JSONResponse):
        return body
    return caller, body


async def _run(
    caller: _Caller,
    work: Callable[[AsyncSession], Awaitable[T]],
    answer: Callable[[T], Response],
) -> Response:
    """Run ``work`` in one session and map the service's refusals to responses.

    Every write route refuses the same way: an id the caller does not own (or that does
    not exist) is a 404, bad input a translated 422. Keeping that mapping here keeps the
    routes from drifting apart.
    """
    try:
        async with db.session() as s:
            result = await work(s)
    except NotFound:
        return _error(404, "not_found", caller.lang)
    except ValidationFailed as exc:
        return _invalid(exc, caller.lang)
    return answer(result)


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    return value if isinstance(value, str) else str(value)


# ---- routes -------------------------------------------------------------------------


@router.get("/api/strategies/catalogue")
async def catalogue(request: Request) -> JSONResponse:
    """Every strategy users may choose, with its form fields, in the caller's language."""
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    texts = catalog(caller.lang)

    def text(key: str, fallback: str) -> str:
        return texts.get(key, fallback)

    out = []
    for info in registry.catalogue():
        fields = []
        for f in info.fields:
            fields.append(
                {
                    "name": f.name,
                    "kind": f.kind,
                    "default": f.default,
                    "required": f.required,
                    "low": f.low,
                    "high": f.high,
                    "step": f.step,
                    "choices": [
                        {"value": c, "label": text(k, c)}
                        for c, k in zip(f.choices, f.choice_keys, strict=False)
                    ],
                    "label": text(f.label_key, f.name),
                    "help": text(f.help_key, ""),
                }
            )
        out.append(
            {
                "name": info.name,
                "title": text(info.title_key, info.name),
                "description": text(info.description_key, ""),
                "builtin": info.builtin,
                "fields": fields,
            }
        )
    return JSONResponse({"strategies": out, "languages": list(LANGUAGES)})


@router.get("/api/strategies")
async def list_configs(request: Request) -> JSONResponse:
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller
    async with db.session() as s:
        views = await service.list_configs(s, caller.user_id)
    return JSONResponse({"strategies": [_config(v) for v in views]})


@router.post("/api/strategies/validate")
async def validate(request: Request) -> JSONResponse:
    """Check params without saving: 200 with ``valid`` and the field errors."""
    got = await _caller_and_body(request)
    if isinstance(got, JSONResponse):
        return got
    caller, body = got
    params = body.get("params", {})
    found = service.check_params(_text(body, "strategy"), params)
    errors = {
        field: {"code": code, "message": _message(code, params_, caller.lang)}
        for field, (code, params_) in found.items()
    }
    return JSONResponse({"valid": not errors, "errors": errors})


@router.post("/api/strategies")
async def create(request: Request) -> Response:
    got = await _caller_and_body(request)
    if isinstance(got, JSONResponse):
        return got
    caller, body = got

    async def work(s: AsyncSession) -> service.ConfigView:
        return await service.create_config(
            s,
            caller.user_id,
            label=_text(body, "label"),
            strategy=_text(body, "strategy"),
            params=body.get("params", {}),
            timeframe=_text(body, "timeframe", "1d"),
            ip=caller.ip,
        )

    return await _run(caller, work, lambda view: JSONResponse(_config(view), status_code=201))


@router.patch("/api/strategies/{config_id}")
async def update(config_id: str, request: Request) -> Response:
    """Fields left out keep their values."""
    got = await _caller_and_body(request)
    if isinstance(got, JSONResponse):
        return got
    caller, body = got

    async def work(s: AsyncSession) -> service.ConfigView:
        current = await service.get_config(s, caller.user_id, config_id, caller.ip)
        return await service.update_config(
            s,
            caller.user_id,
            current.id,
            label=_text(body, "label", current.label),
            params=body.get("params", current.params),
            timeframe=_text(body, "timeframe", current.timeframe),
            ip=caller.ip,
        )

    return await _run(caller, work, lambda view: JSONResponse(_config(view)))


@router.delete("/api/strategies/{config_id}")
async def delete(config_id: str, request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller

    async def work(s: AsyncSession) -> None:
        await service.delete_config(s, caller.user_id, config_id, caller.ip)

    return await _run(caller, work, lambda _: Response(status_code=204))


@router.post("/api/strategies/{config_id}/attachments")
async def attach(config_id: str, request: Request) -> Response:
    got = await _caller_and_body(request)
    if isinstance(got, JSONResponse):
        return got
    caller, body = got

    async def work(s: AsyncSession) -> service.AttachmentView:
        return await service.attach(
            s,
            caller.user_id,
            config_id,
            symbol=_text(body, "symbol"),
            mode=_text(body, "mode", "alert"),
            ip=caller.ip,
        )

    return await _run(caller, work, lambda view: JSONResponse(_attachment(view), status_code=201))


@router.post("/api/strategies/attachments/{attachment_id}/kill")
async def kill(attachment_id: str, request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, JSONResponse):
        return caller

    async def work(s: AsyncSession) -> service.AttachmentView:
        return await service.kill(s, caller.user_id, attachment_id, ip=caller.ip)

    return await _run(caller, work, lambda view: JSONResponse(_attachment(view)))
