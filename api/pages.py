"""Server-rendered HTML pages (the approvals inbox and the signed links' pages): one Jinja2 environment
over `api/templates/`, autoescaped, with the filters the pages share (readable ages and expiries beside
the exact UTC time), and the headers every page carries (no caching, no framing, no script)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from api.request_rules import refuse_text

TEMPLATES = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True)
)
# The pages need no script and load nothing from elsewhere; forms post only back here.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def span(seconds: float) -> str:
    """A duration as a person says it, to the minute: "45 s", "3 min", "1 h 59 min", "2 days 3 h"."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        rest = minutes % 60
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    rest = hours % 24
    named = f"{days} day" if days == 1 else f"{days} days"
    return f"{named} {rest} h" if rest else named


def ago(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """ "3 min ago" (or "in 3 min" for a moment still to come)."""
    seconds = ((now or dt.datetime.now(dt.UTC)) - _aware(moment)).total_seconds()
    return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(seconds)}"


def expiry(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """ "expires in 2 h", or "expired 5 min ago"."""
    seconds = (_aware(moment) - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return f"expires in {span(seconds)}" if seconds > 0 else f"expired {span(seconds)} ago"


def utc(moment: dt.datetime) -> str:
    """The exact moment a title shows: "2026-12-07 09:25:08 UTC"."""
    return _aware(moment).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: dt.datetime) -> str:
    """A <time datetime=...> value."""
    return _aware(moment).astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


TEMPLATES.env.filters.update(ago=ago, expiry=expiry, utc=utc, iso=iso)
TEMPLATES.env.tests.update(
    mapping=lambda value: isinstance(value, Mapping), sequence=lambda value: isinstance(value, list)
)


def render(request: Request, template: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, template, dict(context), status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response


def message_page(request: Request, status_code: int, title: str, detail: str, **context: Any) -> HTMLResponse:
    """A page that only says something: a refusal, a link that cannot be used, a decision's end."""
    return render(
        request, "message.html", {"title": title, "detail": detail, "status_code": status_code, **context}, status_code
    )


def wants_page(request: Request) -> bool:
    """A browser asking for a page (an API client sends a bearer token, or asks for JSON)."""
    return "text/html" in request.headers.get("accept", "") and "authorization" not in request.headers


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each), kept to the request rules: 422 naming a
    field whose text no store can hold."""
    raw = (await request.body()).decode("utf-8", "replace")
    form: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        form.setdefault(name, refuse_text(value, name))
    return form
