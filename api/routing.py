"""Routes whose path parameters may hold `/`. Ids take any text, and domain/core/urls.py sends one in a URL as
one path segment (`a/b` as `a%2Fb`); Starlette matches the decoded path, where that `/` would split the
segment and no route would match. These routes match the raw path's segments instead, each decoded on
its own, so `/v1/users/a%2Fb/syncs/s` reads user `a/b`'s sync `s`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import Scope

# In the path matched, a decoded segment's own `%` and `/` are written escaped; a parameter is unescaped.
_ESCAPES = (("%", "%25"), ("/", "%2F"))


def _segments_path(raw_path: bytes) -> str:
    segments = (unquote_to_bytes(segment).decode("utf-8", "replace") for segment in raw_path.split(b"/"))
    return "/".join(_escape(segment) for segment in segments)


def _escape(segment: str) -> str:
    for plain, escaped in _ESCAPES:
        segment = segment.replace(plain, escaped)
    return segment


def _unescape(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for plain, escaped in reversed(_ESCAPES):
        value = value.replace(escaped, plain)
    return value


def _matches(route: Route | WebSocketRoute, scope: Scope, plain: Any) -> tuple[Match, Scope]:
    raw = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower() or scope.get("root_path"):
        return plain(scope)  # type: ignore[no-any-return]
    match, child = plain({**scope, "path": _segments_path(raw)})
    if match is not Match.NONE:
        names = route.param_convertors
        child["path_params"] = {k: _unescape(v) if k in names else v for k, v in child["path_params"].items()}
    return match, child


class SegmentRoute(Route):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return _matches(self, scope, super().matches)


class SegmentWebSocketRoute(WebSocketRoute):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return _matches(self, scope, super().matches)
