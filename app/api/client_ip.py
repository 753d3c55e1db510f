"""The client's IP behind reverse proxies, the same way Reflex resolves it for pages.

Sign-in throttling and the audit log key on the client IP. Behind nginx every
request comes from the proxy, so without this all users share one throttle (one
attacker locks everyone out) and the audit log names the proxy. ``X-Forwarded-For``
is only believed for ``TRUSTED_PROXY_HOPS`` proxies: each appends the address it
saw, so the entry that many places from the end is the one the outermost trusted
proxy saw, and anything a client wrote before it is ignored.
"""

from __future__ import annotations

from typing import Protocol

from app.config import get_settings


class Peer(Protocol):
    host: str


def client_ip(forwarded_for: str, peer: Peer | None, hops: int | None = None) -> str:
    hops = get_settings().trusted_proxy_hops if hops is None else hops
    direct = peer.host if peer is not None else ""
    if hops <= 0:
        return direct
    chain = [ip.strip() for ip in forwarded_for.split(",") if ip.strip()]
    if len(chain) < hops:
        return direct  # not the proxy chain we were told about: trust nothing in it
    return chain[-hops]
