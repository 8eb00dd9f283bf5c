"""Password policy and hashing: bcrypt `$2b$`, cost 12, no silent truncation.

bcrypt reads only the first 72 bytes of its input. Passwords longer than that
(in UTF-8) are pre-hashed — bcrypt(base64(sha256(password))) — so every byte
counts; shorter ones are hashed as they are, so hashes written by the guide's
tooling (plain bcrypt) keep verifying.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import threading
from functools import lru_cache
from importlib import resources

import bcrypt

from smartstart.domain.errors import Invalid

MIN_LENGTH = 12
MAX_LENGTH = 128
BCRYPT_MAX_BYTES = 72
DEFAULT_ROUNDS = 12


# A hash of a password nobody has: verifying against it costs the same as a real
# check, so an unknown user and a wrong password take the same time.
@lru_cache(maxsize=4)
def _dummy_hash(rounds: int = DEFAULT_ROUNDS) -> bytes:
    return bcrypt.hashpw(b"smartstart-no-such-user", bcrypt.gensalt(rounds))


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (lower-cased)."""
    data = resources.files("smartstart.data").joinpath("common-passwords.txt.gz").read_bytes()
    return frozenset(
        line.strip().lower() for line in gzip.decompress(data).decode().splitlines() if line.strip()
    )


def validate(password: str, *, field: str = "password") -> None:
    """Raise Invalid unless the password meets the policy (length, not common)."""
    if not isinstance(password, str):
        raise Invalid("the password must be a string", details={"field": field})
    n = len(password)
    if n < MIN_LENGTH or n > MAX_LENGTH:
        raise Invalid(
            f"the password must be {MIN_LENGTH} to {MAX_LENGTH} characters long (it has {n})",
            details={"field": field},
        )
    if password.lower() in common_passwords() or password.strip().lower() in common_passwords():
        raise Invalid(
            "this password is on the list of commonly used passwords; choose another",
            details={"field": field},
        )


def _material(password: str) -> bytes:
    raw = password.encode()
    if len(raw) <= BCRYPT_MAX_BYTES:
        return raw
    return base64.b64encode(hashlib.sha256(raw).digest())


# At most one bcrypt per core: twenty hashing threads would otherwise crowd the
# event loop's thread off the CPUs (the scheduler shares a core among runnable threads).
_HASHING = threading.BoundedSemaphore(os.cpu_count() or 2)


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """bcrypt `$2b$` hash (call validate first; this hashes whatever it is given)."""
    with _HASHING:
        return bcrypt.hashpw(_material(password), bcrypt.gensalt(rounds)).decode()


def _checkpw(password: bytes, hashed: bytes) -> bool:
    with _HASHING:
        return bcrypt.checkpw(password, hashed)


def verify(password: str, hashed: str | None) -> bool:
    """True when password matches; constant work when there is no hash to check."""
    if not hashed:
        _checkpw(b"x", _dummy_hash())
        return False
    try:
        return _checkpw(_material(password), hashed.encode())
    except ValueError:
        # Not a real bcrypt hash (e.g. the guide's placeholder '$2b$12$hashedpassword').
        _checkpw(b"x", _dummy_hash())
        return False


def needs_rehash(hashed: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """True for hashes weaker than the current cost or of another variant than $2b$."""
    try:
        prefix, cost = hashed.split("$")[1:3]
        return prefix != "2b" or int(cost) < rounds
    except (ValueError, IndexError):
        return True
