"""Encryption of the secrets we keep for writers (AI provider API keys) under one server key.

Owns the server key (environment or `secret.key` file), the sealed-token format, the
keyed hash that spots a duplicate key, the display hint, the wrong-key verifier and rotation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.errors import OpenWriteError

KEY_FILE_NAME = "secret.key"
STAGED_KEY_FILE_NAME = "secret.key.new"
KEY_ENV_VAR = "OPENWRITE_SECRET_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
TOKEN_VERSION = "v1"

# Distinct HKDF "info" labels: the same master key never serves two purposes, and a
# leaked subkey (say, in a memory dump of the hashing code) opens nothing else.
_INFO_ENCRYPTION = b"openwrite/v1/secret-encryption"
_INFO_HASH = b"openwrite/v1/api-key-hash"
_INFO_KEY_ID = b"openwrite/v1/key-id"

_GENERATE_HINT = (
    "python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
)
_VERIFIER_TEXT = "openwrite-key-check"
_VERIFIER_AAD = "openwrite/key-verifier"


class SecretError(OpenWriteError):
    """A stored secret that cannot be decrypted: tampered, moved to another row, or wrong key.

    A server-side fault (500): the writer did nothing wrong. The message never contains
    the secret, only why it failed and which server keys were involved.
    """

    status = 500
    code = "secret_undecryptable"


class ServerKeyError(OpenWriteError):
    """The server key cannot be loaded or created; raised at start-up, before serving."""

    status = 500
    code = "server_key_invalid"


@dataclass(frozen=True)
class ServerKey:
    """The 32 random bytes every stored secret depends on; `key_id` is safe to print."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_BYTES:
            raise ServerKeyError(
                f"A server key must be {KEY_BYTES} bytes, got {len(self.raw)}.",
                details={"expected_bytes": KEY_BYTES, "got_bytes": len(self.raw)},
            )

    @classmethod
    def generate(cls) -> ServerKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, source: str) -> ServerKey:
        """Parse base64url (padding optional); `source` names where it came from in errors."""
        value = text.strip()
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ServerKeyError(
                f"{source} is not valid base64url. Generate a key with: {_GENERATE_HINT}",
                details={"source": source},
            ) from None
        if len(raw) != KEY_BYTES:
            raise ServerKeyError(
                f"{source} decodes to {len(raw)} bytes; a server key is exactly {KEY_BYTES}.",
                details={"source": source, "expected_bytes": KEY_BYTES, "got_bytes": len(raw)},
            )
        return cls(raw)

    def to_text(self) -> str:
        """The base64url form, the same for the key file and `OPENWRITE_SECRET_KEY`."""
        return base64.urlsafe_b64encode(self.raw).decode("ascii")

    def subkey(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self.raw)

    @property
    def key_id(self) -> str:
        """16 hex characters naming this key, derived one-way: tells keys apart in logs."""
        return self.subkey(_INFO_KEY_ID)[:8].hex()


def load_server_key(data_dir: Path, env_value: str | None) -> ServerKey:
    """The server key from `env_value` (OPENWRITE_SECRET_KEY) or `data_dir/secret.key`.

    An empty or unset variable means "use the file". The file is created on first start
    (mode 0600) and refused later if its permissions are wider than 0600 or it is malformed.
    """
    if env_value is not None and env_value.strip():
        return ServerKey.from_text(env_value, source=KEY_ENV_VAR)
    path = data_dir / KEY_FILE_NAME
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    return _create_key_file(path)


def _read_key_file(path: Path) -> ServerKey:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ServerKeyError(f"{path} is not a regular file.", details={"path": str(path)})
    if info.st_mode & 0o077:
        raise ServerKeyError(
            f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}",
            details={"path": str(path), "mode": f"{stat.S_IMODE(info.st_mode):04o}"},
        )
    return ServerKey.from_text(path.read_text("ascii", errors="replace"), source=str(path))


def _create_key_file(path: Path) -> ServerKey:
    """Write a new key to a private temporary file, then link it into place.

    Linking (rather than O_EXCL on the final name) means nobody ever reads a half-written
    key: two servers starting at once both succeed, the loser reads the winner's key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ServerKey.generate()
    temp = _write_private_temp(path, key)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _fsync_directory(path.parent)
    return key


def _write_private_temp(path: Path, key: ServerKey) -> Path:
    """`key` in a new 0600 file next to `path`, flushed to disk; the caller moves it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (key.to_text() + "\n").encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    return temp


def stage_server_key(data_dir: Path, key: ServerKey) -> None:
    """Put `key` in `secret.key.new` (durably) before a rotation commits to it.

    Rotation order: stage the new key, commit the re-sealed secrets and the new verifier
    in one transaction, then `install_staged_key`. A crash at any point leaves either the
    old key valid for the database, or the new key safe on disk in one of the two files.
    """
    path = data_dir / STAGED_KEY_FILE_NAME
    os.replace(_write_private_temp(path, key), path)
    _fsync_directory(data_dir)


def read_staged_key(data_dir: Path) -> ServerKey | None:
    """The key a rotation staged and has not installed yet, if any."""
    try:
        return _read_key_file(data_dir / STAGED_KEY_FILE_NAME)
    except FileNotFoundError:
        return None


def install_staged_key(data_dir: Path) -> None:
    """Make the staged key the server key (`secret.key`), atomically and durably."""
    os.replace(data_dir / STAGED_KEY_FILE_NAME, data_dir / KEY_FILE_NAME)
    _fsync_directory(data_dir)


def discard_staged_key(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(data_dir / STAGED_KEY_FILE_NAME)
    _fsync_directory(data_dir)


def _fsync_directory(directory: Path) -> None:
    # Without this a power cut right after start-up can lose the new directory entry,
    # and with it the only key able to open the secrets sealed since.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def secret_aad(table: str, row_id: str | int, owner_id: str | int, column: str) -> str:
    """Associated data binding a sealed value to one row, owner and column.

    A token copied into another row or to another owner then fails to open. JSON makes
    the parts unambiguous whatever characters the ids contain. Changing a row's owner
    means re-sealing its secrets.
    """
    return json.dumps(["openwrite-secret", table, str(row_id), str(owner_id), column])


def key_hint(plaintext: str) -> str:
    """The last characters of an API key, for display: at most 4 and at most a quarter.

    Real provider keys (30+ characters) show their last 4. A short key reveals less
    (1 character for 4-7, 2 for 8-11, 3 for 12-15) and nothing below 4 characters, so the
    hint never gives away a meaningful share of a weak key.
    """
    shown = min(4, len(plaintext) // 4)
    return plaintext[-shown:] if shown else ""


def token_key_id(token: str) -> str | None:
    """The id of the server key a token was sealed with, or None if it is no token of ours."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        return None
    return parts[1]


class SecretBox:
    """Seals and opens secrets with AES-256-GCM under a subkey of the server key.

    Token: "v1.<key_id>.<base64url(nonce || ciphertext+tag)>". The key id lets an open
    under the wrong key say so plainly, and lets rotation skip tokens already moved.
    """

    def __init__(self, server_key: ServerKey) -> None:
        self.key_id = server_key.key_id
        self._aead = AESGCM(server_key.subkey(_INFO_ENCRYPTION))
        self._hash_key = server_key.subkey(_INFO_HASH)

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    def seal(self, plaintext: str, *, aad: str) -> str:
        header = f"{TOKEN_VERSION}.{self.key_id}"
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _associated(header, aad))
        return f"{header}.{_b64encode(nonce + sealed)}"

    def open(self, token: str, *, aad: str) -> str:
        """The plaintext, or SecretError if the token was altered, moved, or sealed elsewhere."""
        sealed_with = token_key_id(token)
        if sealed_with is None:
            raise SecretError(
                "A stored secret is not in a format this server understands.",
                details={"reason": "malformed"},
            )
        if sealed_with != self.key_id:
            raise SecretError(
                "A stored secret was sealed with another server key; "
                "start the server with that key, or rotate secrets to this one.",
                details={"reason": "wrong_key", "sealed_with": sealed_with, "key_id": self.key_id},
            )
        header, _, body = token.rpartition(".")
        try:
            blob = _b64decode(body)
        except (binascii.Error, ValueError):
            blob = b""
        if _b64encode(blob) != body:
            # Only the canonical spelling opens: one secret, one token text.
            blob = b""
        if len(blob) < NONCE_BYTES + 16:
            raise SecretError(
                "A stored secret is truncated or corrupted.", details={"reason": "malformed"}
            )
        try:
            nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
            plain = self._aead.decrypt(nonce, sealed, _associated(header, aad))
        except InvalidTag:
            # Same key id, so the key is right: the bytes were altered or the token was
            # copied from another row, owner or column.
            raise SecretError(
                "A stored secret failed its integrity check (altered, or copied from another row).",
                details={"reason": "integrity", "key_id": self.key_id},
            ) from None
        return plain.decode("utf-8")

    def key_hash(self, plaintext: str) -> str:
        """HMAC-SHA256 hex of a secret: equal keys hash equal, nothing about the key leaks.

        Hashes exactly what it is given; callers normalize (strip) keys before storing.
        Changes with the server key, so rotation recomputes it.
        """
        return hmac.new(self._hash_key, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()

    def make_verifier(self) -> str:
        """A token the database keeps so a later start can tell whether the key changed."""
        return self.seal(_VERIFIER_TEXT, aad=_VERIFIER_AAD)

    def verify(self, verifier: str) -> bool:
        """True when `verifier` was made under this server key and is intact."""
        try:
            return self.open(verifier, aad=_VERIFIER_AAD) == _VERIFIER_TEXT
        except (SecretError, UnicodeDecodeError):
            return False


def rotate(old_box: SecretBox, new_box: SecretBox, token: str, *, aad: str) -> str:
    """Re-seal one secret under `new_box`; a token already under it is checked and kept.

    Idempotent, so an interrupted rotation can simply be run again. The keyed hash also
    depends on the server key: recompute it with `new_box.key_hash(...)`.
    """
    if token_key_id(token) == new_box.key_id:
        new_box.open(token, aad=aad)
        return token
    return new_box.seal(old_box.open(token, aad=aad), aad=aad)


def _associated(header: str, aad: str) -> bytes:
    # The header is authenticated too, so a token cannot be relabelled to another version.
    return f"{header}\n{aad}".encode()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
