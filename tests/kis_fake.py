"""A loopback fake of the KIS Open API, speaking its real protocol for what we use so far.

``POST /oauth2/Approval`` takes ``{"grant_type", "appkey", "secretkey"}`` (note
``secretkey``, not ``appsecret``) and answers ``{"approval_key": ...}``. A wrong pair
gets KIS's non-envelope error body ``{"error_code", "error_description"}``. The
brokers issue extends this fake with tokens, quotes, orders and the websocket.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import free_port
from tests.loopback import LoopbackServer


@dataclass
class KisFake:
    app_keys: dict[str, str] = field(default_factory=dict)  # appkey -> appsecret
    down: bool = False
    approvals: list[str] = field(default_factory=list)  # app keys that asked

    async def approval(self, request: Request) -> JSONResponse:
        if self.down:
            return JSONResponse({"error_code": "EGW00500", "error_description": "down"}, 500)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_code": "EGW00002", "error_description": "bad json"}, 400)
        key, secret = body.get("appkey"), body.get("secretkey")
        if body.get("grant_type") != "client_credentials" or not key or not secret:
            return JSONResponse(
                {"error_code": "EGW00002", "error_description": "invalid request"}, 400
            )
        self.approvals.append(key)
        if self.app_keys.get(key) != secret:
            return JSONResponse(
                {"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."},
                403,
            )
        return JSONResponse({"approval_key": secrets.token_hex(18)})

    def serve(self) -> LoopbackServer:
        app = Starlette(routes=[Route("/oauth2/Approval", self.approval, methods=["POST"])])
        server = LoopbackServer(app, "127.0.0.1", free_port(), "kis-fake")
        server.start()
        return server
