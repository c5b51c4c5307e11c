"""Path and query parameters, each declared once: the declaration reads the value (422 naming the
parameter when it breaks the rule) and describes it in /openapi.json (api/openapi.py), so the
document states the bounds the code enforces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request

from api.request_rules import HEADER_PATTERN, STORE_INT_MAX, TEXT_PATTERN, field_problem, integer_param


class Param(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def schema(self) -> dict[str, Any]: ...


def _raw(request: Request, name: str) -> str | None:
    """The query parameter's text (empty when sent without a value); None when absent."""
    return request.query_params.get(name)


@dataclass(frozen=True)
class Integer:
    """An integer from `low` to `high` (ASCII digits only)."""

    name: str
    default: int | None = None
    low: int = 0
    high: int = STORE_INT_MAX
    description: str = ""

    def read(self, request: Request) -> int | None:
        raw = _raw(request, self.name)
        return self.default if raw is None else self.parse(raw)

    def parse(self, raw: str) -> int:
        value = integer_param(raw, self.low, self.high)
        if value is None:
            raise field_problem(self.name, f"an integer from {self.low} to {self.high}")
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Choice:
    """One of `values`."""

    name: str
    values: Sequence[str]
    default: str | None = None
    description: str = ""

    def read(self, request: Request) -> str | None:
        raw = _raw(request, self.name)
        if raw is None:
            return self.default
        if raw not in self.values:
            raise field_problem(self.name, f"one of {list(self.values)}")
        return raw

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": list(self.values)}
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Choices:
    """Several of `values`, separated by commas."""

    name: str
    values: Sequence[str]
    description: str = ""

    def read(self, request: Request) -> list[str]:
        chosen = [value for value in (_raw(request, self.name) or "").split(",") if value]
        for value in chosen:
            if value not in self.values:
                raise field_problem(self.name, f"each one of {list(self.values)}")
        return chosen

    def schema(self) -> dict[str, Any]:
        alternatives = "|".join(self.values)
        return {"type": "string", "pattern": f"^(({alternatives})(,|$))*$"}


@dataclass(frozen=True)
class Text:
    """Any text (an id, a token); empty is as if absent."""

    name: str
    description: str = ""

    def read(self, request: Request) -> str | None:
        return _raw(request, self.name) or None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": TEXT_PATTERN}


@dataclass(frozen=True)
class Header:
    """A request header the route reads (text; at most `max_length` characters when given)."""

    name: str
    required: bool = False
    max_length: int | None = None
    description: str = ""

    def read(self, request: Request) -> str | None:
        value = request.headers.get(self.name)
        if value and self.max_length is not None and len(value) > self.max_length:
            raise field_problem(self.name, f"at most {self.max_length} characters")
        return value or None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "pattern": HEADER_PATTERN}
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema
