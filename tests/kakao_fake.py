"""A loopback fake of Kakao's talk memo API (kapi) and token endpoint (kauth).

As Kakao documents them:

* ``POST /oauth/token`` (form, ``grant_type=refresh_token``, ``client_id``,
  ``client_secret`` when the app has one, ``refresh_token``) ->
  ``{"access_token", "token_type": "bearer", "expires_in"}`` plus, when ``rotate`` is on,
  a new ``refresh_token`` and ``refresh_token_expires_in`` (the old refresh token then
  stops working, so a client that fails to save the new one is locked out). Errors:
  ``400 {"error": "invalid_grant", "error_code": "KOE322"}`` for an unknown or revoked
  refresh token, ``401 {"error": "invalid_client", "error_code": "KOE010"}`` for a bad
  client secret.
* ``POST /v2/api/talk/memo/default/send`` (form ``template_object``, ``Authorization:
  Bearer``) -> ``{"result_code": 0}``. Errors use ``{"msg", "code"}``: 401/-401 for an
  unknown or expired access token, 403/-402 when ``talk_message`` was not agreed,
  400/-10 over quota (or 429 when ``quota_status`` says so), 400/-2 for a bad template,
  503/-9798 maintenance or 500 when ``fail_status`` is set.

* ``GET /oauth/authorize`` (``client_id``, ``redirect_uri``, ``response_type=code``,
  ``scope``, ``state``): the user signs in and consents at once (who, and what they
  decline, is set on the fake: ``login_as``, ``decline``, ``deny``), then the browser
  is sent back with ``302 redirect_uri?code=...&state=...``, or with
  ``?error=access_denied&error_description=...&state=...`` when the user cancels. An
  unknown client id (KOE101) or an unregistered redirect URI (KOE006) is answered with
  an error page, not a redirect, as Kakao does.
* ``POST /oauth/token`` with ``grant_type=authorization_code`` (``code``,
  ``redirect_uri``, ``client_id``, ``client_secret``) -> the refresh answer plus
  ``refresh_token`` and ``scope`` (space separated, what the user agreed to). Codes are
  single use and live ten minutes. Errors: ``400 invalid_grant KOE320`` for an unknown,
  expired or already used code, ``400 invalid_grant KOE303`` when ``redirect_uri``
  differs from the authorize request's, ``401 invalid_client KOE010`` for a bad secret.
* ``GET /v2/user/me`` (``Authorization: Bearer``) -> ``{"id", "connected_at"}``;
  401/-401 for an unknown or expired token.

Each user has scopes; ``connect()`` issues tokens the way a finished Kakao login would.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer

MEMO_PATH = "/v2/api/talk/memo/default/send"
USER_ME_PATH = "/v2/user/me"
CODE_LIFETIME = 600  # Kakao's authorization codes live ten minutes


@dataclass
class Memo:
    user_id: int
    template: dict[str, Any]
    access_token: str


@dataclass
class KakaoFake:
    client_id: str
    client_secret: str = ""
    port: int = field(default_factory=free_port)
    access_lifetime: int = 21599  # 6 h, like Kakao's REST tokens
    rotate: bool = False
    quota_next: int = 0  # the next N memo sends are over quota
    quota_status: int = 400  # Kakao answers -10 with 400; some gateways say 429
    retry_after: str | None = None
    fail_status: int | None = None  # memo sends answer 500 / 503 while set
    delay_s: float = 0.0  # memo sends wait this long
    token_delay_s: float = 0.0
    token_fail_status: int | None = None
    redirect_uris: list[str] = field(default_factory=list)  # registered in the console
    login_as: int | None = None  # who signs in at /oauth/authorize (None: a new user)
    decline: set[str] = field(default_factory=set)  # scopes the user unticks at consent
    deny: bool = False  # the user presses "cancel" at consent
    # records
    memos: list[Memo] = field(default_factory=list)
    memo_requests: int = 0
    refreshes: int = 0  # successful
    refresh_requests: int = 0
    refresh_errors: list[str] = field(default_factory=list)
    every_token: list[str] = field(default_factory=list)  # access and refresh, all issued
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    code_requests: int = 0  # authorization_code grants, answered or not
    code_exchanges: int = 0  # successful
    code_errors: list[str] = field(default_factory=list)
    every_code: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._access: dict[str, tuple[int, float]] = {}  # token -> (user, expiry)
        self._refresh: dict[str, int] = {}  # refresh token -> user
        self.scopes: dict[int, set[str]] = {}
        # code -> (user, redirect_uri, scopes granted, expiry)
        self._codes: dict[str, tuple[int, str, set[str], float]] = {}
        self._server: LoopbackServer | None = None
        self._next_user = 1000

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control -------------------------------------------------------------------------

    def _issue_access(self, user: int) -> str:
        token = secrets.token_urlsafe(40)
        self._access[token] = (user, time.time() + self.access_lifetime)
        self.every_token.append(token)
        return token

    def _issue_refresh(self, user: int) -> str:
        token = secrets.token_urlsafe(40)
        self._refresh[token] = user
        self.every_token.append(token)
        return token

    def connect(self, scopes: set[str] | None = None) -> tuple[int, str, str]:
        """A user who just signed in: (user id, access token, refresh token)."""
        user = self._next_user
        self._next_user += 1
        self.scopes[user] = {"profile_nickname", "talk_message"} if scopes is None else scopes
        return user, self._issue_access(user), self._issue_refresh(user)

    def expire_access_tokens(self) -> None:
        for token, (user, _) in list(self._access.items()):
            self._access[token] = (user, 0.0)

    def revoke_refresh_tokens(self) -> None:
        self._refresh.clear()

    # --- kauth ------------------------------------------------------------------------------

    def _token_error(
        self,
        status: int,
        error: str,
        code: str,
        description: str,
        records: list[str] | None = None,
    ) -> JSONResponse:
        (self.refresh_errors if records is None else records).append(f"{error} {code}")
        return JSONResponse(
            {"error": error, "error_description": description, "error_code": code}, status
        )

    def _client_error(self, form: Any, records: list[str]) -> JSONResponse | None:
        if form.get("client_id") != self.client_id:
            return self._token_error(401, "invalid_client", "KOE101", "invalid client_id", records)
        if self.client_secret and form.get("client_secret") != self.client_secret:
            return self._token_error(
                401, "invalid_client", "KOE010", "Bad client credentials", records
            )
        return None

    async def authorize(self, request: Request) -> JSONResponse | RedirectResponse:
        """Kakao's login and consent screens, as if the user clicked through them."""
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        if params.get("client_id") != self.client_id:
            return JSONResponse({"error": "invalid_client", "error_code": "KOE101"}, 400)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return JSONResponse({"error": "invalid_request", "error_code": "KOE006"}, 400)
        state = {"state": params["state"]} if "state" in params else {}
        if params.get("response_type") != "code":
            query = {"error": "unsupported_response_type", **state}
            return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", 302)
        if self.deny:
            query = {
                "error": "access_denied",
                "error_description": "User denied access",
                **state,
            }
            return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", 302)
        if self.login_as is None:
            user = self._next_user
            self._next_user += 1
            self.scopes[user] = {"profile_nickname"}
        else:
            user = self.login_as
            self.scopes.setdefault(user, {"profile_nickname"})
        asked = set(params.get("scope", "").replace(",", " ").split())
        self.scopes[user] |= asked - self.decline
        code = secrets.token_urlsafe(48)
        self._codes[code] = (
            user,
            redirect_uri,
            set(self.scopes[user]),
            time.time() + CODE_LIFETIME,
        )
        self.every_code.append(code)
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, **state})}", 302)

    def _code_grant(self, form: Any) -> JSONResponse:
        self.code_requests += 1
        problem = self._client_error(form, self.code_errors)
        if problem is not None:
            return problem
        code = str(form.get("code", ""))
        found = self._codes.pop(code, None)  # single use, whatever the outcome
        if found is None or found[3] <= time.time():
            return self._token_error(
                400,
                "invalid_grant",
                "KOE320",
                f"authorization code not found for code={code}",
                self.code_errors,
            )
        user, redirect_uri, scopes, _ = found
        if form.get("redirect_uri") != redirect_uri:
            return self._token_error(
                400, "invalid_grant", "KOE303", "Redirect URI mismatch.", self.code_errors
            )
        self.code_exchanges += 1
        return JSONResponse(
            {
                "token_type": "bearer",
                "access_token": self._issue_access(user),
                "expires_in": self.access_lifetime,
                "refresh_token": self._issue_refresh(user),
                "refresh_token_expires_in": 5183999,
                "scope": " ".join(sorted(scopes)),
            }
        )

    async def token(self, request: Request) -> JSONResponse:
        form = await request.form()
        grant = form.get("grant_type")
        if grant != "authorization_code":
            self.refresh_requests += 1
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)
        if self.token_fail_status is not None:
            if grant == "authorization_code":
                self.code_requests += 1
            return JSONResponse({"error": "server_error"}, self.token_fail_status)
        if grant == "authorization_code":
            return self._code_grant(form)
        if grant != "refresh_token":
            return self._token_error(400, "unsupported_grant_type", "KOE006", "bad grant_type")
        problem = self._client_error(form, self.refresh_errors)
        if problem is not None:
            return problem
        old = str(form.get("refresh_token", ""))
        user = self._refresh.get(old)
        if user is None:
            return self._token_error(
                400, "invalid_grant", "KOE322", f"refresh_token not found. refresh_token={old}"
            )
        self.refreshes += 1
        body: dict[str, Any] = {
            "access_token": self._issue_access(user),
            "token_type": "bearer",
            "expires_in": self.access_lifetime,
        }
        if self.rotate:
            del self._refresh[old]
            body["refresh_token"] = self._issue_refresh(user)
            body["refresh_token_expires_in"] = 5183999
        return JSONResponse(body)

    # --- kapi ------------------------------------------------------------------------------

    def _bearer_user(self, request: Request) -> tuple[int, str]:
        bearer = request.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else ""
        user, expiry = self._access.get(token, (0, 0.0))
        return (user, token) if user and expiry > time.time() else (0, token)

    async def user_me(self, request: Request) -> JSONResponse:
        user, _ = self._bearer_user(request)
        if not user:
            return JSONResponse({"msg": "this access token does not exist", "code": -401}, 401)
        return JSONResponse({"id": user, "connected_at": "2026-03-05T01:00:00Z"})

    async def memo(self, request: Request) -> JSONResponse:
        self.memo_requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        user, token = self._bearer_user(request)
        if not user:
            return JSONResponse({"msg": "this access token does not exist", "code": -401}, 401)
        if "talk_message" not in self.scopes.get(user, set()):
            return JSONResponse(
                {
                    "msg": "[talk_message] insufficient scopes.",
                    "code": -402,
                    "api_type": "TALK_MEMO_DEFAULT_SEND",
                    "required_scopes": ["talk_message"],
                    "allowed_scopes": sorted(self.scopes.get(user, set())),
                },
                403,
            )
        if self.fail_status is not None:
            if self.fail_status == 503:
                return JSONResponse({"msg": "under maintenance", "code": -9798}, 503)
            return JSONResponse({"msg": "internal server error"}, self.fail_status)
        if self.quota_next > 0:
            self.quota_next -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse(
                {"msg": "API limit has been exceeded.", "code": -10},
                self.quota_status,
                headers=headers,
            )
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return JSONResponse({"msg": "template_object is required", "code": -2}, 400)
        form = await request.form()
        try:
            template = json.loads(str(form.get("template_object", "")))
        except ValueError:
            return JSONResponse({"msg": "template_object is not JSON", "code": -2}, 400)
        problem = _template_problem(template)
        if problem:
            return JSONResponse({"msg": problem, "code": -2}, 400)
        self.memos.append(Memo(user, template, token))
        return JSONResponse({"result_code": 0})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/oauth/token", self.token, methods=["POST"]),
                Route(USER_ME_PATH, self.user_me, methods=["GET"]),
                Route(MEMO_PATH, self.memo, methods=["POST"]),
            ]
        )

    def start(self) -> KakaoFake:
        self._server = LoopbackServer(self.app(), "127.0.0.1", self.port, "kakao-fake")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def _template_problem(template: Any) -> str | None:
    """The text template's rules: object_type, text up to 200 characters, a link."""
    if not isinstance(template, dict) or template.get("object_type") != "text":
        return "object_type must be text"
    text = template.get("text")
    if not isinstance(text, str) or not text:
        return "text is required"
    if len(text) > 200:
        return "text exceeds 200 characters"
    link = template.get("link")
    if not isinstance(link, dict):
        return "link is required"
    for key in ("web_url", "mobile_web_url"):
        if key in link and not str(link[key]).startswith(("http://", "https://")):
            return f"link.{key} must be a URL"
    if "button_title" in template and not isinstance(template["button_title"], str):
        return "button_title must be a string"
    return None
