"""Sign-in with an identity provider: the authorization code flow, start to finish.

``start`` records the flow server-side (table ``oauth_flows``) and returns the
provider's authorization URL; ``complete`` consumes that record and turns the
callback into a user.

The record is found by the hash of ``state`` and deleted before anything else
happens, in a statement whose row count proves this request is the one that
deleted it; so a callback is accepted at most once, even when two arrive
together on two workers. The flow is also bound to the browser that started
it: the route sets a random HttpOnly cookie and the record keeps its hash, so a
callback URL planted in someone else's browser (login CSRF) is refused.

For OpenID Connect providers the ID token is checked in full: signature against
the provider's key set (asymmetric algorithms only), issuer, audience (and
``azp``), expiry, issued-at and our nonce. PKCE (S256) is used wherever the
provider takes it; the verifier is sent only if one was stored for this flow.

Nothing here logs or stores a token, a code or a secret: failures carry a short
reason code, which the audit log records.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app import db
from app.config import Settings
from app.models.common import utcnow
from app.models.identities import OAuthFlow, UserIdentity
from app.models.users import User
from app.services import auth
from app.services import oauth_providers as providers
from app.services.oauth_providers import Provider, ProviderConfigError

with warnings.catch_warnings():
    # authlib prefers the "httpx2" package and says so on import; httpx is what we have.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = logging.getLogger(__name__)

BROWSER_COOKIE = "tw_oauth"
ID_TOKEN_LEEWAY = 60  # seconds of clock skew allowed on exp / iat / nbf

# Failure reasons (audited) -> the code the sign-in page explains (login.error.<code>).
USER_CODES: dict[str, str] = {
    "unknown_provider": "oauth_unavailable",
    "missing_state": "oauth_state",
    "bad_state": "oauth_state",
    "state_expired": "oauth_state",
    "browser_mismatch": "oauth_state",
    "provider_denied": "oauth_denied",
    "email_exists": "oauth_email_exists",
    "email_missing": "oauth_email_missing",
    "email_unverified": "oauth_email_unverified",
    "identity_taken": "oauth_identity_taken",
    "account_disabled": "oauth_account_disabled",
    "link_requires_sign_in": "oauth_link_sign_in",
}
USER_CODE_DEFAULT = "oauth_failed"


class OAuthFailure(Exception):
    """A refused or failed flow. ``reason`` is safe to log and audit; it holds no secret."""

    def __init__(self, reason: str, *, user_id: int | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_id = user_id
        self.detail = detail  # e.g. the provider's OAuth error code, never a token

    @property
    def user_code(self) -> str:
        return USER_CODES.get(self.reason, USER_CODE_DEFAULT)


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    provider: str
    subject: str
    email: str
    email_verified: bool | None
    name: str


@dataclass(frozen=True, slots=True)
class Completed:
    user: User
    next_path: str
    provider: str
    created_user: bool = False
    linked: bool = False


def hash_value(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# --- ID token ----------------------------------------------------------------------------


def validate_id_token(
    id_token: str,
    *,
    jwks: dict[str, Any],
    issuers: Sequence[str],
    client_id: str,
    nonce: str,
    algorithms: Sequence[str],
    now: int | None = None,
    leeway: int = ID_TOKEN_LEEWAY,
) -> dict[str, Any]:
    """The ID token's claims, or ``OAuthFailure`` naming what was wrong.

    ``InvalidKeyIdError`` passes through so the caller can refetch the key set once.
    """
    algs = [a for a in algorithms if a in providers.ASYMMETRIC_ALGS]
    if not algs or not nonce:
        raise OAuthFailure("id_token_invalid")
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=algs)
    except InvalidKeyIdError:
        raise
    except BadSignatureError as exc:
        raise OAuthFailure("id_token_signature") from exc
    except (JoseError, ValueError) as exc:
        raise OAuthFailure("id_token_invalid") from exc
    claims = token.claims
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=leeway,
        iss={"essential": True, "values": list(issuers)},
        sub={"essential": True},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError as exc:
        raise OAuthFailure("id_token_expired") from exc
    except (InvalidClaimError, MissingClaimError) as exc:
        claim = str(getattr(exc, "claim", "") or "")
        names = {"iss": "issuer", "aud": "audience", "nonce": "nonce", "exp": "expired"}
        raise OAuthFailure(f"id_token_{names.get(claim, 'claims')}") from exc
    except JoseError as exc:
        raise OAuthFailure("id_token_claims") from exc
    aud = claims["aud"]
    audiences = aud if isinstance(aud, list) else [aud]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise OAuthFailure("id_token_audience")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise OAuthFailure("id_token_claims")
    return claims


def _truthy(value: object) -> bool | None:
    """email_verified is a boolean, except at Apple, where it may be the string "true"."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def identity_from_claims(provider: str, claims: Mapping[str, Any]) -> ProviderIdentity:
    email = claims.get("email")
    return ProviderIdentity(
        provider=provider,
        subject=str(claims["sub"]),
        email=auth.normalize_email(email) if isinstance(email, str) else "",
        email_verified=_truthy(claims.get("email_verified")),
        name=str(claims.get("name") or claims.get("nickname") or "")[:100],
    )


def identity_from_naver_profile(body: Mapping[str, Any]) -> ProviderIdentity:
    """Naver's profile API: {"resultcode": "00", "message": "success", "response": {...}}."""
    profile = body.get("response")
    if body.get("resultcode") != "00" or not isinstance(profile, dict) or not profile.get("id"):
        raise OAuthFailure("profile_invalid")
    email = profile.get("email")
    return ProviderIdentity(
        provider="naver",
        subject=str(profile["id"]),
        email=auth.normalize_email(email) if isinstance(email, str) else "",
        # Naver hands out the account's own, confirmed address; there is no flag to read.
        email_verified=None,
        name=str(profile.get("name") or profile.get("nickname") or "")[:100],
    )


# --- Start -------------------------------------------------------------------------------


async def _endpoints(provider: Provider) -> dict[str, Any]:
    if provider.is_oidc:
        return await providers.load_metadata(provider)
    return {
        "authorization_endpoint": provider.authorize_url,
        "token_endpoint": provider.token_url,
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }


async def start(
    settings: Settings,
    provider: Provider,
    *,
    next_path: str,
    browser_token: str,
    link_user_id: int | None = None,
) -> str:
    """Record a new flow and return the provider's authorization URL."""
    try:
        metadata = await _endpoints(provider)
    except ProviderConfigError as exc:
        raise OAuthFailure("provider_unavailable", user_id=link_user_id) from exc
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32) if provider.is_oidc else ""
    verifier = generate_token(64) if provider.pkce else ""
    now = utcnow()
    async with db.session() as s:
        # Expired flows nobody came back for are cleared as new ones start.
        await s.exec(delete(OAuthFlow).where(col(OAuthFlow.expires_at) < now))
        s.add(
            OAuthFlow(
                state_hash=hash_value(state),
                browser_hash=hash_value(browser_token),
                provider=provider.id,
                nonce=nonce,
                code_verifier=verifier,
                next_path=next_path,
                link_user_id=link_user_id,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.oauth_flow_ttl_seconds),
            )
        )
        await s.commit()
    params: dict[str, str] = {}
    if nonce:
        params["nonce"] = nonce
    if provider.response_mode:
        params["response_mode"] = provider.response_mode
    client = AsyncOAuth2Client(
        client_id=provider.client_id,
        scope=provider.scope or None,
        redirect_uri=provider.redirect_uri(settings),
        code_challenge_method="S256" if provider.pkce else None,
    )
    async with client:
        url, _ = client.create_authorization_url(
            metadata["authorization_endpoint"],
            state=state,
            code_verifier=verifier or None,
            **params,
        )
    return url


# --- Callback ----------------------------------------------------------------------------


async def consume_flow(state: str, provider_id: str, browser_token: str | None) -> OAuthFlow:
    """Take the flow for ``state`` out of the table; only one caller ever gets it."""
    if not state:
        raise OAuthFailure("missing_state")
    state_hash = hash_value(state)
    async with db.session() as s:
        flow = (await s.exec(select(OAuthFlow).where(OAuthFlow.state_hash == state_hash))).first()
        if flow is None:
            raise OAuthFailure("bad_state")
        result = await s.exec(delete(OAuthFlow).where(col(OAuthFlow.id) == flow.id))
        await s.commit()
        if result.rowcount != 1:  # another request consumed it between our read and delete
            raise OAuthFailure("bad_state")
    if flow.provider != provider_id:
        raise OAuthFailure("bad_state", user_id=flow.link_user_id)
    if flow.expires_at <= utcnow():
        raise OAuthFailure("state_expired", user_id=flow.link_user_id)
    if not browser_token or not hmac.compare_digest(flow.browser_hash, hash_value(browser_token)):
        raise OAuthFailure("browser_mismatch", user_id=flow.link_user_id)
    return flow


async def _client_secret(provider: Provider, metadata: dict[str, Any]) -> str:
    if provider.id != "apple":
        return provider.client_secret
    try:
        return providers.apple_client_secret(
            team_id=provider.apple_team_id,
            client_id=provider.client_id,
            key_id=provider.apple_key_id,
            private_key_pem=providers.apple_private_key_pem(provider),
            audience=str(metadata.get("issuer") or "https://appleid.apple.com"),
        )
    except ProviderConfigError as exc:
        raise OAuthFailure("provider_misconfigured") from exc


async def _exchange_code(
    settings: Settings, provider: Provider, metadata: dict[str, Any], code: str, flow: OAuthFlow
) -> dict[str, Any]:
    if provider.pkce and not flow.code_verifier:
        # Never redeem a code without the verifier this flow was started with.
        raise OAuthFailure("pkce_missing", user_id=flow.link_user_id)
    try:
        method = providers.token_auth_method(provider, metadata)
    except ProviderConfigError as exc:
        raise OAuthFailure("provider_misconfigured") from exc
    extra: dict[str, str] = {}
    if provider.pkce:
        extra["code_verifier"] = flow.code_verifier
    client = AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=await _client_secret(provider, metadata),
        token_endpoint_auth_method=method,
        redirect_uri=provider.redirect_uri(settings),
        timeout=providers.HTTP_TIMEOUT,
    )
    try:
        async with client:
            token = await client.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                **extra,
            )
    except Exception as exc:  # authlib's OAuthError, HTTP errors: only the error code is kept
        detail = str(getattr(exc, "error", "") or type(exc).__name__)[:64]
        raise OAuthFailure(
            "token_exchange_failed", user_id=flow.link_user_id, detail=detail
        ) from exc
    return dict(token)


async def _naver_state_token(
    settings: Settings, provider: Provider, code: str, state: str, flow: OAuthFlow
) -> dict[str, Any]:
    """Naver's token endpoint wants ``state`` next to the code; Naver answers errors with 200."""
    client = AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        token_endpoint_auth_method="client_secret_post",
        redirect_uri=provider.redirect_uri(settings),
        timeout=providers.HTTP_TIMEOUT,
    )
    try:
        async with client:
            token = await client.fetch_token(
                provider.token_url,
                body=urlencode({"state": state}) if provider.send_state_to_token_endpoint else "",
                grant_type="authorization_code",
                code=code,
            )
    except Exception as exc:
        detail = str(getattr(exc, "error", "") or type(exc).__name__)[:64]
        raise OAuthFailure(
            "token_exchange_failed", user_id=flow.link_user_id, detail=detail
        ) from exc
    if not token.get("access_token"):
        raise OAuthFailure("token_exchange_failed", user_id=flow.link_user_id)
    return dict(token)


async def _verified_claims(
    provider: Provider, metadata: dict[str, Any], token: Mapping[str, Any], flow: OAuthFlow
) -> dict[str, Any]:
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise OAuthFailure("id_token_missing", user_id=flow.link_user_id)
    try:
        algorithms = providers.signing_algorithms(metadata)
        issuers = [metadata["issuer"], *provider.extra_issuers]
        jwks = await providers.load_jwks(metadata["jwks_uri"])
        kwargs = {
            "issuers": issuers,
            "client_id": provider.client_id,
            "nonce": flow.nonce,
            "algorithms": algorithms,
        }
        try:
            return validate_id_token(id_token, jwks=jwks, **kwargs)
        except InvalidKeyIdError:
            # The provider rotated its keys since we cached them: fetch once more.
            jwks = await providers.load_jwks(metadata["jwks_uri"], force=True)
            try:
                return validate_id_token(id_token, jwks=jwks, **kwargs)
            except InvalidKeyIdError as exc:
                raise OAuthFailure("id_token_signature") from exc
    except ProviderConfigError as exc:
        raise OAuthFailure("provider_unavailable", user_id=flow.link_user_id) from exc
    except OAuthFailure as exc:
        exc.user_id = flow.link_user_id
        raise


async def _naver_identity(provider: Provider, token: Mapping[str, Any]) -> ProviderIdentity:
    try:
        async with httpx.AsyncClient(timeout=providers.HTTP_TIMEOUT) as client:
            resp = await client.get(
                provider.profile_url,
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
            resp.raise_for_status()
            body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OAuthFailure("profile_failed") from exc
    if not isinstance(body, dict):
        raise OAuthFailure("profile_invalid")
    return identity_from_naver_profile(body)


async def fetch_identity(
    settings: Settings,
    provider: Provider,
    params: Mapping[str, str],
    browser_token: str | None,
) -> tuple[OAuthFlow, ProviderIdentity]:
    """Check the callback, redeem the code and return who the provider says this is."""
    state = params.get("state", "")
    error = params.get("error", "")
    if error and not state:
        raise OAuthFailure("provider_error", detail=error[:64])
    flow = await consume_flow(state, provider.id, browser_token)
    if error:
        reason = "provider_denied" if error == "access_denied" else "provider_error"
        raise OAuthFailure(reason, user_id=flow.link_user_id, detail=error[:64])
    code = params.get("code", "")
    if not code:
        raise OAuthFailure("missing_code", user_id=flow.link_user_id)
    if provider.is_oidc:
        try:
            metadata = await providers.load_metadata(provider)
        except ProviderConfigError as exc:
            raise OAuthFailure("provider_unavailable", user_id=flow.link_user_id) from exc
        token = await _exchange_code(settings, provider, metadata, code, flow)
        claims = await _verified_claims(provider, metadata, token, flow)
        return flow, identity_from_claims(provider.id, claims)
    token = await _naver_state_token(settings, provider, code, state, flow)
    try:
        return flow, await _naver_identity(provider, token)
    except OAuthFailure as exc:
        exc.user_id = flow.link_user_id
        raise


# --- Users and identities ----------------------------------------------------------------


def _check_email(identity: ProviderIdentity) -> None:
    if not identity.email or "@" not in identity.email:
        raise OAuthFailure("email_missing")
    if identity.email_verified is False:
        raise OAuthFailure("email_unverified")


async def resolve_user(
    flow: OAuthFlow,
    identity: ProviderIdentity,
    *,
    current_user_id: int | None,
    language: str = "ko",
) -> Completed:
    """Find or create the user for a provider identity; or link it, in a linking flow.

    A new identity whose e-mail already belongs to an account is refused, not
    linked: the provider's word about an address is not proof that its holder
    owns our account. The owner signs in their usual way and links from settings.
    """
    now = utcnow()
    async with db.session() as s:
        row = (
            await s.exec(
                select(UserIdentity).where(
                    UserIdentity.provider == identity.provider,
                    UserIdentity.subject == identity.subject,
                )
            )
        ).first()

        if flow.link_user_id is not None:
            # Linking: the same user must still be signed in, in this browser.
            if current_user_id != flow.link_user_id:
                raise OAuthFailure("link_requires_sign_in", user_id=flow.link_user_id)
            user = await s.get(User, flow.link_user_id)
            if user is None or not user.is_active:
                raise OAuthFailure("link_requires_sign_in", user_id=flow.link_user_id)
            if row is not None and row.user_id != user.id:
                raise OAuthFailure("identity_taken", user_id=user.id)
            linked = row is None
            if row is None:
                row = UserIdentity(
                    user_id=user.id or 0,
                    provider=identity.provider,
                    subject=identity.subject,
                    email=identity.email,
                    created_at=now,
                )
            row.last_login_at = now
            row.email = identity.email or row.email
            s.add(row)
            try:
                await s.commit()
            except IntegrityError as exc:  # linked elsewhere a moment ago
                raise OAuthFailure("identity_taken", user_id=user.id) from exc
            await s.refresh(user)
            return Completed(user, flow.next_path, identity.provider, linked=linked)

        if row is not None:
            user = await s.get(User, row.user_id)
            if user is None or not user.is_active:
                raise OAuthFailure("account_disabled", user_id=row.user_id)
            row.last_login_at = now
            if identity.email:
                row.email = identity.email
            s.add(row)
            await s.commit()
            await s.refresh(user)
            return Completed(user, flow.next_path, identity.provider)

        _check_email(identity)
        existing = await auth.get_user_by_email(s, identity.email)
        if existing is not None:
            raise OAuthFailure("email_exists", user_id=existing.id)
        user = User(
            email=identity.email,
            display_name=(identity.name or identity.email.split("@")[0])[:100],
            password_hash=None,
            language=language,
        )
        s.add(user)
        try:
            await s.flush()
            s.add(
                UserIdentity(
                    user_id=user.id or 0,
                    provider=identity.provider,
                    subject=identity.subject,
                    email=identity.email,
                    created_at=now,
                    last_login_at=now,
                )
            )
            await s.commit()
        except IntegrityError as exc:  # the same sign-in, twice at once
            raise OAuthFailure("conflict") from exc
        await s.refresh(user)
        return Completed(user, flow.next_path, identity.provider, created_user=True)


async def list_identities(user_id: int) -> list[UserIdentity]:
    """A user's linked identities, oldest first (for the settings page)."""
    async with db.session() as s:
        stmt = (
            select(UserIdentity)
            .where(UserIdentity.user_id == user_id)
            .order_by(col(UserIdentity.created_at), col(UserIdentity.id))
        )
        return list((await s.exec(stmt)).all())
