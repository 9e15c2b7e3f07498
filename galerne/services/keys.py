"""API key material: `gal-<id>.<secret>`.

The id (12 hex characters) finds the row; the secret (43 URL-safe characters, 256 bits) is shown once
and stored only as its SHA-256. A slow password hash would add nothing here: the secret is random and
long, so the digest cannot be brute-forced, and a fast digest keeps authentication off the hot path.

Example::

    issued = issue_key()             # issued.token == "gal-3f9a0c1b2d4e.q9L..."
    parse_key(issued.token)          # ("3f9a0c1b2d4e", "q9L...")
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "gal-"
_KEY_PATTERN = re.compile(r"^gal-([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    id: str
    token: str
    secret_hash: str


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedKey(id=key_id, token=f"{KEY_PREFIX}{key_id}.{secret}", secret_hash=hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = _KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison, so response timing says nothing about how much of a guess was right."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)
