"""Password hashes for the metrics endpoint's HTTP basic auth.

The configuration stores a hash, never the password, so a leaked config file or backup does not
open the endpoint. Two formats:

``scrypt$N$r$p$SALT$HASH`` (recommended)
    ``hashlib.scrypt`` with a random 16-byte salt; SALT and HASH are unpadded URL-safe base64.
    Memory-hard and in the standard library, so no third-party module (bcrypt) is needed.
    Create one with ``python -m monitor.metrics hash-password``.

``sha256$HEX``
    Unsalted SHA-256 of the password, for tooling that can only produce that. Acceptable only
    for long random passwords (a generated 32-character secret); a human-chosen password falls
    to a dictionary attack on a leaked hash in seconds.

Verification compares in constant time. Because scrypt is deliberately slow (~50 ms), the
server remembers the last accepted ``Authorization`` header by its SHA-256 and skips the KDF for
repeat scrapes; a wrong header always pays the full cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N = 1 << 20  # refuse hashes whose cost would stall the server (or exceed scrypt's maxmem)
_MAXMEM = 256 * 1024 * 1024


class PasswordHashError(ValueError):
    """A stored hash this module cannot read."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise PasswordHashError("bad base64 in password hash") from exc


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """An ``scrypt$...`` string to put in the configuration."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed stored hash; parse once at start-up so a typo fails then, not at scrape time."""

    scheme: str
    digest: bytes
    salt: bytes = b""
    n: int = 0
    r: int = 0
    p: int = 0

    @classmethod
    def parse(cls, stored: str) -> PasswordHash:
        parts = stored.strip().split("$")
        if parts[0] == "sha256" and len(parts) == 2:
            try:
                digest = bytes.fromhex(parts[1])
            except ValueError as exc:
                raise PasswordHashError("sha256 hash is not hex") from exc
            if len(digest) != 32:
                raise PasswordHashError("sha256 hash must be 64 hex digits")
            return cls("sha256", digest)
        if parts[0] == "scrypt" and len(parts) == 6:
            try:
                n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            except ValueError as exc:
                raise PasswordHashError("scrypt parameters must be integers") from exc
            if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16):
                raise PasswordHashError("scrypt parameters out of range")
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
            if len(salt) < 8 or len(digest) < 16:
                raise PasswordHashError("scrypt salt or hash too short")
            return cls("scrypt", digest, salt, n, r, p)
        raise PasswordHashError("password hash must be 'scrypt$N$r$p$SALT$HASH' or 'sha256$HEX'")

    def verify(self, password: str) -> bool:
        raw = password.encode("utf-8")
        if self.scheme == "sha256":
            candidate = hashlib.sha256(raw).digest()
        else:
            candidate = hashlib.scrypt(
                raw,
                salt=self.salt,
                n=self.n,
                r=self.r,
                p=self.p,
                maxmem=_MAXMEM,
                dklen=len(self.digest),
            )
        return hmac.compare_digest(candidate, self.digest)
