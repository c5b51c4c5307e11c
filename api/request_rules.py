"""The rules every request keeps, whatever its route, in one place:

- a body is at most REQUEST_BODY_MAX_BYTES (webhooks: WEBHOOK_BODY_MAX_BYTES), counted while it is read,
  so a larger one is refused with 413 before any signature is checked or any JSON parsed;
- header values are printable ASCII (RFC 9110: text beyond it is percent-encoded), a path or query
  parameter carries no NUL (PostgreSQL stores none): 422 naming the header or parameter;
- a JSON body (`parse_json`) is nested at most REQUEST_JSON_MAX_DEPTH deep, holds numbers within the
  range of the widest integer the store can hold (a signed 64-bit BIGINT; JSON Schema cannot tell `1e30`
  from the integer it equals, so the bound is the same for both), and text without NUL or lone
  surrogates (neither store can encode one): 422 naming the field;
- an integer in a path or query (`integer_param`) is read only when it fits the store.

The checks on the hot path are C-speed scans of the raw bytes; a body is walked in Python only when a
scan finds something to look at.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response
from domain.core.settings import Settings

STORE_INT_MIN, STORE_INT_MAX = -(2**63), 2**63 - 1  # BIGINT, the widest integer the stores hold
# The rules above as JSON Schema patterns (api/openapi.py describes every parameter and body with them).
TEXT_PATTERN = "^[^\\x00]*$"
HEADER_PATTERN = "^[\\t\\x20-\\x7e]*$"
HEADER_PRESENT_PATTERN = "^[\\t ]*[\\x21-\\x7e][\\t\\x20-\\x7e]*$"  # not blank either
WEBHOOK_PATHS = frozenset({"/webhooks/github"})

_HEADER_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F))  # HTAB, SP and the visible ASCII characters
_TEXT_REFUSED = re.compile("[\x00\ud800-\udfff]")
# Raw JSON that may hold a refused value: a NUL or surrogate escape, 19 digits in a row (an integer past
# 64 bits), or an exponent of 2 digits (1e19 is past 64 bits); found by C-speed scans (a regular
# expression over every byte costs more than parsing a small body).
_JSON_ESCAPE_REFUSED = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def field_problem(field: str, message: str) -> Problem:
    """A 422 validation_error naming the one field that broke a rule."""
    return Problem(422, "validation_error", f"invalid field(s): {field}", errors=[{"field": field, "message": message}])


def text_refusal(text: str) -> str | None:
    """Why `text` cannot be stored (a NUL, a lone surrogate), or None."""
    found = _TEXT_REFUSED.search(text)
    if found is None:
        return None
    return "must not contain a NUL character" if found[0] == "\x00" else "must not contain a lone surrogate"


def refuse_text(text: str, field: str) -> str:
    """`text`, or a 422 naming `field` when it holds what no store takes."""
    refusal = text_refusal(text)
    if refusal is not None:
        raise field_problem(field, refusal)
    return text


def integer_param(raw: str, low: int = 0, high: int = STORE_INT_MAX) -> int | None:
    """`raw` as an integer from `low` to `high`: ASCII digits only (`"²".isdigit()` is true) and no longer
    than `high` is, so no digit string is ever converted whole; else None."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(high)):
        return None
    value = int(raw)
    return value if low <= value <= high else None


# -- JSON bodies ----------------------------------------------------------------------------------------


def parse_json(raw: bytes, max_depth: int) -> Any:
    """The JSON value of `raw` (None when empty), kept to the rules above; 422 naming the field if not."""
    if not raw:
        return None
    if _too_deep(raw, max_depth):
        raise field_problem("body", f"JSON nested deeper than {max_depth} levels")
    try:
        # As json.loads reads bytes (UTF-8, -16 or -32), with one decoder built once: loads builds one a call.
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except ValueError as exc:
        raise Problem(
            422,
            "validation_error",
            f"body is not valid JSON: {exc}",
            errors=[{"field": "body", "message": "invalid JSON"}],
        ) from exc
    if _may_hold_refused_values(raw):
        for field, message in _refused_values(value):
            raise field_problem(field, message)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _may_hold_refused_values(raw: bytes) -> bool:
    if b"\\u" in raw and _JSON_ESCAPE_REFUSED.search(raw):
        return True
    shape = raw.translate(_DIGITS_AS_ZERO)
    return b"0" * 19 in shape or b"e00" in shape or b"e+00" in shape


def _too_deep(raw: bytes, max_depth: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # the common case: too few brackets to be deep
        return False
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        if bracket[0] in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _refused_values(value: Any) -> Iterator[tuple[str, str]]:
    """(field, why) of each value in `value` that the store cannot hold, the field named as pydantic
    names it (`matches.3.claim_id`); iterative, so no depth can exhaust the stack."""
    pending: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                refusal = text_refusal(key)
                if refusal is not None:
                    yield _field(path) + " (a key)", refusal
                pending.append(((*path, key), child))
        elif isinstance(item, list):
            pending.extend(((*path, str(index)), child) for index, child in enumerate(item))
        elif isinstance(item, str):
            refusal = text_refusal(item)
            if refusal is not None:
                yield _field(path), refusal
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not STORE_INT_MIN <= item <= STORE_INT_MAX:
            yield _field(path), "an integer outside the signed 64-bit range"
        elif isinstance(item, float) and not (math.isfinite(item) and STORE_INT_MIN <= item <= STORE_INT_MAX):
            yield _field(path), "a number outside the signed 64-bit range"


def _field(path: tuple[str, ...]) -> str:
    return ".".join(path).replace("\x00", "\\u0000") or "body"


# -- the middleware -------------------------------------------------------------------------------------


class RequestRules:
    """Pure ASGI middleware: header values, NUL in the path and query, and the body's size as it is
    read (a declared Content-Length past the limit is refused before reading)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.body_max_bytes = settings.request_body_max_bytes
        self.webhook_body_max_bytes = settings.webhook_body_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.webhook_body_max_bytes if scope["path"] in WEBHOOK_PATHS else self.body_max_bytes
        try:
            _check_head(scope, limit)
        except Problem as problem:
            await problem_response(Request(scope), problem)(scope, receive, send)
            return
        await self.app(scope, _limited(receive, limit), send)


def _check_head(scope: Scope, limit: int) -> None:
    for name, value in scope["headers"]:
        if value.translate(None, _HEADER_VALUE_BYTES):  # what is left is not allowed
            raise field_problem(name.decode("latin-1"), "printable ASCII only (percent-encode other text)")
        if name == b"content-length" and value.isdigit() and (len(value) > len(str(limit)) or int(value) > limit):
            raise _too_large(limit)
    if "\x00" in scope["path"]:
        raise field_problem("path", "must not contain a NUL character")
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                raise field_problem(name.replace("\x00", "\\u0000"), "must not contain a NUL character")


def _too_large(limit: int) -> Problem:
    return Problem(413, "payload_too_large", f"the request body is larger than {limit} bytes")


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing (413) the body once more than `limit` bytes of it have arrived."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return receive_within_limit
