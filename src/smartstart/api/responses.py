"""Responses the hot routes build themselves."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi import Response


def trusted_json(content: Any) -> Response:
    """JSON of a value our own code built to the route's response model.

    FastAPI would validate it against that model again and then serialise it; the
    hot reads skip the validation. The route keeps its `response_model` for the docs,
    and the OpenAPI fuzz test checks these responses against it.
    """
    return Response(pydantic_core.to_json(content), media_type="application/json")
