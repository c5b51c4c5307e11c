"""Calling standalone approvals' callback URLs: one HTTP client, the one retry policy, a signed body."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

import httpx

from domain.core.errors import PermanentError, RetryableError
from domain.core.models import HitlApprovalCallback
from domain.core.settings import Settings, get_settings
from domain.core.urls import header_value
from domain.workflows.approvals import callback_host_allowed
from resources.http import HttpClient
from resources.retry import RetryPolicy

SIGNATURE_HEADER = "X-WRK-Signature"


def signing_key(settings: Settings) -> bytes:
    """A key of its own for callback bodies, derived from HITL_LINK_SECRET (one secret to configure)."""
    return hmac.new(settings.hitl_link_secret.get_secret_value().encode(), b"hitl-callback-v1", hashlib.sha256).digest()


def signature(settings: Settings, body: bytes) -> str:
    return "sha256=" + hmac.new(signing_key(settings), body, hashlib.sha256).hexdigest()


class CallbackClient(HttpClient):
    service = "approval_callback"

    def __init__(self, settings: Settings, **kwargs: object) -> None:
        super().__init__(
            "",
            connect_timeout_s=settings.http_connect_timeout_s,
            read_timeout_s=settings.http_read_timeout_s,
            retry=RetryPolicy.from_settings(settings),
            **kwargs,  # type: ignore[arg-type]
        )
        self.settings = settings

    def __call__(self, callback: HitlApprovalCallback) -> None:
        # Checked again at delivery: the list may have been set or narrowed since the request was made.
        host = urlsplit(callback.url).hostname or ""
        if not callback_host_allowed(host, self.settings.approval_callback_hosts):
            raise PermanentError(self.service, f"host {host!r} is not one of APPROVAL_CALLBACK_HOSTS")
        body = json.dumps(callback.body, separators=(",", ":"), sort_keys=True).encode()
        self.request(
            "POST",
            callback.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                # The receiver dedupes on it: delivery is at least once.
                "Idempotency-Key": header_value(f"hitl-approval:{callback.hitl_approval_id}"),
                SIGNATURE_HEADER: signature(self.settings, body),
            },
        )


def callback_client(settings: Settings | None = None) -> CallbackClient:
    return CallbackClient(settings or get_settings())


def is_retryable(error: Exception) -> bool:
    """A later run tries again after a retryable failure (5xx, 429, timeouts); a 4xx is final."""
    return isinstance(error, RetryableError | httpx.TransportError)
