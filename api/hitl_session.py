"""The approvals inbox's session: a signed cookie (itsdangerous, with a key of its own derived from
HITL_LINK_SECRET) holding the person's verified claims, the tenant they chose and a CSRF token.

The person signs in with their API token (verified as every bearer token is: api/auth.py); the cookie
keeps what the token said (subject, tenants, roles), not the token, so a stolen cookie opens the inbox
only, and only until the token's own expiry or HITL_SESSION_MAX_AGE_S, whichever comes first. Before
signing in, the cookie holds only a CSRF token, so the sign-in form is protected too.

Every form POST carries the session's CSRF token in a hidden field, compared in constant time, and
must come from this origin when the browser says where it came from (Origin, else Referer).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal, principal_from_claims
from domain.core.settings import Settings

COOKIE = "wrk_hitl_session"
PATH = "/hitl"
CSRF_FIELD = "csrf_token"
# The claims a session keeps: what Principal is made of, and when the token ends.
KEPT_CLAIMS = ("sub", "tenants", "roles", "tenant_roles", "exp")


class CsrfRefused(Exception):
    """A form POST without this session's CSRF token, or from another origin: 403."""


@dataclass(frozen=True)
class HitlSession:
    csrf: str
    expires: int  # unix time
    claims: dict[str, Any] | None = None
    tenant: str | None = None
    principal: Principal | None = field(default=None, compare=False)

    @property
    def signed_in(self) -> bool:
        return self.principal is not None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    key = hmac.new(settings.hitl_link_secret.get_secret_value().encode(), b"hitl-session-v1", hashlib.sha256)
    return URLSafeTimedSerializer(key.digest(), salt="wrk-hitl-session")


def new_session(settings: Settings) -> HitlSession:
    """A session before sign-in: a CSRF token only."""
    return HitlSession(csrf=secrets.token_urlsafe(32), expires=int(time.time()) + settings.hitl_session_max_age_s)


def signed_in(settings: Settings, principal: Principal, tenant: str | None) -> HitlSession:
    """The session of a person whose token was just verified: a fresh CSRF token, ending with the token."""
    claims = {name: principal.claims[name] for name in KEPT_CLAIMS if name in principal.claims}
    expires = min(int(principal.claims["exp"]), int(time.time()) + settings.hitl_session_max_age_s)
    return HitlSession(
        csrf=secrets.token_urlsafe(32), expires=expires, claims=claims, tenant=tenant, principal=principal
    )


def with_tenant(session: HitlSession, tenant: str) -> HitlSession:
    return replace(session, tenant=tenant)


def read(request: Request) -> HitlSession | None:
    """The request's session, or None when it has none, or its cookie is forged, altered or over."""
    settings: Settings = request.app.state.settings
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(settings).loads(raw, max_age=settings.hitl_session_max_age_s)
    except BadSignature:  # also SignatureExpired
        return None
    try:
        expires, csrf, claims, tenant = int(data["expires"]), str(data["csrf"]), data.get("claims"), data.get("tenant")
        if expires <= time.time():
            return None
        principal = principal_from_claims(claims) if claims is not None else None
    except (KeyError, TypeError, ValueError):
        return None
    return HitlSession(csrf=csrf, expires=expires, claims=claims, tenant=tenant, principal=principal)


def store(response: Response, settings: Settings, session: HitlSession) -> Response:
    """Set the session's cookie on `response`: signed, HttpOnly, SameSite=Lax, Secure unless
    HITL_COOKIE_SECURE=false, for /hitl only, ending with the session."""
    value = _serializer(settings).dumps(
        {"csrf": session.csrf, "expires": session.expires, "claims": session.claims, "tenant": session.tenant}
    )
    response.set_cookie(
        COOKIE,
        value,
        max_age=max(0, session.expires - int(time.time())),
        path=PATH,
        secure=settings.hitl_cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


def forget(response: Response, settings: Settings) -> Response:
    response.delete_cookie(COOKIE, path=PATH, secure=settings.hitl_cookie_secure, httponly=True, samesite="lax")
    return response


def check_csrf(request: Request, session: HitlSession | None, form: dict[str, str]) -> None:
    """Raise CsrfRefused unless the form carries this session's CSRF token and, when the browser names
    where the request came from, that is this origin."""
    sent = form.get(CSRF_FIELD, "")
    if session is None or not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise CsrfRefused("the form's CSRF token is missing or wrong")
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is not None and urlsplit(source).netloc != request.headers.get("host", ""):
        raise CsrfRefused(f"the form was sent from another origin ({source[:100]})")
