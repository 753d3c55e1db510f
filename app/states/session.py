"""Who is signed in, and in which language the page speaks.

The user is resolved from the HttpOnly session cookie on every privileged
event; nothing in this state identifies the user by itself, and the cookie
header is never serialised to the browser by Reflex.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

import reflex as rx

from app import db
from app.i18n import catalog, language_from_accept, normalize_language
from app.models.users import User
from app.services import auth

LANG_COOKIE = "tw_lang"


def cookie_value(header: str, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(header or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


class SessionState(rx.State):
    lang: str = rx.Cookie("", name=LANG_COOKIE, same_site="lax", max_age=365 * 86400)
    user_name: str = ""
    user_email: str = ""
    is_admin: bool = False

    @rx.var
    def ui_lang(self) -> str:
        if self.lang:
            return normalize_language(self.lang)
        return language_from_accept(self.router.headers.accept_language)

    @rx.var
    def tr(self) -> dict[str, str]:
        return catalog(self.ui_lang)

    def __getstate__(self) -> dict[str, object]:
        """What the Redis state manager stores: without the cached catalogue.

        The catalogue is code (about 65 KB a language), not state, and it sat in every
        tab's pickled SessionState, read and written on every event of the tab: 200
        tabs connecting took about 17 s. It is recomputed from ``lang`` when read.
        """
        stored = dict(super().__getstate__())
        stored.pop(type(self).computed_vars["tr"]._cache_attr, None)
        return stored

    def _session_token(self) -> str | None:
        return cookie_value(self.router.headers.cookie, auth.SESSION_COOKIE)

    def _ip(self) -> str:
        return self.router.session.client_ip or ""

    async def _user(self) -> User | None:
        async with db.session() as s:
            return await auth.resolve_session(s, self._session_token())

    @rx.event
    async def guard(self) -> rx.event.EventSpec | None:
        """on_load of every private page: no valid session, no page."""
        user = await self._user()
        if user is None:
            self.user_name = ""
            self.user_email = ""
            self.is_admin = False
            return rx.redirect("/login")
        self.user_name = user.display_name
        self.user_email = user.email
        # Only decides whether the admin link shows; every admin action re-checks the role.
        self.is_admin = user.role == "admin"
        if not self.lang:
            self.lang = normalize_language(user.language)
        return None

    @rx.event
    async def toggle_language(self) -> None:
        self.lang = "en" if self.ui_lang == "ko" else "ko"
        user = await self._user()
        if user is not None:
            async with db.session() as s:
                row = await s.get(User, user.id)
                if row is not None:
                    row.language = self.lang
                    s.add(row)
                    await s.commit()

    def _t(self, key: str, **params: object) -> str:
        text = catalog(self.ui_lang)[key]
        return text.format(**params) if params else text
