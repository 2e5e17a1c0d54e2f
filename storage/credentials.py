"""Password hashing (scrypt) and bearer tokens (random, prefixed, stored only as hashes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SESSION_PREFIX = "ows_"
ACCESS_TOKEN_PREFIX = "owt_"
DEFAULT_SCRYPT_N = 2**15


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = DEFAULT_SCRYPT_N) -> str:
    """`scrypt$n$r$p$salt$hash`: the parameters travel with the hash so they can grow later."""
    salt = os.urandom(16)
    kdf = Scrypt(salt=salt, length=32, n=n, r=8, p=1)
    digest = kdf.derive(password.encode("utf-8"))
    return f"scrypt${n}$8$1${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches; constant time in the digest comparison."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(salt=_unb64(salt), length=32, n=int(n), r=int(r), p=int(p))
        kdf.verify(password.encode("utf-8"), _unb64(digest))
    except (ValueError, InvalidKey):
        return False
    return True


# A hash for unknown emails so a login for a missing account costs as much as a real one.
_DUMMY_HASH = None


def dummy_password_hash(n: int = DEFAULT_SCRYPT_N) -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None or f"${n}$" not in _DUMMY_HASH:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16), n=n)
    return _DUMMY_HASH


def new_token(prefix: str) -> str:
    """256 random bits behind a recognizable prefix (so leaked tokens are easy to scan for)."""
    return prefix + _b64(secrets.token_bytes(32))


def token_hash(token: str) -> str:
    """Tokens carry 256 bits of entropy, so one SHA-256 is enough: no slow hash needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
