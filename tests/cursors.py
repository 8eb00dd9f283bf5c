"""Forged cursors, made from a genuine one: every listing must refuse each of them."""

from __future__ import annotations

import base64
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _edited_key(payload: bytes) -> bytes:
    data = json.loads(payload)
    data["k"] = [v + 1 if isinstance(v, int) else f"{v}0" for v in data["k"]]
    return json.dumps(data, separators=(",", ":")).encode()


def forgeries(genuine: str, foreign: str) -> dict[str, str]:
    """Cursors a client could make: `genuine` is a real cursor of the listing under
    test, `foreign` a real cursor of another listing."""
    body, tag = genuine.split(".")
    first = "B" if tag[0] == "A" else "A"  # the first character always carries tag bits
    return {
        "edited payload": f"{_b64(_edited_key(_unb64(body)))}.{tag}",
        "edited tag": f"{body}.{first}{tag[1:]}",
        "another listing": foreign,
        "NUL": f"{genuine[:4]}\x00{genuine[4:]}",
        "truncated": genuine[: len(genuine) // 2],
        "no tag": body,
        "garbage": "1; DROP TABLE x",
        "huge": "A" * 5000,
    }
