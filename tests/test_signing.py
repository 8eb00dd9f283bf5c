"""Signed tokens: round trip, purposes kept apart, forgeries refused, one key per home."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from smartstart import signing
from smartstart.config import Settings


def _settings(home: Path, **extra: object) -> Settings:
    return Settings(_env_file=None, home=home, **extra)  # type: ignore[call-arg,arg-type]


def test_round_trip_and_purposes_apart(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    token = signing.sign(s, "cursor", b"payload")
    assert signing.unsign(s, "cursor", token) == b"payload"
    assert signing.unsign(s, "csrf", token) is None


@pytest.mark.parametrize(
    "forged", ["", ".", "abc", "abc.", ".abc", "cGF5bG9hZA.AAAA", "a\x00b.c", "é.é", "!!.!!"]
)
def test_forged_tokens_refused(tmp_path: Path, forged: str) -> None:
    assert signing.unsign(_settings(tmp_path), "cursor", forged) is None


def test_tampered_payload_refused(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    body, tag = signing.sign(s, "cursor", b"page-2").split(".")
    other = signing.sign(s, "cursor", b"page-9").split(".")[0]
    assert signing.unsign(s, "cursor", f"{other}.{tag}") is None
    assert signing.unsign(s, "cursor", f"{body}.{tag}") == b"page-2"


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token = signing.sign(_settings(home), "x", b"1")
    key_file = home / signing.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    signing._keys.clear()  # another process: reads the same file
    assert signing.unsign(_settings(home), "x", token) == b"1"
    assert signing.unsign(_settings(tmp_path / "elsewhere"), "x", token) is None


def test_configured_key_wins_and_must_be_long(tmp_path: Path) -> None:
    key = "k" * 32
    token = signing.sign(_settings(tmp_path / "a", secret_key=key), "x", b"1")
    assert signing.unsign(_settings(tmp_path / "b", secret_key=key), "x", token) == b"1"
    assert not (tmp_path / "a" / signing.KEY_FILE).exists()
    with pytest.raises(ValidationError):
        _settings(tmp_path, secret_key="short")
