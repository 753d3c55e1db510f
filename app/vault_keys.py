"""The vault's key ring: several AES-256 keys by id, exactly one of them active.

Keys come from the environment or from a file, never from the database, so a
stolen database dump alone decrypts nothing:

- ``VAULT_KEYS="k2025:BASE64,k2026:BASE64"`` with ``VAULT_ACTIVE_KEY=k2026``
  (``VAULT_ACTIVE_KEY`` may be left empty when there is exactly one key);
- or ``VAULT_KEYS_FILE=/path/keys.json`` holding
  ``{"active": "k2026", "keys": {"k2025": "BASE64", "k2026": "BASE64"}}``.

New values are encrypted with the active key; any key in the ring decrypts the
values written with it, which is what lets ``python -m app.cli rotate-keys``
move rows to a new key while the app keeps running.

With neither variable set (the out-of-the-box demo), a key file is generated once
at ``data/vault-keys.json`` (mode 0600) and reused; a warning says production must
set its own. Losing that file makes every stored secret unreadable.

Generate a key with:
``python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from app.config import PROJECT_ROOT, Settings, get_settings
from app.services.errors import ServiceError

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_KEY_FILE = PROJECT_ROOT / "data" / "vault-keys.json"

SOURCE_ENV = "env"
SOURCE_FILE = "file"


class VaultError(ServiceError):
    """Base of every vault failure. ``str()`` is an operator-readable sentence."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(code, **params)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VaultConfigError(VaultError):
    """The key ring in the environment or file is malformed: fix the configuration."""

    def __init__(self, message: str) -> None:
        super().__init__("vault_config", message)


class VaultKeyMissing(VaultError):
    """A value was written with a key that is no longer (or not yet) in the ring."""

    def __init__(self, kid: str) -> None:
        super().__init__(
            "vault_key_missing",
            f"vault key {kid!r} is not in the key ring; add it back to VAULT_KEYS or "
            "the key file to read values written with it",
            kid=kid,
        )
        self.kid = kid


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Immutable: loading validates once, and nothing edits a ring in place."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str
    source: str = SOURCE_ENV
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        if not self.keys:
            raise VaultConfigError("the vault key ring is empty")
        for kid, key in self.keys.items():
            _check_kid(kid)
            if len(key) != KEY_BYTES:
                raise VaultConfigError(
                    f"vault key {kid!r} is {len(key)} bytes; AES-256 needs exactly {KEY_BYTES}"
                )
        if self.active not in self.keys:
            raise VaultConfigError(
                f"the active vault key {self.active!r} is not in the ring "
                f"(keys: {', '.join(sorted(self.keys))})"
            )

    def key(self, kid: str) -> bytes:
        try:
            return self.keys[kid]
        except KeyError:
            raise VaultKeyMissing(kid) from None

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))

    def without(self, kid: str) -> KeyRing:
        """The ring minus one retired key (refuses to drop the active one)."""
        if kid == self.active:
            raise VaultConfigError(f"vault key {kid!r} is the active key and cannot be dropped")
        rest = {k: v for k, v in self.keys.items() if k != kid}
        return KeyRing(rest, self.active, self.source, self.path)

    def to_json(self) -> str:
        """The key file's format (used when generating or rewriting a file ring)."""
        body = {
            "active": self.active,
            "keys": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(self.keys.items())},
        }
        return json.dumps(body, indent=2) + "\n"


def _check_kid(kid: str) -> None:
    # Key ids travel inside the stored envelope, dot-separated: keep them plain.
    if not KID_PATTERN.match(kid):
        raise VaultConfigError(
            f"vault key id {kid!r} is invalid: use 1-32 letters, digits, '_' or '-'"
        )


def _decode_key(kid: str, text: str) -> bytes:
    # Standard or URL-safe alphabet, padding optional: whatever a generator printed.
    raw = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise VaultConfigError(f"vault key {kid!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise VaultConfigError(
            f"vault key {kid!r} decodes to {len(key)} bytes; AES-256 needs exactly {KEY_BYTES}"
        )
    return key


def parse_key_spec(spec: str, active: str = "") -> KeyRing:
    """``"kid:base64,kid2:base64"`` (the VAULT_KEYS format) into a validated ring."""
    keys: dict[str, bytes] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, b64 = part.partition(":")
        kid = kid.strip()
        if not sep or not kid or not b64.strip():
            raise VaultConfigError(
                "VAULT_KEYS entries must look like 'kid:base64key' (comma-separated)"
            )
        _check_kid(kid)
        if kid in keys:
            raise VaultConfigError(f"vault key id {kid!r} appears twice in VAULT_KEYS")
        keys[kid] = _decode_key(kid, b64)
    if not keys:
        raise VaultConfigError("VAULT_KEYS holds no key")
    active = active.strip()
    if not active:
        if len(keys) != 1:
            raise VaultConfigError(
                f"VAULT_KEYS holds {len(keys)} keys: set VAULT_ACTIVE_KEY to one of "
                f"{', '.join(sorted(keys))}"
            )
        active = next(iter(keys))
    return KeyRing(keys, active, SOURCE_ENV, None)


def _reject_duplicate_kids(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for k, v in pairs:
        if k in seen:
            raise VaultConfigError(f"vault key id {k!r} appears twice in the key file")
        seen[k] = v
    return seen


def parse_key_file_text(text: str, path: Path | None = None) -> KeyRing:
    """The key file's JSON (``{"active": kid, "keys": {kid: base64}}``) into a ring."""
    where = str(path) if path else "the key file"
    try:
        body = json.loads(text, object_pairs_hook=_reject_duplicate_kids)
    except json.JSONDecodeError as exc:
        raise VaultConfigError(f"{where} is not valid JSON ({exc.msg})") from None
    if not isinstance(body, dict) or not isinstance(body.get("keys"), dict):
        raise VaultConfigError(f'{where} must hold {{"active": "kid", "keys": {{...}}}}')
    active = body.get("active")
    if not isinstance(active, str) or not active:
        raise VaultConfigError(f'{where} must name its active key ("active": "kid")')
    keys: dict[str, bytes] = {}
    for kid, b64 in body["keys"].items():
        _check_kid(kid)
        if not isinstance(b64, str):
            raise VaultConfigError(f"vault key {kid!r} in {where} must be a base64 string")
        keys[kid] = _decode_key(kid, b64)
    return KeyRing(keys, active, SOURCE_FILE, path)


def load_key_file(path: Path) -> KeyRing:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VaultConfigError(f"cannot read the vault key file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("vault key file %s is readable by others (mode %o); use chmod 600", path, mode)
    return parse_key_file_text(text, path)


def write_key_file(path: Path, ring: KeyRing, *, replace: bool) -> None:
    """Write atomically with mode 0600; ``replace=False`` never clobbers an existing file.

    The temporary file is created 0600 from the start, so the keys are never
    readable by others even for a moment, and a crash leaves either the old file
    or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(ring.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process generated the file first
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def generate_key_ring(kid: str | None = None) -> KeyRing:
    kid = kid or f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    return KeyRing({kid: os.urandom(KEY_BYTES)}, kid, SOURCE_FILE, None)


def _demo_key_ring(path: Path) -> KeyRing:
    if not path.exists():
        ring = generate_key_ring()
        try:
            write_key_file(path, ring, replace=False)
            log.warning(
                "VAULT_KEYS and VAULT_KEYS_FILE are not set: generated a demo vault key at %s. "
                "Production must set its own keys (see .env.example) and back them up.",
                path,
            )
        except FileExistsError:
            pass  # another process won the race; use its file
    else:
        log.warning(
            "VAULT_KEYS and VAULT_KEYS_FILE are not set: using the demo vault key file %s. "
            "Production must set its own keys.",
            path,
        )
    return load_key_file(path)


def load_key_ring(settings: Settings, *, default_file: Path = DEFAULT_KEY_FILE) -> KeyRing:
    """The ring the settings describe. Raises VaultConfigError with a sentence to act on."""
    if settings.vault_keys and settings.vault_keys_file:
        raise VaultConfigError("set VAULT_KEYS or VAULT_KEYS_FILE, not both")
    if settings.vault_keys:
        return parse_key_spec(settings.vault_keys, settings.vault_active_key)
    if settings.vault_keys_file:
        path = Path(settings.vault_keys_file)
        if not path.is_absolute():
            path = PROJECT_ROOT / path
        ring = load_key_file(path)
    else:
        ring = _demo_key_ring(default_file)
    if settings.vault_active_key and settings.vault_active_key != ring.active:
        raise VaultConfigError(
            f"VAULT_ACTIVE_KEY={settings.vault_active_key!r} disagrees with the key file's "
            f"active key {ring.active!r}: with a key file, set the active key in the file"
        )
    return ring


_ring: KeyRing | None = None


def get_key_ring() -> KeyRing:
    """The process-wide ring, loaded from the settings on first use."""
    global _ring
    if _ring is None:
        _ring = load_key_ring(get_settings())
    return _ring


def set_key_ring(ring: KeyRing | None) -> None:
    """Install a ring (tests build explicit ones) or forget it (``None``: reload on next use)."""
    global _ring
    _ring = ring
