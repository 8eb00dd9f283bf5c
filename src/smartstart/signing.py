"""Signed tokens: cursors, CSRF tokens and device cookies that a client cannot forge.

One secret key per installation: `SMARTSTART_SECRET_KEY` when set (every host and
worker of a deployment must share it), otherwise a random key generated once into
`$SMARTSTART_HOME/secret-key` (mode 600), which every worker and the CLI read.
Each use ("purpose") gets its own derived key, so a token made for one use is
refused by every other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from smartstart.config import Settings
from smartstart.errors import ConfigurationError

KEY_FILE = "secret-key"
MAC_BYTES = 16  # 128-bit tags: forging one is out of reach, and tokens stay short
_lock = threading.Lock()
_keys: dict[Path, bytes] = {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _file_key(home: Path) -> bytes:
    path = home / KEY_FILE
    with _lock:
        if path in _keys:
            return _keys[path]
        try:
            key = bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            home.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key.hex() + "\n")
            try:
                os.link(tmp, path)  # first writer wins when several processes race
            except FileExistsError:
                key = bytes.fromhex(path.read_text().strip())
            finally:
                tmp.unlink(missing_ok=True)
        except (OSError, ValueError) as e:
            raise ConfigurationError(
                f"cannot read the secret key {path}: {e}",
                "fix its permissions, delete it to generate a new one, "
                "or set SMARTSTART_SECRET_KEY",
            ) from e
        _keys[path] = key
        return key


def master_key(settings: Settings) -> bytes:
    """The installation's secret key (configured, or generated once under the home)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return _file_key(settings.home_dir)


def _purpose_key(settings: Settings, purpose: str) -> bytes:
    return hmac.new(master_key(settings), purpose.encode(), hashlib.sha256).digest()


def mac(settings: Settings, purpose: str, data: bytes) -> bytes:
    """The tag of `data` for `purpose`."""
    return hmac.new(_purpose_key(settings, purpose), data, hashlib.sha256).digest()[:MAC_BYTES]


def sign(settings: Settings, purpose: str, payload: bytes) -> str:
    """`payload` and its tag, URL-safe: `<payload>.<tag>`."""
    return f"{_b64(payload)}.{_b64(mac(settings, purpose, payload))}"


def unsign(settings: Settings, purpose: str, token: str) -> bytes | None:
    """The payload of a token made by `sign` for `purpose`; None when forged or malformed."""
    body, dot, tag = token.partition(".")
    if not dot or not body or not tag or not token.isascii():
        return None
    try:
        payload, given = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError):
        return None
    return payload if hmac.compare_digest(mac(settings, purpose, payload), given) else None
