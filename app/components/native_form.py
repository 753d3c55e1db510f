"""A plain HTML ``<form>`` that the browser submits itself.

Reflex's form always calls ``preventDefault`` and routes the data through the
websocket. Sign-in and sign-out must be real navigations instead, so the
server's response can set or clear the HttpOnly session cookie.
"""

from __future__ import annotations

from reflex.vars.base import Var
from reflex_components_core.el.elements.base import BaseHTML


class NativeForm(BaseHTML):
    tag = "form"

    action: Var[str]
    method: Var[str]


native_form = NativeForm.create
