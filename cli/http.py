"""The commands that are clients of the HTTP API: one client, the options every such command takes, and
the mapping of an answer to an exit code (docs/cli.md). The API does the auth, tenant scoping, audit and
validation; a refusal is its problem+json, shown on one line without the token."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from cli.output import EXIT_CONFLICT, EXIT_DENIED, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE

API_URL_ENV, TOKEN_ENV, TENANT_ENV = "WRK_ORCH_API_URL", "WRK_ORCH_TOKEN", "WRK_ORCH_TENANT"
TIMEOUT_S = 30.0

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar=API_URL_ENV,
        help="the API's URL (default: http://127.0.0.1:$API_PORT, port 8000)",
        show_default=False,
        rich_help_panel="API",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar=TOKEN_ENV, help="a bearer token (`wrk-orch token` mints a dev one)", rich_help_panel="API"
    ),
]
Tenant = Annotated[
    str | None,
    typer.Option("--tenant", envvar=TENANT_ENV, help="the tenant acted in (X-Tenant-ID)", rich_help_panel="API"),
]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON (for scripts)")]


class ApiError(Exception):
    """The API refused (a problem) or could not be reached; `exit_code` says which, `line` what."""

    def __init__(self, exit_code: int, line: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(line)
        self.exit_code = exit_code
        self.line = line
        self.status = status
        self.code = code


def exit_code_of(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status in (401, 403):
        return EXIT_DENIED
    if 400 <= status < 500 and status != 429:
        return EXIT_USAGE  # the request itself is wrong (400, 413, 415, 422)
    return EXIT_FAILED


def problem_line(response: httpx.Response) -> tuple[str, str | None]:
    """`title: detail (code)` of a problem+json answer; the status line when the body is not one."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code} {response.reason_phrase}", None
    code = body.get("code")
    parts = [str(p) for p in (body.get("title"), body.get("detail")) if p]
    text = ": ".join(parts) or f"HTTP {response.status_code}"
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        named = [f"{e.get('field')}: {e.get('message')}" for e in errors[:5] if isinstance(e, dict)]
        text += " [" + "; ".join(named) + "]"
    return " ".join((text + (f" ({code})" if code else "")).split()), code


@dataclass
class Api:
    """The API as one caller sees it: its URL, token and tenant."""

    url: str
    token: str | None = None
    tenant: str | None = None

    @classmethod
    def of(cls, url: str | None, token: str | None, tenant: str | None) -> Api:
        base = url or f"http://127.0.0.1:{os.environ.get('API_PORT') or 8000}"
        return cls(base.rstrip("/"), token or None, tenant or None)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The answer's JSON, or ApiError."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method, self.url + path, json=json, params=query, headers=self.headers(), timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise ApiError(EXIT_UNREACHABLE, f"the API at {self.url} cannot be reached ({reason})") from None
        if response.status_code >= 400:
            line, code = problem_line(response)
            raise ApiError(exit_code_of(response.status_code), line, response.status_code, code)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, json=body)


def segment(value: str) -> str:
    """An id as one path segment (percent-encoded: any text an operator types stays one segment)."""
    return quote(value, safe="")
