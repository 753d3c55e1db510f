"""Which providers are enabled, their quirks, and Apple's client secret."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from app.config import Settings
from app.services import oauth_providers as p


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_nothing_configured_means_no_provider():
    assert p.enabled_providers(_settings()) == []


def test_each_provider_needs_its_own_settings():
    s = _settings(
        google_client_id="g",  # no secret: off
        kakao_client_id="k",  # Kakao's secret is optional: on
        naver_client_id="n",
        naver_client_secret="ns",
        apple_client_id="a",
        apple_team_id="t",
        apple_key_id="kid",  # no key: off
    )
    assert [x.id for x in p.enabled_providers(s)] == ["kakao", "naver"]
    s = _settings(
        google_client_id="g",
        google_client_secret="gs",
        apple_client_id="a",
        apple_team_id="t",
        apple_key_id="kid",
        apple_private_key_file="/etc/tickwatch/apple.p8",
    )
    assert [x.id for x in p.enabled_providers(s)] == ["google", "apple"]
    assert p.get_provider(s, "github") is None


def test_provider_quirks():
    s = _settings(
        app_base_url="https://trade.example/",
        google_client_id="g",
        google_client_secret="gs",
        naver_client_id="n",
        naver_client_secret="ns",
        apple_client_id="a",
        apple_team_id="t",
        apple_key_id="kid",
        apple_private_key="x",
    )
    google, naver, apple = (p.get_provider(s, name) for name in ("google", "naver", "apple"))
    assert google and naver and apple
    assert google.redirect_uri(s) == "https://trade.example/auth/callback/google"
    assert google.pkce and google.is_oidc and "accounts.google.com" in google.extra_issuers
    assert not naver.pkce and not naver.is_oidc and naver.send_state_to_token_endpoint
    assert apple.response_mode == "form_post" and apple.pkce


def test_discovery_issuer_must_match_its_url():
    doc = {
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_endpoint": "https://oauth2.googleapis.com/token",
        "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
    }
    url = "https://accounts.google.com/.well-known/openid-configuration"
    assert p.check_metadata(url, doc) is doc
    with pytest.raises(p.ProviderConfigError):
        p.check_metadata(url, {**doc, "issuer": "https://evil.example"})
    with pytest.raises(p.ProviderConfigError):
        p.check_metadata(url, {k: v for k, v in doc.items() if k != "jwks_uri"})


def test_only_asymmetric_signing_algorithms():
    assert p.signing_algorithms({"id_token_signing_alg_values_supported": ["RS256", "HS256"]}) == [
        "RS256"
    ]
    assert p.signing_algorithms({}) == ["RS256"]
    with pytest.raises(p.ProviderConfigError):
        p.signing_algorithms({"id_token_signing_alg_values_supported": ["none", "HS256"]})


def test_token_auth_method_follows_the_provider():
    s = _settings(google_client_id="g", google_client_secret="gs", kakao_client_id="k")
    google, kakao = p.get_provider(s, "google"), p.get_provider(s, "kakao")
    assert google and kakao
    assert p.token_auth_method(google, {}) == "client_secret_basic"
    post_only = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    assert p.token_auth_method(google, post_only) == "client_secret_post"
    assert p.token_auth_method(kakao, post_only) == "none"  # no secret configured


def test_apple_client_secret_is_an_es256_jwt():
    key = ECKey.generate_key("P-256", private=True)
    pem = key.as_pem(private=True).decode()
    now = int(time.time())
    secret = p.apple_client_secret(
        team_id="TEAM", client_id="com.example.app", key_id="KEY1", private_key_pem=pem, now=now
    )
    token = jwt.decode(secret, ECKey.import_key(key.as_dict(private=False)), algorithms=["ES256"])
    assert token.header == {"alg": "ES256", "kid": "KEY1", "typ": "JWT"} or token.header == {
        "alg": "ES256",
        "kid": "KEY1",
    }
    assert token.claims == {
        "iss": "TEAM",
        "iat": now,
        "exp": now + 300,
        "aud": "https://appleid.apple.com",
        "sub": "com.example.app",
    }
    with pytest.raises(p.ProviderConfigError):
        p.apple_client_secret(
            team_id="T", client_id="c", key_id="k", private_key_pem="not a key", now=now
        )


def test_apple_key_from_an_env_line_or_a_file(tmp_path):
    key = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    s = _settings(
        apple_client_id="a",
        apple_team_id="t",
        apple_key_id="k",
        apple_private_key=key.replace("\n", "\\n"),
    )
    apple = p.get_provider(s, "apple")
    assert apple and p.apple_private_key_pem(apple) == key
    path = tmp_path / "AuthKey.p8"
    path.write_text(key)
    s = _settings(
        apple_client_id="a", apple_team_id="t", apple_key_id="k", apple_private_key_file=str(path)
    )
    apple = p.get_provider(s, "apple")
    assert apple and p.apple_private_key_pem(apple) == key
    s = _settings(
        apple_client_id="a",
        apple_team_id="t",
        apple_key_id="k",
        apple_private_key_file=str(tmp_path / "missing.p8"),
    )
    apple = p.get_provider(s, "apple")
    with pytest.raises(p.ProviderConfigError):
        p.apple_private_key_pem(apple)  # type: ignore[arg-type]
