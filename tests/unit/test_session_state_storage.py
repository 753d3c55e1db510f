"""The session state as the Redis state manager stores it: the translated catalogue
stays out of every tab's pickle, and comes back from the language when read."""

from __future__ import annotations

import json
import pickle

from reflex.istate.data import RouterData
from reflex.state import State

from app.i18n import catalog
from app.states.session import SessionState


def _root(lang: str) -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {"headers": {"accept-language": lang}, "token": "tab-1", "pathname": "/", "asPath": "/"}
    )
    return root


async def test_pickled_session_leaves_the_catalogue_out_and_it_is_recomputed():
    session = await _root("en").get_state(SessionState)
    assert session.tr == catalog("en")  # read: cached on the instance
    cache_attr = SessionState.computed_vars["tr"]._cache_attr
    assert cache_attr in session.__dict__

    catalogue_bytes = len(json.dumps(catalog("en")).encode())
    blob = pickle.dumps(session, protocol=pickle.HIGHEST_PROTOCOL)
    assert catalogue_bytes > 20_000  # what every tab used to carry
    assert len(blob) < catalogue_bytes / 10, len(blob)
    assert cache_attr in session.__dict__  # storing does not strip the live instance

    restored = pickle.loads(blob)
    assert cache_attr not in restored.__dict__
    assert restored.lang == session.lang and restored.user_name == session.user_name


async def test_language_switch_still_gives_the_other_catalogue():
    session = await _root("ko").get_state(SessionState)
    assert session.tr == catalog("ko")
    session.lang = "en"
    assert session.tr == catalog("en") != catalog("ko")
