"""The identity providers: which are enabled, their endpoints, and their quirks.

- Google and Kakao: OpenID Connect, endpoints from their discovery documents.
- Apple: OpenID Connect too, but its callback is a form POST
  (``response_mode=form_post``) and its client secret is an ES256 JWT that we sign
  with the team's private key.
- Naver: plain OAuth 2 with a profile API; no ID token, so no nonce. Naver does
  not document PKCE, so it gets none (``state`` still protects the flow), and its
  token request also carries ``state``, as Naver's documentation asks.

A provider is enabled when its settings are filled in; nothing else turns it on.
Discovery documents and key sets are cached per URL for an hour; a key set is
fetched again at once when an ID token names a key it does not have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from app.config import Settings

HTTP_TIMEOUT = 10.0
CACHE_TTL = 3600.0
# Asymmetric algorithms only: "none" and the HMAC family never sign an ID token we accept.
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
PROVIDER_ORDER = ("google", "kakao", "naver", "apple")


class ProviderConfigError(Exception):
    """A provider's discovery document or settings cannot be used."""


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    kind: Literal["oidc", "oauth2"]
    client_id: str
    client_secret: str
    scope: str
    pkce: bool
    response_mode: str = ""  # "" means the default (query)
    discovery_url: str = ""
    # Plain OAuth 2 (Naver): fixed endpoints instead of discovery.
    authorize_url: str = ""
    token_url: str = ""
    profile_url: str = ""
    # Extra accepted "iss" values (Google also issues "accounts.google.com").
    extra_issuers: tuple[str, ...] = ()
    # Apple: the client secret is a JWT signed with this key.
    apple_team_id: str = ""
    apple_key_id: str = ""
    apple_private_key: str = ""
    apple_private_key_file: str = ""
    send_state_to_token_endpoint: bool = False

    @property
    def is_oidc(self) -> bool:
        return self.kind == "oidc"

    def redirect_uri(self, settings: Settings) -> str:
        return f"{settings.app_base_url.rstrip('/')}/auth/callback/{self.id}"


def _google(s: Settings) -> Provider | None:
    if not (s.google_client_id and s.google_client_secret):
        return None
    return Provider(
        id="google",
        kind="oidc",
        client_id=s.google_client_id,
        client_secret=s.google_client_secret,
        scope="openid email profile",
        pkce=True,
        discovery_url=s.google_discovery_url,
        extra_issuers=("accounts.google.com",),
    )


def _kakao(s: Settings) -> Provider | None:
    # The REST API key is the client id; Kakao's client secret is optional.
    if not s.kakao_client_id:
        return None
    return Provider(
        id="kakao",
        kind="oidc",
        client_id=s.kakao_client_id,
        client_secret=s.kakao_client_secret,
        scope="openid account_email",
        pkce=True,
        discovery_url=s.kakao_discovery_url,
    )


def _naver(s: Settings) -> Provider | None:
    if not (s.naver_client_id and s.naver_client_secret):
        return None
    return Provider(
        id="naver",
        kind="oauth2",
        client_id=s.naver_client_id,
        client_secret=s.naver_client_secret,
        scope="",
        pkce=False,
        authorize_url=s.naver_authorize_url,
        token_url=s.naver_token_url,
        profile_url=s.naver_profile_url,
        send_state_to_token_endpoint=True,
    )


def _apple(s: Settings) -> Provider | None:
    if not (
        s.apple_client_id
        and s.apple_team_id
        and s.apple_key_id
        and (s.apple_private_key or s.apple_private_key_file)
    ):
        return None
    return Provider(
        id="apple",
        kind="oidc",
        client_id=s.apple_client_id,
        client_secret="",
        scope="openid email name",
        pkce=True,
        response_mode="form_post",
        discovery_url=s.apple_discovery_url,
        apple_team_id=s.apple_team_id,
        apple_key_id=s.apple_key_id,
        apple_private_key=s.apple_private_key,
        apple_private_key_file=s.apple_private_key_file,
    )


_BUILDERS = {"google": _google, "kakao": _kakao, "naver": _naver, "apple": _apple}


def enabled_providers(settings: Settings) -> list[Provider]:
    """The configured providers, in the order the sign-in page shows them."""
    found = (_BUILDERS[name](settings) for name in PROVIDER_ORDER)
    return [p for p in found if p is not None]


def get_provider(settings: Settings, provider_id: str) -> Provider | None:
    builder = _BUILDERS.get(provider_id)
    return builder(settings) if builder else None


# --- Apple's client secret -------------------------------------------------------------


def apple_private_key_pem(provider: Provider) -> str:
    if provider.apple_private_key:
        # A PEM pasted into a .env line usually has its newlines written as "\n".
        return provider.apple_private_key.replace("\\n", "\n")
    try:
        return Path(provider.apple_private_key_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProviderConfigError("apple private key file unreadable") from exc


def apple_client_secret(
    *,
    team_id: str,
    client_id: str,
    key_id: str,
    private_key_pem: str,
    audience: str = "https://appleid.apple.com",
    now: int | None = None,
    ttl_seconds: int = 300,
) -> str:
    """The ES256 JWT Apple takes as ``client_secret``: short-lived, made per token request."""
    try:
        key = ECKey.import_key(private_key_pem)
    except Exception as exc:  # the key material is never part of the message
        raise ProviderConfigError("apple private key is not an EC key") from exc
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": team_id,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "aud": audience,
        "sub": client_id,
    }
    return jwt.encode({"alg": "ES256", "kid": key_id}, claims, key, algorithms=["ES256"])


# --- Discovery and key sets -------------------------------------------------------------

_metadata_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def clear_caches() -> None:
    _metadata_cache.clear()
    _jwks_cache.clear()


def check_metadata(discovery_url: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §4.3: the issuer must be the URL the document came from."""
    issuer = metadata.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise ProviderConfigError("discovery document has no issuer")
    expected = issuer.rstrip("/") + "/.well-known/openid-configuration"
    if discovery_url != expected:
        raise ProviderConfigError("discovery document issuer does not match its URL")
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(field), str) or not metadata[field]:
            raise ProviderConfigError(f"discovery document has no {field}")
    return metadata


async def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
        resp = await client.get(url, headers=headers)
        resp.raise_for_status()
        return resp.json()


async def load_metadata(provider: Provider) -> dict[str, Any]:
    url = provider.discovery_url
    cached = _metadata_cache.get(url)
    if cached and time.monotonic() - cached[0] < CACHE_TTL:
        return cached[1]
    try:
        data = await _get_json(url)
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderConfigError("discovery document unavailable") from exc
    if not isinstance(data, dict):
        raise ProviderConfigError("discovery document is not an object")
    metadata = check_metadata(url, data)
    _metadata_cache[url] = (time.monotonic(), metadata)
    return metadata


async def load_jwks(jwks_uri: str, force: bool = False) -> dict[str, Any]:
    cached = _jwks_cache.get(jwks_uri)
    if cached and not force and time.monotonic() - cached[0] < CACHE_TTL:
        return cached[1]
    try:
        data = await _get_json(jwks_uri)
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderConfigError("key set unavailable") from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ProviderConfigError("key set is not a JWK set")
    _jwks_cache[jwks_uri] = (time.monotonic(), data)
    return data


def signing_algorithms(metadata: dict[str, Any]) -> list[str]:
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algs = [a for a in offered if a in ASYMMETRIC_ALGS]
    if not algs:
        raise ProviderConfigError("no acceptable ID token signing algorithm")
    return algs


def token_auth_method(provider: Provider, metadata: dict[str, Any]) -> str:
    """How we authenticate at the token endpoint, from what the provider says it takes."""
    if provider.id == "apple":
        return "client_secret_post"
    if not provider.client_secret:
        return "none"
    offered = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in offered:
        return "client_secret_basic"
    if "client_secret_post" in offered:
        return "client_secret_post"
    raise ProviderConfigError("no supported token endpoint auth method")
