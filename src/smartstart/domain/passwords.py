"""Password policy, hashing and verifying: the one place that does each, for every face
and the seed.

Policy: 12 to 128 characters, not on the bundled list of common passwords, not only
white space, and not guessable by pattern (repeats, sequences, keyboard walks, dates,
common words), as zxcvbn estimates it.

Hashing: bcrypt `$2b$` at the configured cost, no silent truncation. bcrypt reads only
the first 72 bytes of its input. Passwords longer than that (in UTF-8) are pre-hashed —
bcrypt(base64(sha256(password))) — so every byte counts; shorter ones are hashed as
they are, so hashes written by the guide's tooling (plain bcrypt) keep verifying.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import bcrypt

from smartstart.domain.errors import Invalid

if TYPE_CHECKING:
    from zxcvbn.matching import _Match

MIN_LENGTH = 12
MAX_LENGTH = 128
BCRYPT_MAX_BYTES = 72
DEFAULT_ROUNDS = 12


# zxcvbn's work grows with the square of the length (and with look-alike characters, see
# _weakness): it judges at most this many, the start of a longer password.
EXAMINED_LENGTH = 40
# zxcvbn's score 3, "safely unguessable": at least 10^8 guesses to find it.
MIN_GUESSES = 10**8


# A well-formed bcrypt hash no password has: verifying against it costs the same as a
# real check at the configured cost, so an unknown user and a wrong password take the
# same time. Written, not computed: hashing it on first use made the first unknown-user
# login of each process cost two hashes (a timing signal, and a flaky test).
def _dummy_hash(rounds: int) -> bytes:
    return b"$2b$%02d$" % rounds + b"O" * 22 + b"x" * 31


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (lower-cased)."""
    data = resources.files("smartstart.data").joinpath("common-passwords.txt.gz").read_bytes()
    return frozenset(
        line.strip().lower() for line in gzip.decompress(data).decode().splitlines() if line.strip()
    )


def validate(password: str, *, field: str = "password") -> None:
    """Raise Invalid, naming what is wrong, unless the password meets the policy."""
    if not isinstance(password, str):
        raise Invalid("the password must be a string", details={"field": field})
    n = len(password)
    if n < MIN_LENGTH or n > MAX_LENGTH:
        raise Invalid(
            f"the password must be {MIN_LENGTH} to {MAX_LENGTH} characters long (it has {n})",
            details={"field": field},
        )
    if not password.strip():
        raise Invalid(
            "the password is only white space; choose one with words or characters",
            details={"field": field, "reason": "whitespace"},
        )
    if password.lower() in common_passwords() or password.strip().lower() in common_passwords():
        raise Invalid(
            "this password is on the list of commonly used passwords; choose another",
            details={"field": field},
        )
    weakness = _weakness(password)
    if weakness is not None:
        reason, what = weakness
        raise Invalid(
            f"the password is too easy to guess: it is mostly {what}; "
            "add more words or characters that follow no pattern",
            details={"field": field, "reason": reason},
        )


# What each kind of zxcvbn match makes a password, in the order that names it among equals.
_PATTERNS = (
    ("repeat", "repeated", "repeated characters or words"),
    ("sequence", "sequence", "a sequence (like abcd or 1234)"),
    ("spatial", "keyboard", "a keyboard pattern"),
    ("date", "date", "a date or year"),
    ("regex", "date", "a date or year"),
)
_WORDS = ("common_words", "common words, names or passwords")
# Above this many letters with look-alikes present (4 or @ for a, $ for s, | or ! for i...),
# zxcvbn tries hundreds of substitutions: 0.1 s to over a second per password. Such a
# password is judged without look-alikes, by its first 24 characters: the matcher of
# repeats still scores each repeated part with look-alikes, and 12 characters keep that cheap.
_L33T_LETTERS_MAX = 6
_L33T_EXAMINED_LENGTH = 24


def _weakness(password: str) -> tuple[str, str] | None:
    """(reason, description) when zxcvbn finds the password guessable, else None."""
    from zxcvbn import matching, scoring  # 12 MB of word lists: loaded on first use only

    matchers: list[Callable[[str], list[_Match]]] = [
        matching.dictionary_match,
        matching.reverse_dictionary_match,
        matching.spatial_match,
        matching.repeat_match,
        matching.sequence_match,
        matching.regex_match,
        matching.date_match,
    ]
    text = password[:EXAMINED_LENGTH]
    if len(matching.relevant_l33t_subtable(text, matching.L33T_TABLE)) <= _L33T_LETTERS_MAX:
        matchers.append(matching.l33t_match)
    else:
        text = text[:_L33T_EXAMINED_LENGTH]
    # zxcvbn's own omnimatch, but with the look-alike matcher only where it stays cheap.
    found: list[_Match] = [m for matcher in matchers for m in matcher(text)]
    found.sort(key=lambda m: (m["i"], m["j"]))
    if scoring.most_guessable_match_sequence(text, found)["guesses"] >= MIN_GUESSES:
        return None
    # A pattern covering half of it names it; "qwertyuiop" is a listed password too, but
    # "a keyboard pattern" tells more than "common words".
    covered = {pattern: _coverage(found, pattern) for pattern, _, _ in _PATTERNS}
    pattern, reason, what = max(_PATTERNS, key=lambda p: covered[p[0]])  # the first of equals
    return (reason, what) if 2 * covered[pattern] >= len(text) else _WORDS


def _coverage(matches: list[_Match], pattern: str) -> int:
    """How many characters the matches of one kind cover."""
    return len({k for m in matches if m["pattern"] == pattern for k in range(m["i"], m["j"] + 1)})


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


def verify(password: str, hashed: str | None, rounds: int = DEFAULT_ROUNDS) -> bool:
    """True when password matches; without a hash to check, the work of one at cost rounds."""
    if not hashed:
        _checkpw(b"x", _dummy_hash(rounds))
        return False
    try:
        return _checkpw(_material(password), hashed.encode())
    except ValueError:
        # Not a real bcrypt hash (e.g. the guide's placeholder '$2b$12$hashedpassword').
        _checkpw(b"x", _dummy_hash(rounds))
        return False


def needs_rehash(hashed: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """True for hashes weaker than the current cost or of another variant than $2b$."""
    try:
        prefix, cost = hashed.split("$")[1:3]
        return prefix != "2b" or int(cost) < rounds
    except (ValueError, IndexError):
        return True
