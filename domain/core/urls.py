"""Ids where they meet a URL or an HTTP header. Ids and text fields take any Unicode JSON carries; a URL
path and a header value take only ASCII, so an id is percent-encoded (UTF-8) on its way there, the same
way at every call site. Both encodings are injective (`%` itself is encoded), so two ids never meet as
one path segment or one idempotency key.
"""

from __future__ import annotations

from urllib.parse import quote

# Visible ASCII but `%`: what a header value keeps as it is (RFC 9110 field-vchar); spaces are encoded,
# as a header's leading and trailing ones would be lost.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_DOT_SEGMENTS = {".": "%2E", "..": "%2E%2E"}


def path_segment(value: str | int) -> str:
    """`value` as exactly one URL path segment: `/` and every non-ASCII character percent-encoded, and a
    `.` or `..` id encoded too (a client or server would otherwise resolve it as a dot segment)."""
    text = str(value)
    return _DOT_SEGMENTS.get(text) or quote(text, safe="")


def header_value(value: str) -> str:
    """`value` as an HTTP header value: visible ASCII kept, anything else (and `%`) percent-encoded."""
    return quote(value, safe=_HEADER_SAFE)
