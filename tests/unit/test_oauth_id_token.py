"""What the ID token check accepts and refuses, with tokens signed here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from app.services.oauth import (
    OAuthFailure,
    identity_from_claims,
    identity_from_naver_profile,
    validate_id_token,
)

ISSUER = "https://op.example"
CLIENT = "client-1"
NONCE = "nonce-123"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"}, private=True)
JWKS = {"keys": [KEY.as_dict(private=False)]}
NOW = int(time.time())


def _claims(**changes: object) -> dict:
    claims: dict = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": CLIENT,
        "exp": NOW + 300,
        "iat": NOW,
        "nonce": NONCE,
        "email": "A@Example.com",
        "email_verified": True,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict, key=KEY, alg: str = "RS256", kid: str | None = "k1") -> str:
    header = {"alg": alg}
    if kid:
        header["kid"] = kid
    return jwt.encode(header, claims, key, algorithms=[alg])


def _check(token: str, **kwargs: object) -> dict:
    options: dict = {
        "jwks": JWKS,
        "issuers": [ISSUER],
        "client_id": CLIENT,
        "nonce": NONCE,
        "algorithms": ["RS256"],
        # the clock the claims were made with: NOW is read at import, maybe minutes ago
        "now": NOW,
    }
    options.update(kwargs)
    return validate_id_token(token, **options)


def test_a_good_token_passes():
    claims = _check(_token(_claims()))
    assert claims["sub"] == "user-1"
    ident = identity_from_claims("google", claims)
    assert ident.email == "a@example.com" and ident.email_verified is True


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "id_token_issuer"),
        ({"aud": "other-client"}, "id_token_audience"),
        ({"aud": ["other-client", "third"]}, "id_token_audience"),
        ({"aud": [CLIENT, "other"]}, "id_token_audience"),  # several audiences need azp
        ({"azp": "other-client"}, "id_token_audience"),
        ({"exp": NOW - 3600}, "id_token_expired"),
        ({"exp": None}, "id_token_expired"),
        ({"iat": None}, "id_token_claims"),
        ({"nonce": "another-nonce"}, "id_token_nonce"),
        ({"nonce": None}, "id_token_nonce"),
        ({"sub": None}, "id_token_claims"),
        ({"iat": NOW + 3600}, "id_token_claims"),
    ],
)
def test_bad_claims_are_refused(changes, reason):
    with pytest.raises(OAuthFailure) as info:
        _check(_token(_claims(**changes)))
    assert info.value.reason == reason


def test_several_audiences_with_our_azp_pass():
    assert _check(_token(_claims(aud=[CLIENT, "other"], azp=CLIENT)))["sub"] == "user-1"


def test_clock_skew_within_leeway_passes():
    assert _check(_token(_claims(exp=NOW - 10)))["sub"] == "user-1"


def test_another_key_same_kid_is_a_bad_signature():
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    with pytest.raises(OAuthFailure) as info:
        _check(_token(_claims(), key=other))
    assert info.value.reason == "id_token_signature"


def test_tampered_payload_is_a_bad_signature():
    head, _, sig = _token(_claims()).split(".")
    forged_payload = _token(_claims(sub="admin")).split(".")[1]
    with pytest.raises(OAuthFailure) as info:
        _check(f"{head}.{forged_payload}.{sig[:-4]}AAAA")
    assert info.value.reason == "id_token_signature"


def test_unknown_kid_is_left_to_the_caller_to_refetch():
    from joserfc.errors import InvalidKeyIdError

    with pytest.raises(InvalidKeyIdError):
        _check(_token(_claims(), kid="k-rotated"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: dict, claims: dict, hmac_secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_secret is None:
        return f"{signing_input}."
    sig = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_symmetric_and_unsigned_tokens_are_refused(alg):
    # HS256 keyed with the provider's public key, the classic algorithm confusion
    secret = KEY.as_pem(private=False) if alg == "HS256" else None
    token = _handmade({"alg": alg, "kid": "k1"}, _claims(), secret)
    with pytest.raises(OAuthFailure):
        _check(token, algorithms=["RS256", "HS256", "none"])


def test_es256_provider_key_works():
    ec = ECKey.generate_key("P-256", parameters={"kid": "e1"}, private=True)
    token = _token(_claims(), key=ec, alg="ES256", kid="e1")
    claims = _check(token, jwks={"keys": [ec.as_dict(private=False)]}, algorithms=["ES256"])
    assert claims["sub"] == "user-1"


def test_empty_nonce_never_validates():
    with pytest.raises(OAuthFailure):
        _check(_token(_claims(nonce="")), nonce="")


def test_apple_string_email_verified_and_naver_profile():
    assert identity_from_claims("apple", _claims(email_verified="false")).email_verified is False
    assert identity_from_claims("apple", _claims(email_verified="true")).email_verified is True
    assert identity_from_claims("kakao", _claims(email_verified=None)).email_verified is None
    ident = identity_from_naver_profile(
        {"resultcode": "00", "message": "success", "response": {"id": "n1", "email": "X@Y.kr"}}
    )
    assert (ident.subject, ident.email) == ("n1", "x@y.kr")
    for bad in ({"resultcode": "024"}, {"resultcode": "00", "response": {}}):
        with pytest.raises(OAuthFailure):
            identity_from_naver_profile(bad)
