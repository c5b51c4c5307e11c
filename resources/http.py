"""The base of every HTTP client: one `httpx.Client`, timeouts, error mapping and the retry policy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

from resources.errors import (
    NotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    ServiceTimeout,
    ValidationRejected,
)
from resources.retry import RetryPolicy

log = logging.getLogger(__name__)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


class HttpClient:
    service = "http"

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers or {},
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=transport,
        )
        self.attempts = 0  # calls sent over the wire, retries included (for metrics and tests)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def classify(self, response: httpx.Response) -> Exception | None:
        """The error an answer means, or None for success. Subclasses refine (GitHub's 403s)."""
        status = response.status_code
        if status < 400:
            return None
        details = _body(response)
        message = f"{response.request.method} {response.request.url.path} answered {status}"
        if status == 429:
            return RateLimited(
                self.service,
                message,
                status=status,
                details=details,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            return RetryableError(self.service, message, status=status, details=details)
        if status == 404:
            return NotFound(self.service, message, status=status, details=details)
        if status == 422:
            return ValidationRejected(self.service, message, status=status, details=details)
        return PermanentError(self.service, message, status=status, details=details)

    def request(
        self,
        method: str,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        policy = retry or self.retry

        def attempt() -> httpx.Response:
            self.attempts += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                raise ServiceTimeout(self.service, f"{method} {path} timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise RetryableError(self.service, f"{method} {path} failed: {exc!r}") from exc
            error = self.classify(response)
            if error is not None:
                raise error
            return response

        return policy.call(attempt, on_retry=self._log_retry(method, path))

    def _log_retry(self, method: str, path: str) -> Callable[[int, BaseException, float], None]:
        def on_retry(attempt: int, error: BaseException, wait: float) -> None:
            log.warning(
                "%s %s %s: attempt %d failed (%s); retrying in %.2fs",
                self.service,
                method,
                path,
                attempt,
                error,
                wait,
            )

        return on_retry


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]
