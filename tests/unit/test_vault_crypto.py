"""The vault's crypto and key ring, without a database: round trip, tamper and AAD checks,
envelope parsing of bad input, and key ring configuration errors."""

from __future__ import annotations

import base64
import json
import pickle
import stat
from pathlib import Path

import pytest

from app.config import Settings
from app.services import vault
from app.services.credentials import KisSecrets
from app.vault_keys import (
    KeyRing,
    VaultConfigError,
    VaultKeyMissing,
    generate_key_ring,
    load_key_ring,
    parse_key_file_text,
    parse_key_spec,
    write_key_file,
)

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
REF = vault.SecretRef("broker_credentials", 7, 3, "app_secret")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def ring(active: str = "k1", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"k1": K1, "k2": K2}, active)


def settings(**values: str) -> Settings:
    base = {"vault_keys": "", "vault_active_key": "", "vault_keys_file": ""}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


# --- round trip and format ----------------------------------------------------------


@pytest.mark.parametrize("plain", ["PSabc123", "", "비밀 🔑 with spaces", "x" * 4096])
def test_round_trip(plain: str):
    r = ring()
    token = vault.encrypt(r, REF, plain)
    assert vault.decrypt(r, REF, token) == plain
    assert plain == "" or plain not in token


def test_format_names_version_and_key_and_uses_fresh_nonces():
    r = ring("k2")
    a, b = vault.encrypt(r, REF, "same"), vault.encrypt(r, REF, "same")
    assert a != b  # a random nonce per encryption
    env = vault.parse_envelope(a)
    assert a.startswith("v1.k2.")
    assert (env.version, env.kid, len(env.nonce)) == ("v1", "k2", 12)
    assert len(env.ciphertext) == len("same") + 16  # GCM tag appended
    assert env.nonce != vault.parse_envelope(b).nonce


def test_too_long_plaintext_is_refused():
    with pytest.raises(ValueError, match="4096"):
        vault.encrypt(ring(), REF, "x" * 4097)


# --- tampering, AAD binding, keys ---------------------------------------------------


def _flip(token: str, part: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[0] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


@pytest.mark.parametrize("part", [2, 3], ids=["nonce", "ciphertext"])
def test_tampering_is_detected(part: int):
    r = ring()
    token = vault.encrypt(r, REF, "secret value")
    with pytest.raises(vault.VaultDecryptError, match="does not decrypt with vault key 'k1'"):
        vault.decrypt(r, REF, _flip(token, part))


@pytest.mark.parametrize(
    "other",
    [
        vault.SecretRef("broker_credentials", 8, 3, "app_secret"),  # another row
        vault.SecretRef("broker_credentials", 7, 4, "app_secret"),  # another user
        vault.SecretRef("broker_credentials", 7, 3, "app_key"),  # another field
        vault.SecretRef("channel_tokens", 7, 3, "app_secret"),  # another table
    ],
    ids=["row", "user", "field", "table"],
)
def test_associated_data_binds_table_row_user_and_field(other: vault.SecretRef):
    r = ring()
    token = vault.encrypt(r, REF, "secret value")
    with pytest.raises(vault.VaultDecryptError) as info:
        vault.decrypt(r, other, token)
    assert info.value.code == "vault_decrypt_failed"
    assert "secret value" not in str(info.value)


def test_aad_is_unambiguous():
    # "a.1" + "2" must not collide with "a" + "1.2" and the like.
    a = vault.SecretRef("t", 12, 3, "f").aad()
    b = vault.SecretRef("t", 1, 23, "f").aad()
    assert a != b
    assert json.loads(a) == ["tickwatch-vault", "v1", "t", 12, 3, "f"]


def test_missing_key_names_the_kid():
    token = vault.encrypt(ring("k1"), REF, "v")
    with pytest.raises(VaultKeyMissing, match="'k1' is not in the key ring") as info:
        vault.decrypt(KeyRing({"k2": K2}, "k2"), REF, token)
    assert info.value.kid == "k1" and info.value.code == "vault_key_missing"


def test_wrong_key_under_the_same_id_fails_its_tag():
    token = vault.encrypt(KeyRing({"k1": K1}, "k1"), REF, "v")
    with pytest.raises(vault.VaultDecryptError):
        vault.decrypt(KeyRing({"k1": K2}, "k1"), REF, token)


def test_envelope_kid_swapped_to_another_key_fails():
    token = vault.encrypt(ring("k1"), REF, "v")
    with pytest.raises(vault.VaultDecryptError):
        vault.decrypt(ring("k1"), REF, token.replace("v1.k1.", "v1.k2.", 1))


def test_key_id_column_must_match_the_envelope():
    token = vault.encrypt(ring("k1"), REF, "v")
    assert vault.decrypt(ring(), REF, token, key_id="k1") == "v"
    with pytest.raises(vault.VaultFormatError, match="key_id column"):
        vault.decrypt(ring(), REF, token, key_id="k2")


# --- parsing bad input --------------------------------------------------------------

_N = base64.urlsafe_b64encode(b"\0" * 12).rstrip(b"=").decode()
_C = base64.urlsafe_b64encode(b"\0" * 20).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "4 dot-separated parts"),
        ("plaintext-api-key", "4 dot-separated parts"),
        (f"v1.k1.{_N}", "4 dot-separated parts"),
        (f"v1.k1.{_N}.{_C}.x", "4 dot-separated parts"),
        (f"v2.k1.{_N}.{_C}", "unknown format version"),
        (f"v1.k 1.{_N}.{_C}", "bad key id"),
        (f"v1..{_N}.{_C}", "bad key id"),
        (f"v1.k1.!!!!.{_C}", "not base64url"),
        (f"v1.k1.{_N}.", "not base64url"),
        (f"v1.k1.{_N}=.{_C}", "not base64url"),
        (f"v1.k1.AAAA.{_C}", "nonce is 3 bytes"),
        (f"v1.k1.{_N}.AAAA", "shorter than its tag"),
    ],
)
def test_bad_envelopes_are_refused_clearly(token: str, reason: str):
    with pytest.raises(vault.VaultFormatError, match=reason) as info:
        vault.decrypt(ring(), REF, token)
    assert info.value.code == "vault_bad_format"


# --- key ring configuration -----------------------------------------------------------


def test_key_spec_parses_several_keys_and_alphabets():
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).rstrip(b"=").decode()
    r = parse_key_spec(f" k1:{b64(K1)} , k2:{urlsafe}", "k2")
    assert r.kids == ("k1", "k2") and r.active == "k2"
    assert r.key("k2") == b"\xfb" * 32
    assert parse_key_spec(f"only:{b64(K1)}").active == "only"  # one key: it is the active one
    assert b64(K1) not in repr(r) and str(K1) not in repr(r)


@pytest.mark.parametrize(
    ("spec", "active", "message"),
    [
        ("", "", "holds no key"),
        ("k1", "", "must look like 'kid:base64key'"),
        (f":{b64(K1)}", "", "must look like"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "k1", "appears twice"),
        (f"k1:{b64(K1)},k2:{b64(K2)}", "", "set VAULT_ACTIVE_KEY"),
        (f"k1:{b64(K1)}", "k9", "active vault key 'k9' is not in the ring"),
        (f"k1:{b64(K1[:16])}", "", "16 bytes; AES-256 needs exactly 32"),
        (f"k1:{b64(K1 + b'x')}", "", "33 bytes"),
        ("k1:not*base64", "", "not valid base64"),
        (f"k.1:{b64(K1)}", "", "key id 'k.1' is invalid"),
    ],
)
def test_key_spec_errors_are_clear(spec: str, active: str, message: str):
    with pytest.raises(VaultConfigError, match=message):
        parse_key_spec(spec, active)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must hold"),
        (json.dumps({"keys": {"k1": b64(K1)}}), "must name its active key"),
        (json.dumps({"active": "k2", "keys": {"k1": b64(K1)}}), "'k2' is not in the ring"),
        (json.dumps({"active": "k1", "keys": {"k1": 5}}), "must be a base64 string"),
        (json.dumps({"active": "k1", "keys": {}}), "ring is empty"),
        ('{"active": "k1", "keys": {"k1": "' + b64(K1) + '", "k1": "' + b64(K2) + '"}}', "twice"),
    ],
)
def test_key_file_errors_are_clear(text: str, message: str):
    with pytest.raises(VaultConfigError, match=message):
        parse_key_file_text(text)


def test_ring_refuses_to_drop_its_active_key():
    r = ring("k1")
    assert r.without("k2").kids == ("k1",)
    with pytest.raises(VaultConfigError, match="active key"):
        r.without("k1")


def test_settings_choose_the_source(tmp_path: Path):
    path = tmp_path / "keys.json"
    write_key_file(path, KeyRing({"k1": K1, "k2": K2}, "k2"), replace=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    from_file = load_key_ring(settings(vault_keys_file=str(path)))
    assert (from_file.active, from_file.source, from_file.path) == ("k2", "file", path)
    assert from_file.key("k1") == K1
    from_env = load_key_ring(settings(vault_keys=f"k1:{b64(K1)}"))
    assert from_env.source == "env" and from_env.path is None
    with pytest.raises(VaultConfigError, match="not both"):
        load_key_ring(settings(vault_keys=f"k1:{b64(K1)}", vault_keys_file=str(path)))
    with pytest.raises(VaultConfigError, match="disagrees with the key file"):
        load_key_ring(settings(vault_keys_file=str(path), vault_active_key="k1"))
    with pytest.raises(VaultConfigError, match="cannot read the vault key file"):
        load_key_ring(settings(vault_keys_file=str(tmp_path / "absent.json")))
    with pytest.raises(FileExistsError):
        write_key_file(path, generate_key_ring(), replace=False)  # never clobbers


def test_demo_key_file_is_generated_once_with_mode_600(tmp_path: Path, caplog):
    path = tmp_path / "data" / "vault-keys.json"
    first = load_key_ring(settings(), default_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "Production must set its own keys" in caplog.text
    second = load_key_ring(settings(), default_file=path)
    assert second.active == first.active and second.active_key == first.active_key
    assert len(first.active_key) == 32
    assert [p.name for p in path.parent.iterdir()] == ["vault-keys.json"]  # no temp left
    assert b64(first.active_key) not in caplog.text


# --- the decrypted value object ----------------------------------------------------------


def test_kis_secrets_mask_themselves_and_refuse_pickling():
    s = KisSecrets(
        credential_id=1,
        user_id=2,
        is_paper=True,
        product_code="01",
        app_key="PSKEYKEYKEYKEYKEYKEY",
        app_secret="SECRET" * 10,
        account_no="12345678",
        hts_id="myhtsid",
    )
    for text in (repr(s), str(s), f"{s}"):
        assert "PSKEY" not in text and "SECRET" not in text and "myhtsid" not in text
        assert "12345678" not in text and "••••5678" in text
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(s)


def test_generated_rings_differ():
    a, b = generate_key_ring(), generate_key_ring()
    assert a.active_key != b.active_key
