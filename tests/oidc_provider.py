"""A small OpenID Connect provider on loopback, for tests: authlib's server side under uvicorn.

It speaks the real protocol over real HTTP: a discovery document, ``/authorize``
(which approves at once, as ``op.user``), ``/token``, ``/jwks``, ``/userinfo``, and
a Naver-style profile API at ``/v1/nid/me``. RS256 keys are made at start. Codes
are single-use and short-lived. PKCE (S256) is required of every client registered
with ``pkce=True``; the authorization request must carry a challenge and the token
request the matching verifier. ``response_mode=form_post`` answers with an
auto-submitting form, as Apple does.

Switches for the refusal tests: ``nonce_override`` (the ID token carries another
nonce), ``audience_override`` (issued to another client), ``deny`` (the user says
no), ``user`` (who signs in).
``token_requests`` and ``authorize_requests`` record what arrived (client secrets
and Authorization headers left out).
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer

CODE_TTL = 120


@dataclass
class TestUser:
    __test__ = False  # not a pytest class

    sub: str = "op-user-1"
    email: str = "op.user@example.com"
    email_verified: bool | str | None = True
    name: str = "OP User"


@dataclass
class OPClient(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    pkce: bool = True
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
    # Apple-style: the client secret is an ES256 JWT signed by this key's owner.
    jwt_secret_key: ECKey | None = None
    jwt_secret_issuer: str = ""
    jwt_secret_audience: str = ""

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if self.jwt_secret_key is None:
            return hmac.compare_digest(client_secret, self.client_secret)
        try:
            token = jwt.decode(client_secret, self.jwt_secret_key, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.jwt_secret_issuer},
                sub={"essential": True, "value": self.client_id},
                aud={"essential": True, "value": self.jwt_secret_audience},
                exp={"essential": True},
                iat={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError):
            return False
        return token.header.get("kid") == self.jwt_secret_key.kid

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: TestUser
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.issued_at)

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


class _Payload(OAuth2Payload):
    def __init__(self, datalist: dict[str, list[str]]) -> None:
        self._datalist = defaultdict(list, datalist)
        self._data = {k: v[0] for k, v in datalist.items() if v}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list]:
        return self._datalist


class _Request(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: Any, query: str, body: str) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(parse_qsl(query))
        self._form = dict(parse_qsl(body))
        merged: dict[str, list[str]] = defaultdict(list)
        for k, v in [*parse_qsl(query), *parse_qsl(body)]:
            merged[k].append(v)
        self.payload = _Payload(dict(merged))

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _Server(AuthorizationServer):
    def __init__(self, op: LocalOP) -> None:
        super().__init__(scopes_supported=None)
        self.op = op

    def query_client(self, client_id: str) -> OPClient | None:
        return self.op.clients.get(client_id)

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        self.op.access_tokens[token["access_token"]] = (request.user, token.get("scope", ""))

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    @property
    def op(self) -> LocalOP:
        return self.server.op

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        nonce = data.get("nonce")
        if nonce and self.op.nonce_override is not None:
            nonce = self.op.nonce_override
        self.op.codes[code] = AuthCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "",
            user=request.user,
            nonce=nonce,
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code: str, client: OPClient) -> AuthCode | None:
        item = self.op.codes.get(code)
        if item is None or item.client_id != client.client_id:
            return None
        if time.time() - item.issued_at > CODE_TTL:
            return None
        return item

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        self.op.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthCode) -> TestUser:
        return authorization_code.user


class _RequiredS256(CodeChallenge):
    """PKCE for every client that is registered with it, confidential ones too; S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if grant.request.client.pkce:
            if not data.get("code_challenge"):
                raise InvalidRequestError("Missing 'code_challenge'")
            if data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: AuthorizationCodeGrant, result: Any) -> None:
        if grant.request.client.pkce and not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class _OpenIDCode(OpenIDCode):
    def __init__(self, op: LocalOP) -> None:
        super().__init__(require_nonce=False)
        self.op = op

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False

    def resolve_client_private_key(self, client: OPClient) -> RSAKey:
        return self.op.key

    def get_client_algorithm(self, client: OPClient) -> str:
        return "RS256"

    def get_encode_header(self, client: OPClient) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.op.key.kid or ""}

    def get_client_claims(self, client: OPClient) -> dict[str, Any]:
        return {"iss": self.op.issuer, "aud": [self.op.audience_override or client.client_id]}

    def generate_user_info(self, user: TestUser, scope: str) -> dict[str, Any]:
        return self.op.claims_for(user)


class LocalOP:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.issuer = f"http://{host}:{self.port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.key = RSAKey.generate_key(
            2048,
            parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"},
            private=True,
        )
        self.clients: dict[str, OPClient] = {}
        self.user = TestUser()
        self.nonce_override: str | None = None
        self.audience_override: str | None = None
        self.deny = False
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, tuple[TestUser, str]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.server = _Server(self)
        self.server.register_token_generator(
            "default", BearerTokenGenerator(lambda **_: secrets.token_urlsafe(32))
        )
        self.server.register_grant(_CodeGrant, [_RequiredS256(), _OpenIDCode(self)])
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks),
                Route("/userinfo", self._userinfo),
                Route("/v1/nid/me", self._naver_profile),
            ]
        )
        self._server: LoopbackServer | None = None

    # --- configuration ---------------------------------------------------------------

    def add_client(self, client: OPClient) -> OPClient:
        self.clients[client.client_id] = client
        return client

    def reset(self) -> None:
        self.user = TestUser()
        self.nonce_override = None
        self.audience_override = None
        self.deny = False
        self.token_requests.clear()
        self.authorize_requests.clear()

    def claims_for(self, user: TestUser) -> dict[str, Any]:
        claims: dict[str, Any] = {"sub": user.sub, "email": user.email, "name": user.name}
        if user.email_verified is not None:
            claims["email_verified"] = user.email_verified
        return claims

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> LocalOP:
        self._server = LoopbackServer(self.app, self.host, self.port, "local-op")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> LocalOP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- endpoints -------------------------------------------------------------------

    async def _discovery(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query", "form_post"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "name", "account_email"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["sub", "email", "email_verified", "name"],
            }
        )

    async def _jwks(self, request: Request) -> JSONResponse:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    def _request(self, request: Request, body: str = "") -> _Request:
        return _Request(request.method, str(request.url), request.headers, request.url.query, body)

    async def _authorize(self, request: Request) -> Response:
        req = self._request(request)
        self.authorize_requests.append(dict(req.payload.data))
        try:
            grant = self.server.get_consent_grant(req, end_user=self.user)
        except OAuth2Error as error:
            status, body, headers = self.server.handle_error_response(req, error)
            return _response(status, body, headers)
        status, body, headers = self.server.create_authorization_response(
            req, grant_user=None if self.deny else self.user, grant=grant
        )
        location = dict(headers).get("Location", "")
        if req.payload.data.get("response_mode") == "form_post" and location:
            return _form_post(location)
        return _response(status, body, headers)

    async def _token(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        req = self._request(request, body)
        recorded = {k: v for k, v in req.form.items() if k != "client_secret"}
        recorded["_basic_auth"] = "yes" if request.headers.get("authorization") else "no"
        self.token_requests.append(recorded)
        status, payload, headers = self.server.create_token_response(req)
        return _response(status, payload, headers)

    def _bearer_user(self, request: Request) -> TestUser | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        found = self.access_tokens.get(header[7:].strip())
        return found[0] if found else None

    async def _userinfo(self, request: Request) -> JSONResponse:
        user = self._bearer_user(request)
        if user is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(self.claims_for(user))

    async def _naver_profile(self, request: Request) -> JSONResponse:
        user = self._bearer_user(request)
        if user is None:
            return JSONResponse(
                {"resultcode": "024", "message": "Authentication failed"}, status_code=401
            )
        return JSONResponse(
            {
                "resultcode": "00",
                "message": "success",
                "response": {
                    "id": user.sub,
                    "email": user.email,
                    "name": user.name,
                    "nickname": user.name,
                },
            }
        )


def _response(status: int, body: Any, headers: Any) -> Response:
    hdrs = dict(headers or [])
    if isinstance(body, dict):
        return JSONResponse(body, status_code=status, headers=hdrs)
    return Response(body or "", status_code=status, headers=hdrs)


def _form_post(location: str) -> HTMLResponse:
    """OAuth 2.0 Form Post Response Mode: the browser posts the answer to the client."""
    parts = urlsplit(location)
    action = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in parse_qsl(parts.query)
    )
    page = (
        '<!doctype html><html><body onload="document.forms[0].submit()">'
        f'<form method="post" action="{html.escape(action)}">{inputs}'
        '<noscript><button type="submit">Continue</button></noscript></form></body></html>'
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def make_apple_key(kid: str = "APPLEKEY01") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)
