"""How settings' values are checked: as a pydantic model of the fields would, without
importing pydantic for the values that need no more than a glance.

Every command reads the settings; pydantic's import and the model's build cost a CLI
command ~50 ms of its 300 ms (issue 8). Values as they come from the environment or a
caller (`5432`, `"true"`, a path) are taken here when they are certainly what pydantic would
make of them; anything else (a bad value, an unusual spelling) goes to the pydantic model,
which raises its ValidationError, worded as ever. tests/test_configvalues.py holds the two
to the same results.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

_INT = re.compile(r"[0-9]{1,15}")
_FLOAT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")
# pydantic's spellings of a boolean (any case; no spaces)
_BOOLS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}


class Secret:
    """A secret string, shown as stars (what pydantic's SecretStr is to the model)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret) or type(other).__name__ == "SecretStr":
            return bool(self._value == other.get_secret_value())  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"Secret('{self}')"


class Limits:
    """Bounds of a setting's value (pydantic's Field constraints of the same names)."""

    __slots__ = ("ge", "gt", "le", "min_length")

    def __init__(
        self,
        *,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
    ) -> None:
        self.ge, self.gt, self.le, self.min_length = ge, gt, le, min_length

    def as_field(self) -> dict[str, Any]:
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}

    def allows(self, value: Any) -> bool:
        if self.min_length is not None and len(value) < self.min_length:
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )


class Unsure(Exception):
    """The value is not one the fast path can vouch for: pydantic decides."""


class Field:
    """One setting: its type, default and limits, and how a plain value becomes one."""

    def __init__(self, hint: Any, default: Any) -> None:
        self.default = default
        self.limits = Limits()
        if get_origin(hint) is typing.Annotated:
            hint, *extras = get_args(hint)
            self.limits = next(e for e in extras if isinstance(e, Limits))
        self.hint = hint
        args = get_args(hint)
        self.optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if self.optional else hint
        self.choices: tuple[str, ...] | None = None
        if get_origin(base) is Literal:
            self.choices, base = get_args(base), str
        self.base: type = base
        self._parse = _PARSERS[base]

    def parse(self, value: Any) -> Any:
        """The setting's value, or Unsure."""
        if value is None and self.optional:
            return None
        parsed = self._parse(value)
        if self.choices is not None and parsed not in self.choices:
            raise Unsure
        if not self.limits.allows(parsed.get_secret_value() if self.base is Secret else parsed):
            raise Unsure
        return parsed


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str and _INT.fullmatch(value):
        return int(value)
    raise Unsure


def _float(value: Any) -> float:
    if (type(value) is int and abs(value) < 10**15) or (
        type(value) is float and math.isfinite(value)
    ):
        return float(value)
    if type(value) is str and _FLOAT.fullmatch(value):
        return float(value)
    raise Unsure


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    raise Unsure


def _str(value: Any) -> str:
    if type(value) is str:
        return value
    raise Unsure


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if type(value) is str and value:
        return Path(value)
    raise Unsure


def _secret(value: Any) -> Secret:
    if type(value) is str:
        return Secret(value)
    if isinstance(value, Secret) or type(value).__name__ == "SecretStr":
        return Secret(value.get_secret_value())
    raise Unsure


_PARSERS: dict[type, Callable[[Any], Any]] = {
    int: _int,
    float: _float,
    bool: _bool,
    str: _str,
    Path: _path,
    Secret: _secret,
}


@cache
def fields_of(cls: type) -> dict[str, Field]:
    """cls's settings: its annotated attributes that have a default, in order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        name: Field(hint, cls.__dict__[name]) for name, hint in hints.items() if name in vars(cls)
    }


def validate(cls: type, given: dict[str, Any], check: Callable[[Any], None]) -> dict[str, Any]:
    """Every field's value from given (unknown names ignored) and the defaults; then check
    (a ValueError: not valid). Raises pydantic's ValidationError for anything invalid."""
    fields = fields_of(cls)
    values = {name: field.default for name, field in fields.items()}
    try:
        values.update((k, fields[k].parse(v)) for k, v in given.items() if k in fields)
        check(_Values(values))
    except (Unsure, ValueError):
        values = _by_pydantic(cls, given, check)
    return values


class _Values:
    """Values as attributes, for check."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _by_pydantic(cls: type, given: dict[str, Any], check: Callable[[Any], None]) -> dict[str, Any]:
    from pydantic import SecretStr

    model = _model(cls, check)
    made = model(
        **{
            k: SecretStr(v.get_secret_value()) if isinstance(v, Secret) else v
            for k, v in given.items()
        }
    )
    values = {name: getattr(made, name) for name in fields_of(cls)}
    return {k: _secret(v) if type(v).__name__ == "SecretStr" else v for k, v in values.items()}


@cache
def _model(cls: type, check: Callable[[Any], None]) -> Any:
    """The pydantic model of cls's fields (named as cls, so its errors read the same)."""
    from pydantic import BaseModel, ConfigDict, SecretStr, create_model, model_validator
    from pydantic import Field as PydanticField

    class Checked(BaseModel):
        model_config = ConfigDict(extra="ignore")

        @model_validator(mode="after")
        def _check(self) -> Checked:
            check(self)
            return self

    fields: dict[str, Any] = {}
    for name, field in fields_of(cls).items():
        hint = field.hint
        if field.base is Secret:
            hint = SecretStr | None if field.optional else SecretStr
        default = field.default
        if isinstance(default, Secret):
            default = SecretStr(default.get_secret_value())
        fields[name] = (hint, PydanticField(default=default, **field.limits.as_field()))
    return create_model(cls.__name__, __base__=Checked, **fields)
