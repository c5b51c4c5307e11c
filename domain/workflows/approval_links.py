"""Signed single-use links to decide an approval from an e-mail, without an API client.

A link is a JWT (PyJWT, HS256 with `HITL_LINK_SECRET`) bound to one approval, its tenant, one assignee
and one decision, expiring with the approval. A tampered or foreign token fails its signature (401);
a link is single-use because deciding moves the approval out of `pending` for good: any link of a
decided, expired or cancelled approval is gone (410), as is an expired link.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jwt

from domain.core.models import HitlApproval
from domain.core.settings import Settings

AUDIENCE = "wrk-hitl-approval-link"
DECISIONS = ("approve", "reject")
LINK_PATH = "/hitl/approval-links"


class InvalidLink(Exception):
    """The token is not one we signed (tampered, foreign key, malformed): 401."""


class ExpiredLink(Exception):
    """The token was ours but its time is over: 410."""


@dataclass(frozen=True)
class LinkClaims:
    approval_id: str
    tenant_id: str
    user_id: str
    decision: str
    nonce: str


def sign(settings: Settings, approval: HitlApproval, user_id: str, decision: str) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    claims: dict[str, Any] = {
        "aud": AUDIENCE,
        "sub": user_id,
        "aid": approval.id,
        "tid": approval.tenant_id,
        "dec": decision,
        "exp": int(approval.expires_at.timestamp()),
    }
    return jwt.encode(claims, settings.hitl_link_secret.get_secret_value(), algorithm="HS256")


def verify(settings: Settings, token: str, *, now: dt.datetime | None = None) -> LinkClaims:
    try:
        claims = jwt.decode(
            token,
            settings.hitl_link_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["sub", "aid", "tid", "dec", "exp"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidLink(str(exc)) from exc
    if claims["dec"] not in DECISIONS:
        raise InvalidLink("unknown decision")
    now = now or dt.datetime.now(dt.UTC)
    if int(claims["exp"]) <= now.timestamp():
        raise ExpiredLink("this link has expired")
    return LinkClaims(
        approval_id=str(claims["aid"]),
        tenant_id=str(claims["tid"]),
        user_id=str(claims["sub"]),
        decision=str(claims["dec"]),
        # One link per approval, assignee and decision: this names it in the audit trail.
        nonce=f"{claims['aid']}:{claims['sub']}:{claims['dec']}",
    )


def link_url(settings: Settings, token: str) -> str:
    return f"{settings.hitl_link_base_url.rstrip('/')}{LINK_PATH}?token={quote(token)}"


def approval_links(settings: Settings, approval: HitlApproval, user_id: str) -> dict[str, str]:
    """The e-mail's links for one assignee: approve, reject, and the approval's page in the inbox (the
    JSON API's to a client sending a bearer token)."""
    base = settings.hitl_link_base_url.rstrip("/")
    return {
        "approve_url": link_url(settings, sign(settings, approval, user_id, "approve")),
        "reject_url": link_url(settings, sign(settings, approval, user_id, "reject")),
        "approval_url": f"{base}/hitl/approvals/{quote(approval.id, safe='')}?tenant={quote(approval.tenant_id)}",
    }
